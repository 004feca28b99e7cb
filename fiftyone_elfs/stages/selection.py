"""Selection stage: the coreset (labeling round 1) and the next labeling rounds.

Double-end pruning on a difficulty score: drop the hardest beta share, keep the next budget,
drop the easy rest. Each round is a tag, a saved view and a run of the key.
Algorithm: `fiftyone_elfs.selection.pruning` (budgets, double-end pruning, label-free beta).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import fiftyone as fo
import numpy as np

from fiftyone_elfs import dataset_io, runs
from fiftyone_elfs.app_colors import apply_app_colors
from fiftyone_elfs.dataset_io import SampleCollection
from fiftyone_elfs.difficulty.training_dynamics import HARD_IS_LOW as _PROXY_HARD_IS_LOW
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.stages import StageConfig, record

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
    score: str
    tag: str
    saved_view: str
    notices: list[str] = field(default_factory=list)
    round: int = 1  # labeling round: 1 = the coreset, 2+ = select_more

    def view(self, dataset: fo.Dataset) -> fo.DatasetView:
        """The selected samples as a view of `dataset`."""
        return dataset.match_tags(self.tag)


@dataclass(frozen=True)
class CoresetConfig(StageConfig):
    """The parameters of `fiftyone_elfs.select_coreset` (documented there)."""

    OPERATION = "select_coreset"

    key: str
    budget_count: int | None
    budget_fraction: float | None
    beta: float | None
    score: str
    tag: str | None


@dataclass(frozen=True)
class RoundConfig(StageConfig):
    """The parameters of `fiftyone_elfs.select_more` (documented there)."""

    OPERATION = "select_more"

    key: str
    budget_count: int | None
    budget_fraction: float | None
    label_field: str | None
    beta: float | None
    score: str


def preflight(samples: SampleCollection, values: dict[str, Any]) -> None:
    """The cheap data checks an App form repeats as the user types (select_more)."""
    if values.get("label_field"):
        dataset_io.require_field(samples, values["label_field"], "label_field", "label field")
        # any value would count as "labeled": only Classification labels are labels
        dataset_io.require_classification_field(samples, values["label_field"], "label_field")


def _read_scores(
    samples: SampleCollection, names: runs.PipelineNames, score: str
) -> tuple[list[str], np.ndarray]:
    """The ids and `score` values of the scored samples of a view, or a clear error."""
    dataset_io.require_nonempty(samples)
    score_field = names.score_field(score)
    stage = "compute_contrastive_scores" if score == "contrastive" else "compute_difficulty"
    record.check_input(
        samples,
        names,
        "contrastive" if score == "contrastive" else "difficulty",
        score_field,
        f"'{score}' scores",
    )
    ids, values = dataset_io.read_values(samples, score_field)
    if not ids:
        raise ElfsInputError(
            f"No sample of this view has a '{score}' score. Fix: run {stage} on it."
        )
    return ids, np.asarray(values, dtype=float)


def _beta_for(
    samples: SampleCollection,
    names: runs.PipelineNames,
    ids: list[str],
    score: str,
    beta: float | None,
    budget_fraction: float,
) -> tuple[float, str]:
    """The user's beta, or the label-free default for this score and budget, with the reason."""
    from fiftyone_elfs.selection import label_free_beta

    if beta is not None:
        return float(beta), "set by the user"
    if score == "contrastive":
        return 0.0, "keep-lowest: the least similar views are the most informative (no cut)"
    aum = dataset_io.read_values(samples, names.score_field("aum"), ids)[1]
    return label_free_beta(np.asarray(aum, dtype=float), budget_fraction)


def _selection(
    names: runs.PipelineNames,
    ids: list[str],
    pruned: Any,
    beta_reason: str,
    score: str,
    tag: str,
    view_name: str,
    round_no: int,
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
    )


def _results(result: CoresetResult, pruned: Any, **extra: Any) -> dict[str, Any]:
    """What a selection run stores: counts, beta and why, the window, the selected ids."""
    return {
        "n_pool": result.n_pool,
        "n_selected": result.budget,
        **extra,
        "beta": result.beta,
        "beta_reason": result.beta_reason,
        "window": [int(pruned.start), int(pruned.stop)],
        "notices": result.notices,
        "selected_ids": result.selected_ids,
    }


def select_coreset(samples: SampleCollection, config: CoresetConfig) -> CoresetResult:
    """Round 1: the double-end window of the budget; tag, saved view and coreset regions."""
    from fiftyone_elfs.selection import double_end_prune, resolve_budget

    names = runs.PipelineNames(config.key)
    ids, values = _read_scores(samples, names, config.score)
    n = len(ids)
    budget = resolve_budget(
        n, budget_count=config.budget_count, budget_fraction=config.budget_fraction
    )
    tag = config.tag or names.tag
    stage = "coreset"
    record.check_ownership(
        samples, names, stage, fields=[names.region_field], tags=[tag], views=[names.saved_view]
    )
    dataset = dataset_io.dataset_of(samples)
    later = [r for r in runs.selection_rounds(dataset, names) if r > 1]
    if later:
        raise ElfsInputError(
            f"Key '{config.key}' already has labeling rounds {later} built on its coreset; "
            "replacing the coreset would orphan them. Fix: use another key, or "
            "delete_key(dataset, key) first."
        )
    beta, beta_reason = _beta_for(
        samples, names, ids, config.score, config.beta, min(budget / n, 1.0)
    )
    pruned = double_end_prune(values, budget, beta, hard_is_low=HARD_IS_LOW[config.score])
    result = _selection(names, ids, pruned, beta_reason, config.score, tag, names.saved_view, 1)
    regions = np.asarray(runs.REGIONS)[
        (pruned.ranks >= pruned.start).astype(int) + (pruned.ranks >= pruned.stop).astype(int)
    ]
    description = f"ELFS coreset '{config.key}': {result.budget} of {n} samples by {config.score}"
    record.record(
        samples,
        names,
        stage,
        params={
            "budget_count": config.budget_count,
            "budget_fraction": config.budget_fraction,
            "beta": config.beta,
            "score": config.score,
            "tag": tag,
            "saved_view": names.saved_view,
        },
        results=_results(result, pruned),
        outputs=record.Outputs(
            tags={tag: result.selected_ids},
            values={names.region_field: (ids, regions.tolist())},
            views={names.saved_view: (tag, description)},
        ),
    )
    apply_app_colors(dataset, config.key)  # regions in the ELFS panel's colours, App-wide
    return result


def select_more(samples: SampleCollection, config: RoundConfig) -> CoresetResult:
    """Round k >= 2: the window of the cumulative budget minus what is selected or labeled."""
    from fiftyone_elfs.selection import next_round_prune, resolve_budget

    names = runs.PipelineNames(config.key)
    dataset = dataset_io.dataset_of(samples)
    rounds = runs.selection_rounds(dataset, names)
    if 1 not in rounds:
        raise ElfsInputError(
            f"Key '{config.key}' has no coreset yet, so there is nothing to continue. "
            "Fix: run select_coreset first (it is round 1)."
        )
    preflight(samples, {"label_field": config.label_field})
    ids, values = _read_scores(samples, names, config.score)
    n = len(ids)
    budget = resolve_budget(
        n, budget_count=config.budget_count, budget_fraction=config.budget_fraction
    )
    round_no = max(rounds) + 1
    stage = runs.round_stage(round_no)
    tag, view_name = names.round_tag(round_no), names.round_view(round_no)
    record.check_ownership(samples, names, stage, tags=[tag], views=[view_name])
    excluded_ids = {i for selected in rounds.values() for i in selected}
    if config.label_field is not None:
        excluded_ids.update(dataset_io.ids_with_values(samples, config.label_field))
    excluded = np.array([i in excluded_ids for i in ids], dtype=bool)
    total_fraction = min((int(excluded.sum()) + budget) / n, 1.0)
    beta, beta_reason = _beta_for(samples, names, ids, config.score, config.beta, total_fraction)
    pruned = next_round_prune(values, excluded, budget, beta, hard_is_low=HARD_IS_LOW[config.score])
    result = _selection(names, ids, pruned, beta_reason, config.score, tag, view_name, round_no)
    description = (
        f"ELFS round {round_no} of '{config.key}': {result.budget} more of {n} samples by "
        f"{config.score}"
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
            "score": config.score,
            "tag": tag,
            "saved_view": view_name,
        },
        results=_results(result, pruned, n_excluded=int(excluded.sum())),
        outputs=record.Outputs(
            tags={tag: result.selected_ids}, views={view_name: (tag, description)}
        ),
    )
    return result
