"""Pseudo-labels stage: the embeddings clustered (TEMI or k-means) into a Classification field.

Algorithm: `fiftyone_elfs.pseudo_labels` (TEMI deep clustering, spherical k-means).

Provenance: the run records the version of the embeddings it clustered
(``embeddings_version``, `embeddings.vectors_version`) and its own ``labels_version``, a digest
of what the later stages use (each sample's label, the trust level: `labels_version`). The
difficulty stage records the ``labels_version`` it trained on; `require_current_trust` refuses
a selection rule chosen by the trust of embeddings that were replaced since.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from fiftyone_elfs import checkpoint_folders, dataset_io, runs
from fiftyone_elfs.dataset_io import SampleCollection
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.progress import ProgressFn, terminal_progress
from fiftyone_elfs.stages import StageConfig, embeddings, record

STAGE = "pseudo_labels"

logger = logging.getLogger(__name__)

#: The trust diagnostic (`fiftyone_elfs.pseudo_labels.trust`) runs up to this many clusters:
#: its reference k-means on up to 20,000 samples costs seconds at class-like counts, minutes
#: at 1,000 clusters, where its 20 samples per cluster would say little anyway.
TRUST_MAX_CLUSTERS = 100


@dataclass(frozen=True)
class PseudoLabelsConfig(StageConfig):
    """The parameters of `fiftyone_elfs.compute_pseudo_labels` (documented there)."""

    OPERATION = "compute_pseudo_labels"

    key: str
    n_clusters: int
    clustering: str
    embeddings_field: str | None
    seed: int
    temi_params: dict[str, Any] | None


#: Below this spread of the unit embeddings (`direction_spread`: the mean squared distance of
#: the L2-normalised vectors to their mean; 0 when all point the same way; EfficientNet-Lite0's
#: embeddings of 60 look-alike digit scans: 0.33, its pre-head features 0.27) they are refused
#: as nearly constant: a root-mean-square deviation under 1e-4 is float32 noise around one
#: vector (a broken encoder), not groups to find.
MIN_DIRECTION_SPREAD = 1e-8


def check_n_clusters(n_clusters: int, n: int, why_fewer: str = "") -> None:
    """Refuses more clusters than samples to cluster (and fewer than 2 samples); `why_fewer`
    says why the view has more samples than that."""
    if n < 2:
        raise ElfsInputError(
            f"There is only {n} sample to cluster{why_fewer}; pseudo-labels need at least 2 "
            "samples (at least 2 clusters of at least one sample each). Fix: pass a dataset or "
            "view with at least 2 samples that have embeddings, typically many more than "
            "n_clusters.",
            param="n_clusters",
        )
    if n_clusters > n:
        raise ElfsInputError(
            f"n_clusters={n_clusters} is larger than the {n} samples to cluster{why_fewer}. "
            f"Fix: pass n_clusters <= {n} (typically the number of classes you expect).",
            param="n_clusters",
        )


def _without_embeddings(
    samples: SampleCollection, names: runs.PipelineNames, n_embedded: int, field: str
) -> str:
    """Why a view has more samples than embeddings (for `check_n_clusters`): unreadable
    images where the key's embeddings run skipped some, else only the count."""
    n = dataset_io.count(samples)
    if n <= n_embedded:
        return ""
    results = runs.stage_results(dataset_io.dataset_of(samples), names, embeddings.STAGE)
    skipped = (
        getattr(results, "n_skipped", 0) if field == embeddings.key_field(samples, names) else 0
    )
    why = (
        ": their images could not be read, as the embeddings run's results list; the "
        "embeddings computed are kept for a rerun"
        if skipped
        else ""
    )
    return f" ({n - n_embedded} of the view's {n} samples have no embedding in '{field}'{why})"


def preflight(samples: SampleCollection, values: dict[str, Any]) -> None:
    """The cheap data checks an App form repeats as the user types."""
    if values.get("n_clusters") is not None:
        check_n_clusters(values["n_clusters"], dataset_io.count(samples))
    require_embeddings(samples, values)
    if values.get("key"):
        names = runs.PipelineNames(values["key"])
        record.check_ownership(samples, names, STAGE, fields=[names.pseudo_label_field])


def require_embeddings(samples: SampleCollection, values: dict[str, Any]) -> None:
    """The cheap check (the schema) of the embeddings a stage reads: the given field, else the
    key's; for the App forms of the stages that read them."""
    if values.get("embeddings_field"):
        field = values["embeddings_field"]
        dataset_io.require_field(samples, field, "embeddings_field", "embeddings field")
        dataset_io.require_vector_field(samples, field)
        return
    key = values.get("key")
    field = embeddings.key_field(samples, runs.PipelineNames(key)) if key else None
    if field and not dataset_io.has_field(samples, field):
        raise ElfsInputError(  # the words execution refuses with (`read_embeddings`)
            f"The embeddings field '{field}' does not exist on this dataset. "
            "Fix: run compute_embeddings first, or pass embeddings_field=<an existing vector "
            "field>.",
            param="key",
        )


def check_temi_params(temi_params: dict[str, Any] | None, clustering: str) -> dict[str, Any]:
    """The extra TEMIClustering arguments, refusing names it does not take, and any at all
    where `clustering` is not TEMI (they would be ignored without a word)."""
    from fiftyone_elfs.pseudo_labels import TEMIClustering

    temi_params = dict(temi_params or {})
    if temi_params and clustering != "temi":
        raise ElfsInputError(
            f"temi_params {sorted(temi_params)} were given with clustering='{clustering}', "
            "which does not use them. Fix: pass clustering='temi', or leave temi_params out.",
            param="temi_params",
        )
    fixed = {"self", "n_clusters", "seed", "progress", "checkpoint_dir"}
    signature = inspect.signature(TEMIClustering).parameters
    allowed = [n for n in signature if n not in fixed]
    unknown = sorted(set(temi_params) - set(allowed))
    if unknown:
        raise ElfsInputError(
            f"Unknown temi_params {unknown}. Fix: use only {allowed}.", param="temi_params"
        )
    try:  # the values, before any data is read (TEMI checks them again when it fits)
        TEMIClustering(2, **temi_params).check_hyperparameters()
    except (TypeError, ValueError) as e:
        name = next((n for n in temi_params if str(e).startswith(f"{n} ")), None)
        if name is None:
            raise ElfsInputError(
                f"temi_params {temi_params} cannot be used ({e}). Fix: pass values of the "
                "types TEMIClustering documents, or leave temi_params out.",
                param="temi_params",
            ) from None
        default = signature[name].default
        raise ElfsInputError(
            f"temi_params['{name}']{str(e)[len(name) :]} Fix: pass a valid "
            f"temi_params['{name}'] (TEMI's default: {default!r}), or leave that key out.",
            param="temi_params",
        ) from None
    return temi_params


def check_spread(X: np.ndarray, field_name: str, n_clusters: int) -> None:
    """Refuses embeddings that cannot give `n_clusters` clusters because they (nearly) all point
    the same way: all zero, identical up to scale, fewer distinct directions than clusters, or
    a spread below `MIN_DIRECTION_SPREAD` (a broken encoder or the wrong field; clustered, they
    gave one non-empty cluster and a trust sentence contradicting itself). O(N x dim)."""
    from fiftyone_elfs.pseudo_labels.neighbors import direction_spread

    n_distinct, n_zero, spread = direction_spread(X)
    n = X.shape[0]
    where = f"The {n} embeddings in '{field_name}'"
    cause = "such (nearly) constant embeddings come from"
    if n_zero == n:
        problem = f"{where} are all zero"
    elif n_distinct == 1:
        problem = f"{where} all point the same way (identical up to scale)"
    elif n_distinct < n_clusters:
        problem = (
            f"{where} have only {n_distinct} distinct directions, fewer than "
            f"n_clusters={n_clusters}"
        )
        cause = "so few distinct embeddings come from copies of the same images,"
    elif spread < MIN_DIRECTION_SPREAD:
        problem = f"{where} point in nearly the same direction (spread {spread:.1e})"
    else:
        return
    also = f"; if these duplicates are expected, pass n_clusters <= {n_distinct}" * (
        1 < n_distinct < n_clusters
    )
    raise ElfsInputError(
        f"{problem}, so clustering them cannot find {n_clusters} clusters: {cause} a broken "
        "encoder or a field that does not hold embeddings. Fix: check the encoder and the "
        f"field (look at a few vectors of '{field_name}'); recompute them, e.g. "
        "compute_embeddings(..., overwrite=True) or another model, or pass "
        f"embeddings_field=<a field of real embeddings>{also}.",
        param="embeddings_field",
    )


def _trust(X: np.ndarray, labels: np.ndarray, config: PseudoLabelsConfig) -> dict[str, Any]:
    """The label-free trust diagnostic of the pseudo-labels, logged (a warning when weak)."""
    from fiftyone_elfs.pseudo_labels import pseudo_label_trust

    if config.n_clusters > TRUST_MAX_CLUSTERS:
        return {
            "level": "not measured",
            "reason": f"n_clusters > {TRUST_MAX_CLUSTERS}, the diagnostic's limit",
        }
    trust = pseudo_label_trust(X, labels, seed=config.seed)
    if trust.n_reference == 0:  # the rule then draws CCS (`selection.modes`)
        logger.info("%s.", trust.explain().capitalize())
        return {
            "level": trust.level,
            "reason": "as many clusters as samples, or one cluster: no other partition to "
            "compare with",
        }
    if trust.level == "weak":
        logger.warning(
            "%s. The embedding does not separate clear groups, so the difficulty ranking of "
            "these pseudo-labels is a weaker signal: the default selection rule (mode='auto') "
            "then picks the most typical sample of each of budget k-means cells of the embeddings "
            "(typical selection) rather than the narrow difficulty window, which measured below "
            "a random subset on such data (see the README's 'Benchmark' section).",
            trust.explain().capitalize(),
        )
    else:
        logger.info("%s.", trust.explain().capitalize())
    return trust.as_dict()


def _fallback_reason(mean_confidence: float, n_clusters: int) -> str:
    """The sentence a run records (and the summary shows) when TEMI gave way to k-means."""
    return (
        f"TEMI's heads stayed close to the uniform assignment (mean confidence "
        f"{mean_confidence:.3f} for {n_clusters} clusters), so their labels would be close to "
        "arbitrary: the pseudo-labels are k-means' instead (TEMI's CPU schedule is too short "
        "for some data: seen on synthetic data with 1,000 clusters, and on 300 CIFAR-10 "
        "images before small data got at least 500 optimiser steps; pass clustering='kmeans' "
        "to skip TEMI, or temi_params with more epochs to retry it)"
    )


def labels_version(ids: list[str], label_names: list[str], trust: dict[str, Any]) -> str:
    """The version of a pseudo-labels run: a digest of each sample's label (in id order, so the
    samples' order does not matter) and of the trust level (which picks the selection rule);
    not of the confidences or the trust figures, which no later stage decides by. A rerun that
    gives the same labels keeps the version, so it makes no scores stale."""
    rows = sorted(zip(ids, label_names, strict=True))
    digest = hashlib.sha256(json.dumps(trust.get("level")).encode())
    digest.update("\n".join(f"{i}\t{n}" for i, n in rows).encode())
    return digest.hexdigest()[:32]


def require_current_trust(
    samples: SampleCollection,
    names: runs.PipelineNames,
    requested: str,
    used: str,
    held: record.HeldRuns | None = None,
) -> None:
    """Refuses a typical selection that ``mode="auto"`` chose from the pseudo-labels' trust when
    the embeddings it selects on were replaced after that trust was measured (the trust
    described other vectors). `requested`: the mode asked for; `used`: the rule chosen."""
    if requested != "auto" or used != "typical":
        return  # an explicit rule does not rest on the trust
    config = record.held_config(held, samples, names, STAGE)
    field_name = getattr(config, "embeddings_field", None) or names.embeddings_field
    made_from = getattr(config, "embeddings_version", None)
    current = embeddings.vectors_version(samples, field_name)
    if made_from is None or current is None or made_from == current:
        return
    raise ElfsInputError(
        f"mode='auto' chose typical selection from the trust of the pseudo-labels of key "
        f"'{names.key}', but the embeddings in '{field_name}' were recomputed after those "
        "pseudo-labels (another model, image size or overwrite=True), so that trust describes "
        "vectors that are gone and typical selection would run on the new ones. Fix: re-run "
        f"the stale stages with key='{names.key}': compute_pseudo_labels, then "
        "compute_difficulty (or run_pipeline); or pass mode='window', 'ccs' or 'typical' "
        "explicitly.",
        param="mode",
    )


def run(
    samples: SampleCollection,
    config: PseudoLabelsConfig,
    progress: ProgressFn | None = None,
    held: record.HeldRuns | None = None,
) -> dict[str, Any]:
    """Clusters the embeddings; stores "cluster_<k>" labels with the cluster probability (with
    `held`, a pipeline's `record.HeldRuns`, holds the run there instead of writing it)."""
    from fiftyone_elfs.pseudo_labels import (
        TEMIClustering,
        kmeans_pseudo_labels,
        spectral_pseudo_labels,
    )
    from fiftyone_elfs.pseudo_labels.spectral import min_spectral_samples
    from fiftyone_elfs.pseudo_labels.temi import NEAR_UNIFORM_WARNING

    names = runs.PipelineNames(config.key)
    dataset_io.require_nonempty(samples)
    field_name = config.embeddings_field or embeddings.key_field(samples, names)
    ids, X = dataset_io.read_embeddings(samples, field_name)
    embeddings_version = embeddings.vectors_version(samples, field_name)
    if config.n_clusters > len(ids) or len(ids) < 2:
        why_fewer = _without_embeddings(samples, names, len(ids), field_name)
        check_n_clusters(config.n_clusters, len(ids), why_fewer)
    temi_params = check_temi_params(config.temi_params, config.clustering)
    check_spread(X, field_name, config.n_clusters)
    record.check_ownership(samples, names, STAGE, fields=[names.pseudo_label_field])
    report = progress or terminal_progress(f"pseudo-labels ({config.clustering})")

    extra: dict[str, Any] = {}
    checkpoint_dir = None
    if config.clustering == "kmeans":
        report(0.0, "k-means")
        labels, confidence = kmeans_pseudo_labels(X, config.n_clusters, seed=config.seed)
    elif config.clustering == "spectral" and len(ids) < min_spectral_samples(config.n_clusters):
        extra["fallback"] = (
            f"Spectral clustering into {config.n_clusters} clusters needs at least "
            f"{min_spectral_samples(config.n_clusters)} samples and {len(ids)} have embeddings "
            "(with fewer, its space cannot hold one direction per cluster and the graph links "
            "every pair), so k-means on the embeddings made the pseudo-labels"
        )
        logger.warning("%s", extra["fallback"])
        labels, confidence = kmeans_pseudo_labels(X, config.n_clusters, seed=config.seed)
    elif config.clustering == "spectral":
        report(0.0, "spectral clustering of the nearest-neighbour graph")
        labels, confidence = spectral_pseudo_labels(X, config.n_clusters, seed=config.seed)
    else:
        # per-epoch checkpoint (file temi.pt), like the CNN proxy's: a rerun resumes
        checkpoint_dir = checkpoint_folders.training_dir_for(samples, config.key)
        temi = TEMIClustering(
            config.n_clusters,
            seed=config.seed,
            progress=lambda fraction, label: report(0.9 * fraction, label),  # then trust
            checkpoint_dir=checkpoint_dir,
            **temi_params,
        )
        with warnings.catch_warnings():  # the stage says it below, with what it did instead
            warnings.filterwarnings("ignore", re.escape(NEAR_UNIFORM_WARNING), RuntimeWarning)
            temi.fit(X)
        labels, confidence = temi.labels_, temi.confidence_
        extra = {
            "best_head": int(temi.best_head_),
            "resumed_from_epoch": int(temi.resumed_from_epoch_),
            "head_losses": [float(v) for v in temi.head_losses_],
            "mean_confidence": float(temi.mean_confidence_),
            # what ran: TEMI lengthens the schedule of small data and caps the neighbours
            "epochs": int(temi.epochs_),
            "n_neighbors": int(temi.n_neighbors_),
        }
        if temi.near_uniform_:
            extra["fallback"] = _fallback_reason(temi.mean_confidence_, config.n_clusters)
            logger.warning("%s", extra["fallback"])
            report(0.9, "k-means (TEMI stayed near uniform)")
            labels, confidence = kmeans_pseudo_labels(X, config.n_clusters, seed=config.seed)
    extra["clustering_used"] = "kmeans" if "fallback" in extra else config.clustering
    report(0.95, "pseudo-label trust")
    extra["trust"] = _trust(X, labels, config)
    report(1.0, "done")

    width = len(str(config.n_clusters - 1))
    label_names = [f"cluster_{int(k):0{width}d}" for k in labels]
    sizes = np.bincount(labels, minlength=config.n_clusters)
    results = {"n_samples": len(ids), "cluster_sizes": [int(s) for s in sizes], **extra}
    version = labels_version(ids, label_names, extra["trust"])
    record.record(
        samples,
        names,
        STAGE,
        params={
            "clustering": config.clustering,
            "n_clusters": config.n_clusters,
            "seed": config.seed,
            "embeddings_field": field_name,
            "embeddings_dim": int(X.shape[1]),  # what the difficulty stage checks it trains on
            "embeddings_version": embeddings_version,  # (None: unknown) and this
            "labels_version": version,  # what the difficulty run records it trained on
            "label_field": names.pseudo_label_field,
            "temi_params": temi_params,
            "checkpoint_dir": checkpoint_dir,
        },
        results=results,
        outputs=record.Outputs(
            labels={names.pseudo_label_field: (ids, label_names, confidence.tolist())},
            checked=(names.pseudo_label_field,),  # the difficulty stage learns these labels
        ),
        held=held,
    )
    return results
