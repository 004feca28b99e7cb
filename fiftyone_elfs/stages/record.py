"""The record step every stage ends with: check ownership, stage, commit, record.

A stage computes its outputs as arrays and hands them here as `Outputs`. Nothing else in the
package decides what a key may write, and nothing else writes a stage's outputs.

**Ownership** (`check_ownership`, the only place the rules live; stages also call it before
computing, so a refusal comes first). A key's stage may write a field, tag, saved view or brain
key only if

- its own earlier run of that stage recorded it (a rerun replaces it), or
- nothing of that name exists, or
- an interrupted run of the same (key, stage) left it, as its journal entry says (cleaned up
  before writing), or
- it is a field this (key, stage) wrote whose run is gone (a `leftovers` field: it carries the
  stage's mark, `runs.field_mark`): the rerun takes it over and replaces it (the embedding
  stage, which resumes into its field, refuses one that holds values: `stages.embeddings`).

The stage's run key ``<key>_<stage>`` must be free or hold that stage's own run (not another
tool's run, nor an ELFS run renamed to it), else the stage is refused before computing.

Anything else is refused with `ElfsInputError` naming it and the fix: another key's output, a
tag or saved view the key left without a run (a rerun never moves a tag whose samples may have
been handed out; the message says where it comes from and that `delete_key` removes it), and
every field, tag, saved view or brain key that exists without an ELFS record (the user's, or
another tool's), whatever its type. `runs.delete_stage` / `delete_key` remove only what a run
recorded and the key's provable leftovers, so they can never remove user data either.

**Leftovers**: `fiftyone_elfs.stages.leftovers`.

**Atomic outputs: staging collections, and the run record as the commit point.** `record`
(one run) and `write_runs` (several, e.g. the runs a pipeline held back in `HeldRuns`: their
fields of the same samples go in one pass) write in this order:

1. journal (`journal.add`): every name the run may leave behind, staging collections
   included, before anything is written;
2. stage: each field's values go, in chunks of `WRITE_CHUNK_ROWS`, into a staging collection
   of FiftyOne's database (``elfs_staging_<dataset id>_<random>``: one small document per
   sample, all fields of the same samples together; `dataset_io.stage_rows`), never into the
   samples;
3. commit: delete the key's previous run of the stage (record first, then its outputs); move
   the staged values into their fields in one server-side ``$merge`` per staging collection
   (`dataset_io.commit_staged`; a resumable stage, ``replace=False``, merges into its existing
   field); put the tags (untag, then tag, one bulk update each); save the views; register the
   layouts;
4. record the run with its parameters, results and the names it owns (`runs.record_run`: the
   run and its results appear in one update of the dataset document): the commit point;
5. close the journal entry.

After an interruption anywhere (``kill -9`` included): no result field is ever partially
filled (a field appears whole, by one ``$merge``, or not at all), no run is registered without
its results, and a tag is either complete or absent. Between steps 3 and 4 whole result fields
can exist without their run; they are unowned leftovers listed in the journal, which the next
run of the key (`guard`) or `delete_key` removes (`runs.recover`), and which ownership checks
do not mistake for user data. One MongoDB command (a ``$merge``, a tag update) runs to its end
on the server when the client dies; only a crash of the database itself inside one could leave
it partial (standalone MongoDB has no transactions across commands; none is needed here).

**One run at a time**: `guard` holds the (dataset, key, stage) leases (`fiftyone_elfs.leases`)
for a stage's whole run, then recovers what interrupted runs of the key left behind.

Longer than the package's other modules on purpose: the ownership rules and the write protocol
that relies on them are read together.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from fiftyone_elfs import dataset_io, journal, leases, output_proof, runs, value_fingerprints
from fiftyone_elfs.dataset_io import SampleCollection
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.faults import kill_point
from fiftyone_elfs.stages.leftovers import (
    Leftover,
    leftover_error,
    leftovers,
    origin,
    rename_back,
    stage_words,
)

logger = logging.getLogger(__name__)

#: Rows per staged insert: bounds the size of one command (and is a kill point each).
WRITE_CHUNK_ROWS = 20_000


#: The results entry of a run's fingerprints of its checked values (`Outputs.checked`).
WRITTEN_VALUES = "written_values"


@dataclass(frozen=True)
class Layout:
    """A 2-D layout to register as a brain run: embeddings of `ids`, laid out by `method`."""

    ids: Sequence[str]
    embeddings: np.ndarray
    method: str
    options: dict[str, Any] = field(default_factory=dict)
    # patterns of the names the key writes (`dataset_io.layout_base`)
    owned: tuple[str, ...] = ()


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
        checked: fields of `values` or `labels` whose values a later stage checks are still
            the ones this run wrote; the run records their fingerprints (`WRITTEN_VALUES`).
    """

    values: dict[str, tuple[Sequence[str], Sequence[Any]]] = field(default_factory=dict)
    labels: dict[str, tuple[Sequence[str], Sequence[str], Sequence[float]]] = field(
        default_factory=dict
    )
    tags: dict[str, Sequence[str]] = field(default_factory=dict)
    views: dict[str, tuple[str, str]] = field(default_factory=dict)
    layouts: dict[str, Layout] = field(default_factory=dict)
    written_fields: tuple[str, ...] = ()
    checked: tuple[str, ...] = ()

    def fingerprints(self) -> dict[str, str]:
        """The packed fingerprints (`value_fingerprints.pack`) of each checked field's values."""
        out = {}
        for name in self.checked:
            ids, values = self.values[name] if name in self.values else self.labels[name][:2]
            out[name] = value_fingerprints.pack(ids, values)
        return out

    @property
    def fields(self) -> list[str]:
        return [*self.written_fields, *self.values, *self.labels]

    def owned(self) -> dict[str, list[str]]:
        """The names by kind, as a run records them."""
        return {
            "owned_fields": self.fields,
            "owned_tags": list(self.tags),
            "owned_views": list(self.views),
            "owned_brain_runs": list(self.layouts),
        }


_KINDS = {  # kind -> (attribute of a recorded run config, word in messages)
    "fields": ("owned_fields", "field"),
    "tags": ("owned_tags", "tag"),
    "views": ("owned_views", "saved view"),
    "brain_runs": ("owned_brain_runs", "brain key"),
}


def _exists(dataset: Any, kind: str, name: str) -> bool:
    if kind == "fields":
        return dataset_io.has_field(dataset, name)
    if kind == "tags":
        return dataset_io.has_tag(dataset, name)
    if kind == "views":
        return dataset_io.has_saved_view(dataset, name)
    return name in dataset_io.brain_runs(dataset)


def _unmarked_field_error(name: str, owner: tuple[str, str], key: str) -> ElfsInputError:
    """The refusal of a field a run records that no longer carries the mark the run left."""
    return ElfsInputError(
        f"The field '{name}' is recorded by the {stage_words(owner[1])} of key '{owner[0]}' "
        f"but no longer carries ELFS's mark: {output_proof.UNMARKED_FIELD_WHY}; refusing to "
        f"overwrite or delete it. Fix: if it is the key's, delete it (dataset.delete_sample_field("
        f"'{name}')) and run again; else use another key (e.g. key='{key}2').",
        param="key",
    )


def _not_ours_error(kind: str, name: str, key: str, stage: str) -> ElfsInputError:
    """The refusal of an existing name that no ELFS run recorded: the user's (or a tool's)."""
    other_key = f"{key}2"
    if kind == "tags" and stage.startswith("round"):  # a round's tag follows from its number
        return ElfsInputError(
            f"The tag '{name}' is already on samples and was not set by ELFS key '{key}' (this "
            f"round's tag); refusing to move or remove it. Fix: rename your tag (tag those "
            f"samples under another name, then dataset.untag_samples('{name}')), or start "
            f"another key (e.g. key='{other_key}').",
            param="key",
        )
    if kind == "fields":
        return ElfsInputError(
            f"The field '{name}' already exists and was not created by ELFS key '{key}' (it is "
            "yours, or another tool's); refusing to overwrite or delete it. Fix: use another "
            f"key (e.g. key='{other_key}'), or rename your field "
            f"(dataset.rename_sample_field('{name}', ...)).",
            param="key",
        )
    if kind == "tags":
        return ElfsInputError(
            f"The tag '{name}' is already on samples and was not set by ELFS key '{key}'; "
            "refusing to move or remove it. Fix: pass another tag (tag=...) or another key "
            f"(e.g. key='{other_key}'), or rename your tag.",
            param="tag",
        )
    if kind == "views":
        return ElfsInputError(
            f"The saved view '{name}' already exists and was not saved by ELFS key '{key}'; "
            f"refusing to replace it. Fix: use another key (e.g. key='{other_key}'), or rename "
            "your saved view.",
            param="key",
        )
    return ElfsInputError(
        f"The brain key '{name}' already exists and no run of ELFS key '{key}' records it "
        "(yours, or an ELFS plot whose run dataset.delete_run() removed). Fix: if it may go, "
        f"dataset.delete_brain_run('{name}'); else pass another brain_key "
        "(compute_visualization) or visualize=False (run_pipeline).",
        param="brain_key",
    )


def _refuse_a_view_sharing_its_slug(dataset: Any, name: str, key: str) -> None:
    """Refuses a saved view name that would replace another view under another name (the
    user's, or another key's: FiftyOne replaces by slug)."""
    other = dataset_io.saved_view_sharing_slug(dataset, name)
    if other is None:
        return
    owner = runs.owner_of(dataset, "owned_views", other)
    whose = f"the coreset view of ELFS key '{owner[0]}'" if owner else "a saved view of yours"
    raise ElfsInputError(
        f"Saving the view '{name}' of key '{key}' would replace '{other}', {whose}: FiftyOne "
        "tells saved views apart by their URL slug, and the two names have the same one. Fix: "
        "use a key that differs from the other by more than case, spaces or punctuation "
        f"(e.g. key='{key}2'), or rename that view.",
        param="key",
    )


#: The parameter to fix when an output of that kind is taken (the rest follow the key).
_PARAM_OF = {"tag": "tag", "brain key": "brain_key"}


def require_annotator_labels(
    samples: SampleCollection, label_field: str, may_be_empty: bool = False
) -> None:
    """Refuses, as the field of labels annotators gave, a field an ELFS run wrote (the
    pseudo-labels, a score): the proxy would learn ELFS's own guesses as truth, and a round
    would take every pseudo-labelled sample for labeled. Then the usual checks: Classification
    labels, and at least one in `samples` unless `may_be_empty` (a field Label Studio answers
    are loaded into, before the first answer)."""
    owner = runs.owner_of(dataset_io.dataset_of(samples), "owned_fields", label_field)
    if owner is not None:
        raise ElfsInputError(
            f"label_field '{label_field}' is written by the {stage_words(owner[1])} of ELFS key "
            f"'{owner[0]}': it holds ELFS's own guesses, not labels annotators gave. Fix: pass "
            "the field of your annotators' labels (e.g. the one load_from_label_studio wrote), "
            "or leave label_field out.",
            param="label_field",
        )
    dataset_io.require_classification_field(samples, label_field, "label_field")
    if not may_be_empty:
        dataset_io.require_labels(samples, label_field, "label_field")


def check_ownership(
    samples: SampleCollection,
    names: runs.PipelineNames,
    stage: str,
    *,
    fields: Sequence[str] = (),
    tags: Sequence[str] = (),
    views: Sequence[str] = (),
    brain_runs: Sequence[str] = (),
    written: Sequence[str] = (),
) -> None:
    """Refuses to write an output that is not this key's to write; changes nothing.

    `written`: fields the stage has already written itself (they exist because of this run).

    Raises:
        ElfsInputError: an output belongs to another key's run or stage, is left by an
            unfinished run of another (key, stage), or exists without an ELFS record; or
            the samples are a generated (patches, frames) view, where nothing is kept.
    """
    dataset_io.require_stored(samples)
    dataset = dataset_io.dataset_of(samples)
    for name in fields:
        if "." in name:  # FiftyOne would refuse it at the write, after all the work
            raise ElfsInputError(
                f"'{name}' is a path inside the field '{name.split('.')[0]}'; ELFS writes "
                f"top-level fields. Fix: name one without dots, e.g. '{name.replace('.', '_')}'.",
                param="embeddings_field",
            )
    if runs.run_key_taken(dataset, names, stage):
        run_key = names.run_key(stage)
        raise ElfsInputError(
            f"The run key '{run_key}', where the {stage_words(stage)} of key '{names.key}' is "
            "recorded, holds another run (another tool's, or an ELFS run renamed to it with "
            f"dataset.rename_run). Fix: rename that run (dataset.rename_run('{run_key}', "
            f"'<new name>')), or use another key (e.g. key='{names.key}2').",
            param="key",
        )
    for name in views:
        _refuse_a_view_sharing_its_slug(dataset, name, names.key)
    wanted = {"fields": fields, "tags": tags, "views": views, "brain_runs": brain_runs}
    left: dict[str, dict[str, Leftover]] | None = None  # the key's leftovers, once needed
    fields_left: dict[str, dict[str, Leftover]] | None = None
    for kind, output_names in wanted.items():
        attribute, word = _KINDS[kind]
        for name in output_names:
            owner = runs.owner_of(dataset, attribute, name)
            if owner is not None and not _unchanged(dataset, owner, attribute, name):
                if kind == "fields":  # recorded by a run, but without the mark it left
                    raise _unmarked_field_error(name, owner, names.key)
                raise _not_ours_error(kind, name, names.key, stage)  # re-created by the user since
            if owner is not None and owner != (names.key, stage):
                other, other_stage = owner
                derived = name == names.tag or name.startswith(f"{names.key}_round")
                fix = {
                    "tag": (
                        f"delete key '{other}' first, or select its coreset again with another tag"
                        if derived  # a name this key derives: no argument of the caller's
                        else "choose another tag, or leave tag=None to derive it from the key"
                    ),
                    "brain key": "pass another brain_key",
                }.get(word, f"use another key, or delete key '{other}' first")
                raise ElfsInputError(
                    f"The {word} '{name}' belongs to the {stage_words(other_stage)} of key "
                    f"'{other}'. Fix: {fix}.",
                    param=_PARAM_OF.get(word, "key"),
                )
            if owner is not None or name in written or not _exists(dataset, kind, name):
                continue
            pending = journal.pending_owner(dataset, attribute, name)
            if pending == (names.key, stage):
                continue  # left by an interrupted run of this very stage: cleaned before writing
            if pending is not None:
                raise ElfsInputError(
                    f"The {word} '{name}' was left by an interrupted run of the "
                    f"{stage_words(pending[1])} of key '{pending[0]}'. Fix: rerun that stage "
                    f"(it cleans up first), or delete_key(dataset, '{pending[0]}').",
                    param=_PARAM_OF.get(word, "key"),
                )
            if kind == "fields":  # (the fields alone need no query of the samples)
                fields_left = fields_left or leftovers(dataset, names, fields_only=True)
                leftover = fields_left["owned_fields"].get(name)
                if leftover is not None and leftover.stage == stage:
                    continue  # this stage's own output whose run is gone: taken over, replaced
            left = left or leftovers(dataset, names)
            leftover = left[attribute].get(name)
            if leftover is not None:
                raise leftover_error(names, word, name, leftover, left)
            raise _not_ours_error(kind, name, names.key, stage)


def _unchanged(dataset: Any, owner: tuple[str, str], attribute: str, name: str) -> bool:
    config = runs.stage_config(dataset, runs.PipelineNames(owner[0]), owner[1])
    return config is None or output_proof.still_owned(dataset, config, attribute, name)


def check_input(
    samples: SampleCollection,
    names: runs.PipelineNames,
    stage: str,
    field_name: str,
    what: str,
    held: HeldRuns | None = None,
) -> Any:
    """The recorded config of `stage` of this key, which must own `field_name` (an input);
    the held run's config if `held` holds that stage (its outputs are not written yet).

    Stages read their inputs by the key's names; a field of that name that the key's run did
    not write (the user's own, or one left by an interrupted run) is no input.

    Raises:
        ElfsInputError: the stage has not run with this key, or does not own the field.
    """
    dataset = dataset_io.dataset_of(samples)
    config = held_config(held, samples, names, stage)
    if config is None and dataset_io.has_field(dataset, field_name):
        leftover = leftovers(dataset, names, fields_only=True)["owned_fields"].get(field_name)
        if leftover is not None and leftover.stage == stage:
            rerun = f"{_FIX_STAGE.get(stage, 'compute_' + stage)} with key='{names.key}'"
            # the embeddings stage does not take over a leftover field (another key may read
            # it): the user deletes it first
            rerun = (
                f"dataset.delete_sample_field('{field_name}'), then {rerun} (it computes the "
                "vectors anew)"
                if stage == "embeddings"
                else f"run {rerun} again (it replaces the field)"
            )
            raise ElfsInputError(
                f"No {what} for key '{names.key}': {origin(names, 'field', field_name, leftover)}"
                f" Fix: {rerun}{rename_back(names, leftover)}, or "
                f"delete_key(dataset, '{names.key}') to remove what the key left."
            )
    if config is None or field_name not in (config.owned_fields or []):
        present = (
            f" (the field '{field_name}' exists but was not computed by it)"
            if dataset_io.has_field(dataset, field_name)
            else f" ('{field_name}' is missing)"
        )
        keys = runs.list_pipelines(dataset)
        if names.key not in keys:  # a mistyped key, most likely: say which exist
            raise ElfsInputError(
                f"No {what} for key '{names.key}'{present}: the dataset has no ELFS run with "
                "that key. "
                f"Fix: use one of its keys {sorted(keys)}, or run "
                f"{_FIX_STAGE.get(stage, 'compute_' + stage)} with key='{names.key}' first.",
                param="key",
            )
        raise ElfsInputError(
            f"No {what} for key '{names.key}'{present}. Fix: run "
            f"{_FIX_STAGE.get(stage, 'compute_' + stage)} with key='{names.key}' first, or use "
            "the key you computed them with.",
            param="key",
        )
    return config


_FIX_STAGE = {
    "pseudo_labels": "compute_pseudo_labels",
    "difficulty": "compute_difficulty",
    "contrastive": "compute_contrastive_scores",
}


def delete_previous(samples: SampleCollection, names: runs.PipelineNames, stage: str) -> bool:
    """Deletes this key's previous run of `stage` with everything it owns (False: none).

    Journaled: an interruption leaves names `runs.recover` removes, not a half-deleted run.
    """
    dataset = dataset_io.dataset_of(samples)
    return runs.delete_stage(dataset, names, stage)


@contextlib.contextmanager
def guard(samples: SampleCollection, key: str, stages: Sequence[str]) -> Iterator[None]:
    """Runs a stage (or the pipeline's stages) of `key` alone and on a clean slate.

    Holds the (dataset, key, stage) leases of `stages` for the block, so a second concurrent run
    of them is refused (`ElfsInputError`), then removes what interrupted runs of the key left
    behind (`runs.recover`, skipping stages a live run holds).
    """
    dataset = dataset_io.dataset_of(samples)
    dataset_id = dataset_io.dataset_id(dataset)
    with leases.hold(dataset_id, key, stages):
        with leases.commit_turn(dataset_id):  # recover deletes fields: a commit's schema write
            dataset_io.refresh_records(dataset)
            busy = lambda k, s: leases.is_held_elsewhere(dataset_id, k, s)  # noqa: E731
            runs.recover(dataset, key, busy=busy)
        yield


def begin_writes(
    samples: SampleCollection, names: runs.PipelineNames, stage: str, fields: Sequence[str]
) -> None:
    """Journals fields a stage is about to write itself (outside `record`, e.g. a FiftyOne zoo
    model's embeddings), so that an interruption leaves a recognised leftover."""
    journal.add(dataset_io.dataset_of(samples), names.key, stage, {"owned_fields": fields})


@dataclass(frozen=True)
class StageRun:
    """One stage's run as computed, not yet written: what `write_runs` checks, writes and
    records (the run's parameters and results, and its outputs)."""

    stage: str
    params: dict[str, Any]
    results: dict[str, Any]
    outputs: Outputs
    replace: bool = True

    def config(self) -> SimpleNamespace:
        """Its parameters and owned names as attributes, as its recorded config will read."""
        return SimpleNamespace(**self.params, **self.outputs.owned(), stage=self.stage)


class HeldRuns:
    """Stage runs held back to be written together (`write_runs`) when a pipeline ends.

    Why: each stage that writes every sample costs a pass over all of them (at 1.28M samples
    about two minutes each: every update rewrites the whole sample document); held, the
    pseudo-labels, scores and coreset regions are written in one pass. A later stage reads an
    earlier held stage's outputs from here (`check_input`, `held_config`, `held_results`).
    Nothing is written before `write_runs`: an interruption before it leaves nothing at all.
    """

    def __init__(self) -> None:
        self.runs: dict[str, StageRun] = {}

    def add(self, run: StageRun) -> None:
        self.runs[run.stage] = run

    def get(self, stage: str) -> StageRun | None:
        return self.runs.get(stage)


def held_run(held: HeldRuns | None, stage: str) -> StageRun | None:
    """The run of `stage` that `held` holds; None when it holds none or there is no `held`."""
    return held.get(stage) if held is not None else None


def held_config(held: HeldRuns | None, samples: SampleCollection, names: Any, stage: str) -> Any:
    """A stage's config: the held run's if `held` has it, else the recorded one (or None)."""
    run = held_run(held, stage)
    if run is not None:
        return run.config()
    return runs.stage_config(dataset_io.dataset_of(samples), names, stage)


def held_results(held: HeldRuns | None, samples: SampleCollection, names: Any, stage: str) -> Any:
    """A stage's results: the held run's if `held` has it, else the recorded ones (or None)."""
    run = held_run(held, stage)
    if run is not None:
        return SimpleNamespace(**run.results)
    return runs.stage_results(dataset_io.dataset_of(samples), names, stage)


@dataclass(frozen=True)
class _Staged:
    """Values of fields of the same samples, staged together in one collection."""

    collection: str
    ids: list[str]
    columns: dict[str, Any]  # field -> values in the order of `ids`
    kinds: dict[str, dataset_io.ColumnKind]
    stages: dict[str, str]  # field -> the stage that owns it


def _plan_staging(dataset: Any, stage_runs: Sequence[StageRun]) -> list[_Staged]:
    """Groups the fields of all runs by their ids (one staging collection and one merge per
    group); the kinds are checked on the whole columns before anything is written."""
    groups: dict[tuple[str, ...], dict[str, Any]] = {}  # ids -> {field: values}
    owner: dict[str, str] = {}
    for run in stage_runs:
        to_stage: dict[str, tuple[Sequence[str], Any]] = dict(run.outputs.values)
        for field_name, (ids, labels, confidences) in run.outputs.labels.items():
            to_stage[field_name] = (ids, dataset_io.ClassificationColumn(labels, confidences))
        for field_name, (ids, values) in to_stage.items():
            if len(ids) != len(values):
                raise ValueError(f"got {len(ids)} ids but {len(values)} values")
            if len(ids):
                column = (
                    values if isinstance(values, dataset_io.ClassificationColumn) else list(values)
                )
                groups.setdefault(tuple(ids), {})[field_name] = column
                owner[field_name] = run.stage
    return [
        _Staged(
            dataset_io.new_staging_collection(dataset),
            list(ids),
            columns,
            {f: dataset_io.column_kind(v) for f, v in columns.items()},
            {f: owner[f] for f in columns},
        )
        for ids, columns in groups.items()
    ]


def record(
    samples: SampleCollection,
    names: runs.PipelineNames,
    stage: str,
    *,
    params: dict[str, Any],
    results: dict[str, Any],
    outputs: Outputs,
    replace: bool = True,
    held: HeldRuns | None = None,
) -> str:
    """Checks, stages and commits a stage's outputs, then records its run; returns the run key.

    `replace=False` keeps what the previous run of the stage wrote (resumable stages add to it:
    new values are merged into the existing field). With `held`, the run is only held there,
    for `write_runs` to check and write with the others.
    """
    run = StageRun(stage, params, results, outputs, replace)
    if held is not None:  # checked when written (`write_runs`), just before anything is
        held.add(run)
        return names.run_key(stage)
    return write_runs(samples, names, [run])[0]


def _check_run(samples: SampleCollection, names: runs.PipelineNames, run: StageRun) -> None:
    outputs = run.outputs
    check_ownership(
        samples,
        names,
        run.stage,
        fields=outputs.fields,
        tags=list(outputs.tags),
        views=list(outputs.views),
        brain_runs=list(outputs.layouts),
        written=outputs.written_fields,
    )


def _existing_outputs(dataset: Any, run: StageRun) -> set[tuple[str, str]]:
    """The (kind, name) of the run's outputs that exist (checked by `check_ownership`)."""
    owned = run.outputs.owned()
    return {
        (kind, name)
        for kind, (attribute, _) in _KINDS.items()
        for name in owned[attribute]
        if _exists(dataset, kind, name)
    }


def _refuse_outputs_created_meanwhile(
    dataset: Any, names: runs.PipelineNames, run: StageRun, existed: set[tuple[str, str]]
) -> None:
    """Refuses an output name that did not exist when the run was checked and exists now (a
    teammate's field or saved view, another key's tag): it is not the run's to replace, and
    it is taken off the run's journal entry first, so the cleanup after the refusal keeps it."""
    created = [
        (kind, name)
        for kind, name in sorted(_existing_outputs(dataset, run) - existed)
        if not (kind == "fields" and name in run.outputs.written_fields)  # the stage's own
    ]
    for kind, name in created:
        journal.forget(dataset, names.key, run.stage, _KINDS[kind][0], name)
    for kind, name in created:
        owner = runs.owner_of(dataset, _KINDS[kind][0], name)
        if owner is not None and owner[0] != names.key:
            raise ElfsInputError(
                f"The {_KINDS[kind][1]} '{name}' was created by key '{owner[0]}' while this run "
                f"of key '{names.key}' computed; nothing of this run was written. Fix: use "
                "another key, or delete that key first.",
                param="key",
            )
        raise _not_ours_error(kind, name, names.key, run.stage)


def write_runs(
    samples: SampleCollection,
    names: runs.PipelineNames,
    stage_runs: Sequence[StageRun],
    alongside: Callable[[], Any] | None = None,
    before_commit: Callable[[], None] | None = None,
) -> list[str]:
    """Writes and records stage runs (in order), their fields in one pass over the samples
    (one staging collection and one ``$merge`` per set of sample ids); returns the run keys.

    The protocol of the module docstring, for all runs at once: each run's journal entry is
    written before anything else, and each run is recorded after all outputs are in place.

    `alongside`: a computation that touches no database (arrays only), run in a background
    thread while the database merges the staged values, which is server-side work (at 1.28M
    samples about two minutes); its exception, if any, is raised once the runs are recorded.
    `before_commit`: a check run in the commit's turn (`_commit_staged_runs`), on the record as
    stored then; its error stops the runs before anything of them is in place.
    """
    dataset = dataset_io.dataset_of(samples)
    existed = {}
    for run in stage_runs:
        _check_run(samples, names, run)
        existed[run.stage] = _existing_outputs(dataset, run)

    def in_turn() -> None:  # the checks on the record as stored when the commit's turn comes
        for run in stage_runs:
            _refuse_outputs_created_meanwhile(dataset, names, run, existed[run.stage])
        if before_commit is not None:
            before_commit()

    plan = _plan_staging(dataset, stage_runs)
    collections = [staged.collection for staged in plan]
    for run in stage_runs:
        owned = run.outputs.owned()
        journal.add(dataset, names.key, run.stage, owned, staging_collections=collections)
    try:
        return _commit(samples, names, stage_runs, plan, alongside, in_turn)
    except Exception:
        for run in stage_runs:  # a failure is no interruption: clean now
            runs.recover(dataset, names.key, stage=run.stage)
        raise


def _commit(
    samples: SampleCollection,
    names: runs.PipelineNames,
    stage_runs: Sequence[StageRun],
    plan: list[_Staged],
    alongside: Callable[[], Any] | None = None,
    before_commit: Callable[[], None] | None = None,
) -> list[str]:
    """Steps 2-5 of the protocol (module docstring), once the journal lists every name."""
    for staged in plan:  # in chunks, each chunk boundary a kill point of each stage in it
        for start in range(0, len(staged.ids), WRITE_CHUNK_ROWS):
            rows = slice(start, start + WRITE_CHUNK_ROWS)
            columns = {f: v[rows] for f, v in staged.columns.items()}
            dataset_io.stage_rows(staged.collection, staged.ids[rows], columns, staged.kinds)
            for stage in dict.fromkeys(staged.stages.values()):
                kill_point(stage, "chunk")
    if alongside is None:
        return _commit_staged_runs(samples, names, stage_runs, plan, before_commit)
    # started after the staging (Python work here) so that the two threads rarely want the GIL
    # at once; the context is copied so the thread sees what this one has read
    with ThreadPoolExecutor(1, thread_name_prefix="elfs-alongside") as pool:
        computed = pool.submit(contextvars.copy_context().run, alongside)
        run_keys = _commit_staged_runs(samples, names, stage_runs, plan, before_commit)
    computed.result()
    return run_keys


def _commit_staged_runs(
    samples: SampleCollection,
    names: runs.PipelineNames,
    stage_runs: Sequence[StageRun],
    plan: list[_Staged],
    before_commit: Callable[[], None] | None = None,
) -> list[str]:
    """Steps 3-5 of the protocol, once every value is staged, in the dataset's commit turn
    (`leases.commit_turn`) and on its record as stored then: `before_commit` (`write_runs`: a
    name another run or a teammate created while this one computed is refused), the writes."""
    dataset = dataset_io.dataset_of(samples)
    with leases.commit_turn(dataset_io.dataset_id(dataset)):
        dataset_io.refresh_records(dataset)
        if before_commit is not None:
            before_commit()
        return _commit_in_turn(samples, names, stage_runs, plan)


def _commit_in_turn(
    samples: SampleCollection,
    names: runs.PipelineNames,
    stage_runs: Sequence[StageRun],
    plan: list[_Staged],
) -> list[str]:
    dataset = dataset_io.dataset_of(samples)
    replace = {run.stage: run.replace for run in stage_runs}
    fingerprints = {run.stage: run.outputs.fingerprints() for run in stage_runs}
    for run in stage_runs:
        kill_point(run.stage, "before_commit")
        leases.verify(dataset_io.dataset_id(dataset), names.key, run.stage)
    for run in stage_runs:
        if run.replace:
            delete_previous(samples, names, run.stage)
    for staged in plan:
        # unowned leftovers of an interrupted run, journaled
        dataset_io.delete_fields(dataset, [f for f, s in staged.stages.items() if replace[s]])
        marks = {f: runs.field_mark(names, s) for f, s in staged.stages.items()}
        dataset_io.commit_staged(dataset, staged.collection, staged.kinds, staged.ids, marks)
        for field_name, field_mark in marks.items():  # fields that existed: marked now
            dataset_io.mark_field(dataset, field_name, field_mark)
        for stage in dict.fromkeys(staged.stages.values()):
            kill_point(stage, "field")
    for run in stage_runs:
        _commit_tags_views_layouts(samples, names, run)
    run_keys = []
    for run in stage_runs:
        kill_point(run.stage, "before_run_record")
        run_keys.append(
            runs.record_run(
                samples,
                names,
                run.stage,
                params=run.params,
                results={**run.results, WRITTEN_VALUES: fingerprints[run.stage]},
                **run.outputs.owned(),
            )
        )
        journal.end(dataset, names.key, run.stage)
    return run_keys


def _commit_tags_views_layouts(
    samples: SampleCollection, names: runs.PipelineNames, run: StageRun
) -> None:
    """A run's outputs other than fields (step 3), and the marks of fields it wrote itself."""
    dataset = dataset_io.dataset_of(samples)
    outputs = run.outputs
    for tag, ids in outputs.tags.items():
        dataset_io.remove_tag(dataset, tag)
        kill_point(run.stage, "tag")
        dataset_io.add_tag(dataset, tag, ids)
    for view_name, (tag, description) in outputs.views.items():
        dataset_io.save_tagged_view(dataset, view_name, tag, description)
    for brain_key, layout in outputs.layouts.items():
        dataset_io.delete_brain_run(dataset, brain_key)  # an unowned leftover, journaled
        dataset_io.write_layout(
            samples,
            brain_key,
            layout.ids,
            layout.embeddings,
            layout.method,
            owned=layout.owned,
            **layout.options,
        )
    for field_name in outputs.written_fields:
        if dataset_io.has_field(dataset, field_name):
            dataset_io.mark_field(dataset, field_name, runs.field_mark(names, run.stage))
