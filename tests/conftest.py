"""Test set-up: a private FiftyOne database, the plugin discovered from this repo, real images.

The environment is set before FiftyOne is imported anywhere, so tests never touch the user's own
database or plugins.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_CIFAR = os.path.join(REPO, "..", "shared", "data", "cifar10-jpg.tar.gz")

_TMP = tempfile.mkdtemp(prefix="elfs-tests-")
# Registered before FiftyOne is imported, so it runs after FiftyOne's own exit hook stops mongod.
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)
_PLUGINS = os.path.join(_TMP, "plugins")
os.makedirs(_PLUGINS)
# the plugin folder, as `fiftyone-elfs install-plugin` links it
os.symlink(os.path.join(REPO, "fiftyone_elfs", "plugin"), os.path.join(_PLUGINS, "fiftyone-elfs"))
# Idle OpenMP threads sleep instead of spinning (read when torch first loads, so set here, for
# this process and every process a test starts): where two torch processes share the cores
# (a test and the worker or pipeline it started), spinning threads made each several times
# slower (TEMI on 600 samples, two processes at once: 40 s each spinning, 22 s sleeping; a
# process alone is about 15% slower sleeping: benchmarks/results/scale/README.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.pop("FIFTYONE_DATABASE_URI", None)
os.environ.pop("FIFTYONE_PRIVATE_DATABASE_PORT", None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_private_mongod(db_dir: str) -> str | None:
    """Starts FiftyOne's bundled mongod on a free local port for this test session only.

    FiftyOne's managed database service attaches to ANY running FiftyOne database service of the
    user, whatever its directory, so FIFTYONE_DATABASE_DIR alone could put test datasets into a
    running App's database. A private mongod addressed by FIFTYONE_DATABASE_URI cannot; the App
    server started by the browser test inherits the same URI. Returns the URI, or None if the
    bundled mongod is absent (FiftyOne then manages the database in `db_dir`).
    """
    binary = next(
        (
            os.path.join(p, "fiftyone", "db", "bin", "mongod")
            for p in sys.path
            if os.path.isfile(os.path.join(p, "fiftyone", "db", "bin", "mongod"))
        ),
        None,
    )
    if binary is None:
        return None
    os.makedirs(db_dir, exist_ok=True)
    port = _free_port()
    args = [binary, "--dbpath", db_dir, "--port", str(port), "--bind_ip", "127.0.0.1"]
    args += ["--nounixsocket", "--logpath", os.path.join(_TMP, "mongod.log")]
    proc = subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    atexit.register(_stop, proc)  # runs before the rmtree above (atexit is last-in, first-out)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mongod exited with {proc.returncode}: see {_TMP}/mongod.log")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return f"mongodb://127.0.0.1:{port}"
        time.sleep(0.2)
    raise RuntimeError("mongod did not answer within 60 s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


_URI = _start_private_mongod(os.path.join(_TMP, "db"))
if _URI is not None:
    os.environ["FIFTYONE_DATABASE_URI"] = _URI
os.environ.update(
    FIFTYONE_DATABASE_DIR=os.path.join(_TMP, "db"),
    FIFTYONE_PLUGINS_DIR=_PLUGINS,
    FIFTYONE_DO_NOT_TRACK="true",
    FIFTYONE_DATABASE_VALIDATION="false",
    FIFTYONE_DEFAULT_DATASET_DIR=os.path.join(_TMP, "fiftyone"),
)

import pytest  # noqa: E402

# Test files run longest first (seconds measured per file, FILE_SECONDS), so that
# the xdist workers (run_tests.sh: a file each at a time) do not finish with one long file
# running alone while the other worker idles. Files not listed run last, in collection order.
# Stale figures only cost balance. Rewrite them from a whole run:
#   .venv/bin/python -m pytest -n 2 --dist loadfile --record-file-seconds tests/file_seconds.json
FILE_SECONDS = os.path.join(REPO, "tests", "file_seconds.json")  # {"test_x.py": seconds}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--record-file-seconds",
        metavar="PATH",
        help="write each test file's seconds (set-up, call, teardown) to PATH as JSON",
    )


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False  # xdist would sort files by their test count


def _test_file(nodeid: str) -> str:
    return os.path.basename(nodeid.split("::")[0])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        with open(FILE_SECONDS) as f:
            seconds = json.load(f)
    except (OSError, ValueError):
        seconds = {}
    collected: dict[str, int] = {}  # each file's place in collection order
    for item in items:
        collected.setdefault(_test_file(item.nodeid), len(collected))

    def longest_first(item: pytest.Item) -> tuple[float, int]:
        name = _test_file(item.nodeid)
        return -seconds.get(name, 0.0), collected[name]

    items.sort(key=longest_first)


_RUN_FILE_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    name = _test_file(report.nodeid)
    _RUN_FILE_SECONDS[name] = _RUN_FILE_SECONDS.get(name, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("--record-file-seconds")
    if path and not hasattr(session.config, "workerinput"):  # the xdist controller, or alone
        with open(path, "w") as f:
            json.dump({k: round(v, 1) for k, v in sorted(_RUN_FILE_SECONDS.items())}, f, indent=1)
            f.write("\n")


@pytest.fixture(scope="session")
def image_dir() -> str:
    """A class-tree folder of 300 real images: CIFAR-10 JPEGs from ../shared/data when present
    (30 per class), else scikit-learn's digit scans (what a user's machine has)."""
    folder = os.path.join(_TMP, "images")
    if os.path.exists(SHARED_CIFAR):
        os.makedirs(folder)
        subprocess.run(
            ["tar", "-xzf", SHARED_CIFAR, "-C", folder, "--wildcards", "train/*/00[0-2][0-9].jpg"],
            check=True,
        )
        return os.path.join(folder, "train")
    from fiftyone_elfs.sample_data import write_digit_images

    return write_digit_images(folder, per_class=30)


@pytest.fixture(scope="session")
def base_dataset(image_dir):
    """The 300 images as a dataset with EfficientNet-Lite0 embeddings computed once (key 'elfs')."""
    import fiftyone as fo

    import fiftyone_elfs as elfs

    dataset = fo.Dataset.from_dir(
        dataset_dir=image_dir,
        dataset_type=fo.types.ImageClassificationDirectoryTree,
        label_field="ground_truth",
        name="elfs-test-base",
    )
    elfs.compute_embeddings(dataset, key="elfs")
    return dataset


@pytest.fixture
def dataset(base_dataset):
    """A fresh copy of the base dataset (embeddings included) for one test."""
    copy = base_dataset.clone()
    yield copy
    copy.delete()


@pytest.fixture(scope="module")
def scored(base_dataset, request):
    """40 of the images with embeddings, k-means pseudo-labels, MLP scores and a coreset under
    the test module's ``KEY`` (of ``BUDGET`` samples, 8 if the module sets none), built once
    per module; tests change a copy (`ds`)."""
    import fiftyone_elfs as elfs

    module = request.module
    name = f"elfs-{module.__name__.rsplit('.', 1)[-1]}-{uuid.uuid4().hex[:6]}"
    ds = base_dataset.take(40, seed=2).clone(name=name)
    elfs.run_pipeline(
        ds,
        key=module.KEY,
        budget_count=getattr(module, "BUDGET", 8),
        n_clusters=4,
        clustering="kmeans",
        embeddings_field="elfs_embedding",
        epochs=2,
        visualize=False,
    )
    yield ds
    ds.delete()


@pytest.fixture
def ds(scored):
    """A copy of the module's `scored` dataset for one test (modules may define their own)."""
    copy = scored.clone()
    yield copy
    copy.delete()
