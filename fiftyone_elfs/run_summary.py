"""What one ELFS key did to a dataset, summarised for display (the App panel, reports, scripts):
its stages and parameters, the selection, its labeling rounds and the Label Studio runs.

Everything is computed with database aggregations, so a summary costs two passes over the
samples whatever the dataset size (`coreset_figures`).
"""

from __future__ import annotations

import datetime
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

import fiftyone as fo
import fiftyone.core.aggregations as foa
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


class _Facets(foa.Aggregation):
    """Several MongoDB sub-pipelines over one read of the samples (``$facet``).

    FiftyOne runs each aggregation of a batch as its own pass unless they share a field, and
    the panel's figures do not: read one by one they cost one pass over every sample each."""

    def __init__(self, facets: dict[str, list[dict[str, Any]]]) -> None:
        super().__init__(None)
        self._facets = facets

    def to_mongo(self, sample_collection: Any, context: Any = None) -> list[dict[str, Any]]:
        return [{"$facet": self._facets}]

    def parse_result(self, d: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        return {name: list(d.get(name) or []) for name in self._facets}

    def default_result(self) -> dict[str, list[dict[str, Any]]]:
        return {name: [] for name in self._facets}


@dataclass
class CoresetFigures:
    """What the panel draws of a coreset, read in two passes over the samples whatever the
    dataset size: the score histogram, the cluster balance and the coreset tag's count."""

    histogram: ScoreHistogram | None
    clusters: list[tuple[str, int, int]]  # (pseudo-label, in the scored pool, in the coreset)
    n_tagged: int  # samples carrying the coreset tag now (hand edits change it)


def coreset_figures(
    dataset: fo.Dataset, names: runs.PipelineNames, score: str, tag: str, bins: int = 40
) -> CoresetFigures:
    """The histogram of `score` by coreset region, the cluster balance and the number of
    samples tagged `tag`, in two passes: the bounds of the score, the clusters and the tag
    count share one (`_Facets`), and the histogram needs the bounds for its edges.

    Only samples with one of the four regions and a finite score are in the histogram:
    values written into those fields by hand (a review status, a NaN) are left out, not a
    failure of the summary. The histogram is None when no sample is scored."""
    samples = dataset_io.every_slice(dataset)
    scored = _scored(dataset, names, score)
    facets: dict[str, list[dict[str, Any]]] = {
        "tagged": [{"$match": {"tags": tag}}, {"$count": "n"}]
    }
    if scored is not None:
        value = "$" + names.score_field(score)
        facets["bounds"] = [
            scored,
            {"$group": {"_id": None, "low": {"$min": value}, "high": {"$max": value}}},
        ]
    if dataset.get_field(names.pseudo_label_field) is not None:
        key = _cluster_key(dataset, names, tag)
        facets["clusters"] = [{"$group": {"_id": key, "n": {"$sum": 1}}}]
    found = samples.aggregate(_Facets(facets))
    n_tagged = int(found["tagged"][0]["n"]) if found["tagged"] else 0
    histogram = None
    if found.get("bounds"):
        low, high = found["bounds"][0]["low"], found["bounds"][0]["high"]
        histogram = _score_histogram(samples, scored, names, score, low, high, int(bins))
    clusters = _cluster_rows(found.get("clusters", []))
    return CoresetFigures(histogram=histogram, clusters=clusters, n_tagged=n_tagged)


def _scored(dataset: fo.Dataset, names: runs.PipelineNames, score: str) -> dict | None:
    """The ``$match`` of the samples the histogram draws: one of the four regions and a finite
    score (None when a field it needs is missing). A query, not an expression: MongoDB matches
    it without evaluating an expression on every sample."""
    field_name, region = names.score_field(score), names.region_field
    if dataset.get_field(field_name) is None or dataset.get_field(region) is None:
        return None
    # a number compares only with numbers here, and NaN sorts below -inf: both bounds leave
    # out NaN, +-inf and values of other types
    finite = {"$gt": -math.inf, "$lt": math.inf}
    return {"$match": {region: {"$in": list(runs.REGIONS)}, field_name: finite}}


def _score_histogram(
    samples: Any,
    scored: dict,
    names: runs.PipelineNames,
    score: str,
    low: float,
    high: float,
    bins: int,
) -> ScoreHistogram:
    field_name, region = names.score_field(score), names.region_field
    if high <= low:
        high = low + 1.0
    # bins are right-open, so the top edge is nudged up to count the maximum itself
    top = high + (high - low) * 1e-6
    edges = np.linspace(low, top, bins + 1)
    # one pass over the samples (not one per region): counted by (region, bin)
    position = ((F(field_name) - low) * (bins / (top - low))).floor()
    bin_index = position.max(0).min(bins - 1).to_int()
    key = {"region": F(region).to_mongo(), "bin": bin_index.to_mongo()}
    group = {"$group": {"_id": key, "n": {"$sum": 1}}}
    found = samples.aggregate(_Facets({"histogram": [scored, group]}))["histogram"]
    counts = {name: [0] * bins for name in runs.REGIONS}
    for row in found:
        counts[row["_id"]["region"]][int(row["_id"]["bin"])] += int(row["n"])
    return ScoreHistogram(score=score, edges=[float(e) for e in edges], counts=counts)


def _cluster_key(dataset: fo.Dataset, names: runs.PipelineNames, tag: str) -> dict[str, Any]:
    """Each sample's pseudo-label, whether it is in the scored pool (without regions, no
    coreset yet, every sample is) and whether it carries the coreset tag."""
    pooled: Any = True
    if dataset.get_field(names.region_field) is not None:
        pooled = (F(names.region_field) != None).to_mongo()  # noqa: E711 (MongoDB's null)
    return {
        "label": F(f"{names.pseudo_label_field}.label").to_mongo(),
        "pooled": pooled,
        "cored": F("tags").contains(tag).to_mongo(),
    }


def _cluster_rows(groups: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    """Per pseudo-label: samples in the scored pool and in the coreset, largest pool first."""
    pool_counts: dict[str, int] = {}
    core_counts: dict[str, int] = {}
    for group in groups:
        key, n = group["_id"], int(group["n"])
        label = key.get("label")
        if label is None:  # no pseudo-label
            continue
        label = str(label)
        pool_counts[label] = pool_counts.get(label, 0) + (n if key.get("pooled") else 0)
        core_counts[label] = core_counts.get(label, 0) + (n if key.get("cored") else 0)
    rows = [
        (label, count, core_counts.get(label, 0))
        for label, count in pool_counts.items()
        if count  # a label only outside the pool is not a row (the pool's labels)
    ]
    return sorted(rows, key=lambda r: (-r[1], r[0]))


def coreset_notices(
    dataset: fo.Dataset,
    names: runs.PipelineNames,
    config: Any,
    n_selected: int,
    n_tagged: int,
    results: Any = None,
) -> list[str]:
    """What has changed since the coreset was selected that its figures do not show: samples
    tagged or untagged by hand (exports and sends follow the tag), its saved view deleted,
    scores recomputed since (the histogram then draws the old regions over the new scores; a
    typical coreset selected without scores, `results.scored` False, had none)."""
    out = []
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
        figures = coreset_figures(dataset, names, config.score or "aum", config.tag, bins=bins)
        summary.histogram, summary.clusters = figures.histogram, figures.clusters
        summary.notices = coreset_notices(
            dataset, names, config, results.n_selected, figures.n_tagged, results
        )
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
