"""The record step every stage ends with: check ownership, delete, write, record.

A stage computes its outputs as arrays and hands them here as `Outputs`. `record` then, in this
order and nowhere else:

1. checks that the key may write each output (`check_ownership`): nothing anything else owns;
2. deletes what this key's previous run of the stage created (`delete_previous`);
3. writes the fields, labels, tags, saved views and brain layouts through `dataset_io`;
4. records the run with its parameters, results and the names it now owns (`runs.record_run`),
   which is what later deletes, re-runs and ownership checks read.

Ownership rules live in `check_ownership` only. Today it refuses an output that another run
owns (another key's, or another stage of this key), and a brain key that no ELFS run owns
(FiftyOne's own or the user's); stages call it early as well, so a refusal comes before any
computing. A rule for other outputs that exist without an owner belongs there too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fiftyone_elfs import dataset_io, runs
from fiftyone_elfs.dataset_io import SampleCollection
from fiftyone_elfs.errors import ElfsInputError


@dataclass(frozen=True)
class Layout:
    """A 2-D layout to register as a brain run: embeddings of `ids`, laid out by `method`."""

    ids: Sequence[str]
    embeddings: np.ndarray
    method: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outputs:
    """What one stage writes. Every name here becomes owned by the stage's run.

    Attributes:
        values: field -> (sample ids, one value per id).
        labels: Classification field -> (sample ids, labels, confidences).
        tags: tag -> the sample ids that carry it (replacing any earlier holders).
        views: saved view name -> (tag it shows, description).
        layouts: brain key -> `Layout`.
        written_fields: fields the stage wrote itself before the record step (resumable
            writes, e.g. embeddings computed by a FiftyOne zoo model): owned, not rewritten.
    """

    values: dict[str, tuple[Sequence[str], Sequence[Any]]] = field(default_factory=dict)
    labels: dict[str, tuple[Sequence[str], Sequence[str], Sequence[float]]] = field(
        default_factory=dict
    )
    tags: dict[str, Sequence[str]] = field(default_factory=dict)
    views: dict[str, tuple[str, str]] = field(default_factory=dict)
    layouts: dict[str, Layout] = field(default_factory=dict)
    written_fields: tuple[str, ...] = ()

    @property
    def fields(self) -> list[str]:
        return [*self.written_fields, *self.values, *self.labels]


_KINDS = {  # kind -> (attribute of a recorded run config, word in messages)
    "fields": ("owned_fields", "field"),
    "tags": ("owned_tags", "tag"),
    "views": ("owned_views", "saved view"),
    "brain_runs": ("owned_brain_runs", "brain key"),
}


def _stage_words(stage: str) -> str:
    if stage == "coreset":
        return "coreset"
    if stage.startswith("round"):
        return f"labeling round {stage[len('round') :]}"
    return f"'{stage}' stage"


def check_ownership(
    samples: SampleCollection,
    names: runs.PipelineNames,
    stage: str,
    *,
    fields: Sequence[str] = (),
    tags: Sequence[str] = (),
    views: Sequence[str] = (),
    brain_runs: Sequence[str] = (),
) -> None:
    """Refuses to write an output that is not this key's to write; changes nothing.

    Raises:
        ElfsInputError: an output belongs to another key's run, or a brain key exists that no
            run of this key created.
    """
    dataset = dataset_io.dataset_of(samples)
    wanted = {"fields": fields, "tags": tags, "views": views, "brain_runs": brain_runs}
    for kind, output_names in wanted.items():
        attribute, word = _KINDS[kind]
        for name in output_names:
            owner = runs.owner_of(dataset, attribute, name)
            if owner is not None and owner != (names.key, stage):
                other, other_stage = owner
                fix = {
                    "tag": "choose another tag, or leave tag=None to derive it from the key",
                    "brain key": "pass another brain_key",
                }.get(word, f"use another key, or delete key '{other}' first")
                raise ElfsInputError(
                    f"The {word} '{name}' belongs to the {_stage_words(other_stage)} of key "
                    f"'{other}'. Fix: {fix}."
                )
            if kind == "brain_runs" and owner is None and name in dataset_io.brain_runs(dataset):
                raise ElfsInputError(
                    f"The brain key '{name}' already exists and does not belong to ELFS key "
                    f"'{names.key}'. Fix: pass another brain_key, or delete it with "
                    f"dataset.delete_brain_run('{name}').",
                    param="brain_key",
                )


def delete_previous(samples: SampleCollection, names: runs.PipelineNames, stage: str) -> bool:
    """Deletes this key's previous run of `stage` with everything it owns (False: none)."""
    return runs.delete_stage(dataset_io.dataset_of(samples), names, stage)


def record(
    samples: SampleCollection,
    names: runs.PipelineNames,
    stage: str,
    *,
    params: dict[str, Any],
    results: dict[str, Any],
    outputs: Outputs,
    replace: bool = True,
) -> str:
    """Checks, replaces and writes a stage's outputs, then records its run; returns the run key.

    `replace=False` keeps what the previous run of the stage wrote (resumable stages add to it).
    """
    check_ownership(
        samples,
        names,
        stage,
        fields=outputs.fields,
        tags=list(outputs.tags),
        views=list(outputs.views),
        brain_runs=list(outputs.layouts),
    )
    if replace:
        delete_previous(samples, names, stage)
    dataset = dataset_io.dataset_of(samples)
    for field_name, (ids, values) in outputs.values.items():
        dataset_io.write_values(samples, field_name, ids, values)
    for field_name, (ids, labels, confidences) in outputs.labels.items():
        dataset_io.write_classifications(samples, field_name, ids, labels, confidences)
    for tag, ids in outputs.tags.items():
        dataset_io.replace_tag(dataset, tag, ids)
    for view_name, (tag, description) in outputs.views.items():
        dataset_io.save_tagged_view(dataset, view_name, tag, description)
    for brain_key, layout in outputs.layouts.items():
        dataset_io.write_layout(
            samples, brain_key, layout.ids, layout.embeddings, layout.method, **layout.options
        )
    return runs.record_run(
        samples,
        names,
        stage,
        params=params,
        results=results,
        owned_fields=outputs.fields,
        owned_tags=list(outputs.tags),
        owned_views=list(outputs.views),
        owned_brain_runs=list(outputs.layouts),
    )
