"""Provenance: every pipeline stage is a FiftyOne run that records its parameters and what it owns.

A pipeline key (default ``"elfs"``) names the fields, tag, saved view and runs of one selection, so
runs with different keys coexist and deleting a key removes exactly what that key created. The
stages write their runs through `fiftyone_elfs.stages.record`; this module names things, reads
the records back and deletes what a run owns.

Two records make that hold across interruptions (`fiftyone_elfs.stages.record` describes the
protocol):

- the run record (`record_run`), registered together with its results in one update of the
  dataset document: it is the commit point of a stage, and what it lists is owned;
- the journal (`fiftyone_elfs.journal`): before an operation of a
  (key, stage) writes or deletes anything, it lists every name it may leave behind; an entry
  left by a killed run is what `recover` cleans up, and it is how ownership checks tell such
  leftovers from the user's own fields, tags and views.

A run is a stage of a key only under its run key ``<key>_<stage>``: one renamed with FiftyOne's
``rename_run`` is the user's record (`renamed_runs`), and every lookup here agrees on that.
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Callable, Sequence
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

import fiftyone as fo
import fiftyone.core.collections as foc

from fiftyone_elfs import dataset_io, journal, output_proof
from fiftyone_elfs.errors import identifier_error

STAGES = ("embeddings", "pseudo_labels", "difficulty", "contrastive", "coreset", "visualization")
#: A coreset's regions: cut at the hard end, selected, and what the window leaves at the easy
#: end, or a CCS draw or typical selection leaves across the pool.
REGIONS = ("dropped_hard", "coreset", "dropped_easy", "not_drawn")
SCORE_NAMES = ("aum", "forgetting", "el2n")
#: Scores a coreset can be selected on: the proxy's three and the contrastive view similarity.
SELECTION_SCORES = (*SCORE_NAMES, "contrastive")
_METHOD_PREFIX = "fiftyone_elfs."
#: The kinds of names a run owns: attribute of its config -> what it is.
OWNED_KINDS = {
    "owned_fields": "field",
    "owned_tags": "tag",
    "owned_views": "saved view",
    "owned_brain_runs": "brain key",
}


@dataclass(frozen=True)
class PipelineNames:
    """The names of everything a pipeline key creates on a dataset."""

    key: str

    @property
    def embeddings_field(self) -> str:
        return f"{self.key}_embedding"

    @property
    def pseudo_label_field(self) -> str:
        return f"{self.key}_pseudo_label"

    def score_field(self, score: str) -> str:
        return f"{self.key}_{score}"

    @property
    def region_field(self) -> str:
        """Where each scored sample fell: dropped_hard, coreset or dropped_easy (for colouring)."""
        return f"{self.key}_coreset_region"

    @property
    def brain_key(self) -> str:
        """The default brain key of this pipeline's embedding plot."""
        return f"{self.key}_umap"

    @property
    def tag(self) -> str:
        return f"{self.key}_coreset"

    @property
    def saved_view(self) -> str:
        return f"{self.key}-coreset"

    def run_key(self, stage: str) -> str:
        return f"{self.key}_{stage}"

    def round_tag(self, round_no: int) -> str:
        """The tag of a later labeling round (round 1 is the coreset and keeps its own tag)."""
        return f"{self.key}_round{round_no}"

    def round_view(self, round_no: int) -> str:
        return f"{self.key}-round{round_no}"


def round_stage(round_no: int) -> str:
    """The stage name of labeling round `round_no` >= 2 (round 1 is the "coreset" stage)."""
    return f"round{round_no}"


def _stage_order(stage: str) -> tuple[int, int]:
    """Sorts the fixed stages in pipeline order, then the labeling rounds by number."""
    if stage in STAGES:
        return (STAGES.index(stage), 0)
    return (len(STAGES), int(stage[len("round") :]))


def sort_stages(stages: Sequence[str]) -> list[str]:
    """`stages` without repeats, in pipeline order (labeling rounds last, by number)."""
    return sorted(set(stages), key=_stage_order)


def round_numbers(dataset: fo.Dataset, names: PipelineNames) -> list[int]:
    """The labeling rounds a key has run, in order (1 = the coreset), from its run records
    alone (no round's results are loaded)."""
    found = []
    for stage in list_pipelines(dataset).get(names.key, []):
        if stage == "coreset":
            found.append(1)
        elif stage.startswith("round"):
            found.append(int(stage[len("round") :]))
    return sorted(found)


def selection_rounds(dataset: fo.Dataset, names: PipelineNames) -> dict[int, list[str]]:
    """Maps each labeling round of a key (1 = the coreset) to the sample ids it selected."""
    return {
        r: list(stage_results(dataset, names, "coreset" if r == 1 else round_stage(r)).selected_ids)
        for r in round_numbers(dataset, names)
    }


def validate_key(key: str) -> PipelineNames:
    """Checks that a pipeline key can name FiftyOne runs and fields."""
    if not isinstance(key, str) or not key.isidentifier() or key.startswith("_"):
        raise identifier_error("run key", key, "elfs' or 'elfs_round2", param="key")
    return PipelineNames(key)


def record_run(
    samples: foc.SampleCollection,
    names: PipelineNames,
    stage: str,
    params: dict[str, Any],
    results: dict[str, Any],
    owned_fields: list[str] | None = None,
    owned_tags: list[str] | None = None,
    owned_views: list[str] | None = None,
    owned_brain_runs: list[str] | None = None,
) -> str:
    """Registers (or replaces) one stage's run with its parameters, results and owned outputs.

    The run appears in ``list_runs`` together with its results (one update of the dataset
    document), never without them; an earlier run of the stage is replaced in the same update.
    """
    run_key = names.run_key(stage)
    reserved = {"method", "elfs_key", "stage", "marks_fields", "elfs_version", *OWNED_KINDS}
    if reserved & params.keys():
        raise ValueError(f"run parameters may not be named {sorted(reserved & params.keys())}")
    config = samples.init_run(
        method=_METHOD_PREFIX + stage,
        elfs_key=names.key,
        stage=stage,
        owned_fields=list(owned_fields or []),
        owned_tags=list(owned_tags or []),
        owned_views=list(owned_views or []),
        owned_brain_runs=list(owned_brain_runs or []),
        marks_fields=True,  # its fields carry `field_mark` (runs recorded before did not)
        elfs_version=sys.modules["fiftyone_elfs"].__version__,  # defaults change by version
        **params,
    )
    _register_with_results(samples, run_key, config, results)
    return run_key


def _register_with_results(
    samples: foc.SampleCollection, run_key: str, config: Any, results: dict[str, Any]
) -> None:
    """FiftyOne's ``register_run`` + ``save_run_results`` as one visible step.

    FiftyOne lists a run as soon as ``register_run`` attaches it and saves the results after, so
    a kill in between leaves a run without results. Here the run document is written with its
    results first and then attached to the dataset in one update, replacing an earlier run of
    the key in that same update (FiftyOne 1.22's storage: a ``RunDocument`` referenced from
    ``dataset._doc.runs``, results in GridFS). A kill before the attach leaves only an
    unreferenced document that no listing shows.
    """
    import fiftyone.constants as fo_constants
    import fiftyone.core.runs as fors
    import fiftyone.core.view as fov
    from bson import json_util
    from fiftyone.core.odm.runs import RunDocument

    dataset = samples._root_dataset
    previous = dataset._doc.runs.get(run_key)
    if previous is not None and _elfs_config(dataset, run_key) is None:
        raise ValueError(f"run key {run_key!r} belongs to a run that ELFS did not record")
    config.build().validate_run(samples, run_key, overwrite=True)
    run_results = fors.RunResults(samples, config, run_key, **results)
    view_stages = None
    if isinstance(samples, fov.DatasetView):
        view_stages = [json_util.dumps(s) for s in samples._serialize(include_uuids=False)]
    doc = RunDocument(
        dataset_id=dataset._doc.id,
        key=run_key,
        version=fo_constants.VERSION,
        timestamp=datetime.datetime.utcnow(),
        config=deepcopy(config.serialize()),
        view_stages=view_stages,
        results=None,
    )
    doc.results.put(
        json_util.dumps(run_results.serialize()).encode(), content_type="application/json"
    )
    doc.results_meta = dict(run_results.get_meta() or {})
    doc.save(upsert=True)
    dataset._doc.runs[run_key] = doc  # the commit: the dataset document now lists this run
    dataset.save()
    dataset._run_cache.pop(run_key, None)
    if previous is not None and previous.id != doc.id:
        if previous.results:
            previous.results.delete()
        previous.delete()


def _elfs_config(dataset: fo.Dataset, run_key: str) -> Any | None:
    """The config of an ELFS run (None: another method's run)."""
    config = dataset.get_run_info(run_key).config
    method = getattr(config, "method", None) or ""
    return config if method.startswith(_METHOD_PREFIX) else None


def _stage_run_config(dataset: fo.Dataset, run_key: str) -> Any | None:
    """The config of the run under `run_key` if it is a stage of a key: an ELFS run under its
    own run key ``<key>_<stage>``. One renamed with FiftyOne's ``rename_run`` is not (it is
    the user's record now: `renamed_runs`), nor another method's run."""
    config = _elfs_config(dataset, run_key)
    key, stage = getattr(config, "elfs_key", None), getattr(config, "stage", None)
    return config if config is not None and run_key == f"{key}_{stage}" else None


def renamed_runs(dataset: fo.Dataset, key: str) -> list[tuple[str, Any]]:
    """(run key, config) of the ELFS runs of `key` kept under another run key than
    ``<key>_<stage>`` (``dataset.rename_run``): no stage of the key, the user's records."""
    found = []
    for run_key in dataset.list_runs():
        config = _elfs_config(dataset, run_key)
        if getattr(config, "elfs_key", None) == key and not _stage_run_config(dataset, run_key):
            found.append((run_key, config))
    return found


def run_key_taken(dataset: fo.Dataset, names: PipelineNames, stage: str) -> bool:
    """Whether the run key of (key, stage) holds a run that is not that stage: another tool's
    run, or an ELFS run renamed to it (recording the stage would replace it)."""
    run_key = names.run_key(stage)
    if run_key not in dataset.list_runs():
        return False
    config = _stage_run_config(dataset, run_key)
    return config is None or (config.elfs_key, config.stage) != (names.key, stage)


def stage_config(dataset: fo.Dataset, names: PipelineNames, stage: str) -> Any | None:
    """The recorded config of one stage of a key, or None if that stage has not run.

    Found by its run key ``<key>_<stage>`` alone, as `list_pipelines` and `owner_of` find it.
    """
    run_key = names.run_key(stage)
    if run_key not in dataset.list_runs():
        return None
    config = _stage_run_config(dataset, run_key)
    if config is None or (config.elfs_key, config.stage) != (names.key, stage):
        return None
    return config


def stage_results(dataset: fo.Dataset, names: PipelineNames, stage: str) -> Any | None:
    """The stored results of one stage of a key, or None if that stage has not run."""
    if stage_config(dataset, names, stage) is None:
        return None
    return dataset.load_run_results(names.run_key(stage), load_view=False)


def owner_of(dataset: fo.Dataset, attribute: str, name: str) -> tuple[str, str] | None:
    """The (key, stage) of the ELFS run that owns `name`, or None.

    `attribute` is the kind of output: "owned_fields", "owned_tags", "owned_views" or
    "owned_brain_runs".
    """
    for run_key in dataset.list_runs():
        config = _stage_run_config(dataset, run_key)
        if config is not None and name in (getattr(config, attribute, None) or []):
            return config.elfs_key, config.stage
    return None


def brain_run_owner(dataset: fo.Dataset, brain_key: str) -> str | None:
    """The pipeline key whose visualization stage owns `brain_key`, or None."""
    owner = owner_of(dataset, "owned_brain_runs", brain_key)
    return owner[0] if owner is not None else None


def list_pipelines(dataset: fo.Dataset) -> dict[str, list[str]]:
    """Maps each pipeline key on the dataset to the stages it has run (runs under their own run
    keys: a renamed run is the user's record, see `renamed_runs`)."""
    keys: dict[str, list[str]] = {}
    for run_key in dataset.list_runs():
        config = _stage_run_config(dataset, run_key)
        if config is not None:
            keys.setdefault(config.elfs_key, []).append(config.stage)
    return {k: sorted(v, key=_stage_order) for k, v in keys.items()}


def delete_stage(dataset: fo.Dataset, names: PipelineNames, stage: str) -> bool:
    """Deletes one stage's run and the fields, tags and views it owns; False if it did not exist.

    The names are journaled first and the run record goes before its outputs, so an
    interruption leaves no run pointing at half-deleted outputs, and `recover` finishes the job.
    """
    config = stage_config(dataset, names, stage)
    if config is None:
        return False
    owned = {kind: list(getattr(config, kind, None) or []) for kind in OWNED_KINDS}
    # what the user made under a recorded name since is theirs (`output_proof`): kept
    ours = {
        k: [output_proof.still_owned(dataset, config, k, n) for n in v] for k, v in owned.items()
    }
    kept = [n for n, m in zip(owned["owned_fields"], ours["owned_fields"], strict=True) if not m]
    output_proof.warn_kept_fields(kept, names.key, stage)
    owned = {k: [n for n, m in zip(v, ours[k], strict=True) if m] for k, v in owned.items()}
    legacy = [] if getattr(config, "marks_fields", False) else owned["owned_fields"]
    journal.add(dataset, names.key, stage, owned, unmarked_fields=legacy)
    dataset.delete_run(names.run_key(stage))
    delete_names(dataset, owned)
    return True


def field_mark(names: PipelineNames, stage: str) -> dict[str, str]:
    """The mark a stage's run leaves on the fields it writes (`output_proof.mark`)."""
    return output_proof.mark(names.key, stage)


def delete_names(dataset: fo.Dataset, owned: dict[str, Sequence[str]]) -> None:
    """Deletes the given fields, tags, saved views and brain runs (absent ones are skipped)."""
    dataset_io.delete_fields(dataset, list(owned.get("owned_fields", [])))
    for tag in owned.get("owned_tags", []):
        dataset_io.remove_tag(dataset, tag)
    for view_name in owned.get("owned_views", []):
        dataset_io.delete_saved_view(dataset, view_name)
    for brain_key in owned.get("owned_brain_runs", []):
        dataset_io.delete_brain_run(dataset, brain_key)


def delete_pipeline(
    dataset: fo.Dataset, key: str, busy: Callable[[str, str], bool] | None = None
) -> list[str]:
    """Deletes every stage of a pipeline key with what it owns, and what killed runs of the key
    left behind; returns the stages deleted. `busy(key, stage)`: a live run is writing it.
    (Outputs whose run is gone or renamed: `stages.leftovers.delete_leftovers`, after this.)"""
    names = validate_key(key)
    recover(dataset, key, busy)
    stages = list_pipelines(dataset).get(key, [])
    deleted = []
    for stage in stages[::-1]:
        if delete_stage(dataset, names, stage):
            journal.end(dataset, names.key, stage)
            deleted.append(stage)
    return deleted[::-1]


# --------------------------------------------------------------------------- interrupted runs


def recover(
    dataset: fo.Dataset,
    key: str | None = None,
    busy: Callable[[str, str], bool] | None = None,
    stage: str | None = None,
) -> list[str]:
    """Cleans up after interrupted operations (of `key`, or of every key; of one `stage`).

    For each open journal entry whose (key, stage) no live run holds (`busy`): deletes its
    staging collections (and the staging fields of entries written before there were staging
    collections) and every name it lists that no recorded run owns (a field only if it carries
    the entry's mark: `output_proof.left_by`), then closes it. Returns the names deleted. A
    name a recorded run owns is kept: the operation committed.
    """
    deleted: list[str] = []
    for entry in journal.entries(dataset, key):
        if stage is not None and entry["stage"] != stage:
            continue
        if busy is not None and busy(entry["key"], entry["stage"]):
            continue
        leftovers: dict[str, list[str]] = {}
        for kind in OWNED_KINDS:
            leftovers[kind] = [n for n in entry.get(kind, []) if owner_of(dataset, kind, n) is None]
        leftovers["owned_fields"] = [
            n for n in leftovers["owned_fields"] if output_proof.left_by(dataset, entry, n)
        ]
        leftovers["owned_fields"] += list(entry.get("staging_fields", []))
        delete_names(dataset, leftovers)
        for collection in entry.get("staging_collections", []):
            dataset_io.drop_staging(collection)
        deleted += [n for names in leftovers.values() for n in names]
        deleted += list(entry.get("staging_collections", []))
        journal.close(entry)
    return deleted
