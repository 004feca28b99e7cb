"""The public Python API: one function per pipeline stage, plus the whole pipeline.

Each function takes a FiftyOne dataset or view, validates everything before touching the dataset,
runs the array-level algorithm, writes the results back in bulk and records a FiftyOne run.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import fiftyone as fo
import fiftyone.core.collections as foc
import numpy as np

from fiftyone_elfs import dataset_io, runs
from fiftyone_elfs.difficulty import (
    ARCHITECTURES,
    CONTRASTIVE_METHODS,
    DEFAULT_CONTRASTIVE_EPOCHS,
    HARD_IS_LOW,
    load_images,
    train_cnn_proxy,
    train_contrastive_similarity,
    train_mlp_proxy,
)
from fiftyone_elfs.embeddings import DEFAULT_ENCODER, embed_image_files, load_encoder
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.progress import ProgressFn, sub_progress, terminal_progress
from fiftyone_elfs.pseudo_labels import (
    TEMIClustering,
    kmeans_pseudo_labels,
    merge_true_labels,
    probe_true_labels,
)
from fiftyone_elfs.selection import (
    PruneResult,
    double_end_prune,
    label_free_beta,
    next_round_prune,
    resolve_budget,
)

logger = logging.getLogger(__name__)

CLUSTERING_METHODS = ("temi", "kmeans")
_HARD_IS_LOW = {**HARD_IS_LOW, "contrastive": True}  # low view similarity = informative
PROXIES = ("mlp", "cnn")
ZOO_PREFIX = "zoo:"


@dataclass
class CoresetResult:
    """What `select_coreset` chose and why."""

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


def _progress_or_bar(progress: ProgressFn | None, description: str) -> ProgressFn:
    return progress if progress is not None else terminal_progress(description)


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ElfsInputError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def _check_beta(beta: float | None) -> None:
    if beta is None:
        return
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta < 1:
        raise ElfsInputError(
            f"beta (the fraction of hardest samples dropped) must be in [0, 1); got {beta!r}. "
            "Fix: pass e.g. beta=0.1, or leave beta=None for the label-free default."
        )


def _check_n_clusters(n_clusters: int, n: int) -> int:
    n_clusters = _check_int("n_clusters", n_clusters, 2)
    if n_clusters > n:
        raise ElfsInputError(
            f"n_clusters={n_clusters} is larger than the {n} samples with embeddings. "
            f"Fix: pass n_clusters <= {n} (typically the number of classes you expect)."
        )
    return n_clusters


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ElfsInputError(f"{name} must be one of {list(choices)}; got {value!r}.")
    return value


# --------------------------------------------------------------------------- embeddings


def compute_embeddings(
    samples: foc.SampleCollection,
    key: str = "elfs",
    model: str = DEFAULT_ENCODER,
    embeddings_field: str | None = None,
    image_size: int = 128,
    batch_size: int = 64,
    num_workers: int = 0,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Embeds every image of the collection with a frozen encoder into a vector field.

    `model` is "efficientnet-lite0" (offline default), "timm:<name>" or "zoo:<FiftyOne zoo
    model>". Samples that already have an embedding from the same model are reused (resume);
    unreadable images are skipped and listed in the run's results.
    """
    names = runs.validate_key(key)
    dataset_io.require_nonempty(samples)
    field_name = embeddings_field or names.embeddings_field
    _check_int("batch_size", batch_size, 1)
    _check_int("num_workers", num_workers, 0)
    dataset = samples._dataset

    previous = runs.stage_config(dataset, names, "embeddings")
    owned_before = previous is not None and field_name in previous.owned_fields
    if not owned_before and dataset_io.ids_with_values(dataset, field_name):
        raise ElfsInputError(
            f"The field '{field_name}' already holds values that this run did not compute; "
            "refusing to overwrite or mix them. Fix: to use those embeddings, pass "
            f"embeddings_field='{field_name}' to the later stages (or run_pipeline) instead; "
            "to compute new ones, choose another key or embeddings_field."
        )
    same_model = owned_before and (previous.model, previous.image_size) == (model, image_size)
    if owned_before and (overwrite or not same_model):
        if not same_model:
            logger.info(
                "Model changed (%s -> %s): recomputing all embeddings", previous.model, model
            )
        dataset_io.clear_field(dataset, field_name)

    todo = (
        samples.exists(field_name, False) if dataset_io.has_field(samples, field_name) else samples
    )
    ids, paths = dataset_io.sample_ids_and_paths(todo)
    n_reused = len(samples) - len(ids)
    report = _progress_or_bar(progress, "embeddings")
    skipped: list[dict[str, str]] = []
    if ids and model.startswith(ZOO_PREFIX):
        skipped = _embed_with_zoo_model(todo, model[len(ZOO_PREFIX) :], field_name, batch_size)
    elif ids:
        encoder = load_encoder(model, image_size=image_size)
        X, failures = embed_image_files(
            paths, encoder, batch_size=batch_size, num_workers=num_workers, progress=report
        )
        good = [i for i in range(len(ids)) if i not in failures]
        dataset_io.write_values(samples, field_name, [ids[i] for i in good], [X[i] for i in good])
        skipped = [
            {"id": ids[i], "filepath": paths[i], "reason": reason}
            for i, reason in sorted(failures.items())
        ]
    report(1.0, "done")
    if skipped:
        logger.warning(
            "Skipped %d unreadable images (listed in run '%s' results), e.g. %s: %s",
            len(skipped),
            names.run_key("embeddings"),
            skipped[0]["filepath"],
            skipped[0]["reason"],
        )
    results = {
        "n_samples": len(samples),
        "n_computed": len(ids) - len(skipped),
        "n_reused": n_reused,
        "n_skipped": len(skipped),
        "skipped": skipped,
    }
    runs.record_run(
        samples,
        names,
        "embeddings",
        params={"model": model, "image_size": image_size, "embeddings_field": field_name},
        results=results,
        owned_fields=[field_name],
    )
    return results


def _embed_with_zoo_model(
    samples: foc.SampleCollection, zoo_name: str, field_name: str, batch_size: int
) -> list[dict[str, str]]:
    """Embeds with a FiftyOne zoo model (downloads it where a network exists)."""
    import fiftyone.zoo as foz

    try:
        model = foz.load_zoo_model(zoo_name)
    except Exception as e:  # noqa: BLE001 - surfaced with the fix
        raise ElfsInputError(
            f"Could not load FiftyOne zoo model '{zoo_name}': {e}. Fix: check the name with "
            "`fiftyone zoo models list`, make sure the model can be downloaded (network), or use "
            f"the offline default model='{DEFAULT_ENCODER}'."
        ) from e
    if not getattr(model, "has_embeddings", False):
        raise ElfsInputError(f"Zoo model '{zoo_name}' does not expose embeddings; pick another.")
    samples.compute_embeddings(
        model, embeddings_field=field_name, batch_size=batch_size, skip_failures=True
    )
    missing = samples.exists(field_name, False)
    return [
        {"id": i, "filepath": p, "reason": "the zoo model could not embed this image"}
        for i, p in zip(*missing.values(["id", "filepath"]), strict=True)
    ]


# --------------------------------------------------------------------------- pseudo-labels


def compute_pseudo_labels(
    samples: foc.SampleCollection,
    n_clusters: int = 10,
    method: str = "temi",
    key: str = "elfs",
    embeddings_field: str | None = None,
    seed: int = 0,
    temi_params: dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Clusters the embeddings (TEMI deep clustering, or k-means) into pseudo-labels.

    Stored as a Classification field (label "cluster_<k>", confidence = cluster probability).
    """
    names = runs.validate_key(key)
    _check_choice("method", method, CLUSTERING_METHODS)
    dataset_io.require_nonempty(samples)
    field_name = embeddings_field or names.embeddings_field
    ids, X = dataset_io.read_embeddings(samples, field_name)
    n_clusters = _check_n_clusters(n_clusters, len(ids))
    report = _progress_or_bar(progress, f"pseudo-labels ({method})")

    extra: dict[str, Any] = {}
    if method == "kmeans":
        report(0.0, "k-means")
        labels, confidence = kmeans_pseudo_labels(X, n_clusters, seed=seed)
    else:
        temi = TEMIClustering(n_clusters, seed=seed, progress=report, **(temi_params or {}))
        temi.fit(X)
        labels, confidence = temi.labels_, temi.confidence_
        extra = {
            "best_head": int(temi.best_head_),
            "head_losses": [float(v) for v in temi.head_losses_],
        }
    report(1.0, "done")

    width = len(str(n_clusters - 1))
    label_names = [f"cluster_{int(k):0{width}d}" for k in labels]
    dataset = samples._dataset
    runs.delete_stage(dataset, names, "pseudo_labels")
    dataset_io.write_classifications(
        samples, names.pseudo_label_field, ids, label_names, confidence.tolist()
    )
    sizes = np.bincount(labels, minlength=n_clusters)
    results = {"n_samples": len(ids), "cluster_sizes": [int(s) for s in sizes], **extra}
    runs.record_run(
        samples,
        names,
        "pseudo_labels",
        params={
            "clustering": method,
            "n_clusters": n_clusters,
            "seed": seed,
            "embeddings_field": field_name,
            "label_field": names.pseudo_label_field,
            "temi_params": temi_params or {},
        },
        results=results,
        owned_fields=[names.pseudo_label_field],
    )
    return results


# --------------------------------------------------------------------------- difficulty


_CNN_PARAMS = ("arch", "width", "image_size", "batch_size", "lr", "num_threads")


def _check_cnn_params(cnn_params: dict[str, Any] | None) -> dict[str, Any]:
    cnn_params = dict(cnn_params or {})
    unknown = sorted(set(cnn_params) - set(_CNN_PARAMS))
    if unknown:
        raise ElfsInputError(f"Unknown cnn_params {unknown}. Fix: use only {list(_CNN_PARAMS)}.")
    if cnn_params.get("arch", "small") not in ARCHITECTURES:
        raise ElfsInputError(
            f"Unknown CNN architecture {cnn_params['arch']!r}. Fix: use one of {ARCHITECTURES}."
        )
    for name in ("width", "image_size", "batch_size"):
        if name in cnn_params:
            _check_int(name, cnn_params[name], 8 if name == "image_size" else 1)
    return cnn_params


def _check_classification_field(samples: foc.SampleCollection, field_name: str) -> None:
    """Refuses a field that is missing or does not hold `fo.Classification` labels."""
    schema_field = samples.get_field(field_name)
    if not dataset_io.is_classification_field(schema_field):
        found = "missing" if schema_field is None else type(schema_field).__name__
        raise ElfsInputError(
            f"'{field_name}' must be a field of fo.Classification labels; it is {found}. Fix: "
            "pass the field your annotations were loaded into (e.g. 'ground_truth')."
        )


def checkpoint_dir_for(dataset: fo.Dataset, key: str) -> str:
    """Where a long proxy training of `key` on `dataset` keeps its resumable checkpoint."""
    root = os.environ.get("ELFS_CACHE_DIR") or os.path.join("~", ".cache", "fiftyone-elfs")
    return os.path.join(os.path.expanduser(root), "checkpoints", str(dataset._doc.id), key)


def compute_difficulty(
    samples: foc.SampleCollection,
    key: str = "elfs",
    proxy: str = "mlp",
    embeddings_field: str | None = None,
    epochs: int | None = None,
    seed: int = 0,
    cnn_params: dict[str, Any] | None = None,
    num_workers: int = 0,
    label_field: str | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Trains a proxy on the pseudo-labels and stores each sample's AUM, forgetting and EL2N.

    `label_field` (a Classification field, e.g. labels loaded back from annotators): the proxy
    then trains on the true labels where they exist and, elsewhere, on the classes a linear probe
    fitted to them predicts from the embeddings (`probe_true_labels`; with fewer than 2 labeled
    classes, each cluster's majority class, `merge_true_labels`), for the next labeling round.

    `proxy="mlp"` trains on the embeddings (fast); `proxy="cnn"` trains a CNN from scratch on the
    images, as the paper does (`cnn_params`: arch "small" or "resnet18", width, image_size,
    batch_size; see `train_cnn_proxy`). The CNN checkpoints every epoch under
    `checkpoint_dir_for(dataset, key)`: an interrupted run resumes when called again.
    """
    names = runs.validate_key(key)
    _check_choice("proxy", proxy, PROXIES)
    dataset_io.require_nonempty(samples)
    if epochs is not None:
        _check_int("epochs", epochs, 1)
    cnn_params = _check_cnn_params(cnn_params)
    field_name = embeddings_field or names.embeddings_field
    if not dataset_io.has_field(samples, names.pseudo_label_field):
        raise ElfsInputError(
            f"No pseudo-labels for key '{key}' ('{names.pseudo_label_field}' is missing). "
            "Fix: run compute_pseudo_labels with the same key first."
        )
    if label_field is not None:
        _check_classification_field(samples, label_field)
    labelled = samples.exists(names.pseudo_label_field)
    if proxy == "cnn":  # trains on the image files: the embeddings are not read
        X = None
        ids, paths, label_names = labelled.values(
            ["id", "filepath", f"{names.pseudo_label_field}.label"]
        )
    else:
        ids, X = dataset_io.read_embeddings(labelled, field_name)
        label_names = dataset_io.read_labels(labelled, names.pseudo_label_field, ids)
    n_true, targets = 0, "pseudo-labels"
    if label_field is not None:
        true = dataset_io.read_labels(labelled, label_field, ids)
        n_true = sum(t is not None for t in true)
        if len({t for t in true if t is not None}) >= 2:
            if X is None:  # the CNN proxy reads pixels; the probe needs the embeddings too
                X = dataset_io.read_embeddings(labelled.select(ids, ordered=True), field_name)[1]
            label_names, targets = probe_true_labels(X, true, seed=seed), "labels + probe"
        else:
            label_names, targets = merge_true_labels(label_names, true), "labels + clusters"
    classes = sorted(set(label_names))
    if len(classes) < 2:
        raise ElfsInputError(
            "The pseudo-labels contain fewer than 2 clusters, so there is no difficulty to learn. "
            "Fix: recompute them with n_clusters >= 2."
        )
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[c] for c in label_names], dtype=np.int64)
    report = _progress_or_bar(progress, f"difficulty ({proxy} proxy)")
    kwargs = {"epochs": epochs} if epochs is not None else {}
    checkpoint_dir = None
    if proxy == "cnn":
        checkpoint_dir = checkpoint_dir_for(samples._dataset, key)
        try:
            scores = train_cnn_proxy(
                paths,
                y,
                n_classes=len(classes),
                seed=seed,
                num_workers=num_workers,
                checkpoint_dir=checkpoint_dir,
                progress=report,
                **kwargs,
                **cnn_params,
            )
        except ValueError as e:
            raise ElfsInputError(str(e)) from e
    else:
        scores = train_mlp_proxy(X, y, n_classes=len(classes), seed=seed, progress=report, **kwargs)
    report(1.0, "done")

    dataset = samples._dataset
    runs.delete_stage(dataset, names, "difficulty")
    fields = []
    for score in runs.SCORE_NAMES:
        values = np.asarray(getattr(scores, score), dtype=float).tolist()
        dataset_io.write_values(samples, names.score_field(score), ids, values)
        fields.append(names.score_field(score))
    results = {
        "n_samples": len(ids),
        "n_epochs": int(scores.n_epochs),
        "seconds": scores.info.get("seconds"),
        "resumed_from_epoch": scores.info.get("resumed_from_epoch", 0),
        "n_true_labels": n_true,
        "targets": targets,
        "n_classes": len(classes),
        "means": {s: float(np.mean(getattr(scores, s))) for s in runs.SCORE_NAMES},
    }
    runs.record_run(
        samples,
        names,
        "difficulty",
        params={
            "proxy": proxy,
            "epochs": int(scores.n_epochs),
            "cnn_params": {k: scores.info[k] for k in ("arch", "width", "image_size", "batch_size")}
            if proxy == "cnn"
            else {},
            "checkpoint_dir": checkpoint_dir,
            "seed": seed,
            "embeddings_field": field_name,
            "label_field": names.pseudo_label_field,
            "true_label_field": label_field,
            "score_fields": fields,
        },
        results=results,
        owned_fields=fields,
    )
    return results


# --------------------------------------------------------------------------- contrastive


def compute_contrastive_scores(
    samples: foc.SampleCollection,
    key: str = "elfs",
    epochs: int = DEFAULT_CONTRASTIVE_EPOCHS,
    image_size: int = 32,
    width: int = 16,
    batch_size: int = 256,
    seed: int = 0,
    num_workers: int = 0,
    progress: ProgressFn | None = None,
    method: str = "simclr",
) -> dict[str, Any]:
    """Trains SimCLR (or MoCo, ``method="moco"``) on the images and stores each sample's summed
    view similarity (Ju et al.).

    Writes "<key>_contrastive" (low = informative); select on it with
    `select_coreset(..., score="contrastive")`, which keeps the lowest. Resumable: training
    checkpoints every epoch under `checkpoint_dir_for(dataset, key)`.
    """
    names = runs.validate_key(key)
    _check_int("epochs", epochs, 1)
    _check_int("image_size", image_size, 8)
    _check_int("width", width, 1)
    _check_int("batch_size", batch_size, 2)
    if method not in CONTRASTIVE_METHODS:
        choices = ", ".join(CONTRASTIVE_METHODS)
        raise ElfsInputError(f"Unknown contrastive method {method!r}. Fix: use one of {choices}.")
    n = dataset_io.require_nonempty(samples)
    if n < 2:
        raise ElfsInputError("Contrastive training needs at least 2 samples. Fix: widen the view.")
    ids, paths = dataset_io.sample_ids_and_paths(samples)
    report = _progress_or_bar(progress, "contrastive similarity")
    decode = sub_progress(report, 0.0, 0.1, "decoding")
    try:
        images = load_images(paths, image_size, num_workers=num_workers, progress=decode)
    except ValueError as e:
        raise ElfsInputError(str(e)) from e
    checkpoint_dir = checkpoint_dir_for(samples._dataset, f"{key}_contrastive")
    scores = train_contrastive_similarity(
        images,
        epochs=epochs,
        width=width,
        batch_size=batch_size,
        method=method,
        seed=seed,
        checkpoint_dir=checkpoint_dir,
        progress=sub_progress(report, 0.1, 1.0, "SimCLR" if method == "simclr" else "MoCo"),
    )
    dataset = samples._dataset
    runs.delete_stage(dataset, names, "contrastive")
    field_name = names.score_field("contrastive")
    dataset_io.write_values(samples, field_name, ids, scores.similarity.astype(float).tolist())
    results = {
        "n_samples": len(ids),
        "n_epochs": scores.n_epochs,
        "seconds": scores.info["seconds"],
        "resumed_from_epoch": scores.info["resumed_from_epoch"],
        "mean_similarity_per_epoch": float(scores.similarity.mean() / scores.n_epochs),
    }
    runs.record_run(
        samples,
        names,
        "contrastive",
        params={
            "epochs": epochs,
            "image_size": image_size,
            "width": width,
            "batch_size": batch_size,
            "contrastive_method": method,
            "min_crop_scale": scores.info["min_crop_scale"],
            "seed": seed,
            "checkpoint_dir": checkpoint_dir,
            "score_field": field_name,
        },
        results=results,
        owned_fields=[field_name],
    )
    report(1.0, f"scored {len(ids)} samples")
    return results


# --------------------------------------------------------------------------- selection


def select_coreset(
    samples: foc.SampleCollection,
    budget_count: int | None = None,
    budget_fraction: float | None = None,
    beta: float | None = None,
    score: str = "aum",
    key: str = "elfs",
    tag: str | None = None,
) -> CoresetResult:
    """Double-end pruning on a difficulty score: drop the beta hardest, keep the next `budget`.

    `beta=None` uses the label-free rule (`label_free_beta`). The coreset is tagged (default
    "<key>_coreset") and saved as the view "<key>-coreset"; a re-run replaces both.
    """
    names = runs.validate_key(key)
    _check_choice("score", score, runs.SELECTION_SCORES)
    _check_beta(beta)
    scored, ids, values = _read_scores(samples, names, score)
    n = len(ids)
    budget = resolve_budget(n, budget_count=budget_count, budget_fraction=budget_fraction)
    tag = tag or names.tag
    _check_tag_free(samples._dataset, tag, key)
    later = [r for r in runs.selection_rounds(samples._dataset, names) if r > 1]
    if later:
        raise ElfsInputError(
            f"Key '{key}' already has labeling rounds {later} built on its coreset; replacing the "
            "coreset would orphan them. Fix: use another key, or delete_run(dataset, key) first."
        )
    beta_value, beta_reason = _beta_for(scored, names, score, beta, min(budget / n, 1.0))
    pruned = double_end_prune(
        np.asarray(values, dtype=float), budget, beta_value, hard_is_low=_HARD_IS_LOW[score]
    )
    for notice in pruned.notices:
        logger.warning(notice)
    selected = [ids[i] for i in pruned.indices]

    dataset = samples._dataset
    runs.delete_stage(dataset, names, "coreset")
    dataset_io.replace_tag(dataset, tag, selected)
    regions = np.asarray(runs.REGIONS)[
        (pruned.ranks >= pruned.start).astype(int) + (pruned.ranks >= pruned.stop).astype(int)
    ]
    dataset_io.write_values(samples, names.region_field, ids, regions.tolist())
    description = f"ELFS coreset '{key}': {len(selected)} of {n} samples by {score}"
    return _save_selection(
        samples,
        names,
        "coreset",
        selected,
        n,
        pruned,
        beta_reason,
        score,
        tag,
        names.saved_view,
        description,
        params={"budget_count": budget_count, "budget_fraction": budget_fraction, "beta": beta},
        owned_fields=[names.region_field],
    )


def _save_selection(
    samples: foc.SampleCollection,
    names: runs.PipelineNames,
    stage: str,
    selected: list[str],
    n: int,
    pruned: PruneResult,
    beta_reason: str,
    score: str,
    tag: str,
    view_name: str,
    description: str,
    params: dict[str, Any],
    extra_results: dict[str, Any] | None = None,
    owned_fields: list[str] | None = None,
    round_no: int = 1,
) -> CoresetResult:
    """Saves the tagged samples' view and records the selection run; returns what was chosen."""
    dataset_io.save_tagged_view(samples._dataset, view_name, tag, description)
    result = CoresetResult(
        key=names.key,
        selected_ids=selected,
        n_pool=n,
        budget=len(selected),
        beta=float(pruned.effective_beta),
        beta_reason=beta_reason,
        score=score,
        tag=tag,
        saved_view=view_name,
        notices=list(pruned.notices),
        round=round_no,
    )
    runs.record_run(
        samples,
        names,
        stage,
        params={**params, "score": score, "tag": tag, "saved_view": view_name},
        results={
            "n_pool": n,
            "n_selected": len(selected),
            **(extra_results or {}),
            "beta": result.beta,
            "beta_reason": beta_reason,
            "window": [int(pruned.start), int(pruned.stop)],
            "notices": result.notices,
            "selected_ids": selected,
        },
        owned_fields=owned_fields,
        owned_tags=[tag],
        owned_views=[view_name],
    )
    return result


def _read_scores(
    samples: foc.SampleCollection, names: runs.PipelineNames, score: str
) -> tuple[foc.SampleCollection, list[str], list[float]]:
    """The scored samples of a view with their ids and `score` values, or a clear error."""
    dataset_io.require_nonempty(samples)
    score_field = names.score_field(score)
    stage = "compute_contrastive_scores" if score == "contrastive" else "compute_difficulty"
    if not dataset_io.has_field(samples, score_field):
        raise ElfsInputError(
            f"No '{score}' scores for key '{names.key}' ('{score_field}' is missing). "
            f"Fix: run {stage} with the same key first."
        )
    scored = samples.exists(score_field)
    ids, values = scored.values(["id", score_field])
    if not ids:
        raise ElfsInputError(
            f"No sample of this view has a '{score}' score. Fix: run {stage} on it."
        )
    return scored, ids, values


def _beta_for(
    scored: foc.SampleCollection,
    names: runs.PipelineNames,
    score: str,
    beta: float | None,
    budget_fraction: float,
) -> tuple[float, str]:
    """The user's beta, or the label-free default for this score and budget, with the reason."""
    if beta is not None:
        return float(beta), "set by the user"
    if score == "contrastive":
        return 0.0, "keep-lowest: the least similar views are the most informative (no cut)"
    aum = scored.values(names.score_field("aum"))
    return label_free_beta(np.asarray(aum, dtype=float), budget_fraction)


def select_more(
    samples: foc.SampleCollection,
    budget_count: int | None = None,
    budget_fraction: float | None = None,
    key: str = "elfs",
    label_field: str | None = None,
    beta: float | None = None,
    score: str = "aum",
) -> CoresetResult:
    """The next labeling round: `budget` more samples, never one already selected or labeled.

    Continues key `key` after `select_coreset` (round 1): samples selected by any earlier round,
    and samples with a value in `label_field` (e.g. labels loaded back from Label Studio), are
    excluded. The new samples are the double-end window recomputed for the cumulative budget
    minus the excluded ones (`next_round_prune`), so the rounds add up to one selection with the
    combined budget. Tagged "<key>_round<k>", saved as "<key>-round<k>", recorded as its own run.
    `budget_fraction` is a share of the scored pool. To let returned labels improve the ranking,
    re-run `compute_difficulty(..., label_field=...)` before this.
    """
    names = runs.validate_key(key)
    _check_choice("score", score, runs.SELECTION_SCORES)
    _check_beta(beta)
    dataset = samples._dataset
    rounds = runs.selection_rounds(dataset, names)
    if 1 not in rounds:
        raise ElfsInputError(
            f"Key '{key}' has no coreset yet, so there is nothing to continue. "
            "Fix: run select_coreset first (it is round 1)."
        )
    if label_field is not None and not dataset_io.has_field(samples, label_field):
        raise ElfsInputError(
            f"The label field '{label_field}' does not exist on this dataset. Fix: pass the field "
            "the annotations were loaded into, or label_field=None."
        )
    scored, ids, values = _read_scores(samples, names, score)
    n = len(ids)
    budget = resolve_budget(n, budget_count=budget_count, budget_fraction=budget_fraction)
    excluded_ids = {i for selected in rounds.values() for i in selected}
    if label_field is not None:
        excluded_ids.update(dataset_io.ids_with_values(scored, label_field))
    excluded = np.array([i in excluded_ids for i in ids], dtype=bool)
    total_fraction = min((int(excluded.sum()) + budget) / n, 1.0)
    beta_value, beta_reason = _beta_for(scored, names, score, beta, total_fraction)
    try:
        pruned = next_round_prune(
            np.asarray(values, dtype=float),
            excluded,
            budget,
            beta_value,
            hard_is_low=_HARD_IS_LOW[score],
        )
    except ValueError as e:
        raise ElfsInputError(str(e)) from e
    for notice in pruned.notices:
        logger.warning(notice)
    selected = [ids[i] for i in pruned.indices]
    round_no = max(rounds) + 1
    tag, view_name = names.round_tag(round_no), names.round_view(round_no)
    dataset_io.replace_tag(dataset, tag, selected)
    description = (
        f"ELFS round {round_no} of '{key}': {len(selected)} more of {n} samples by {score}"
    )
    return _save_selection(
        samples,
        names,
        runs.round_stage(round_no),
        selected,
        n,
        pruned,
        beta_reason,
        score,
        tag,
        view_name,
        description,
        params={
            "budget_count": budget_count,
            "budget_fraction": budget_fraction,
            "beta": beta,
            "label_field": label_field,
        },
        extra_results={"n_excluded": int(excluded.sum())},
        round_no=round_no,
    )


def _check_tag_free(dataset: fo.Dataset, tag: str, key: str) -> None:
    """Refuses a tag that another key's coreset owns, so selections never mix."""
    for other, stages in runs.list_pipelines(dataset).items():
        if other == key or "coreset" not in stages:
            continue
        config = runs.stage_config(dataset, runs.PipelineNames(other), "coreset")
        if tag in config.owned_tags:
            raise ElfsInputError(
                f"The tag '{tag}' belongs to the coreset of key '{other}'. "
                "Fix: choose another tag, or leave tag=None to derive it from the key."
            )


# --------------------------------------------------------------------------- embedding plot

VISUALIZATION_METHODS = ("umap", "pca")


def compute_visualization(
    samples: foc.SampleCollection,
    key: str = "elfs",
    embeddings_field: str | None = None,
    brain_key: str | None = None,
    method: str = "umap",
    pca_dims: int = 50,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> str:
    """Lays the embeddings out in 2-D and registers the layout as a FiftyOne Brain run.

    The App's Embeddings panel then plots it (brain key default "<key>_umap") and colours the
    points by any field: "<key>_pseudo_label", each "<key>_<score>" and "<key>_coreset_region".
    Embeddings are projected to `pca_dims` dimensions first, so UMAP stays fast on large pools.
    Returns the brain key.
    """
    import fiftyone.brain as fob

    from fiftyone_elfs.embeddings import pca_reduce

    names = runs.validate_key(key)
    _check_choice("method", method, VISUALIZATION_METHODS)
    pca_dims = _check_int("pca_dims", pca_dims, 2)
    brain_key = brain_key or (names.brain_key if method == "umap" else f"{key}_{method}")
    if not brain_key.isidentifier():
        raise ElfsInputError(
            f"Invalid brain key {brain_key!r}. Fix: use letters, digits and underscores."
        )
    field_name = embeddings_field or names.embeddings_field
    ids, X = dataset_io.read_embeddings(samples, field_name)
    if len(ids) < 4:
        raise ElfsInputError(
            f"Only {len(ids)} samples have embeddings in '{field_name}'; a 2-D layout needs at "
            "least 4. Fix: compute embeddings on a larger view."
        )
    dataset = samples._dataset
    owner = runs.brain_run_owner(dataset, brain_key)
    if brain_key in dataset.list_brain_runs() and owner != key:
        raise ElfsInputError(
            f"The brain key '{brain_key}' already exists and does not belong to ELFS key "
            f"'{key}'. Fix: pass another brain_key, or delete it with "
            f"dataset.delete_brain_run('{brain_key}')."
        )
    report = _progress_or_bar(progress, "embedding plot")
    report(0.0, f"{method} layout of {len(ids)} samples")
    points_input = pca_reduce(X, pca_dims, seed=seed) if method == "umap" else X
    runs.delete_stage(dataset, names, "visualization")
    kwargs: dict[str, Any] = {}
    if method == "umap":
        kwargs = dict(num_neighbors=min(15, len(ids) - 1), seed=seed, verbose=False)
    try:
        fob.compute_visualization(
            samples.select(ids, ordered=True),
            embeddings=points_input,
            brain_key=brain_key,
            method=method,
            num_dims=2,
            **kwargs,
        )
    except Exception:
        if brain_key in dataset.list_brain_runs():  # a failed brain run stays registered
            dataset.delete_brain_run(brain_key)
        raise
    runs.record_run(
        samples,
        names,
        "visualization",
        params={
            "brain_key": brain_key,
            "embeddings_field": field_name,
            "layout_method": method,
            "pca_dims": pca_dims if method == "umap" else None,
            "seed": seed,
        },
        results={"n_points": len(ids)},
        owned_brain_runs=[brain_key],
    )
    report(1.0, f"embedding plot '{brain_key}' of {len(ids)} samples")
    return brain_key


# --------------------------------------------------------------------------- whole pipeline


def run_pipeline(
    samples: foc.SampleCollection,
    budget_count: int | None = None,
    budget_fraction: float | None = None,
    n_clusters: int = 10,
    clustering: str = "temi",
    key: str = "elfs",
    model: str = DEFAULT_ENCODER,
    embeddings_field: str | None = None,
    beta: float | None = None,
    score: str = "aum",
    proxy: str = "mlp",
    proxy_epochs: int | None = None,
    cnn_params: dict[str, Any] | None = None,
    temi_params: dict[str, Any] | None = None,
    seed: int = 0,
    num_workers: int = 0,
    visualize: bool = True,
    progress: ProgressFn | None = None,
) -> CoresetResult:
    """Runs embeddings -> pseudo-labels -> difficulty -> selection with one key.

    Pass `embeddings_field` to use embeddings you already have (the embedding stage is skipped).
    `proxy="cnn"` trains the difficulty proxy on the images (see `compute_difficulty`).
    `visualize` adds the 2-D embedding plot for the App (`compute_visualization`).
    All parameters are checked before anything is computed or written.
    """
    names = runs.validate_key(key)
    n = dataset_io.require_nonempty(samples)
    resolve_budget(n, budget_count=budget_count, budget_fraction=budget_fraction)
    _check_beta(beta)
    _check_n_clusters(n_clusters, n)
    _check_choice("clustering", clustering, CLUSTERING_METHODS)
    _check_choice("score", score, runs.SCORE_NAMES)
    _check_choice("proxy", proxy, PROXIES)
    _check_cnn_params(cnn_params)
    if embeddings_field is not None:
        dataset_io.read_embeddings(samples, embeddings_field)  # validates before any write

    report = progress
    if embeddings_field is None:
        compute_embeddings(
            samples,
            key=key,
            model=model,
            num_workers=num_workers,
            progress=sub_progress(report, 0.0, 0.5, "embeddings"),
        )
    compute_pseudo_labels(
        samples,
        n_clusters=n_clusters,
        method=clustering,
        key=key,
        embeddings_field=embeddings_field,
        seed=seed,
        temi_params=temi_params,
        progress=sub_progress(report, 0.5, 0.8, "pseudo-labels"),
    )
    compute_difficulty(
        samples,
        key=key,
        proxy=proxy,
        embeddings_field=embeddings_field,
        epochs=proxy_epochs,
        seed=seed,
        cnn_params=cnn_params,
        num_workers=num_workers,
        progress=sub_progress(report, 0.8, 0.9 if visualize else 0.98, "difficulty"),
    )
    result = select_coreset(
        samples,
        budget_count=budget_count,
        budget_fraction=budget_fraction,
        beta=beta,
        score=score,
        key=key,
    )
    if visualize:
        compute_visualization(
            samples,
            key=key,
            embeddings_field=embeddings_field,
            seed=seed,
            progress=sub_progress(report, 0.9, 0.99, "embedding plot"),
        )
    if report is not None:
        report(1.0, f"selected {len(result.selected_ids)} samples")
    logger.info("Pipeline '%s' done: %d of %d selected", names.key, result.budget, result.n_pool)
    return result


def list_runs(dataset: fo.Dataset) -> dict[str, list[str]]:
    """Maps each ELFS key on the dataset to the stages it has run."""
    return runs.list_pipelines(dataset)


def delete_run(dataset: fo.Dataset, key: str) -> list[str]:
    """Deletes every stage of `key` with the fields, tag and saved view it created."""
    return runs.delete_pipeline(dataset, key)
