"""Selection stage: the coreset (labeling round 1); the next rounds:
`fiftyone_elfs.stages.selection_rounds`.

On a difficulty score, the hardest beta share is cut (likely wrong pseudo-labels), then either
the double-end window keeps the next budget in rank order, or CCS draws the budget evenly
across the difficulty range left; or, with no score at all, typical selection takes the most
typical sample of each of budget k-means cells of the embeddings. ``mode="auto"`` picks by the
pseudo-labels' recorded trust. The coreset is a tag, a saved view and a run of the key.
Algorithms: `fiftyone_elfs.selection.pruning` (budgets, window, CCS, label-free beta),
`fiftyone_elfs.selection.typical` and `fiftyone_elfs.selection.modes` (the rule between them);
typical selection's reading of the embeddings: `fiftyone_elfs.stages.typical_selection`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

import fiftyone as fo
import numpy as np

from fiftyone_elfs import dataset_io, runs
from fiftyone_elfs.app_colors import apply_app_colors
from fiftyone_elfs.dataset_io import SampleCollection
from fiftyone_elfs.difficulty.training_dynamics import HARD_IS_LOW as _PROXY_HARD_IS_LOW
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.stages import StageConfig, difficulty, pseudo_labels, record
from fiftyone_elfs.stages.candidates import (
    other_slices_notice,
    scoring_stage,
    shared_files_notice,
    without_missing_media,
)
from fiftyone_elfs.stages.typical_selection import (
    NO_CUT_REASON,
    embedded_pool,
    embeddings_field,
    has_scores,
    read_candidates,
    typical_prune,
)

logger = logging.getLogger(__name__)

#: For each selection score, whether a low value means hard (kept last, cut first).
HARD_IS_LOW = {**_PROXY_HARD_IS_LOW, "contrastive": True}  # low view similarity = informative


@dataclass
class CoresetResult:
    """What `select_coreset` (round 1) or `select_more` (round 2+) chose and why."""

    key: str
    selected_ids: list[str]
    n_pool: int
    budget: int
    beta: float
    beta_reason: str
    score: str | None  # None: a typical selection that read no score
    tag: str
    saved_view: str
    notices: list[str] = field(default_factory=list)
    round: int = 1  # labeling round: 1 = the coreset, 2+ = select_more
    mode: str = "window"  # the rule used: "window", "ccs" or "typical"
    mode_reason: str = ""  # one sentence: why that rule

    def view(self, dataset: fo.Dataset) -> fo.DatasetView:
        """The selected samples as a view of `dataset`."""
        return dataset_io.tagged(dataset, self.tag)


@dataclass(frozen=True)
class CoresetConfig(StageConfig):
    """The parameters of `fiftyone_elfs.select_coreset` (documented there)."""

    OPERATION = "select_coreset"

    key: str
    budget_count: int | None
    budget_fraction: float | None
    beta: float | None
    score: str
    mode: str
    seed: int
    tag: str | None


def check_mode_and_beta(mode: str | None, beta: float | None) -> None:
    """Refuses a beta with typical selection, which makes no cut (checked with the other
    parameters, before a pipeline computes anything)."""
    if mode == "typical" and beta is not None:
        raise ElfsInputError(
            f"beta={beta} sets a hard-end cut of the difficulty ranking, and "
            "mode='typical' makes no cut (it selects on the embeddings alone). Fix: leave "
            "beta unset, or choose mode='window' or mode='ccs' to cut the hardest share.",
            param="beta",
        )


def preflight(samples: SampleCollection, values: dict[str, Any]) -> None:
    """The cheap checks an App form repeats as the user types (select_coreset): the mode and
    beta go together, and the key has run on this dataset (a mistyped key would only fail
    once the run starts)."""
    check_mode_and_beta(values.get("mode"), values.get("beta"))
    key = values.get("key")
    if not key:
        return
    dataset = dataset_io.dataset_of(samples)
    keys = runs.list_pipelines(dataset)
    if not keys.get(key):
        raise ElfsInputError(
            f"Key '{key}' has no ELFS run on this dataset, so there is nothing to select from. "
            f"Fix: choose one of {sorted(keys)}, or run the pipeline with key '{key}' first.",
            param="key",
        )
    names = runs.PipelineNames(key)
    score = values.get("score") or "aum"
    if values.get("mode") == "typical" and not has_scores(samples, names, score, None):
        embedded_pool(samples, names)  # typical selection needs the embeddings alone
    else:
        require_scores(samples, names, score)
        difficulty.require_current_scores(
            samples, names, score, ranked=values.get("mode") != "typical"
        )
    require_no_later_rounds(dataset, names)
    check_tag(values.get("tag"), names)
    tags, views = [values.get("tag") or names.tag], [names.saved_view]
    record.check_ownership(
        samples, names, "coreset", fields=[names.region_field], tags=tags, views=views
    )


def check_tag(tag: str | None, names: runs.PipelineNames) -> None:
    """Refuses a coreset tag of the form ELFS derives for a key ('<key>_coreset',
    '<key>_round<k>') other than this key's own: taking it would block that key's coreset or
    this key's next round, with no argument left to free it."""
    if tag is None or tag == names.tag:
        return
    if re.fullmatch(r".+_(coreset|round\d+)", tag):
        raise ElfsInputError(
            f"The tag '{tag}' has the form ELFS gives a key's coreset or rounds "
            "('<key>_coreset', '<key>_round<k>'), so that key's selection would find it taken. "
            f"Fix: choose a tag not ending in '_coreset' or '_round<k>', or leave tag=None "
            f"('{names.tag}').",
            param="tag",
        )


def require_scores(samples: SampleCollection, names: runs.PipelineNames, score: str) -> None:
    """Refuses a key without `score` values: the window and CCS rank by them, "auto" may choose
    either (so it asks for them whatever the pseudo-labels' trust turns out to be), and a
    typical selection's candidates are the scored samples where the key has scores."""
    scoring = scoring_stage(score)
    try:
        field_name = names.score_field(score)
        record.check_input(samples, names, scoring, field_name, f"'{score}' scores")
    except ElfsInputError as e:
        raise ElfsInputError(str(e), param="score" if scoring == "contrastive" else "key") from None


def beta_for(
    samples: SampleCollection,
    names: runs.PipelineNames,
    ids: list[str],
    score: str,
    values: np.ndarray | None,
    beta: float | None,
    budget_fraction: float,
    mode: str,
) -> tuple[float, str]:
    """The user's beta, or the label-free default for this score and budget, with the reason;
    none for typical selection, which makes no cut (a user's beta is refused before this).

    `values`: the `score` of the samples `ids` (the AUM itself is not read again); None for
    typical selection, which reads no score."""
    from fiftyone_elfs.selection import label_free_beta

    if mode == "typical":
        return 0.0, NO_CUT_REASON
    if beta is not None:
        return float(beta), "set by the user"
    if score == "contrastive":
        if mode == "ccs":  # CCS draws across the whole range: no hard-end cut either
            return 0.0, "no cut: the contrastive view similarity has no hard end to drop"
        return 0.0, "keep-lowest: the least similar views are the most informative (no cut)"
    if score == "aum":
        return label_free_beta(values, budget_fraction)
    aum = dataset_io.read_values(samples, names.score_field("aum"), ids)[1]
    return label_free_beta(np.asarray(aum, dtype=float), budget_fraction)


def _mode_for(
    samples: SampleCollection,
    names: runs.PipelineNames,
    mode: str,
    score: str,
    held: record.HeldRuns | None = None,
    beta_set: bool = False,
) -> tuple[str, str, dict[str, Any] | None]:
    """The rule a coreset uses (`selection.resolve_mode`), why, and the trust figures it read."""
    from fiftyone_elfs.selection import resolve_mode

    difficulty_config = record.held_config(held, samples, names, "difficulty")
    label_field = getattr(difficulty_config, "true_label_field", None)
    if mode == "auto" and score != "contrastive" and label_field:
        return (
            "window",
            (
                f"the proxy learned targets derived from the labels in '{label_field}', not "
                "from the pseudo-labels alone, so the double-end window is used"
            ),
            None,
        )
    results = record.held_results(held, samples, names, "pseudo_labels")
    trust = getattr(results, "trust", None) if results is not None else None
    used, reason = resolve_mode(mode, trust, score, beta_set=beta_set)
    return used, reason, trust


def selection_result(
    names: runs.PipelineNames,
    ids: list[str],
    pruned: Any,
    beta_reason: str,
    score: str | None,
    tag: str,
    view_name: str,
    round_no: int,
    mode: str,
    mode_reason: str,
) -> CoresetResult:
    for notice in pruned.notices:
        logger.warning(notice)
    return CoresetResult(
        key=names.key,
        selected_ids=[ids[i] for i in pruned.indices],
        n_pool=len(ids),
        budget=len(pruned.indices),
        beta=float(pruned.effective_beta),
        beta_reason=beta_reason,
        score=score,
        tag=tag,
        saved_view=view_name,
        notices=list(pruned.notices),
        round=round_no,
        mode=mode,
        mode_reason=mode_reason,
    )


def results_record(result: CoresetResult, pruned: Any, **extra: Any) -> dict[str, Any]:
    """What a selection run stores: counts, the rule and why, beta and why, the range drawn
    from (the window; the cut to the end for CCS; the whole ranking for typical), the selected
    ids."""
    return {
        "n_pool": result.n_pool,
        "n_selected": result.budget,
        **extra,
        "mode": result.mode,
        "mode_reason": result.mode_reason,
        "beta": result.beta,
        "beta_reason": result.beta_reason,
        "window": [int(pruned.start), int(pruned.stop)],
        "notices": result.notices,
        "selected_ids": result.selected_ids,
    }


def require_no_later_rounds(dataset: fo.Dataset, names: runs.PipelineNames) -> None:
    """Refuses to replace a coreset that later labeling rounds are built on."""
    later = [r for r in runs.selection_rounds(dataset, names) if r > 1]
    if later:
        raise ElfsInputError(
            f"Key '{names.key}' already has labeling rounds {later} built on its coreset; "
            "replacing the coreset would orphan them. Fix: use another key, or "
            "delete_key(dataset, key) first.",
            param="key",
        )


def chosen_by(score: str, mode: str) -> str:
    """What chose the samples, for descriptions: the score and rule, or typical selection
    (which draws from the embeddings and does not use the score)."""
    return "typical selection" if mode == "typical" else f"{score} ({mode})"


def _regions(pruned: Any, mode: str) -> np.ndarray:
    """Each scored sample's region (`runs.REGIONS`): cut at the hard end, selected, or left.

    The window leaves the easy end ("dropped_easy"); CCS and typical selection leave samples all
    across the range they draw from ("not_drawn").
    """
    left = "dropped_easy" if mode == "window" else "not_drawn"
    regions = np.where(pruned.ranks < pruned.start, "dropped_hard", left).astype(object)
    regions[np.asarray(pruned.indices, dtype=np.int64)] = "coreset"
    return regions


def select_coreset(
    samples: SampleCollection, config: CoresetConfig, held: record.HeldRuns | None = None
) -> CoresetResult:
    """Round 1: the window, CCS draw or typical selection of the budget; tag, saved view and
    coreset regions.

    With `held` (a pipeline's `record.HeldRuns`): reads the scores (and the pseudo-labels'
    trust) held there if they are, and holds its own run there instead of writing it (the
    pipeline then also sets the App colours, `apply_app_colors`)."""
    from fiftyone_elfs.selection import ccs_prune, double_end_prune, resolve_budget

    names = runs.PipelineNames(config.key)
    # typical selection reads no score: on a key without scores, its candidates are the
    # samples with an embedding; elsewhere the scored samples ("auto" asks for the scores
    # whatever it chooses)
    scored = config.mode != "typical" or has_scores(samples, names, config.score, held)
    ids, values, pool_notices = read_candidates(
        samples, names, config.score, scored, held, ranked=config.mode != "typical"
    )
    ids, values, gone = without_missing_media(samples, ids, values)
    n = len(ids)
    budget = resolve_budget(
        n, budget_count=config.budget_count, budget_fraction=config.budget_fraction
    )
    check_tag(config.tag, names)
    tag = config.tag or names.tag
    stage = "coreset"
    if held is None:  # a pipeline checked before its first stage and checks again when writing
        record.check_ownership(
            samples, names, stage, fields=[names.region_field], tags=[tag], views=[names.saved_view]
        )
    dataset = dataset_io.dataset_of(samples)
    require_no_later_rounds(dataset, names)
    check_mode_and_beta(config.mode, config.beta)
    mode, mode_reason, trust = _mode_for(
        samples, names, config.mode, config.score, held, beta_set=config.beta is not None
    )
    pseudo_labels.require_current_trust(samples, names, config.mode, mode, held)
    beta, beta_reason = beta_for(
        samples, names, ids, config.score, values, config.beta, min(budget / n, 1.0), mode
    )
    hard_is_low = HARD_IS_LOW[config.score]
    field = embeddings_field(samples, names, held) if mode == "typical" else None
    if mode == "typical":
        pruned = typical_prune(samples, names, ids, budget, config.seed, held, field=field)
    elif mode == "ccs":
        pruned = ccs_prune(values, budget, beta, hard_is_low=hard_is_low, seed=config.seed)
    else:
        pruned = double_end_prune(values, budget, beta, hard_is_low=hard_is_low, seed=config.seed)
    pruned.notices.extend(other_slices_notice(samples))
    pruned.notices.extend(pool_notices)
    pruned.notices.extend(gone)
    pruned.notices.extend(shared_files_notice(samples, [ids[i] for i in pruned.indices]))
    logger.info("Selection rule: %s (%s).", mode, mode_reason)
    used_score = config.score if scored else None
    result = selection_result(
        names, ids, pruned, beta_reason, used_score, tag, names.saved_view, 1, mode, mode_reason
    )
    regions = _regions(pruned, mode)
    description = (
        f"ELFS coreset '{config.key}': {result.budget} of {n} samples by "
        f"{chosen_by(config.score, mode)}"
    )
    record.record(
        samples,
        names,
        stage,
        params={
            "budget_count": config.budget_count,
            "budget_fraction": config.budget_fraction,
            "beta": config.beta,
            "score": used_score,
            "mode": config.mode,
            "seed": config.seed,
            "tag": tag,
            "saved_view": names.saved_view,
        },
        # a typical coreset's rounds select on the same embeddings (`embeddings_field`)
        results=results_record(result, pruned, trust=trust, scored=scored, embeddings_field=field),
        outputs=record.Outputs(
            tags={tag: result.selected_ids},
            values={names.region_field: (ids, regions.tolist())},
            views={names.saved_view: (tag, description)},
        ),
        held=held,
    )
    if held is None:
        apply_app_colors(dataset, config.key)  # regions in the ELFS panel's colours, App-wide
    return result
