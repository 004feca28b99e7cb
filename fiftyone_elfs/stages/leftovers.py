"""Leftovers of a key: outputs its stages wrote that no run of the key records any more,
because ``view.clone()`` copied them without the runs, ``dataset.delete_run()`` removed
the run, or ``dataset.rename_run()`` made it the user's record (a run counts as a stage of a key
only under its run key ``<key>_<stage>``). Only what ELFS can prove is its own: a field of the
key's own name, or that a renamed run lists, carrying the stage's mark (a field the user
re-created under that name has none, one they renamed has another name); a saved view of the
key's name with the description and the one tag match that the stage saves; a tag of the key's
name (or that a renamed run lists) that such a view shows, or the coreset's tag on exactly the
samples the key's leftover region field puts in the coreset; a brain run a renamed run lists,
registered before that run. A tag or view named like the key's that is not proven is kept
(`delete_leftovers` logs it).

`leftovers` finds them, `leftover_error` refuses to write over one a rerun may not take over
(`fiftyone_elfs.stages.record.check_ownership` decides), `delete_leftovers` removes them
(`delete_key`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fiftyone_elfs import dataset_io, journal, output_proof, runs
from fiftyone_elfs.errors import ElfsInputError

logger = logging.getLogger(__name__)


def stage_words(stage: str) -> str:
    """A stage as messages name it: "coreset", "labeling round 2", "'difficulty' stage"."""
    if stage == "coreset":
        return "coreset"
    if stage.startswith("round"):
        return f"labeling round {stage[len('round') :]}"
    return f"'{stage}' stage"


@dataclass(frozen=True)
class Leftover:
    """An output of a stage of a key that no run of the key records any more (module doc).

    Attributes:
        stage: the stage that wrote it.
        renamed_to: the run key of the renamed ELFS run that lists it (None: its run is gone).
    """

    stage: str
    renamed_to: str | None = None


def _key_fields(names: runs.PipelineNames) -> dict[str, str]:
    """The fields the key's stages write under the key's own names: field -> stage."""
    fields = {
        names.embeddings_field: "embeddings",
        names.pseudo_label_field: "pseudo_labels",
        names.score_field("contrastive"): "contrastive",
        names.region_field: "coreset",
    }
    return {**fields, **{names.score_field(s): "difficulty" for s in runs.SCORE_NAMES}}


def _named_stage(names: runs.PipelineNames, kind: str, name: str) -> str | None:
    """The stage whose tag (`kind` "tags") or saved view ("views") the key names `name`."""
    coreset, separator = (names.tag, "_") if kind == "tags" else (names.saved_view, "-")
    if name == coreset:
        return "coreset"
    number = name.removeprefix(f"{names.key}{separator}round")
    if number != name and number.isdigit() and int(number) >= 2 and str(int(number)) == number:
        return runs.round_stage(int(number))
    return None


def _coreset_by_regions(dataset: Any, region_field: str, tag: str) -> bool:
    """Whether a tag is on exactly the samples a leftover region field puts in the coreset."""
    n_coreset = dataset_io.every_slice(dataset).count_values(region_field).get("coreset", 0)
    counts = dataset_io.tagged(dataset, tag).count_values(region_field)
    return n_coreset > 0 and counts == {"coreset": n_coreset}


def leftovers(
    dataset: Any, names: runs.PipelineNames, fields_only: bool = False
) -> dict[str, dict[str, Leftover]]:
    """The key's leftovers (module doc) by kind (``owned_fields`` ...): name -> `Leftover`.

    Nothing a recorded run owns, nothing of another key, nothing ELFS cannot prove it wrote
    (a field re-created or renamed by the user, a tag set by hand, a view saved by hand, a
    brain run computed after the renamed run that lists its key). A renamed run's list alone
    proves nothing: the user may have made a tag or view of that name since.
    `fields_only`: only the fields (no query of the samples).
    """
    found: dict[str, dict[str, Leftover]] = {attribute: {} for attribute in runs.OWNED_KINDS}
    listed: dict[tuple[str, str], tuple[str, Any]] = {}  # (attribute, name) -> renamed run
    for run_key, config in runs.renamed_runs(dataset, names.key):
        for attribute in runs.OWNED_KINDS:
            for name in getattr(config, attribute, None) or []:
                listed.setdefault((attribute, name), (run_key, config))

    def add(attribute: str, name: str, stage: str) -> None:
        if name not in found[attribute] and runs.owner_of(dataset, attribute, name) is None:
            renamed = listed.get((attribute, name), (None, None))[0]
            found[attribute][name] = Leftover(stage, renamed)

    for (attribute, name), (run_key, config) in listed.items():
        if attribute == "owned_fields" and dataset_io.has_field(dataset, name):
            if output_proof.still_owned(dataset, config, attribute, name):  # carries its mark
                add(attribute, name, config.stage)
        elif attribute == "owned_brain_runs" and not fields_only:
            if output_proof.brain_run_before(dataset, name, run_key):
                add(attribute, name, config.stage)
    for name, stage in _key_fields(names).items():
        if dataset_io.has_field(dataset, name) and dataset_io.field_mark(
            dataset, name
        ) == runs.field_mark(names, stage):
            add("owned_fields", name, stage)
    if fields_only:
        return found
    shown: dict[str, str] = {}  # tag -> stage of a leftover view that shows it
    for view in dataset.list_saved_views():
        stage = _named_stage(names, "views", view)
        tag = output_proof.view_saved_by(dataset, names.key, stage, view) if stage else None
        if tag is not None and runs.owner_of(dataset, "owned_views", view) is None:
            add("owned_views", view, stage)
            shown[tag] = stage
    region = names.region_field if names.region_field in found["owned_fields"] else None
    for tag in _tags(dataset):
        renamed = listed.get(("owned_tags", tag))
        stage = _named_stage(names, "tags", tag) or (renamed[1].stage if renamed else None)
        by_regions = tag == names.tag and region is not None  # a round's tag: by its view only
        if stage is not None and (
            shown.get(tag) == stage or (by_regions and _coreset_by_regions(dataset, region, tag))
        ):
            add("owned_tags", tag, stage)
    return found


def _tags(dataset: Any) -> list[str]:
    """The tags on the dataset's samples."""
    return list(dataset_io.distinct_values(dataset_io.every_slice(dataset), "tags"))


def origin(names: runs.PipelineNames, word: str, name: str, leftover: Leftover) -> str:
    """Where a leftover comes from, as a sentence."""
    writer = f"the {word} '{name}' was written by the {stage_words(leftover.stage)} of key "
    if leftover.renamed_to is not None:
        return (
            f"{writer}'{names.key}', whose run is now '{leftover.renamed_to}' (renamed with "
            "dataset.rename_run: a run counts as a stage of a key only under its run key "
            f"'{names.run_key(leftover.stage)}', so it is your record now)."
        )
    return (
        f"{writer}'{names.key}', but no run of the key records it any more (view.clone() "
        "copies fields and tags but no runs; dataset.delete_run() removes a run's record, not "
        "what the run wrote)."
    )


def rename_back(names: runs.PipelineNames, leftover: Leftover) -> str:
    if leftover.renamed_to is None:
        return ""
    return (
        f", rename its run back (dataset.rename_run('{leftover.renamed_to}', "
        f"'{names.run_key(leftover.stage)}'))"
    )


def leftover_error(
    names: runs.PipelineNames,
    word: str,
    name: str,
    leftover: Leftover,
    found: dict[str, dict[str, Leftover]],
) -> ElfsInputError:
    """The refusal to write over a leftover of the key that its run may not take over (a tag
    or saved view: samples may have been handed out under it; another stage's field): where
    it comes from and the fixes, with the calls that remove that stage's leftovers."""
    removal = {
        "owned_fields": "dataset.delete_sample_field('{}')",
        "owned_tags": "dataset.untag_samples('{}')",
        "owned_views": "dataset.delete_saved_view('{}')",
        "owned_brain_runs": "dataset.delete_brain_run('{}')",
    }
    calls = "; ".join(  # the stage's leftovers a rerun refuses (it takes over its fields)
        removal[attribute].format(n)
        for attribute, items in found.items()
        for n, other in items.items()
        if other.stage == leftover.stage and (attribute != "owned_fields" or n == name)
    )
    where = origin(names, word, name, leftover)
    kept = "" if leftover.renamed_to is None else f" ('{leftover.renamed_to}' stays: yours)"
    rename = rename_back(names, leftover)
    return ElfsInputError(
        f"{where[0].upper()}{where[1:]} A rerun does not replace it. Fix: "
        f"delete_key(dataset, '{names.key}') removes the key's runs and what it left{kept}; "
        f"or remove it yourself ({calls}){'; or' + rename[1:] if rename else ''}; or use "
        f"another key (e.g. key='{names.key}2').",
        param="key",
    )


def delete_leftovers(dataset: Any, names: runs.PipelineNames) -> list[str]:
    """Deletes the key's `leftovers` (journaled per stage, as `runs.delete_stage` deletes);
    returns their stages. A renamed run itself is kept: the user's record."""
    by_stage: dict[str, dict[str, list[str]]] = {}
    for attribute, items in leftovers(dataset, names).items():
        for name, leftover in items.items():
            owned = by_stage.setdefault(leftover.stage, {a: [] for a in runs.OWNED_KINDS})
            owned[attribute].append(name)
    for stage, owned in by_stage.items():
        # fields of a run from before marks, listed by its renamed record, carry none
        legacy = [f for f in owned["owned_fields"] if dataset_io.field_mark(dataset, f) is None]
        journal.add(dataset, names.key, stage, owned, unmarked_fields=legacy)
        runs.delete_names(dataset, owned)
        journal.end(dataset, names.key, stage)
    kept = [  # named like the key's but not provably its: kept; say so, and how to remove
        (f"{word} '{name}'", call.format(name))
        for attribute, kind, word, call, present in (
            ("owned_tags", "tags", "tag", "dataset.untag_samples('{}')", _tags(dataset)),
            ("owned_views", "views", "saved view", "dataset.delete_saved_view('{}')", None),
        )
        for name in (present if present is not None else dataset.list_saved_views())
        if _named_stage(names, kind, name) and runs.owner_of(dataset, attribute, name) is None
    ]
    kept += [  # a plot left by dataset.delete_run('<key>_visualization'): no record proves it
        (f"embedding plot '{brain_key}'", f"dataset.delete_brain_run('{brain_key}')")
        for brain_key in (names.brain_key, f"{names.key}_pca")
        if brain_key in dataset_io.brain_runs(dataset)
        and runs.owner_of(dataset, "owned_brain_runs", brain_key) is None
    ]
    if kept:
        logger.warning(
            "delete_key kept the %s: named like key '%s''s outputs, but ELFS cannot prove it "
            "wrote them (yours, or set or changed by hand). If they are ELFS's, remove them "
            "yourself: %s.",
            ", ".join(what for what, _ in kept),
            names.key,
            "; ".join(call for _, call in kept),
        )
    return runs.sort_stages(list(by_stage))


def refuse_values_not_computed_by(
    dataset: Any, names: runs.PipelineNames, field_name: str, stage: str
) -> None:
    """Refuses a field holding values that no run of the key's `stage` computed (the user's,
    or the key's own left by a view's clone, delete_run or rename_run), naming where they came
    from and the fix: a stage never overwrites or mixes values it cannot prove it wrote."""
    if not dataset_io.ids_with_values(dataset, field_name):
        return
    found = leftovers(dataset, names, fields_only=True)["owned_fields"]
    leftover = found.get(field_name)
    # a view's clone, delete_run or rename_run left the key's own embeddings: not taken
    # over (another key's runs may read them, and a view's run would drop the rest)
    own = leftover is not None and leftover.stage == stage
    where = (
        f" ({origin(names, 'field', field_name, leftover)} "
        f"delete_key(dataset, '{names.key}') removes it.)"
        if own
        else ""
    )
    anew = (
        " To recompute them under this key, delete the field first "
        f"(dataset.delete_sample_field('{field_name}')) and run again."
        if own and leftover.renamed_to is None
        else ""
    )
    raise ElfsInputError(
        f"The field '{field_name}' already holds values that this run did not compute; "
        f"refusing to overwrite or mix them.{where} Fix: to use those embeddings, pass "
        f"embeddings_field='{field_name}' to the later stages (or run_pipeline) instead; "
        f"to compute new ones, choose another key or embeddings_field.{anew}",
        param="embeddings_field",
    )
