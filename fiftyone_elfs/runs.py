"""Provenance: every pipeline stage is a FiftyOne run that records its parameters and what it owns.

A pipeline key (default ``"elfs"``) names the fields, tag, saved view and runs of one selection, so
runs with different keys coexist and deleting a key removes exactly what that key created. The
stages write their runs through `fiftyone_elfs.stages.record`; this module names things, reads
the records back and deletes what a run owns.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import fiftyone as fo
import fiftyone.core.collections as foc

from fiftyone_elfs import dataset_io
from fiftyone_elfs.errors import identifier_error

STAGES = ("embeddings", "pseudo_labels", "difficulty", "contrastive", "coreset", "visualization")
REGIONS = ("dropped_hard", "coreset", "dropped_easy")
SCORE_NAMES = ("aum", "forgetting", "el2n")
#: Scores a coreset can be selected on: the proxy's three and the contrastive view similarity.
SELECTION_SCORES = (*SCORE_NAMES, "contrastive")
_METHOD_PREFIX = "fiftyone_elfs."


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


def selection_rounds(dataset: fo.Dataset, names: PipelineNames) -> dict[int, list[str]]:
    """Maps each labeling round of a key (1 = the coreset) to the sample ids it selected."""
    rounds: dict[int, list[str]] = {}
    for stage in list_pipelines(dataset).get(names.key, []):
        if stage == "coreset":
            rounds[1] = list(stage_results(dataset, names, stage).selected_ids)
        elif stage.startswith("round"):
            rounds[int(stage[len("round") :])] = list(
                stage_results(dataset, names, stage).selected_ids
            )
    return dict(sorted(rounds.items()))


def validate_key(key: str) -> PipelineNames:
    """Checks that a pipeline key can name FiftyOne runs and fields."""
    if not isinstance(key, str) or not key.isidentifier() or key.startswith("_"):
        raise identifier_error("run key", key, "elfs' or 'elfs_round2", param="key")
    return PipelineNames(key)


def checkpoint_dir_for(samples: foc.SampleCollection, key: str) -> str:
    """Where a long training of `key` on this dataset keeps its resumable checkpoint.

    ``$ELFS_CACHE_DIR/checkpoints/<dataset id>/<key>`` (default cache
    ``~/.cache/fiftyone-elfs``): the dataset id survives renames, and each key (and each
    training of a key, e.g. ``<key>_contrastive``) has its own folder.
    """
    root = os.environ.get("ELFS_CACHE_DIR") or os.path.join("~", ".cache", "fiftyone-elfs")
    return os.path.join(
        os.path.expanduser(root), "checkpoints", dataset_io.dataset_id(samples), key
    )


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
    """Registers (or replaces) one stage's run: parameters, results and owned outputs."""
    run_key = names.run_key(stage)
    reserved = {
        "method",
        "elfs_key",
        "stage",
        "owned_fields",
        "owned_tags",
        "owned_views",
        "owned_brain_runs",
    }
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
        **params,
    )
    samples.register_run(run_key, config, overwrite=True)
    samples.save_run_results(run_key, samples.init_run_results(run_key, **results))
    return run_key


def _is_elfs_run(dataset: fo.Dataset, run_key: str) -> bool:
    method = getattr(dataset.get_run_info(run_key).config, "method", None) or ""
    return method.startswith(_METHOD_PREFIX)


def stage_config(dataset: fo.Dataset, names: PipelineNames, stage: str) -> Any | None:
    """The recorded config of one stage of a key, or None if that stage has not run."""
    run_key = names.run_key(stage)
    if run_key not in dataset.list_runs() or not _is_elfs_run(dataset, run_key):
        return None
    return dataset.get_run_info(run_key).config


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
        if not _is_elfs_run(dataset, run_key):
            continue
        config = dataset.get_run_info(run_key).config
        if name in (getattr(config, attribute, None) or []):
            return config.elfs_key, config.stage
    return None


def brain_run_owner(dataset: fo.Dataset, brain_key: str) -> str | None:
    """The pipeline key whose visualization stage owns `brain_key`, or None."""
    owner = owner_of(dataset, "owned_brain_runs", brain_key)
    return owner[0] if owner is not None else None


def list_pipelines(dataset: fo.Dataset) -> dict[str, list[str]]:
    """Maps each pipeline key on the dataset to the stages it has run."""
    keys: dict[str, list[str]] = {}
    for run_key in dataset.list_runs():
        if not _is_elfs_run(dataset, run_key):
            continue
        config = dataset.get_run_info(run_key).config
        keys.setdefault(config.elfs_key, []).append(config.stage)
    return {k: sorted(v, key=_stage_order) for k, v in keys.items()}


def delete_stage(dataset: fo.Dataset, names: PipelineNames, stage: str) -> bool:
    """Deletes one stage's run and the fields, tags and views it owns; False if it did not exist."""
    config = stage_config(dataset, names, stage)
    if config is None:
        return False
    dataset_io.delete_fields(dataset, list(config.owned_fields))
    for tag in config.owned_tags:
        dataset_io.remove_tag(dataset, tag)
    for view_name in config.owned_views:
        dataset_io.delete_saved_view(dataset, view_name)
    for brain_key in getattr(config, "owned_brain_runs", None) or []:
        dataset_io.delete_brain_run(dataset, brain_key)
    dataset.delete_run(names.run_key(stage))
    return True


def delete_pipeline(dataset: fo.Dataset, key: str) -> list[str]:
    """Deletes every stage of a pipeline key with what it owns; returns the stages deleted."""
    names = validate_key(key)
    stages = list_pipelines(dataset).get(key, [])
    return [stage for stage in stages[::-1] if delete_stage(dataset, names, stage)][::-1]
