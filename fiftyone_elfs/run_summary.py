"""What one ELFS key did to a dataset, summarised for display (the App panel, reports, scripts):
its stages and parameters, the selection, its labeling rounds and the Label Studio runs.

Everything is computed with database aggregations (bounds, value counts), so a
summary costs a handful of queries whatever the dataset size.
"""

from __future__ import annotations

import datetime
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

import fiftyone as fo
import numpy as np
from fiftyone import ViewField as F

from fiftyone_elfs import annotation, dataset_io, leases, runs
from fiftyone_elfs.errors import ElfsInputError

_INTERNAL = {"method", "elfs_key", "stage", "owned_fields", "owned_tags", "owned_views",
             "owned_brain_runs", "type", "cls", "vectors_version", "embeddings_version",
             "labels_version", "pseudo_labels_version", "elfs_version",
             "marks_fields"}  # fmt: skip
OPERATOR_PREFIX = "@fiftyone-elfs/elfs/"
#: Operators whose runs hold a lease of their key for as long as they compute (`leases`).
LEASED_OPERATORS = frozenset(
    {"compute_embeddings", "compute_pseudo_labels", "compute_difficulty", "compute_visualization",
     "compute_contrastive_scores", "select_coreset", "select_more", "run_elfs_pipeline",
     "embed_shard"}
)  # fmt: skip
#: A running operation younger than this may not have taken its lease yet (seconds).
STALL_GRACE_S = 60.0


@dataclass
class ScoreHistogram:
    """Counts of the selection score per region, on shared bin edges."""

    score: str
    edges: list[float]
    counts: dict[str, list[int]]  # region -> count per bin, regions as in runs.REGIONS


@dataclass
class RunSummary:
    """One key's stages, parameters, selection outcome, score histogram and cluster balance."""

    key: str
    stages: list[str]
    params: dict[str, dict[str, Any]]  # stage -> recorded parameters
    n_pool: int | None = None
    n_selected: int | None = None
    beta: float | None = None
    beta_reason: str | None = None
    mode: str | None = None  # the selection rule used: "window", "ccs" or "typical"
    mode_reason: str | None = None
    trust: dict[str, Any] | None = None  # the pseudo-labels' trust figures (pseudo_labels.trust)
    # why the pseudo-labels are k-means' although TEMI was asked for (None when they are not)
    clustering_fallback: str | None = None
    tag: str | None = None
    saved_view: str | None = None
    brain_key: str | None = None
    histogram: ScoreHistogram | None = None
    # (pseudo-label, samples in the scored pool, samples in the coreset), largest pool first
    clusters: list[tuple[str, int, int]] = field(default_factory=list)
    rounds: dict[int, int] = field(default_factory=dict)  # selection round -> samples selected
    # the dataset's Label Studio runs (annotation.annotation_summary), whichever key chose them
    annotations: list[dict[str, Any]] = field(default_factory=list)
    # where the figures above no longer describe the data as it is (`coreset_notices`)
    notices: list[str] = field(default_factory=list)


def _stage_params(config: Any) -> dict[str, Any]:
    return {k: v for k, v in config.serialize().items() if k not in _INTERNAL and v is not None}


def score_histogram(
    dataset: fo.Dataset, names: runs.PipelineNames, score: str, bins: int = 40
) -> ScoreHistogram | None:
    """Histogram of `score` over the scored samples, split by coreset region (None if unscored).

    Only samples with one of the four regions and a finite score count: values written into
    those fields by hand (a review status, a NaN) are left out, not a failure of the summary.
    """
    field_name, region, bins = names.score_field(score), names.region_field, int(bins)
    if dataset.get_field(field_name) is None or dataset.get_field(region) is None:
        return None
    # MongoDB orders NaN below every number: the two bounds leave out NaN and +-inf
    finite = (F(field_name) > -math.inf) & (F(field_name) < math.inf)
    scored = dataset_io.every_slice(dataset).match(F(region).is_in(runs.REGIONS) & finite)
    low, high = scored.bounds(field_name)
    if low is None:
        return None
    if high <= low:
        high = low + 1.0
    # bins are right-open, so the top edge is nudged up to count the maximum itself
    top = high + (high - low) * 1e-6
    edges = np.linspace(low, top, bins + 1)
    # one pass over the samples (not one per region): each counted under "<region>|<bin>"
    position = ((F(field_name) - low) * (bins / (top - low))).floor()
    bin_index = position.max(0).min(bins - 1).to_int()
    keyed = scored.count_values(F(region).concat("|", bin_index.to_string()))
    counts = {name: [0] * bins for name in runs.REGIONS}
    for found, n in keyed.items():
        name, index = str(found).rsplit("|", 1)
        counts[name][int(index)] += int(n)
    return ScoreHistogram(score=score, edges=[float(e) for e in edges], counts=counts)


def cluster_balance(dataset: fo.Dataset, names: runs.PipelineNames, tag: str) -> list[tuple]:
    """Per pseudo-label: samples in the scored pool and in the coreset, largest pool first."""
    label_path = f"{names.pseudo_label_field}.label"
    if dataset.get_field(names.pseudo_label_field) is None:
        return []
    # one pass: each sample counted under "<label>|<in the pool>|<in the coreset>"
    pooled = "1"  # without regions (no coreset yet) every sample is in the pool
    if dataset.get_field(names.region_field) is not None:
        pooled = (F(names.region_field) != None).if_else("1", "0")  # noqa: E711 (MongoDB's null)
    cored = F("tags").contains(tag).if_else("1", "0")
    keyed = dataset_io.every_slice(dataset).count_values(
        F(label_path).concat("|", pooled, "|", cored)
    )
    pool_counts: dict[str, int] = {}
    core_counts: dict[str, int] = {}
    for found, n in keyed.items():
        if found is None:  # no pseudo-label
            continue
        label, in_pool, in_coreset = str(found).rsplit("|", 2)
        pool_counts[label] = pool_counts.get(label, 0) + (int(n) if in_pool == "1" else 0)
        core_counts[label] = core_counts.get(label, 0) + (int(n) if in_coreset == "1" else 0)
    rows = [
        (label, count, core_counts.get(label, 0))
        for label, count in pool_counts.items()
        if count  # a label only outside the pool is not a row (as before: the pool's labels)
    ]
    return sorted(rows, key=lambda r: (-r[1], r[0]))


def coreset_notices(
    dataset: fo.Dataset,
    names: runs.PipelineNames,
    config: Any,
    n_selected: int,
    results: Any = None,
) -> list[str]:
    """What has changed since the coreset was selected that its figures do not show: samples
    tagged or untagged by hand (exports and sends follow the tag), its saved view deleted,
    scores recomputed since (the histogram then draws the old regions over the new scores; a
    typical coreset selected without scores, `results.scored` False, had none)."""
    out = []
    n_tagged = dataset_io.count(dataset_io.tagged(dataset, config.tag))
    if n_tagged != n_selected:
        out.append(
            f"{n_tagged} samples carry the coreset tag '{config.tag}' now, and {n_selected} were "
            "selected: the tag was added or removed since (by hand, or merged in). Exports and "
            "sends to Label Studio follow the tag."
        )
    if config.saved_view and not dataset.has_saved_view(config.saved_view):
        out.append(
            f"The saved view '{config.saved_view}' was deleted since; the coreset is the "
            f"samples tagged '{config.tag}' (what 'Show coreset' shows now). Selecting again "
            "saves the view anew."
        )
    stage = "contrastive" if config.score == "contrastive" else "difficulty"
    scored, selected = (names.run_key(s) for s in (stage, "coreset"))
    typical = getattr(results, "mode", None) == "typical"
    if getattr(results, "scored", True) is not False and scored in dataset.list_runs():
        if dataset.get_run_info(scored).timestamp > dataset.get_run_info(selected).timestamp:
            later = "draw from the samples they score" if typical else "rank by them"
            out.append(
                f"The '{config.score}' scores were computed again after this coreset was "
                "selected, so the histogram draws its regions over the new scores (later "
                f"rounds, select_more, {later}; the coreset itself is unchanged)."
            )
    return out


def places(dataset: fo.Dataset, key: str) -> tuple[str | None, str | None, str | None]:
    """Where a key's results are seen, from its run records alone (no pass over the samples):
    the coreset's tag, its saved view (None once the user deleted it: the tagged samples show
    the coreset then) and the embedding plot's brain key (None if deleted or renamed since)."""
    names = runs.PipelineNames(key)
    tag = saved = brain_key = None
    config = runs.stage_config(dataset, names, "coreset")
    if config is not None:
        tag = config.tag
        saved = config.saved_view if dataset.has_saved_view(config.saved_view) else None
    plot = runs.stage_config(dataset, names, "visualization")
    if plot is not None and plot.brain_key in dataset_io.brain_runs(dataset):
        brain_key = plot.brain_key
    return tag, saved, brain_key


def summarize_run(
    dataset: fo.Dataset | fo.DatasetView, key: str = "elfs", *, bins: int = 40
) -> RunSummary:
    """Summarises every stage an ELFS key has run on `dataset` (default key 'elfs'), with each
    score's histogram in `bins` bars (default 40), as the ELFS panel draws it.

    Runs belong to the dataset: given a view, the summary is its dataset's, so that the counts
    a run recorded and the histogram and cluster balance read now describe the same samples.
    """
    dataset = dataset_io.records_of(dataset)
    names = runs.validate_key(key)
    if isinstance(bins, bool) or not isinstance(bins, numbers.Integral) or not 1 <= bins <= 1000:
        raise ElfsInputError(
            f"bins must be an integer in [1, 1000]; got {bins!r}. Fix: e.g. bins=40 (the panel's).",
            param="bins",
        )
    dataset_io.refresh_records(dataset)
    stages = runs.list_pipelines(dataset).get(key)
    if not stages:
        raise ElfsInputError(
            f"The dataset '{dataset.name}' has no ELFS run with key '{key}'. "
            f"Fix: run the pipeline first, or use one of {sorted(runs.list_pipelines(dataset))}."
        )
    summary = RunSummary(
        key=key,
        stages=stages,
        params={s: _stage_params(runs.stage_config(dataset, names, s)) for s in stages},
    )
    if "pseudo_labels" in stages:
        pseudo_labels = runs.stage_results(dataset, names, "pseudo_labels")
        summary.trust = getattr(pseudo_labels, "trust", None)
        summary.clustering_fallback = getattr(pseudo_labels, "fallback", None)
    if "coreset" in stages:
        results = runs.stage_results(dataset, names, "coreset")
        config = runs.stage_config(dataset, names, "coreset")
        summary.n_pool = results.n_pool
        summary.n_selected = results.n_selected
        summary.beta = results.beta
        summary.beta_reason = results.beta_reason
        summary.mode = getattr(results, "mode", None) or "window"  # runs before modes: windows
        summary.mode_reason = getattr(results, "mode_reason", None)
        summary.tag, summary.saved_view, _ = places(dataset, key)
        # a typical coreset selected without scores records none: the default score then
        summary.histogram = score_histogram(dataset, names, config.score or "aum", bins=bins)
        summary.clusters = cluster_balance(dataset, names, config.tag)
        summary.notices = coreset_notices(dataset, names, config, results.n_selected, results)
    if "visualization" in stages:
        brain_key = runs.stage_config(dataset, names, "visualization").brain_key
        summary.brain_key = places(dataset, key)[2]
        if summary.brain_key is None:  # deleted or renamed with FiftyOne's own calls since
            summary.notices.append(
                f"The embedding plot '{brain_key}' was deleted or renamed since (FiftyOne's "
                f"delete_brain_run / rename_brain_run): compute_visualization(dataset, "
                f"key='{key}') makes it again."
            )
    summary.rounds = {r: len(ids) for r, ids in runs.selection_rounds(dataset, names).items()}
    summary.annotations = [
        annotation.annotation_summary(dataset, k) for k in annotation.list_annotation_runs(dataset)
    ]
    return summary


def _status_value(status: Any, name: str) -> Any:
    if status is None:
        return None
    if isinstance(status, dict):
        return status.get(name)
    return getattr(status, name, None)


def delegated_runs(dataset: fo.Dataset, limit: int = 20) -> list[dict[str, Any]]:
    """The dataset's queued, running and finished delegated ELFS operations, newest first.

    A running one is `stalled` when no live run holds its key's lease past the first minute:
    its worker was killed or crashed, and FiftyOne still says "running" (it cannot know)."""
    from fiftyone.operators.delegated import DelegatedOperationService

    ops = [
        op
        for op in DelegatedOperationService().list_operations(dataset_name=dataset.name)
        if str(op.operator).startswith(OPERATOR_PREFIX)
    ]
    ops.sort(key=lambda op: op.queued_at or op.scheduled_at or op.updated_at, reverse=True)
    rows = []
    live: set[str] | None = None
    for op in ops[:limit]:
        progress = _status_value(op.status, "progress")
        operator = str(op.operator).removeprefix(OPERATOR_PREFIX)
        stalled = False
        if str(op.run_state) == "running" and _past_grace(op.started_at):
            if operator in LEASED_OPERATORS:
                if live is None:  # one query, only when a run is said to be running
                    live = leases.live_keys(dataset_io.dataset_id(dataset))
                stalled = _op_key(op) not in live
        rows.append(
            {
                "id": str(op.id),
                "operator": operator,
                "state": str(op.run_state),
                "stalled": stalled,
                "progress": None if progress is None else float(progress),
                "label": _status_value(op.status, "label") or "",
                "queued_at": str(op.queued_at or op.scheduled_at or ""),
            }
        )
    return rows


def _past_grace(started_at: Any) -> bool:
    if not isinstance(started_at, datetime.datetime):
        return False
    if started_at.tzinfo is not None:
        started_at = started_at.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    return (now - started_at).total_seconds() > STALL_GRACE_S


def _op_key(op: Any) -> str:
    """The run key a delegated ELFS operation works on (the parameter's default if not given)."""
    from fiftyone_elfs.param_rows import KEY

    params = (getattr(op.context, "request_params", None) or {}).get("params") or {}
    return str(params.get("key") or KEY.default)
