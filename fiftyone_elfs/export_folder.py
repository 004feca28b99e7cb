"""The export folder as a transaction: outputs written beside, moved into place, recorded.

Plain file operations, no FiftyOne: `fiftyone_elfs.export` decides what to write, this module
makes sure a user never sees half an export and never loses a file the exporter did not write.

- ``.elfs-export.json`` (`RECORD`) lists every file a complete export wrote (and the earlier
  export's outputs it kept); only those are ever replaced (`check_replaceable`).
- ``.elfs-export-incomplete.json`` (`INCOMPLETE`) announces an export in progress and names
  its staging folder; removing it is the commit point (`commit`).
- `recover` rolls an interrupted export back to the folder as it was before.
- ``.elfs-export.lock`` (`LOCK`) is held by the export running in the folder
  (`fiftyone_elfs.export_lock.exclusive`), so a second export is refused.
- An output of the earlier export that the new one does not write is kept, and stays recorded
  (`kept_outputs`); `fiftyone_elfs.export` decides whether keeping it is consistent.
- Output file names keep each image's base name and never collide (`unique_names`).
- An output that is a file and was changed since it was written (its sha256), or a file inside
  an output folder that was (its size and modification time), is the user's, never replaced.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from typing import Any

from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.faults import kill_point

RECORD = ".elfs-export.json"
INCOMPLETE = ".elfs-export-incomplete.json"
LOCK = ".elfs-export.lock"
STAGING_PREFIX = ".elfs-export-staging-"
_PREVIOUS = ".previous"  # inside the staging folder: the earlier export's outputs, moved aside
_BOOKKEEPING = (RECORD, INCOMPLETE, RECORD + ".tmp", INCOMPLETE + ".tmp", LOCK)
_logger = logging.getLogger(__name__)


def _is_ours(entry: str) -> bool:
    """Whether a top-level name in an export folder is this exporter's bookkeeping."""
    return entry in _BOOKKEEPING or entry.startswith(STAGING_PREFIX)


def check_export_dir(export_dir: str, overwrite: bool) -> str:
    """The absolute folder, or an error if it cannot be a folder, or is not empty without
    `overwrite` (this exporter's bookkeeping files do not count)."""
    export_dir = os.path.abspath(os.path.expanduser(export_dir))
    if os.path.isfile(export_dir):
        raise ElfsInputError(
            f"export_dir '{export_dir}' is a file. Fix: pass a folder path.", param="export_dir"
        )
    parent = export_dir
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ElfsInputError(
            f"export_dir '{export_dir}' cannot be created: '{parent}' is a file. Fix: pass a "
            "folder path that is not inside a file.",
            param="export_dir",
        )
    if not os.access(parent, os.W_OK):
        raise ElfsInputError(
            f"export_dir '{export_dir}' cannot be written: no write permission on '{parent}'. "
            "Fix: pass a folder you can write to.",
            param="export_dir",
        )
    existing = (
        [e for e in os.listdir(export_dir) if not _is_ours(e)] if os.path.isdir(export_dir) else []
    )
    if existing and not overwrite:
        raise ElfsInputError(
            f"export_dir '{export_dir}' exists and is not empty; refusing to overwrite it. "
            "Fix: pass a new folder, or overwrite=True to replace this exporter's outputs there.",
            param="export_dir",
        )
    return export_dir


def read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_json(path: str, content: dict[str, Any]) -> None:
    """Writes a small JSON file atomically (a reader sees the old or the new one, whole)."""
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(content, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def _files_under(path: str) -> list[str]:
    """Relative paths of the files of a folder (or [] for a file)."""
    if not os.path.isdir(path):
        return []
    return sorted(
        os.path.relpath(os.path.join(root, name), path)
        for root, _, files in os.walk(path)
        for name in files
    )


def _digests(export_dir: str, names: Sequence[str]) -> dict[str, str]:
    """sha256 of each output that is a file (the manifest, the Label Studio files): one edited
    since (a reviewer's column) is the user's now, and is never replaced."""
    out = {}
    for name in names:
        if os.path.isfile(path := os.path.join(export_dir, name)):
            with open(path, "rb") as f:
                out[name] = hashlib.sha256(f.read()).hexdigest()
    return out


def _stamps(export_dir: str, names: Sequence[str]) -> dict[str, dict[str, list[int]]]:
    """Size and modification time of every file of each output that is a folder (`media/`,
    `fiftyone_dataset/`): an image edited since (a reviewer's redaction) is the user's, never
    replaced. (Not a digest: reading back every exported image would cost as much as the
    export.)"""
    out = {}
    for name in names:
        folder = os.path.join(export_dir, name)
        if os.path.isdir(folder) and not os.path.islink(folder):
            out[name] = {}
            for relative in _files_under(folder):
                stat = os.stat(os.path.join(folder, relative))
                out[name][relative] = [stat.st_size, stat.st_mtime_ns]
    return out


def _changed_files(export_dir: str, name: str, recorded: dict[str, list[int]]) -> list[str]:
    """The files of output folder `name` whose size or modification time is not the recorded."""
    current = _stamps(export_dir, [name]).get(name, {})
    return sorted(f for f, stamp in recorded.items() if f in current and current[f] != stamp)


def unique_names(paths: list[str]) -> list[str]:
    """Output file names that keep each image's base name and never collide (case-insensitive):
    the second ``img.png`` becomes ``img-1.png``; linear in the number of paths, however many
    share a name (the next suffix to try is kept per name)."""
    used: set[str] = set()
    next_suffix: dict[str, int] = {}
    names = []
    for path in paths:
        stem, ext = os.path.splitext(os.path.basename(path))
        name, base = stem + ext, (stem + ext).lower()
        count = next_suffix.get(base, 1)
        while name.lower() in used:
            name, count = _suffixed(stem, count, ext), count + 1
        next_suffix[base] = count
        used.add(name.lower())
        names.append(name)
    return names


#: The longest file name (in bytes) most file systems take.
_MAX_NAME_BYTES = 255


def _suffixed(stem: str, count: int, ext: str) -> str:
    """``<stem>-<count><ext>``, the stem shortened (whole characters) where the name would pass
    `_MAX_NAME_BYTES`: a legal name made longer by its suffix failed the export."""
    tail = f"-{count}{ext}"
    room = _MAX_NAME_BYTES - len(tail.encode())
    return stem.encode()[: max(room, 1)].decode("utf-8", "ignore") + tail


def recover(export_dir: str) -> bool:
    """Rolls back an interrupted export in `export_dir`; returns whether there was one.

    Restores the folder as it was before that export began: while it was writing, only its
    staging folder existed; once it was committing, its outputs already moved into place are
    removed and the earlier export's outputs and record moved back. The marker goes last.
    """
    marker_path = os.path.join(export_dir, INCOMPLETE)
    marker = read_json(marker_path)
    if marker is not None and marker.get("phase") == "committing":
        staging = os.path.join(export_dir, marker["staging"])
        for name in marker["outputs"]:
            if not os.path.lexists(os.path.join(staging, name)):  # already moved into place
                _remove(os.path.join(export_dir, name))
        previous = os.path.join(staging, _PREVIOUS)
        for name in os.listdir(previous) if os.path.isdir(previous) else []:
            _remove(os.path.join(export_dir, name))
            os.rename(os.path.join(previous, name), os.path.join(export_dir, name))
        if not marker.get("had_record"):
            _remove(os.path.join(export_dir, RECORD))
    found = marker is not None
    for entry in os.listdir(export_dir):
        if entry.startswith(STAGING_PREFIX) or entry in (RECORD + ".tmp", INCOMPLETE + ".tmp"):
            _remove(os.path.join(export_dir, entry))
            found = True
    if marker is not None:
        os.remove(marker_path)
    return found


def check_replaceable(export_dir: str, names: Sequence[str]) -> dict[str, Any] | None:
    """The earlier export's record, after checking that every existing output name the new
    export writes is that export's own (nothing else of the user's would be replaced)."""
    record = read_json(os.path.join(export_dir, RECORD))
    own: dict[str, list[str]] = (record or {}).get("outputs", {})
    for name in names:
        path = os.path.join(export_dir, name)
        if not os.path.lexists(path):
            continue
        if name not in own:
            raise ElfsInputError(
                f"'{path}' exists, and no earlier export by fiftyone-elfs recorded it as its own "
                "(it may be yours); refusing to replace it. Fix: move it away, or export to "
                "another folder.",
                param="export_dir",
            )
        recorded = (record or {}).get("digests", {}).get(name)
        if recorded and _digests(export_dir, [name]).get(name) != recorded:
            raise ElfsInputError(
                f"'{path}' was changed since the earlier export wrote it (an edit of yours?); "
                "refusing to replace it. Fix: move it away, or export to another folder.",
                param="export_dir",
            )
        changed = _changed_files(export_dir, name, (record or {}).get("stamps", {}).get(name, {}))
        if changed:
            raise ElfsInputError(
                f"'{path}' holds {len(changed)} files changed since the earlier export wrote them "
                f"(edits of yours?), e.g. {changed[:3]}; refusing to replace them. Fix: move them "
                "away, or export to another folder.",
                param="export_dir",
            )
        foreign = sorted(set(_files_under(path)) - set(own[name]))
        if foreign:
            raise ElfsInputError(
                f"'{path}' holds {len(foreign)} files that the earlier export did not write "
                f"(e.g. {foreign[:3]}); refusing to replace them. Fix: move them out, or export "
                "to another folder.",
                param="export_dir",
            )
    return record


def kept_outputs(
    export_dir: str, earlier: dict[str, Any] | None, names: Sequence[str]
) -> dict[str, list[str]]:
    """The earlier export's outputs (with their recorded files) that are still in the folder
    and that an export writing `names` leaves in place: they stay recorded as the folder's."""
    own: dict[str, list[str]] = (earlier or {}).get("outputs", {})
    return {
        name: files
        for name, files in own.items()
        if name not in names and os.path.lexists(os.path.join(export_dir, name))
    }


def identity(key: str | None, samples: list[tuple[str, str, str]]) -> str:
    """A digest of an export's key and its (sample id, media file, source file) triples."""
    text = json.dumps([key, sorted(samples)], ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def recorded_identity(export_dir: str, record: dict[str, Any], manifest: str) -> str | None:
    """The `identity` an earlier export recorded; for a record from before identities were
    recorded, computed from its `manifest` (a CSV). None when neither says."""
    if record.get("identity"):
        return record["identity"]
    path = os.path.join(export_dir, manifest)
    if manifest not in record.get("outputs", {}) or not os.path.isfile(path):
        return None
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        samples = [(r["sample_id"], r["filename"], r["source_filepath"]) for r in rows]
    except (OSError, KeyError, ValueError):
        return None
    return identity(record.get("key"), samples)


def commit(
    export_dir: str,
    staging: str,
    outputs: list[str],
    earlier: dict[str, Any] | None,
    about: dict[str, Any],
) -> None:
    """Moves the earlier export's outputs that are replaced aside and the new outputs into
    place, then records them with the kept ones and `about` (key, sample count, identity)."""
    marker_path = os.path.join(export_dir, INCOMPLETE)
    _write_json(marker_path, {**(read_json(marker_path) or {}), "phase": "committing"})
    kept = kept_outputs(export_dir, earlier, outputs)
    previous = os.path.join(staging, _PREVIOUS)
    os.makedirs(previous)
    replaced = [n for n in (earlier or {}).get("outputs", {}) if n in outputs]
    for name in [*replaced, *([RECORD] if earlier else [])]:
        if os.path.lexists(os.path.join(export_dir, name)):
            os.rename(os.path.join(export_dir, name), os.path.join(previous, name))
            kill_point("export", "commit")
    for name in outputs:
        os.rename(os.path.join(staging, name), os.path.join(export_dir, name))
        kill_point("export", "commit")
    record = {
        "written_by": "fiftyone-elfs export_coreset",
        **about,
        "outputs": {
            **kept,
            **{name: _files_under(os.path.join(export_dir, name)) for name in outputs},
        },
        "kept_from_earlier_export": sorted(kept),
        "digests": {
            **{k: v for k, v in (earlier or {}).get("digests", {}).items() if k in kept},
            **_digests(export_dir, outputs),
        },
        "stamps": {
            **{k: v for k, v in (earlier or {}).get("stamps", {}).items() if k in kept},
            **_stamps(export_dir, outputs),
        },
    }
    _write_json(os.path.join(export_dir, RECORD), record)
    kill_point("export", "before_marker_removal")
    os.remove(marker_path)  # the commit point
    shutil.rmtree(staging)


def begin(export_dir: str, outputs: list[str], had_record: bool) -> str:
    """Announces an export (the marker) and creates its staging folder; returns that folder."""
    staging_name = f"{STAGING_PREFIX}{uuid.uuid4().hex[:8]}"
    os.makedirs(export_dir, exist_ok=True)
    _write_json(
        os.path.join(export_dir, INCOMPLETE),
        {
            "staging": staging_name,
            "outputs": outputs,
            "had_record": had_record,
            "phase": "writing",
            "note": "An export by fiftyone-elfs is running here, or was interrupted (then "
            "the next export rolls it back). Outputs in this folder may be incomplete until "
            "then.",
        },
    )
    staging = os.path.join(export_dir, staging_name)
    os.makedirs(staging)
    return staging
