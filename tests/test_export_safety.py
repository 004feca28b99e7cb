"""Export folders that annotators may already use: an overwrite with fewer formats keeps the
earlier export's other outputs (or is refused when they describe another coreset), and a second
export into a folder is refused while the first runs (in this process or another), yet an
export killed with ``kill -9`` is still rolled back by the next one."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
import time
import uuid

import fiftyone as fo
import pytest

import fiftyone_elfs as elfs
from fiftyone_elfs import export, export_folder
from fiftyone_elfs.errors import ElfsInputError

KEY = "k"
BUDGET = 8
CLASSES = ["airplane", "automobile", "bird", "cat"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABEL_STUDIO_SIDE = [
    export.MEDIA_DIR,
    export.MANIFEST,
    export.LABEL_STUDIO_TASKS,
    export.LABEL_STUDIO_CONFIG,
]


def _files(folder: str) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones too) by relative path, with its bytes."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def _side(folder: str) -> dict[str, bytes]:
    """The files of the media + Label Studio outputs (what a Label Studio storage serves)."""
    return {
        rel: data
        for rel, data in _files(folder).items()
        if rel.split(os.sep)[0] in LABEL_STUDIO_SIDE
    }


def _record(folder: str) -> dict:
    with open(os.path.join(folder, export_folder.RECORD)) as f:
        return json.load(f)


def _manifest_ids(folder: str) -> set[str]:
    with open(os.path.join(folder, export.MANIFEST), newline="") as f:
        return {r["sample_id"] for r in csv.DictReader(f)}


def _assert_complete(folder: str, n: int) -> None:
    """A committed export of `n` samples: no marker, staging folder or lock left behind."""
    left = [e for e in os.listdir(folder) if e.startswith(".elfs") and e != export_folder.RECORD]
    assert left == []
    assert len(os.listdir(os.path.join(folder, export.MEDIA_DIR))) == n
    assert len(_manifest_ids(folder)) == n


# --------------------------------------------------------------------------- finding 2


def test_an_overwrite_with_fewer_formats_keeps_and_records_what_it_does_not_write(ds, tmp_path):
    """The Label Studio side of an earlier export (media a storage serves, tasks, manifest) is
    neither deleted nor rewritten by an overwrite that asks only for a FiftyOne copy of the same
    coreset, and stays recorded, so a later full overwrite still replaces it."""
    out = str(tmp_path / "export")
    elfs.export_coreset(ds, out, key=KEY, classes=CLASSES)
    served = _side(out)
    media_inode = os.stat(os.path.join(out, export.MEDIA_DIR)).st_ino

    paths = elfs.export_coreset(ds, out, key=KEY, formats=["fiftyone"], overwrite=True)

    assert set(paths) == {"fiftyone"}
    assert _side(out) == served
    assert os.stat(os.path.join(out, export.MEDIA_DIR)).st_ino == media_inode
    record = _record(out)
    assert set(record["outputs"]) == {*LABEL_STUDIO_SIDE, export.FIFTYONE_DIR}
    assert sorted(record["kept_from_earlier_export"]) == sorted(LABEL_STUDIO_SIDE)
    assert record["outputs"][export.MEDIA_DIR] == sorted(os.listdir(os.path.join(out, "media")))
    _assert_complete(out, BUDGET)

    # recorded as the folder's: a full overwrite replaces them (no "not recorded" refusal)
    (tmp_path / "export" / "notes.txt").write_text("mine")
    elfs.export_coreset(ds, out, key=KEY, overwrite=True)
    assert set(_record(out)["outputs"]) == {*LABEL_STUDIO_SIDE, export.FIFTYONE_DIR}
    assert _record(out)["kept_from_earlier_export"] == []
    assert (tmp_path / "export" / "notes.txt").read_text() == "mine"


def test_an_overwrite_that_would_mix_two_coresets_is_refused_before_anything_changes(ds, tmp_path):
    """After the coreset changed, keeping the earlier media and tasks beside a dataset of the
    new coreset would mix two coresets: refused, naming them and the formats that fix it."""
    out = str(tmp_path / "export")
    elfs.export_coreset(ds, out, key=KEY, classes=CLASSES)
    before = _files(out)
    elfs.select_coreset(ds, key=KEY, budget_count=BUDGET - 3)  # a new selection, same key

    with pytest.raises(ElfsInputError) as refused:
        elfs.export_coreset(ds, out, key=KEY, formats=["fiftyone"], overwrite=True)

    message = str(refused.value)
    for name in LABEL_STUDIO_SIDE:
        assert name in message
    assert f"{BUDGET} samples then" in message and f"{BUDGET - 3} samples now" in message
    assert "Fix: export with formats=['media', 'fiftyone', 'labelstudio']" in message
    assert _files(out) == before  # nothing changed, no lock or marker left behind

    elfs.export_coreset(ds, out, key=KEY, overwrite=True)  # the fix it names
    assert _manifest_ids(out) == set(ds.match_tags(f"{KEY}_coreset").values("id"))
    _assert_complete(out, BUDGET - 3)


def _as_before_identities(folder: str) -> None:
    """Rewrites the record as an earlier version wrote it: no coreset identity, no kept list."""
    old = {
        k: v
        for k, v in _record(folder).items()
        if k not in ("identity", "kept_from_earlier_export")
    }
    with open(os.path.join(folder, export_folder.RECORD), "w") as f:
        json.dump(old, f)


def test_a_record_from_before_identities_is_matched_through_its_manifest(ds, tmp_path):
    """An export folder written by an earlier version (its record names no coreset identity):
    the same coreset is recognised from the manifest and its outputs kept; another is refused."""
    out = str(tmp_path / "export")
    elfs.export_coreset(ds, out, key=KEY, classes=CLASSES)
    _as_before_identities(out)
    served = _side(out)

    elfs.export_coreset(ds, out, key=KEY, formats=["fiftyone"], overwrite=True)
    assert _side(out) == served

    _as_before_identities(out)
    elfs.select_coreset(ds, key=KEY, budget_count=BUDGET - 2)
    with pytest.raises(ElfsInputError, match="another coreset.*Fix:"):
        elfs.export_coreset(ds, out, key=KEY, formats=["fiftyone"], overwrite=True)
    assert _side(out) == served


# --------------------------------------------------------------------------- finding 6


def test_a_second_export_while_one_runs_in_this_process_is_refused(ds, tmp_path, monkeypatch):
    """Export A (another thread, e.g. the App's form run twice) is stalled in its copy; export
    B into the same folder, without and with overwrite, is refused naming A, and A then
    finishes whole (before, B deleted A's staging folder and A died with FileNotFoundError)."""
    out = str(tmp_path / "export")
    copying, go_on = threading.Event(), threading.Event()
    copy2 = export.shutil.copy2

    def stalled_copy(*args, **kwargs):
        if threading.current_thread().name == "export-A" and not copying.is_set():
            copying.set()
            go_on.wait(120)
        return copy2(*args, **kwargs)

    monkeypatch.setattr(export.shutil, "copy2", stalled_copy)
    errors: list[BaseException] = []

    def run_a():
        try:
            elfs.export_coreset(ds, out, key=KEY, classes=CLASSES)
        except BaseException as e:  # reported by the test, not lost in the thread
            errors.append(e)

    a = threading.Thread(target=run_a, name="export-A")
    a.start()
    try:
        assert copying.wait(120), "export A never started copying"
        for overwrite in (False, True):
            with pytest.raises(ElfsInputError, match="in progress") as refused:
                elfs.export_coreset(ds, out, key=KEY, overwrite=overwrite)
            assert f"pid {os.getpid()}" in str(refused.value) and "Fix:" in str(refused.value)
        assert os.path.exists(os.path.join(out, export_folder.INCOMPLETE))
    finally:
        go_on.set()
        a.join(300)
    assert errors == []
    _assert_complete(out, BUDGET)
    assert _record(out)["n_samples"] == BUDGET


def test_an_export_in_another_process_is_refused_until_killed_then_rolled_back(ds, tmp_path):
    """A real second process exports into the folder and stalls in its copy: an export here is
    refused naming that process; after ``kill -9`` the next export rolls the interrupted one
    back and completes (the lock dies with its process: no waiting, no expiry)."""
    out = str(tmp_path / "export")
    ready = tmp_path / "copying"
    ds.persistent = True  # loaded by name in the other process
    code = (
        "import time, fiftyone as fo, fiftyone_elfs as elfs\n"
        "from fiftyone_elfs import export\n"
        "def stalled(*args, **kwargs):\n"
        f"    open({str(ready)!r}, 'w').close()\n"
        "    time.sleep(600)\n"
        "export.shutil.copy2 = stalled\n"
        f"elfs.export_coreset(fo.load_dataset({ds.name!r}), {out!r}, key={KEY!r})\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with open(tmp_path / "child.log", "w") as log:
        child = subprocess.Popen(
            [sys.executable, "-c", code], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.time() + 300
        while not ready.exists():
            assert child.poll() is None, (tmp_path / "child.log").read_text()[-3000:]
            assert time.time() < deadline, "the other export never started copying"
            time.sleep(0.2)
        with pytest.raises(ElfsInputError, match="in progress") as refused:
            elfs.export_coreset(ds, out, key=KEY, overwrite=True)
        assert f"process {child.pid} on host" in str(refused.value)
        assert os.path.exists(os.path.join(out, export_folder.INCOMPLETE))  # its work untouched
    finally:
        child.kill()  # SIGKILL: no cleanup in the child
        child.wait(60)
    assert os.path.exists(os.path.join(out, export_folder.INCOMPLETE))

    elfs.export_coreset(ds, out, key=KEY)  # the folder is empty again once rolled back
    _assert_complete(out, BUDGET)


def test_tagged_samples_the_run_did_not_choose_are_named_before_and_at_export(ds, tmp_path, caplog):
    """Samples merged in with the key's coreset tag (or tagged by hand) go with the coreset, as
    the tag is what users curate, but the export form and the export itself say how many, and
    `not_selected_ids` gives them to leave out."""
    from fiftyone.operators.executor import ExecutionContext

    from fiftyone_elfs.plugin.operators import ExportCoreset

    def form_warning():
        ctx = ExecutionContext(request_params={"dataset_name": ds.name, "params": {"key": KEY}})
        props = ExportCoreset().resolve_input(ctx).to_json()["type"]["properties"]
        return props.get("not_selected", {}).get("view", {}).get("label")

    assert elfs.not_selected_ids(ds, key=KEY) == []
    assert form_warning() is None
    selected = set(ds.load_run_results(f"{KEY}_coreset").selected_ids)
    merged = [i for i in ds.values("id") if i not in selected][:3]
    ds.select(merged).tag_samples(f"{KEY}_coreset")  # as merge_samples / add_collection do

    assert sorted(elfs.not_selected_ids(ds, key=KEY)) == sorted(merged)
    assert "3 of the samples tagged 'k_coreset' were not chosen" in form_warning()
    with caplog.at_level("WARNING", logger="fiftyone_elfs.export"):
        export.export_coreset(ds, str(tmp_path / "out"), key=KEY, formats=["media"])
    assert any("3 of the samples tagged" in r.getMessage() for r in caplog.records)
    with open(tmp_path / "out" / export.MANIFEST) as f:
        exported = {row["sample_id"] for row in csv.DictReader(f)}
    assert exported == selected | set(merged)  # the tag decides, as before

    ds.select(elfs.not_selected_ids(ds, key=KEY)).untag_samples(f"{KEY}_coreset")  # the fix named
    assert elfs.not_selected_ids(ds, key=KEY) == [] and form_warning() is None


def test_an_export_from_a_view_holding_part_of_the_coreset_says_so(ds, tmp_path, caplog):
    """Audit 'views' #2: the export form's default target is the App's current view, and from
    a view holding half of the coreset half was exported, recorded as the coreset, silently."""
    from fiftyone.operators.executor import ExecutionContext

    from fiftyone_elfs.plugin.operators import ExportCoreset

    tagged = ds.match_tags(f"{KEY}_coreset").values("id")
    half = ds.exclude(tagged[: len(tagged) // 2])
    n_in = len(tagged) - len(tagged) // 2

    def form_warning(view):
        request = {"dataset_name": ds.name, "params": {"key": KEY}}
        if view is not None:
            request["view"] = view._serialize()
        ctx = ExecutionContext(request_params=request)
        props = ExportCoreset().resolve_input(ctx).to_json()["type"]["properties"]
        return props.get("part_of_coreset", {}).get("view", {}).get("label")

    assert form_warning(None) is None and form_warning(ds.match_tags(f"{KEY}_coreset")) is None
    said = f"This view holds {n_in} of the {len(tagged)} samples tagged '{KEY}_coreset'"
    assert form_warning(half).startswith(said)
    with caplog.at_level("WARNING", logger="fiftyone_elfs.export"):
        export.export_coreset(half, str(tmp_path / "out"), key=KEY, formats=["media"])
    assert any(r.getMessage().startswith(said) for r in caplog.records)
    assert len(_manifest_ids(str(tmp_path / "out"))) == n_in  # the view decides, as before


def _unique_names_reference(paths):
    """The plain rule: each name takes the first free suffix, trying 1, 2, ... in turn."""
    used, names = set(), []
    for path in paths:
        stem, ext = os.path.splitext(os.path.basename(path))
        name, count = stem + ext, 1
        while name.lower() in used:
            name, count = f"{stem}-{count}{ext}", count + 1
        used.add(name.lower())
        names.append(name)
    return names


def test_output_names_are_those_of_the_plain_rule_and_never_collide():
    """Names shared by many images (one folder per sample, video frames) get the same suffixes
    as before, now without retrying every taken suffix for each image."""
    import random

    rng = random.Random(0)
    stems = ["img", "IMG", "img-1", "img-2", "a", "frame"]
    for _ in range(200):
        paths = [
            f"/d/{i}/{rng.choice(stems)}{rng.choice(['.png', '.PNG', '.jpg'])}"
            for i in range(rng.randint(1, 60))
        ]
        names = export_folder.unique_names(paths)
        assert names == _unique_names_reference(paths)
        assert len({n.lower() for n in names}) == len(names)
    shared = [f"/d/{i}/img.png" for i in range(20000)]
    names = export_folder.unique_names(shared)
    assert names[0] == "img.png" and names[-1] == "img-19999.png"


def test_an_export_folder_that_cannot_be_created_is_a_clear_error(ds):
    """A folder the system refuses (a read-only or virtual file system) is named, with the fix."""
    with pytest.raises(ElfsInputError, match=r"export_dir '/proc/elfs-export-.*Fix: pass a folder"):
        export.export_coreset(ds, f"/proc/elfs-export-{uuid.uuid4().hex[:6]}", key=KEY)


def test_a_coreset_whose_tag_was_removed_names_the_tag_and_how_to_put_it_back(ds, tmp_path):
    """The refusal said to export from the dataset, which is what the user had just done."""
    ds.untag_samples(f"{KEY}_coreset")
    with pytest.raises(
        ElfsInputError, match="No sample of the dataset carries the coreset tag"
    ) as e:
        export.export_coreset(ds, str(tmp_path / "out"), key=KEY)
    fix = str(e.value).split("Fix: tag the run's selection again, ", 1)[1].split(", or run")[0]
    eval(fix, {"dataset": ds})  # the fix as printed
    export.export_coreset(ds, str(tmp_path / "out"), key=KEY, formats=["media"])
    assert len(os.listdir(tmp_path / "out" / export.MEDIA_DIR)) == BUDGET


def test_a_later_round_is_named_as_such_with_the_ways_to_hand_it_over(ds, tmp_path):
    """Round 2's view was refused as lacking "the selected samples", which it held."""
    more = elfs.select_more(ds, key=KEY, budget_count=4)
    view = ds.match_tags(more.tag)
    with pytest.raises(
        ElfsInputError, match=rf"later round of key '{KEY}' \(tags \['{more.tag}'\]\)"
    ):
        export.export_coreset(view, str(tmp_path / "out"), key=KEY)
    assert not os.path.exists(tmp_path / "out")
    # The second fix as printed exports exactly that round's images.
    view.export(str(tmp_path / "out"), dataset_type=fo.types.ImageDirectory)
    assert len(os.listdir(tmp_path / "out")) == len(view) == 4


def test_an_exported_file_edited_since_is_the_users_and_is_not_replaced(ds, tmp_path):
    """A reviewer's column added to manifest.csv was silently replaced by overwrite=True: the
    record listed names only, so an edited output still counted as the exporter's."""
    out = str(tmp_path / "export")
    elfs.export_coreset(ds, out, key=KEY, classes=CLASSES)
    manifest = os.path.join(out, export.MANIFEST)
    with open(manifest, "a", encoding="utf-8") as f:
        f.write("reviewed by ana\n")
    edited, files_before = open(manifest).read(), _files(out)
    with pytest.raises(ElfsInputError, match=r"manifest.csv' was changed since the earlier export"):
        elfs.export_coreset(ds, out, key=KEY, classes=CLASSES, overwrite=True)
    assert open(manifest).read() == edited and _files(out) == files_before
    # Kept (not rewritten) by an export that does not write it, it stays protected.
    elfs.export_coreset(ds, out, key=KEY, formats=["fiftyone"], overwrite=True)
    assert open(manifest).read() == edited
    with pytest.raises(ElfsInputError, match="was changed since"):
        elfs.export_coreset(ds, out, key=KEY, classes=CLASSES, overwrite=True)
    # Moved away, as the fix says: the export goes through.
    os.rename(manifest, str(tmp_path / "my-manifest.csv"))
    elfs.export_coreset(ds, out, key=KEY, classes=CLASSES, overwrite=True)
    _assert_complete(out, BUDGET)


def test_an_exported_image_edited_since_is_the_users_and_is_not_replaced(ds, tmp_path):
    """Audit 'safety' #2: only top-level files were checked, so an image in media/ that a
    reviewer replaced (a redacted version) was silently replaced by overwrite=True."""
    out = str(tmp_path / "export")
    elfs.export_coreset(ds, out, key=KEY, formats=["media"])
    media = os.path.join(out, export.MEDIA_DIR)
    image = os.path.join(media, sorted(os.listdir(media))[0])
    with open(image, "ab") as f:
        f.write(b"redacted")
    files_before = _files(out)
    with pytest.raises(
        ElfsInputError,
        match=r"media' holds 1 files changed since the earlier export.*" + os.path.basename(image),
    ):
        elfs.export_coreset(ds, out, key=KEY, formats=["media"], overwrite=True)
    assert _files(out) == files_before
    # an image put back as it was exported (bytes and time) is the exporter's again
    stamp = _record(out)["stamps"][export.MEDIA_DIR][os.path.basename(image)]
    with open(image, "r+b") as f:
        f.truncate(stamp[0])
    os.utime(image, ns=(stamp[1], stamp[1]))
    elfs.export_coreset(ds, out, key=KEY, formats=["media"], overwrite=True)
    assert len(os.listdir(media)) == BUDGET


def test_a_suffixed_name_stays_within_the_file_name_limit(ds, tmp_path):
    """Audit 'handoff' #6: two images with one legal 254-byte name: the second's suffix made it
    256 bytes, and the export failed with a raw OSError."""
    long_name = "é" * 125 + ".png"  # 254 bytes
    names = export_folder.unique_names([f"/a/{long_name}", f"/b/{long_name}", f"/c/{long_name}"])
    assert names[0] == long_name and len({n.lower() for n in names}) == 3
    assert all(len(n.encode()) <= 255 and n.endswith(".png") for n in names)
    assert names[1].endswith("-1.png") and names[2].endswith("-2.png")
    coreset = ds.match_tags(f"{KEY}_coreset")
    ids, paths = coreset.values("id")[:2], coreset.values("filepath")[:2]
    renamed = {}
    for n, (sample_id, path) in enumerate(zip(ids, paths, strict=True)):
        copy = tmp_path / "sources" / str(n) / long_name
        copy.parent.mkdir(parents=True)
        copy.write_bytes(open(path, "rb").read())
        renamed[sample_id] = str(copy)
    ds.set_values("filepath", renamed, key_field="id")
    out = str(tmp_path / "export")
    elfs.export_coreset(ds, out, key=KEY, formats=["media"])
    assert len(os.listdir(os.path.join(out, export.MEDIA_DIR))) == BUDGET
