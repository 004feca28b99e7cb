"""Selection stage, rounds 2 and later (`select_more`): the next labeling budget, never a sample
already selected or labeled, with the rule of the key's coreset (`fiftyone_elfs.stages.selection`).
Each round is a tag, a saved view and a run of the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fiftyone_elfs import dataset_io, output_proof, runs
from fiftyone_elfs.dataset_io import SampleCollection
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.stages import StageConfig, record
from fiftyone_elfs.stages.candidates import (
    other_slices_notice,
    shared_files_notice,
    without_missing_media,
)
from fiftyone_elfs.stages.selection import (
    HARD_IS_LOW,
    CoresetResult,
    beta_for,
    chosen_by,
    require_scores,
    results_record,
    selection_result,
)
from fiftyone_elfs.stages.typical_selection import (
    embeddings_field,
    read_candidates,
    typical_prune,
    with_earlier_picks,
)


@dataclass(frozen=True)
class RoundConfig(StageConfig):
    """The parameters of `fiftyone_elfs.select_more` (documented there)."""

    OPERATION = "select_more"

    key: str
    budget_count: int | None
    budget_fraction: float | None
    label_field: str | None
    beta: float | None
    score: str | None  # None: the score this key's coreset was selected by


def preflight(samples: SampleCollection, values: dict[str, Any]) -> None:
    """The cheap data checks an App form repeats as the user types (select_more): the key has
    a coreset to continue (run records), a beta or score fits its rule, the label field holds
    labels."""
    key = values.get("key")
    if key and "coreset" not in runs.list_pipelines(dataset_io.dataset_of(samples)).get(key, []):
        raise ElfsInputError(
            f"Key '{key}' has no coreset yet, so there is nothing to continue. Fix: run "
            "select_coreset with this key first (it is round 1), or choose a key that has one.",
            param="key",
        )
    if key and (values.get("beta") is not None or values.get("score")):
        dataset = dataset_io.dataset_of(samples)
        names = runs.PipelineNames(key)
        mode = getattr(runs.stage_results(dataset, names, "coreset"), "mode", None) or "window"
        if values.get("beta") is not None:
            _refuse_a_cut_of_typical_rounds(values["beta"], mode)
        if values.get("score") and mode != "typical":  # typical rounds read no score
            require_scores(samples, names, values["score"])
    if values.get("label_field"):
        dataset_io.require_field(samples, values["label_field"], "label_field", "label field")
        # any value would count as "labeled": only Classification labels are labels; a field
        # answers are loaded into may hold none yet (the annotators only skipped so far)
        dataset = dataset_io.dataset_of(samples)
        pending = _answers_loaded_into(dataset, values["label_field"])
        record.require_annotator_labels(dataset, values["label_field"], may_be_empty=pending)
    if key:
        _refuse_when_nothing_left(samples, key, values.get("label_field"), values.get("score"))


def _refuse_when_nothing_left(
    samples: SampleCollection, key: str, label_field: str | None, score: str | None
) -> None:
    """The form's early word for `select_more`'s "nothing left": no sample holding the field
    the round counts is free of the key's selection tags and, with a label field, unlabeled.
    One query, which ends at the first free sample. A sample a run selected that the user
    untagged counts as free here (the run refuses it), so this never refuses a round the run
    would make."""
    dataset = dataset_io.dataset_of(samples)
    names = runs.PipelineNames(key)
    rule = _CoresetRule.of(dataset, names)
    field = _round_embeddings_field(samples, names, rule.results)[0] if rule.typical else None
    counted = rule.counted_field(names, score or rule.score, field)
    if not dataset_io.has_field(samples, counted):
        return  # the run names what is missing
    later = [r for r in runs.round_numbers(dataset, names) if r > 1]
    tags = [rule.tag(names), *(names.round_tag(r) for r in later)]
    free = dataset_io.unordered(samples).exists(counted).match_tags(tags, bool=False)
    if label_field:
        free = free.exists(label_field, bool=False)
    if not dataset_io.holds_any(free):
        n = dataset_io.count(samples.exists(counted))
        _refuse_nothing_left(samples, names, n, counted, rule.scored)


@dataclass(frozen=True)
class _CoresetRule:
    """What a key's coreset (round 1) recorded that its later rounds follow."""

    config: Any
    results: Any
    score: str  # the score the coreset was selected by
    mode: str  # "window", "ccs" or "typical"
    # a typical coreset selected without scores keeps to the samples with an embedding,
    # whatever scores are computed since (they would shrink the pool and hide round 1's picks)
    scored: bool

    @classmethod
    def of(cls, dataset: Any, names: runs.PipelineNames) -> _CoresetRule:
        config = runs.stage_config(dataset, names, "coreset")
        results = runs.stage_results(dataset, names, "coreset")
        return cls(
            config=config,
            results=results,
            score=getattr(config, "score", None) or "aum",
            mode=getattr(results, "mode", None) or "window",  # coresets before modes: windows
            scored=getattr(results, "scored", True) is not False,  # runs before the flag
        )

    @property
    def typical(self) -> bool:
        return self.mode == "typical"

    def tag(self, names: runs.PipelineNames) -> str:
        """The coreset's tag (the key's default for coresets that did not record one)."""
        return getattr(self.config, "tag", None) or names.tag

    def counted_field(self, names: runs.PipelineNames, score: str, field: str | None) -> str:
        """The field whose samples a round draws from: the score's, or the embeddings field
        of a typical coreset selected without scores."""
        return names.score_field(score) if self.scored or field is None else field


def select_more(samples: SampleCollection, config: RoundConfig) -> CoresetResult:
    """Round k >= 2, with the coreset's rule: the window of the cumulative budget minus what is
    selected or labeled, a CCS draw from what is neither, or typical selection in the cells
    none of them covers."""
    from fiftyone_elfs.selection import ccs_prune, next_round_prune, resolve_budget

    names = runs.PipelineNames(config.key)
    dataset_io.require_stored(samples)
    dataset = dataset_io.dataset_of(samples)
    rounds = runs.selection_rounds(dataset, names)
    if 1 not in rounds:
        raise ElfsInputError(
            f"Key '{config.key}' has no coreset yet, so there is nothing to continue. "
            "Fix: run select_coreset first (it is round 1)."
        )
    preflight(samples, {"label_field": config.label_field})
    rule = _CoresetRule.of(dataset, names)
    coreset_config, coreset, coreset_score = rule.config, rule.results, rule.score
    score, mode, scored = config.score or coreset_score, rule.mode, rule.scored
    field, field_notices = (
        _round_embeddings_field(samples, names, coreset) if mode == "typical" else (None, [])
    )
    ids, values, pool_notices = read_candidates(
        samples, names, score, scored, rounds=True, ranked=mode != "typical", field=field
    )
    pool_notices = field_notices + pool_notices
    ids, values, gone = without_missing_media(samples, ids, values)
    n = len(ids)
    budget = resolve_budget(
        n, budget_count=config.budget_count, budget_fraction=config.budget_fraction
    )
    # past the rounds whose runs are gone but whose tags are still on samples (numbering the
    # new round as one of them would take over its tag: refused as a leftover)
    orphans = _orphan_rounds(dataset, names, rounds)
    round_no = max([*rounds, *orphans]) + 1
    stage = runs.round_stage(round_no)
    tag, view_name = names.round_tag(round_no), names.round_view(round_no)
    record.check_ownership(samples, names, stage, tags=[tag], views=[view_name])
    excluded_ids = {i for selected in rounds.values() for i in selected}
    # samples tagged by this key's rounds that its runs did not select (merged in from another
    # dataset that ran the same key: add_collection, merge_samples) were handed out there
    coreset_tag = rule.tag(names)
    tags = [coreset_tag, *(names.round_tag(r) for r in rounds if r > 1)]
    excluded_ids.update(dataset_io.ids_with_tags(samples, tags))
    # the tags of earlier rounds whose runs are gone (delete_run and rename_run leave them):
    # their samples were handed out all the same
    orphan_notices = _orphan_round_tags(samples, names, orphans, excluded_ids)
    if config.label_field is not None:
        # read from the dataset: a label the view hides (the App's sidebar filter) counts
        labeled = dataset_io.every_slice(dataset)
        excluded_ids.update(dataset_io.ids_with_values(labeled, config.label_field))
    excluded = np.array([i in excluded_ids for i in ids], dtype=bool)
    if mode == "typical":  # reads no score: earlier picks outside the scored pool count too
        ids, excluded = with_earlier_picks(samples, names, ids, excluded, excluded_ids, field)
        values = None
    if excluded.all():
        counted = rule.counted_field(names, score, field)
        _refuse_nothing_left(samples, names, n, counted, scored)
    mode_reason = f"the rule of this key's coreset ({mode})"
    if config.beta is not None:
        _refuse_a_cut_of_typical_rounds(config.beta, mode)
    total_fraction = min((int(excluded.sum()) + budget) / n, 1.0)
    # beta unset continues the coreset's own: a beta the user gave round 1 is kept, else the
    # label-free rule is recomputed for the cumulative budget
    coreset_beta = getattr(coreset_config, "beta", None) if mode != "typical" else None
    beta, beta_reason = beta_for(
        samples,
        names,
        ids,
        score,
        values,
        config.beta if config.beta is not None else coreset_beta,
        total_fraction,
        mode,
    )
    if config.beta is None and coreset_beta is not None:
        beta_reason = "set by the user for this key's coreset (round 1)"
    hard_is_low = HARD_IS_LOW[score]
    seed = int(getattr(coreset_config, "seed", 0) or 0)
    if mode == "typical":
        pruned = typical_prune(
            samples,
            names,
            ids,
            budget,
            seed + round_no,
            excluded=excluded,
            field=field,
            rounds=True,
        )
    elif mode == "ccs":
        pruned = ccs_prune(
            values, budget, beta, hard_is_low=hard_is_low, excluded=excluded, seed=seed + round_no
        )
    else:
        pruned = next_round_prune(  # the coreset's seed: its ties in its order (nested windows)
            values, excluded, budget, beta, hard_is_low=hard_is_low, seed=seed
        )
    pruned.notices.extend(other_slices_notice(samples))
    pruned.notices.extend(pool_notices)
    pruned.notices.extend(gone)
    pruned.notices.extend(orphan_notices)
    chosen = [ids[i] for i in pruned.indices]
    pruned.notices.extend(shared_files_notice(samples, chosen, sorted(excluded_ids)))
    if not scored and config.score is not None:
        pruned.notices.append(
            f"score='{config.score}' is not used: this key's coreset was selected by typical "
            "selection on the embeddings alone, and its rounds read no score."
        )
    if score != coreset_score and mode != "typical":  # typical selection uses no score
        pruned.notices.append(
            f"This round ranks by {score}, and this key's coreset by {coreset_score}: it does "
            "not continue the coreset's ranking, so the rounds do not add up to one selection. "
            "Leave score unset to continue it."
        )
    used_score = score if scored else None  # a typical coreset's rounds without scores: none
    result = selection_result(
        names, ids, pruned, beta_reason, used_score, tag, view_name, round_no, mode, mode_reason
    )
    description = (
        f"ELFS round {round_no} of '{config.key}': {result.budget} more of {n} samples by "
        f"{chosen_by(score, mode)}"
    )
    record.record(
        samples,
        names,
        stage,
        params={
            "budget_count": config.budget_count,
            "budget_fraction": config.budget_fraction,
            "beta": config.beta,
            "label_field": config.label_field,
            "score": used_score,
            "tag": tag,
            "saved_view": view_name,
        },
        results=results_record(
            result,
            pruned,
            n_excluded=int(excluded.sum()),
            scored=scored,
            embeddings_field=field if mode == "typical" else None,
        ),
        outputs=record.Outputs(
            tags={tag: result.selected_ids}, views={view_name: (tag, description)}
        ),
    )
    return result


def _refuse_nothing_left(
    samples: SampleCollection, names: runs.PipelineNames, n: int, field: str, scored: bool
) -> None:
    """Refuses a round with every candidate already selected or labeled: in a view holding
    part of the key's candidates (the App's "Show coreset", a few selected samples), those
    outside it are named with the fix; else more samples, or another key."""
    dataset = dataset_io.dataset_of(samples)
    what = "scored" if scored else "candidate"
    if samples is not dataset and dataset.media_type != "group":  # slices: the notices say
        n_view = dataset_io.count(samples.exists(field))
        n_all = dataset_io.count(dataset.exists(field))
        if n_all > n_view:
            raise ElfsInputError(
                f"This view holds {n_view} of the {n_all} {what} samples of key '{names.key}', "
                "and every one of them is already selected or labeled. Fix: select from the "
                "dataset (in the App, the target 'Entire dataset') or from a view holding "
                f"more of its {n_all - n_view} other {what} samples."
            )
    more = (
        f"embed more samples (compute_embeddings with key '{names.key}' on a larger view)"
        if not scored
        else "score more samples (run the pipeline on a larger pool with another key)"
    )
    raise ElfsInputError(
        f"Every one of the {n} {what} samples of key '{names.key}' is already selected or "
        f"labeled, so there is nothing left to select. Fix: {more}, or start a new selection "
        "with another key."
    )


def _refuse_a_cut_of_typical_rounds(beta: float, mode: str) -> None:
    """Refuses a beta for the rounds of a typical coreset, which cut nothing."""
    if mode == "typical":
        raise ElfsInputError(
            f"beta={beta} sets a hard-end cut, and this key's coreset used mode='typical', "
            "which makes none (its rounds select on the embeddings alone). Fix: leave beta "
            "unset, or start a new key with mode='ccs' or mode='window' to cut the hardest "
            "share.",
            param="beta",
        )


def _orphan_round_tags(
    samples: SampleCollection,
    names: runs.PipelineNames,
    orphans: list[int],
    excluded_ids: set[str],
) -> list[str]:
    """Adds to `excluded_ids` the samples tagged by the rounds `orphans`, whose runs are gone
    (dataset.delete_run, dataset.rename_run), and says so: they were handed out all the same."""
    notices = []
    for r in orphans:
        tag = names.round_tag(r)
        tagged = set(dataset_io.ids_with_tags(samples, [tag])) - excluded_ids
        if tagged:
            excluded_ids.update(tagged)
            notices.append(
                f"{len(tagged)} samples carry the tag '{tag}' of round {r}, whose run is gone "
                "(deleted, or renamed with dataset.rename_run): they were handed out in that "
                "round, so this round leaves them out. "
                f"To offer them again, untag them first (dataset.untag_samples('{tag}'))."
            )
    return notices


def _answers_loaded_into(dataset: Any, label_field: str) -> bool:
    """Whether an annotation run sent by fiftyone-elfs loads its answers into `label_field`."""
    from fiftyone_elfs.annotation_inputs import annotation_run_key

    prefix = annotation_run_key("")
    return any(
        getattr(dataset.get_run_info(k).config, "label_field", None) == label_field
        for k in dataset.list_runs()
        if k.startswith(prefix)
    )


def _orphan_rounds(dataset: Any, names: runs.PipelineNames, recorded: Any) -> list[int]:
    """The round numbers (2 and up), in order, whose tags (`PipelineNames.round_tag`) are on
    samples of the dataset while no run of `recorded` is theirs, and are provably ELFS's: the
    round's saved view, as ELFS saved it, shows the tag (a tag set by hand under that name is
    the user's)."""
    prefix = names.round_tag(0)[:-1]
    numbers = {
        int(t[len(prefix) :])
        for t in dataset_io.distinct_tags(dataset)
        if t.startswith(prefix) and t[len(prefix) :].isdigit() and int(t[len(prefix) :]) > 1
    }
    return [
        r
        for r in sorted(numbers - set(recorded))
        if output_proof.view_saved_by(dataset, names.key, runs.round_stage(r), names.round_view(r))
        == names.round_tag(r)
    ]


def _round_embeddings_field(
    samples: SampleCollection, names: runs.PipelineNames, coreset: Any
) -> tuple[str, list[str]]:
    """The embeddings field a typical coreset's rounds select on: the one it was selected on (a
    later compute_pseudo_labels on another field would otherwise move them); once that field is
    gone, the key's current one, with a notice."""
    current = embeddings_field(samples, names)
    recorded = getattr(coreset, "embeddings_field", None)  # coresets before it: the current
    if not recorded or recorded == current or dataset_io.has_field(samples, recorded):
        return recorded or current, []
    return current, [
        f"The embeddings field '{recorded}' this key's coreset was selected on is gone, so this "
        f"round selects on '{current}', the key's current one (its pseudo-labels' field, else "
        "its embeddings run's)."
    ]
