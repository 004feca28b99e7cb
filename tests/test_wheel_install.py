"""Installing as users install: build the wheel, install it into a fresh virtualenv outside the
repository, make the plugin available with the one documented command, and use it.

What this proves: the wheel built by ``python -m build`` (sdist, then the wheel from the sdist,
as PyPI users get it) carries the plugin's ``fiftyone.yml`` and the ``fiftyone-elfs`` command;
from the installed package alone (the interpreter runs outside the repository and imports
``fiftyone_elfs`` from the fresh virtualenv), ``fiftyone-elfs install-plugin`` makes FiftyOne
find the plugin in an empty plugins directory, every operator and the panel register without
errors from the installed files, and an operator runs through FiftyOne's machinery.

What it does not: resolve the dependencies from an index. Reinstalling torch and FiftyOne
(gigabytes) into each fresh virtualenv is too slow for CI, so the fresh virtualenv sees the
project virtualenv's packages through a ``.pth`` file and the wheel is installed with
``--no-deps``; the dependency list itself is what ``pip install -e .`` uses for the project.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile

import pytest

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPERATORS = (
    "compute_embeddings",
    "compute_pseudo_labels",
    "compute_difficulty",
    "compute_visualization",
    "compute_contrastive_scores",
    "select_coreset",
    "export_coreset",
    "run_elfs_pipeline",
    "embed_shard",
    "send_to_label_studio",
    "load_from_label_studio",
    "select_more",
    "elfs_panel",
)

CHECK = """
import json, os, sys
import numpy as np
import fiftyone as fo
import fiftyone.operators as foo
from fiftyone.operators.registry import OperatorRegistry
import fiftyone_elfs

registry = OperatorRegistry()
uris = sorted(o.uri for o in registry.list_operators() if o.uri.startswith("@fiftyone-elfs/"))
dataset = fo.Dataset()
dataset.add_samples([fo.Sample(filepath=f"/tmp/img{i}.png") for i in range(12)])
rng = np.random.default_rng(0)
dataset.set_values("elfs_embedding", [rng.normal(size=8).astype(np.float32) for _ in range(12)])
op = foo.get_operator("@fiftyone-elfs/elfs/compute_visualization")
brain_key = op(dataset, layout_method="pca").result
print(json.dumps({
    "package": fiftyone_elfs.__file__,
    "operators_module": sys.modules["fiftyone_elfs.plugin.operators"].__file__,
    "uris": uris,
    "errors": registry.list_errors(),
    "brain_key": brain_key,
    "brain_runs": dataset.list_brain_runs(),
}))
dataset.delete()
"""


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kwargs)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_the_wheel_installs_into_a_fresh_venv_and_its_plugin_works(tmp_path):
    # 1. Build as a user or a release would: sdist, then the wheel from it.
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--outdir", str(dist), REPO])
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        manifest = z.read("fiftyone_elfs/plugin/fiftyone.yml").decode()
        entry_points = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "py_entry: __init__.py" in manifest and "url:" not in manifest
    assert all(f"- {name}" in manifest for name in OPERATORS if name != "elfs_panel")
    assert "fiftyone-elfs = fiftyone_elfs.cli:main" in entry_points
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "examples/"))]

    # 2. A fresh virtualenv outside the repo; the project's dependencies through a .pth file.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
    ).stdout.strip()
    deps = sysconfig.get_paths()["purelib"]
    with open(os.path.join(purelib, "project-dependencies.pth"), "w") as f:
        f.write(deps + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", str(wheel)])

    # 3. The one documented command, into an empty plugins directory.
    env = dict(os.environ, FIFTYONE_PLUGINS_DIR=str(tmp_path / "plugins"))
    installed = _run([str(venv / "bin" / "fiftyone-elfs"), "install-plugin"], env=env, cwd=tmp_path)
    link = tmp_path / "plugins" / "fiftyone-elfs"
    assert f"installed: {link}" in installed.stdout
    assert os.path.realpath(link) == os.path.join(purelib, "fiftyone_elfs", "plugin")
    again = _run([str(venv / "bin" / "fiftyone-elfs"), "install-plugin"], env=env, cwd=tmp_path)
    assert "already installed" in again.stdout

    # 4. FiftyOne finds the plugin and runs it, from the installed files only.
    done = _run([str(python), "-c", CHECK], env=env, cwd=tmp_path)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["package"].startswith(purelib), report["package"]
    assert report["operators_module"].startswith(purelib)
    assert report["uris"] == sorted(f"@fiftyone-elfs/elfs/{name}" for name in OPERATORS)
    assert report["errors"] == []
    assert report["brain_key"] == "elfs_pca" and report["brain_runs"] == ["elfs_pca"]
