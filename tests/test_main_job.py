"""The README's main job, run as a user would, on a machine without ../shared: it produces
everything the README's App section walks through, prints a quiet summary, and its printed App
command opens the App on that dataset with the plugin available."""

from __future__ import annotations

import json
import mimetypes
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOISE = (
    "without an embeddings field",  # FiftyOne Brain's advice when it runs UMAP itself
    "n_jobs value",  # umap's warning about seeded runs
    "INFO eta.core.utils",  # FiftyOne's progress bars printed a second time through logging
    "Traceback",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _app_plugins(command: str, port: int, plugins_dir: str) -> tuple[list[str], str]:
    """Runs the printed App command; returns the plugins its server lists, and its output."""
    env = dict(os.environ, FIFTYONE_PLUGINS_DIR=plugins_dir)
    log = os.path.join(plugins_dir + ".log")
    with open(log, "w") as out:
        app = subprocess.Popen(
            [*shlex.split(command), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            assert app.poll() is None, open(log).read()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/plugins", timeout=2) as r:
                    return [p["name"] for p in json.load(r)["plugins"]], open(log).read()
            except OSError:
                time.sleep(1)
        raise TimeoutError(open(log).read()[-3000:])
    finally:
        os.killpg(app.pid, signal.SIGTERM)
        try:
            app.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(app.pid, signal.SIGKILL)


@pytest.mark.slow
def test_main_job_default_runs_offline_without_shared_data(tmp_path):
    import fiftyone as fo

    env = dict(os.environ, FIFTYONE_DATABASE_DIR=str(tmp_path / "db"))
    cmd = [
        sys.executable,
        os.path.join(REPO, "examples", "select_coreset.py"),
        "--workdir",
        str(tmp_path / "work"),
        "--shared-data",
        str(tmp_path / "no-shared" / "cifar10-jpg.tar.gz"),  # ../shared hidden
    ]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        out = done.stdout
        assert "Dataset 'elfs-demo-digits': 1797 images" in out
        assert "selected 180 of 1797 samples" in out
        # the line says what chose the samples: the rule's name when it is typical selection
        (rule,) = [line for line in out.splitlines() if line.startswith("selection rule: ")]
        chose = "typical selection" if rule.startswith("selection rule: typical:") else "aum"
        assert f"samples (10.0%) by {chose}" in out
        assert out.count("cluster_") >= 10
        assert "skipped images: 0" in out
        assert "embeddings: efficientnet-lite0 at 128 px" in out  # the encoder's own size
        export = tmp_path / "work" / "export" / "elfs-demo-digits-elfs"
        assert len(os.listdir(export / "media")) == 180
        assert (export / "labelstudio_tasks.json").is_file()
        # Without --classes annotators type the class; never offered a cluster name.
        config = (export / "labelstudio_config.xml").read_text()
        assert "<TextArea" in config and "cluster_" not in config
        assert "pseudo-label trust: " in out
        # Beta once, with its reason; no advice an ELFS user cannot act on.
        (cut,) = [line for line in out.splitlines() if line.startswith("hard-end cut:")]
        assert cut.count("beta") == 1 and cut.startswith("hard-end cut: beta = ")
        for noise in NOISE:
            assert noise not in out + done.stderr, noise
        # Everything the README's App section walks through is there.
        dataset = fo.load_dataset("elfs-demo-digits")
        assert dataset.list_brain_runs() == ["elfs_umap"]
        assert dataset.load_brain_results("elfs_umap").points.shape == (1797, 2)
        assert "embedding plot 'elfs_umap'" in out
        assert dataset.has_saved_view("elfs-coreset")
        paths = [dict(f)["path"] for f in dataset.app_config.color_scheme.fields]
        assert {"elfs_coreset_region", "elfs_pseudo_label"} <= set(paths)

        # The printed App command opens the App on this dataset, linking the plugin first.
        lines = out.splitlines()
        command = lines[lines.index("open it in the App (with the ELFS plugin):") + 1].strip()
        assert command.endswith("fiftyone-elfs app elfs-demo-digits")
        plugins, log = _app_plugins(command, _free_port(), str(tmp_path / "plugins"))
        assert "@fiftyone-elfs/elfs" in plugins
        assert "ELFS plugin installed" in log
        assert os.path.islink(tmp_path / "plugins" / "fiftyone-elfs")

        # Idempotent: a second run reuses the dataset and its embeddings.
        # With --classes, the Label Studio export offers exactly those names.
        digits = [f"digit {d}" for d in range(10)]
        again = subprocess.run(
            [*cmd, "--classes", ",".join(digits)],
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        assert again.returncode == 0, again.stderr[-3000:]
        assert "reused embeddings: 1797" in again.stdout
        config = (export / "labelstudio_config.xml").read_text()
        assert re.findall(r'<Choice value="([^"]+)"/>', config) == digits
    finally:
        if fo.dataset_exists("elfs-demo-digits"):
            fo.delete_dataset("elfs-demo-digits")


@pytest.mark.slow
def test_a_rerun_with_another_selection_never_replaces_the_earlier_export(tmp_path):
    """The first export may already be in annotators' hands (a Label Studio storage serves its
    media): a re-run whose selection differs writes beside it; one with the same selection
    (here: only other --classes) replaces its own export."""
    import csv

    import fiftyone as fo

    from fiftyone_elfs.sample_data import write_digit_images

    images = write_digit_images(str(tmp_path / "digits"), per_class=6)
    env = dict(os.environ, FIFTYONE_DATABASE_DIR=str(tmp_path / "db"))
    base = [
        sys.executable,
        os.path.join(REPO, "examples", "select_coreset.py"),
        "--images-dir",
        images,
        "--workdir",
        str(tmp_path / "work"),
        "--clustering",
        "kmeans",
        "--clusters",
        "4",
    ]

    def main_job(*flags: str) -> str:
        done = subprocess.run([*base, *flags], env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout

    def manifest_ids(folder) -> list[str]:
        with open(folder / "manifest.csv", newline="") as f:
            return sorted(row["sample_id"] for row in csv.DictReader(f))

    exports = tmp_path / "work" / "export"
    try:
        main_job("--budget-count", "10")
        first = exports / "elfs-digits-elfs"
        first_ids = manifest_ids(first)
        first_media = sorted(os.listdir(first / "media"))
        assert len(first_ids) == len(first_media) == 10

        out = main_job("--budget-count", "14")
        assert f"An earlier export of another selection stays as it was in {first}" in out
        second = exports / "elfs-digits-elfs-2"
        assert f"media: {second / 'media'}" in out
        assert len(manifest_ids(second)) == 14
        assert manifest_ids(first) == first_ids  # untouched
        assert sorted(os.listdir(first / "media")) == first_media

        out = main_job("--budget-count", "14", "--classes", "a,b,c")  # the same selection
        assert "An earlier export" in out and f"media: {second / 'media'}" in out
        assert 'value="a"' in (second / "labelstudio_config.xml").read_text()
        assert sorted(os.listdir(exports)) == ["elfs-digits-elfs", "elfs-digits-elfs-2"]
    finally:
        if fo.dataset_exists("elfs-digits"):
            fo.delete_dataset("elfs-digits")


@pytest.mark.slow
def test_a_named_dataset_whose_ground_truth_is_not_a_classification_runs_to_the_end(tmp_path):
    """The cluster-accuracy line is a report for class-folder data: a dataset whose
    `ground_truth` holds detections gets its coreset and summary without it (it crashed the
    summary after all the work)."""
    import glob

    import fiftyone as fo

    from fiftyone_elfs.sample_data import write_digit_images

    images = sorted(glob.glob(os.path.join(write_digit_images(str(tmp_path / "d"), 4), "*", "*")))
    name = f"elfs-detections-{os.getpid()}"
    dataset = fo.Dataset(name, persistent=True)
    box = fo.Detection(label="digit", bounding_box=[0.1, 0.1, 0.8, 0.8])
    dataset.add_samples(
        [fo.Sample(filepath=p, ground_truth=fo.Detections(detections=[box.copy()])) for p in images]
    )
    try:
        done = subprocess.run(
            [
                sys.executable,
                os.path.join(REPO, "examples", "select_coreset.py"),
                *("--dataset", name, "--workdir", str(tmp_path / "work")),
                *("--clusters", "3", "--clustering", "kmeans", "--budget-count", "6"),
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert f"selected 6 of {len(images)} samples" in done.stdout
        assert "cluster accuracy" not in done.stdout
        assert "Traceback" not in done.stderr
    finally:
        dataset.delete()


def _main_job_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "select_coreset", os.path.join(REPO, "examples", "select_coreset.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _png(path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (len(str(path)) % 256, 0, 0)).save(path)


def test_a_folder_gives_every_image_at_any_depth_and_later_ones_on_the_next_run(
    tmp_path, monkeypatch
):
    """Images beside class subfolders were dropped (only the subfolders were read); a folder
    that gained images kept the dataset of its first run."""
    import fiftyone as fo

    main_job = _main_job_module()
    root = tmp_path / "photos"
    for rel in ["top.png", "cat/a.jpg", "cat/deeper/b.webp", "dog/c.png", "dog/C.JPEG"]:
        _png(root / rel)
    (root / "notes.txt").write_text("not an image")
    (root / "dog" / "clip.mpg").write_bytes(b"")  # PIL lists .mpg; FiftyOne takes it for a video
    # a TGA is an image PIL reads; WebP, JFIF and TGA are in no MIME table of a slim system
    Image.new("RGB", (8, 8), (200, 10, 10)).save(root / "cat" / "e.tga")
    _png(root / ".ipynb_checkpoints" / "top-checkpoint.png")
    _png(root / "dog" / "._c.png")  # macOS metadata beside a copied file
    _png(tmp_path / "elsewhere" / "d.png")
    os.symlink(tmp_path / "elsewhere", root / "bird")  # a class folder linked from another disk
    os.symlink(root, root / "cat" / "loop")  # a link loop is walked once
    expected = [
        ("top.png", None),
        ("bird/d.png", "bird"),
        ("cat/a.jpg", "cat"),
        ("cat/e.tga", "cat"),
        ("cat/deeper/b.webp", "cat"),
        ("dog/C.JPEG", "dog"),
        ("dog/c.png", "dog"),
    ]
    found = main_job.image_files(str(root))
    assert [(os.path.relpath(p, root), label) for p, label in found] == expected
    # a machine without /etc/mime.types (Python's own table only) finds the same images
    monkeypatch.setattr(mimetypes, "_db", mimetypes.MimeTypes())
    assert mimetypes.guess_type("b.webp")[0] is None  # the case it stands for
    found = main_job.image_files(str(root))
    assert [(os.path.relpath(p, root), label) for p, label in found] == expected
    monkeypatch.undo()
    name = f"elfs-folder-{os.getpid()}"
    dataset = main_job.dataset_from_folder(name, str(root))
    try:
        assert len(dataset) == 7
        paths, labels = dataset.values(["filepath", "ground_truth.label"])
        labels = dict(zip(paths, labels, strict=True))
        assert labels[str(root / "top.png")] is None and labels[str(root / "cat/a.jpg")] == "cat"
        _png(root / "dog" / "new.png")
        again = main_job.dataset_from_folder(name, str(root))
        assert again.name == name and len(again) == 8
        third = main_job.dataset_from_folder(name, str(root))  # nothing new: nothing added
        assert third.name == name and len(third) == 8
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)


def test_library_fixes_are_given_in_the_command_lines_words():
    """Refusals named API parameters the main job has no flag for (embeddings_field=, tag=,
    brain_key=)."""
    main_job = _main_job_module()
    messages = [
        "The field 'elfs_embedding' already holds values that this run did not compute; "
        "refusing to overwrite or mix them. Fix: to use those embeddings, pass "
        "embeddings_field='elfs_embedding' to the later stages (or run_pipeline) instead; to "
        "compute new ones, choose another key or embeddings_field.",
        "The tag 'elfs_coreset' is already on samples and was not set by ELFS key 'elfs'; "
        "refusing to move or remove it. Fix: pass another tag (tag=...) or another key "
        "(e.g. key='elfs2'), or rename your tag.",
        "The brain key 'elfs_umap' already exists and no run of ELFS key 'elfs' records it "
        "(yours, or an ELFS plot whose run dataset.delete_run() removed). Fix: if it may go, "
        "dataset.delete_brain_run('elfs_umap'); else pass another brain_key "
        "(compute_visualization) or visualize=False (run_pipeline).",
        "The tag 'x' belongs to the coreset of key 'a'. Fix: choose another tag, or leave "
        "tag=None to derive it from the key.",
    ]
    for message in messages:
        words = main_job.in_flag_words(message)
        for api in ("pass embeddings_field", "tag=", "another brain_key", "(tag", "visualize="):
            assert api not in words, words
        assert "--key" in words, words


def test_an_interrupted_first_export_folder_is_reused(tmp_path):
    """Only an interrupted export's marker and staging: the export recovers the folder, so the
    same command goes back to it (it wrote -2 and said an earlier export was there)."""
    from fiftyone_elfs.export_folder import INCOMPLETE, STAGING_PREFIX

    main_job = _main_job_module()
    base = tmp_path / "export" / "d-elfs"
    (base / f"{STAGING_PREFIX}1234abcd" / "media").mkdir(parents=True)
    (base / f"{STAGING_PREFIX}1234abcd" / "media" / "a.png").write_bytes(b"x")
    (base / INCOMPLETE).write_text(
        json.dumps({"phase": "writing", "staging": f"{STAGING_PREFIX}1234abcd", "outputs": []})
    )
    assert main_job.export_dir_for(str(base), {"a", "b"}) == str(base)
    # an interrupted replacement of this same selection: reused too; of another: kept
    (base / "manifest.csv").write_text("sample_id,filepath\na,x\nb,y\n")
    (base / "media").mkdir()
    assert main_job.export_dir_for(str(base), {"a", "b"}) == str(base)
    assert main_job.export_dir_for(str(base), {"a", "c"}) == f"{base}-2"


def test_export_folder_stays_inside_workdir_export(tmp_path):
    main_job = _main_job_module()
    export = os.path.join(str(tmp_path), "export")
    for name in ["team/digits", "../escaped", "..", "a\\b"]:
        folder = main_job.export_base(str(tmp_path), name, "elfs")
        assert os.path.dirname(folder) == export, folder
        assert os.path.basename(folder) not in (".", "..")


def test_workdir_export_and_data_are_checked_before_anything_runs(tmp_path, capsys):
    main_job = _main_job_module()
    for sub, flags in [("export", ["--dataset", "any"]), ("data", ["--source", "digits"])]:
        work = tmp_path / f"wd_{sub}"
        work.mkdir()
        (work / sub).write_text("a file")
        with pytest.raises(SystemExit) as stop:
            main_job.parse_args([*flags, "--workdir", str(work)])
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert "argument --workdir" in err and os.path.join(str(work), sub) in err


def test_images_dir_through_a_link_is_the_real_folder(tmp_path):
    main_job = _main_job_module()
    _png(tmp_path / "disk1" / "photos" / "a.png")
    os.symlink(tmp_path / "disk1", tmp_path / "data")
    args = main_job.parse_args(
        ["--images-dir", str(tmp_path / "data" / "photos"), "--workdir", str(tmp_path / "w")]
    )
    assert args.images_dir == os.path.realpath(tmp_path / "disk1" / "photos")


def test_a_grouped_dataset_is_refused_with_the_fix():
    import fiftyone as fo

    main_job = _main_job_module()
    dataset = fo.Dataset()
    dataset.add_group_field("group", default="left")
    group = fo.Group()
    dataset.add_samples(
        [fo.Sample(filepath=f"/x/{s}.png", group=group.element(s)) for s in ("left", "right")]
    )
    try:
        with pytest.raises(main_job.UsageError) as refused:
            main_job.refuse_grouped(dataset)
        message = str(refused.value)
        assert "select_group_slices('left')" in message and "'right'" in message
        main_job.refuse_grouped(fo.Dataset())  # an ungrouped one passes
    finally:
        dataset.delete()


def test_a_dataset_of_a_few_videos_is_refused_as_videos_first(tmp_path, capsys):
    """Five videos were counted as 'images' and refused for --clusters=10; the fix followed
    (--clusters 2) then met the video refusal, whose fix named an API variable."""
    import fiftyone as fo

    main_job = _main_job_module()
    name = f"elfs-videos-{os.getpid()}"
    dataset = fo.Dataset(name, persistent=True)
    dataset.add_samples([fo.Sample(filepath=str(tmp_path / f"clip{i}.mp4")) for i in range(5)])
    try:
        flags = ["--dataset", name, "--budget-count", "1", "--workdir", str(tmp_path / "w")]
        with pytest.raises(SystemExit) as refused:
            main_job.main([*flags, "--clustering", "kmeans"])
        err = capsys.readouterr().err
        assert refused.value.code == 2 and "holds 'video' samples" in err
        assert f"then --dataset {name}-frames" in err and "clusters" not in err
        assert "images" not in capsys.readouterr().out
    finally:
        dataset.delete()


def test_a_second_run_making_the_same_folders_dataset_is_refused_clearly(tmp_path):
    """Two first runs at once: a raw DuplicateKeyError, or a second dataset of the same
    images."""
    import threading

    import fiftyone as fo

    from fiftyone_elfs import leases

    main_job = _main_job_module()
    root = tmp_path / "photos"
    _png(root / "a.png")
    folder = os.path.realpath(root)
    name = f"elfs-race-{os.getpid()}"
    holding, release = threading.Event(), threading.Event()

    def other_run() -> None:  # another run, busy making the dataset
        with leases.hold(f"folder:{folder}", "elfs", ["dataset_from_folder"]):
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=other_run)
    thread.start()
    try:
        assert holding.wait(30)
        with pytest.raises(main_job.UsageError, match="Another run is making or updating"):
            main_job.dataset_from_folder(name, folder)
        assert not fo.dataset_exists(name)
    finally:
        release.set()
        thread.join()
    dataset = main_job.dataset_from_folder(name, folder)  # once it is done: made, found again
    try:
        assert dataset.info["source_folder"] == folder and len(dataset) == 1
    finally:
        dataset.delete()


def test_images_gone_from_the_folder_are_left_out_and_kept(tmp_path):
    import fiftyone as fo

    main_job = _main_job_module()
    root = tmp_path / "photos"
    for rel in ["a/1.png", "a/2.png", "b/3.png"]:
        _png(root / rel)
    name = f"elfs-gone-{os.getpid()}"
    dataset = main_job.dataset_from_folder(name, str(root))
    try:
        os.remove(root / "a" / "2.png")
        samples, gone = main_job.on_disk(dataset, folder_based=True)
        assert gone == 1 and len(samples) == 2 and len(dataset) == 3
        assert str(root / "a" / "2.png") not in samples.values("filepath")
        assert main_job.on_disk(dataset, folder_based=False) == (dataset, 0)
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)


@pytest.mark.slow
def test_rerun_after_images_were_deleted_and_labels_cleared_and_one_job_at_a_time(tmp_path):
    """Images deleted from the folder were selected again and refused by the export on every
    rerun; a None ground_truth label crashed the summary; a second main job on the same
    dataset and key ran into the first one's export; --mode typical --beta 0.2 was refused
    only after three stages had written."""
    import fiftyone as fo

    from fiftyone_elfs import leases
    from fiftyone_elfs.dataset_io import dataset_id
    from fiftyone_elfs.sample_data import write_digit_images

    images = write_digit_images(str(tmp_path / "digits"), per_class=6)
    env = dict(os.environ, FIFTYONE_DATABASE_DIR=str(tmp_path / "db"))
    base = [
        sys.executable,
        os.path.join(REPO, "examples", "select_coreset.py"),
        *("--images-dir", images, "--workdir", str(tmp_path / "work")),
        *("--clustering", "kmeans", "--clusters", "4", "--budget-count", "10"),
    ]

    def main_job(*flags: str) -> subprocess.CompletedProcess:
        return subprocess.run([*base, *flags], env=env, capture_output=True, text=True, timeout=900)

    try:
        first = main_job()
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        assert "stage wall times: embeddings " in first.stdout
        assert "export " in first.stdout
        dataset = fo.load_dataset("elfs-digits")
        n = len(dataset)
        gone = sorted(dataset.match_tags("elfs_coreset").values("filepath"))[:2]
        for path in gone:
            os.remove(path)
        sample = dataset.exists("ground_truth").first()
        sample["ground_truth"] = None
        sample.save()
        again = main_job()
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert f"Dataset 'elfs-digits': {n - 2} images" in again.stdout
        assert (
            "2 images of this dataset are no longer in the folder: left out, kept in the dataset"
        ) in again.stdout
        assert f"selected 10 of {n - 2} samples" in again.stdout
        assert "cluster accuracy vs ground_truth" in again.stdout
        dataset.reload()  # the run records another process wrote
        assert len(dataset) == n
        assert not set(gone) & set(dataset.match_tags("elfs_coreset").values("filepath"))

        before = dataset.get_run_info("elfs_pseudo_labels").timestamp
        contradictory = main_job("--mode", "typical", "--beta", "0.2")
        assert contradictory.returncode == 2 and "--beta" in contradictory.stderr
        assert "Traceback" not in contradictory.stderr
        dataset.reload()
        assert dataset.get_run_info("elfs_pseudo_labels").timestamp == before

        with leases.hold(dataset_id(dataset), "elfs", ["main_job"]):  # another main job
            busy = main_job()
        assert busy.returncode == 2, busy.stdout[-3000:] + busy.stderr[-3000:]
        assert "Another main job on dataset 'elfs-digits' with key 'elfs'" in busy.stderr
        assert "embeddings" not in busy.stdout
    finally:
        if fo.dataset_exists("elfs-digits"):
            fo.delete_dataset("elfs-digits")


def test_folders_whose_dataset_names_differ_only_by_slug_get_their_own_datasets(tmp_path):
    """Audit 'firsthour' #1: 'Pics' after 'pics' crashed on FiftyOne's 'slug in use' (names
    were compared exactly; FiftyOne compares their URL slugs)."""
    import fiftyone as fo

    main_job = _main_job_module()
    stem = f"elfs-slug-{os.getpid()}"
    made = []
    try:
        for folder, name in (("a/pics", f"{stem}-pics"), ("b/Pics", f"{stem}-Pics")):
            _png(tmp_path / folder / "x.png")
            made.append(main_job.dataset_from_folder(name, str(tmp_path / folder)))
        assert made[1].name == f"{stem}-Pics-2" and len(made[1]) == 1
        again = main_job.dataset_from_folder(f"{stem}-Pics", str(tmp_path / "b/Pics"))
        assert again.name == made[1].name  # found again, not a third dataset
    finally:
        for dataset in made:
            if fo.dataset_exists(dataset.name):
                fo.delete_dataset(dataset.name)


def test_a_workdir_inside_the_images_folder_is_not_read_as_images(tmp_path, capsys):
    """Audit 'firsthour' #2: the run's own exports (copies) came back as new images."""
    import fiftyone as fo

    main_job = _main_job_module()
    root = tmp_path / "photos"
    _png(root / "cat" / "a.png")
    _png(root / "elfs_output" / "export" / "media" / "a.png")  # an earlier run's export
    name = f"elfs-inside-{os.getpid()}"
    try:
        dataset = main_job.dataset_from_folder(name, str(root), str(root / "elfs_output"))
        assert dataset.values("filepath") == [str(root / "cat" / "a.png")]
        assert "is inside" in capsys.readouterr().out
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)
    # audit 'regress4' #1: a workdir that is the images folder or a class folder of it keeps
    # their images (only what the command writes there is left out)
    for n, workdir in enumerate(("", "cat")):
        other = tmp_path / f"pics{n}"
        _png(other / "cat" / "a.png")
        _png(other / workdir / "export" / "media" / "a.png")
        try:
            dataset = main_job.dataset_from_folder(name, str(other), str(other / workdir))
            assert dataset.values("filepath") == [str(other / "cat" / "a.png")]
        finally:
            if fo.dataset_exists(name):
                fo.delete_dataset(name)


def test_the_app_command_pastes_into_a_shell_and_an_empty_dataset_names_the_fix():
    """Audit 'firsthour' #4 and #5."""
    import shlex

    import fiftyone as fo

    main_job = _main_job_module()
    words = shlex.split(main_job.app_command("elfs-My scans (2024)"))
    assert words[1:] == ["app", "elfs-My scans (2024)"]
    empty = fo.Dataset()
    try:
        args = main_job.parse_args(["--dataset", empty.name])
        with pytest.raises(main_job.UsageError, match="has no samples. Fix: add images"):
            main_job.check_data(empty, args)
    finally:
        empty.delete()
