"""How ELFS tells an output its run wrote from a same-named one of the user's.

A run records the names of its outputs, and a journal entry the names an unfinished operation
may leave (`fiftyone_elfs.journal`). A name alone proves nothing: the user may delete an output
and make their own under its name, and ELFS must then keep that one. What proves it:

- a field: the mark of the run's (key, stage) in the field's info, which a field ELFS creates
  carries from its first moment (`dataset_io.field_mark`; runs from before marks: the name);
- a saved view: ELFS's description of it and a single match of one tag (`view_saved_by`);
- a brain run (the embedding plot): registered no later than the run that records it (a stage
  registers its layout, then its run; `brain_run_before`);
- a tag: nothing on its own (the saved view that shows it, `fiftyone_elfs.stages.leftovers`).
"""

from __future__ import annotations

import logging
from typing import Any

import fiftyone as fo

from fiftyone_elfs import dataset_io

logger = logging.getLogger(__name__)


def mark(key: str, stage: str) -> dict[str, str]:
    """The mark a run of (key, stage) leaves on the fields it writes (`dataset_io.field_mark`)."""
    return {"key": key, "stage": stage}


def still_owned(dataset: fo.Dataset, config: Any, kind: str, name: str) -> bool:
    """Whether an output a run recorded (`config`: its record) is still the one it wrote, not
    one the user made under its name since. Tags, absent outputs, and fields of runs from
    before marks: True."""
    key, stage = config.elfs_key, config.stage
    if kind == "owned_fields":
        if not getattr(config, "marks_fields", False) or not dataset_io.has_field(dataset, name):
            return True
        return dataset_io.field_mark(dataset, name) == mark(key, stage)
    if kind == "owned_views":
        if not dataset_io.has_saved_view(dataset, name):
            return True
        return view_saved_by(dataset, key, stage, name) is not None
    if kind == "owned_brain_runs":
        if name not in dataset_io.brain_runs(dataset):
            return True
        return brain_run_before(dataset, name, f"{key}_{stage}")
    return True


#: Why a field a run records may lack the mark the run left on it.
UNMARKED_FIELD_WHY = (
    "it was deleted and made again since (by you or another tool), or its field info was "
    "dropped (an export and import as LegacyFiftyOneDataset drops it)"
)


def warn_kept_fields(fields: list[str], key: str, stage: str) -> None:
    """Logs the fields a run records that deleting the run keeps, as they lack its mark."""
    if fields:
        logger.warning(
            "Kept the field(s) %s that the %s run of key '%s' recorded: they no longer carry "
            "ELFS's mark (%s). If they are the key's, delete them: "
            "dataset.delete_sample_field(<name>).",
            fields,
            stage,
            key,
            UNMARKED_FIELD_WHY,
        )


def left_by(dataset: fo.Dataset, entry: dict[str, Any], field: str) -> bool:
    """Whether a field a journal entry lists is the unfinished operation's to delete: it carries
    the entry's mark, or the entry says it may lack one; not a field the user created under
    that name since. Entries from before marks: every listed field."""
    if not entry.get("fields_marked") or field in entry.get("unmarked_fields", []):
        return True
    if not dataset_io.has_field(dataset, field):
        return True  # nothing left: deleting it changes nothing
    return dataset_io.field_mark(dataset, field) == mark(entry["key"], entry["stage"])


def view_saved_by(dataset: fo.Dataset, key: str, stage: str, view: str) -> str | None:
    """The tag a saved view shows if it is the one (key, stage) saved: ELFS's description of it
    and a single match of one tag (`stages.selection`, `stages.selection_rounds`), after the
    image slices of a grouped dataset (`dataset_io.save_tagged_view`); else None."""
    info = next((i for i in dataset.list_saved_views(info=True) if i["name"] == view), {})
    words = "coreset" if stage == "coreset" else f"round {stage[len('round') :]} of"
    if not (info.get("description") or "").startswith(f"ELFS {words} '{key}':"):
        return None
    stages = dataset.load_saved_view(view)._serialize(include_uuids=False)
    if len(stages) == 2 and stages[0].get("_cls", "").endswith(".SelectGroupSlices"):
        stages = stages[1:]
    if len(stages) != 1 or not stages[0].get("_cls", "").endswith(".MatchTags"):
        return None
    tags = dict(stages[0].get("kwargs") or []).get("tags")
    return tags[0] if isinstance(tags, list) and len(tags) == 1 else None


def brain_run_before(dataset: fo.Dataset, brain_key: str, run_key: str) -> bool:
    """Whether a brain run exists and was registered before the run `run_key` (a stage
    registers its layout, then its run): not one the user computed under that key since."""
    if brain_key not in dataset_io.brain_runs(dataset):
        return False
    try:
        brain = dataset.get_brain_info(brain_key).timestamp
        return brain is not None and brain <= dataset.get_run_info(run_key).timestamp
    except (TypeError, ValueError):
        return False
