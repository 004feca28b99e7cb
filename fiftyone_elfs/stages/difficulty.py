"""Difficulty stage: a proxy trained on the pseudo-labels; each sample's AUM, forgetting, EL2N.

Algorithm: `fiftyone_elfs.difficulty` (MLP proxy on the embeddings, CNN proxy on the images,
training dynamics recorded online); `fiftyone_elfs.pseudo_labels.label_merge` for labels that
annotators returned.

Provenance: the proxy trains only on the pseudo-labels of the embeddings now in the field (the
pseudo-labels run's ``embeddings_version``, `embeddings.vectors_version`), and the run records
the ``labels_version`` of the pseudo-labels it learned (``pseudo_labels_version``), which
`require_current_scores` compares when a selection reads the scores.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from fiftyone_elfs import checkpoint_folders, dataset_io, runs
from fiftyone_elfs.dataset_io import SampleCollection
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.progress import ProgressFn, terminal_progress
from fiftyone_elfs.stages import StageConfig, embeddings, foreign_values, record

STAGE = "difficulty"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DifficultyConfig(StageConfig):
    """The parameters of `fiftyone_elfs.compute_difficulty` (documented there)."""

    OPERATION = "compute_difficulty"

    key: str
    embeddings_field: str | None
    proxy: str
    cnn_params: dict[str, Any] | None
    epochs: int | None
    label_field: str | None
    seed: int
    num_workers: int | None


def _pseudo_labels(
    samples: SampleCollection,
    config: DifficultyConfig,
    names: runs.PipelineNames,
    field_name: str,
    held: record.HeldRuns | None,
) -> tuple[list[str], list[str] | None, np.ndarray | None, list[str]]:
    """(ids, image paths or None, embeddings or None, pseudo-labels) of the labelled samples:
    from the database, or from the held pseudo-labels run (`record.HeldRuns`) if there is one."""
    pseudo = names.pseudo_label_field
    held_run = record.held_run(held, "pseudo_labels")
    if held_run is None and dataset_io.hides_labels(samples):  # a sidebar filter: all count
        ids, label_names = dataset_io.labels_of_samples(samples, pseudo)
        foreign_values.refuse_labels_from_elsewhere(samples, names, ids, label_names)
        if config.proxy == "cnn":
            return ids, dataset_io.read_values(samples, "filepath", ids)[1], None, label_names
        found, X = dataset_io.read_embeddings(samples, field_name, ids=ids)  # with a vector
        return found, None, X, list(map(dict(zip(ids, label_names, strict=True)).get, found))
    if held_run is None and config.proxy == "cnn":  # the image files: embeddings not read
        ids, paths, label_names = dataset_io.read_labelled(samples, pseudo)
        foreign_values.refuse_labels_from_elsewhere(samples, names, ids, label_names)
        return ids, paths, None, label_names
    if held_run is None:
        ids, X = dataset_io.read_embeddings(samples, field_name, having=pseudo)
        label_names = dataset_io.read_labels(samples, pseudo, ids)
        foreign_values.refuse_labels_from_elsewhere(samples, names, ids, label_names)
        return ids, None, X, label_names
    held_ids, held_labels, _ = held_run.outputs.labels[pseudo]
    ids, label_names = list(held_ids), list(held_labels)
    if config.proxy == "cnn":
        found, paths = dataset_io.read_values(samples, "filepath", ids)
        if found != ids:
            raise ElfsInputError("Samples were deleted while the pipeline ran. Fix: run it again.")
        return ids, paths, None, label_names
    return ids, None, dataset_io.read_embeddings(samples, field_name, ids=ids)[1], label_names


def _targets(
    samples: SampleCollection,
    config: DifficultyConfig,
    names: runs.PipelineNames,
    field_name: str,
    held: record.HeldRuns | None = None,
) -> tuple[list[str], list[str] | None, np.ndarray | None, list[str], int, str]:
    """What the proxy trains on: (ids, image paths or None, embeddings or None, class names,
    number of true labels used, where the targets came from)."""
    from fiftyone_elfs.pseudo_labels import merge_true_labels, probe_true_labels

    ids, paths, X, label_names = _pseudo_labels(samples, config, names, field_name, held)
    n_true, targets = 0, "pseudo-labels"
    if config.label_field is not None:
        every = dataset_io.every_slice(dataset_io.dataset_of(samples))  # none hidden by a view
        true = dataset_io.read_labels(every, config.label_field, ids)
        n_true = sum(t is not None for t in true)
        if len({t for t in true if t is not None}) >= 2:
            if X is None:  # the CNN proxy reads pixels; the probe needs the embeddings too
                X = dataset_io.read_embeddings(samples, field_name, ids=ids)[1]
            label_names, targets = probe_true_labels(X, true, seed=config.seed), "labels + probe"
        else:
            label_names, targets = merge_true_labels(label_names, true), "labels + clusters"
    return ids, paths, X, label_names, n_true, targets


@dataclass(frozen=True)
class _Readable:
    """The CNN proxy's inputs once unreadable images are left out (`_decode_for_cnn`)."""

    ids: list[str]
    paths: list[str]
    X: np.ndarray | None
    label_names: list[str]
    images: np.ndarray
    skipped: list[dict[str, str]]


def _decode_for_cnn(
    config: DifficultyConfig,
    names: runs.PipelineNames,
    ids: list[str],
    paths: list[str],
    X: np.ndarray | None,
    label_names: list[str],
) -> _Readable:
    """Decodes the CNN proxy's images; those that cannot be read (deleted or moved since their
    embeddings were computed, corrupt) are skipped, listed in the run's results and logged, as
    the contrastive stage does: they get no score, so they are not candidates of a selection.
    Refuses when the readable images show fewer than 2 pseudo-classes. Decoding reports no
    progress: the stage's reports stay one per training epoch (the fault tests count them)."""
    from fiftyone_elfs.difficulty import decode_images, train_cnn_proxy

    default_size = inspect.signature(train_cnn_proxy).parameters["image_size"].default
    size = (config.cnn_params or {}).get("image_size", default_size)
    images, readable = decode_images(paths, size, num_workers=config.num_workers)
    bad = np.flatnonzero(~readable)
    skipped = [
        {"id": ids[i], "filepath": paths[i], "reason": "unreadable or missing image"} for i in bad
    ]
    if not skipped:
        return _Readable(ids, paths, X, label_names, images, [])
    keep = np.flatnonzero(readable)
    kept_labels = [label_names[i] for i in keep]
    if len(set(kept_labels)) < 2:
        shown = [s["filepath"] for s in skipped[:3]]
        raise ElfsInputError(
            f"Only {keep.size} of the {len(ids)} images could be read for the CNN proxy (the "
            f"others are missing or not readable, e.g. {shown}: moved or deleted since their "
            f"embeddings were computed?), and they show {len(set(kept_labels))} pseudo-label "
            "class; the proxy needs at least 2. Fix: correct the samples' filepaths (or "
            "exclude the unreadable samples from the view), or pass proxy='mlp', which trains "
            "on the embeddings.",
            param="proxy",
        )
    logger.warning(
        "Skipped %d unreadable images (listed in run '%s' results), e.g. %s",
        len(skipped),
        names.run_key(STAGE),
        skipped[0]["filepath"],
    )
    return _Readable(
        [ids[i] for i in keep],
        [paths[i] for i in keep],
        None if X is None else X[keep],
        kept_labels,
        images[keep],
        skipped,
    )


def _check_same_embeddings(
    made_from: Any, field_name: str, key: str, dim: int | None = None
) -> None:
    """Refuses embeddings other than those the pseudo-labels were clustered from: a proxy trained
    on one representation to learn the clusters of another measures nothing meaningful."""
    source = getattr(made_from, "embeddings_field", None)
    if source is not None and source != field_name:
        raise ElfsInputError(
            f"The pseudo-labels of key '{key}' were computed from the embeddings '{source}', but "
            f"this run would train on '{field_name}'. Fix: pass embeddings_field='{source}', or "
            f"recompute the pseudo-labels from '{field_name}' first.",
            param="embeddings_field",
        )
    source_dim = getattr(made_from, "embeddings_dim", None)
    if dim is not None and source_dim is not None and source_dim != dim:
        raise ElfsInputError(
            f"The embeddings in '{field_name}' have {dim} dimensions, but the pseudo-labels of "
            f"key '{key}' were computed from {source_dim}-dimensional ones (the field was "
            "recomputed since). Fix: recompute the pseudo-labels (compute_pseudo_labels with "
            f"key='{key}') before the difficulty.",
            param="embeddings_field",
        )


def _check_embeddings_version(
    samples: SampleCollection, made_from: Any, field_name: str, key: str
) -> None:
    """Refuses to train on embeddings that replaced those the pseudo-labels were clustered from
    (same field and dimension, other vectors: another model, image size or overwrite=True).
    An unknown version (a run recorded before versions, the user's own field) is no refusal."""
    source = getattr(made_from, "embeddings_version", None)
    current = embeddings.vectors_version(samples, field_name)
    if source is None or current is None or source == current:
        return
    raise ElfsInputError(
        f"The embeddings in '{field_name}' were recomputed (another model, image size or "
        f"overwrite=True) after the pseudo-labels of key '{key}' were computed from them: the "
        "pseudo-labels (and their trust) describe vectors that are gone, and a proxy trained on "
        "the new ones to learn the old clusters would measure nothing. Fix: re-run "
        f"compute_pseudo_labels with key='{key}' first, then compute_difficulty (or "
        "run_pipeline).",
        param="embeddings_field",
    )


def require_current_scores(
    samples: SampleCollection,
    names: runs.PipelineNames,
    score: str,
    held: record.HeldRuns | None = None,
    ranked: bool = True,
) -> None:
    """Refuses difficulty scores (`score`: aum, forgetting or el2n; others pass) from a proxy
    trained on pseudo-labels that a later compute_pseudo_labels replaced with other ones.
    Unknown versions (runs recorded before versions) are no refusal; changes nothing.
    `ranked` False: the selection does not rank by them, they only mark its candidates (typical
    selection on a key with scores), and the refusal says so."""
    if score not in runs.SCORE_NAMES:
        return
    scored = record.held_config(held, samples, names, STAGE)
    labels = record.held_config(held, samples, names, "pseudo_labels")
    trained_on = getattr(scored, "pseudo_labels_version", None)
    current = getattr(labels, "labels_version", None)
    if trained_on is None or current is None or trained_on == current:
        return
    harm = (
        "a ranking by these scores would follow clusters that are gone"
        if ranked
        else "the samples these scores cover (the candidates of a typical selection on a key "
        "with scores) may no longer be the ones the new pseudo-labels were computed on"
    )
    raise ElfsInputError(
        f"The '{score}' scores of key '{names.key}' come from a proxy trained on earlier "
        "pseudo-labels: compute_pseudo_labels has run again with this key since and replaced "
        f"them, so {harm}. Fix: re-run "
        f"compute_difficulty with key='{names.key}' (on the samples to select from), then "
        "select again; or run_pipeline.",
        param="score",
    )


def check_cnn_params(cnn_params: dict[str, Any] | None, proxy: str) -> None:
    """Refuses CNN settings given with a proxy that trains no CNN (ignored without a word)."""
    if cnn_params and proxy != "cnn":
        raise ElfsInputError(
            f"cnn_params {sorted(cnn_params)} were given with proxy='{proxy}', which trains no "
            "CNN. Fix: pass proxy='cnn', or leave cnn_params out.",
            param="cnn_params",
        )


def preflight(samples: SampleCollection, values: dict[str, Any]) -> None:
    """The cheap data checks an App form repeats as the user types: the key's pseudo-labels,
    the embeddings an MLP reads (those the pseudo-labels came from, not replaced since), the
    label field, free score fields (schema and run records)."""
    from fiftyone_elfs.stages.pseudo_labels import require_embeddings

    key = values.get("key")
    if not key:
        return
    names = runs.PipelineNames(key)
    try:
        made_from = record.check_input(
            samples, names, "pseudo_labels", names.pseudo_label_field, "pseudo-labels"
        )
    except ElfsInputError as e:
        raise ElfsInputError(str(e), param="key") from None
    reads_embeddings = values.get("proxy") != "cnn" or values.get("label_field")
    field_name = values.get("embeddings_field") or embeddings.key_field(samples, names)
    if reads_embeddings:  # in `run`'s order: the embeddings the pseudo-labels came from first
        _check_same_embeddings(made_from, field_name, key)
        require_embeddings(samples, values)
    if values.get("proxy") != "cnn" and not values.get("label_field"):  # as `run` checks
        _check_embeddings_version(samples, made_from, field_name, key)
    if values.get("label_field"):
        record.require_annotator_labels(samples, values["label_field"])
    fields = [names.score_field(s) for s in runs.SCORE_NAMES]
    record.check_ownership(samples, names, STAGE, fields=fields)


def run(
    samples: SampleCollection,
    config: DifficultyConfig,
    progress: ProgressFn | None = None,
    held: record.HeldRuns | None = None,
) -> dict[str, Any]:
    """Trains the proxy and stores "<key>_aum", "<key>_forgetting" and "<key>_el2n".

    With `held` (a pipeline's `record.HeldRuns`), reads the pseudo-labels held there if they are
    and holds its own run there instead of writing it."""
    from fiftyone_elfs.difficulty import scaled_proxy_epochs, train_cnn_proxy, train_mlp_proxy

    names = runs.PipelineNames(config.key)
    check_cnn_params(config.cnn_params, config.proxy)
    dataset_io.require_nonempty(samples)
    if config.proxy == "cnn":  # it trains on the image files
        dataset_io.require_images(samples)
    field_name = config.embeddings_field or embeddings.key_field(samples, names)
    made_from = record.check_input(
        samples, names, "pseudo_labels", names.pseudo_label_field, "pseudo-labels", held
    )
    if config.proxy == "mlp" or config.label_field is not None:
        _check_same_embeddings(made_from, field_name, config.key)
    if config.proxy == "mlp" and config.label_field is None:  # before reading anything
        _check_embeddings_version(samples, made_from, field_name, config.key)
    if config.label_field is not None:
        record.require_annotator_labels(samples, config.label_field)
    score_fields = [names.score_field(s) for s in runs.SCORE_NAMES]
    record.check_ownership(samples, names, STAGE, fields=score_fields)

    ids, paths, X, label_names, n_true, targets = _targets(samples, config, names, field_name, held)
    if X is not None:
        _check_same_embeddings(made_from, field_name, config.key, X.shape[1])
    if config.proxy == "mlp" and targets == "labels + clusters":  # the pseudo-labels learned
        _check_embeddings_version(samples, made_from, field_name, config.key)
    if len(set(label_names)) < 2:
        raise ElfsInputError(
            f"The pseudo-labels of these {len(label_names)} samples hold fewer than 2 clusters, "
            "so there is no difficulty to learn. Fix: compute the difficulty on samples of "
            "several clusters (a view of one cluster has one), or recompute the pseudo-labels "
            "with n_clusters >= 2."
        )
    report = progress or terminal_progress(f"difficulty ({config.proxy} proxy)")
    images, skipped = None, []
    if config.proxy == "cnn":  # unreadable images skipped and listed
        got = _decode_for_cnn(config, names, ids, paths, X, label_names)
        ids, paths, X, label_names = got.ids, got.paths, got.X, got.label_names
        images, skipped = got.images, got.skipped
    classes = sorted(set(label_names))
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[c] for c in label_names], dtype=np.int64)
    report(0.0, f"training the {config.proxy} proxy")
    epochs = {"epochs": config.epochs} if config.epochs is not None else {}
    checkpoint_dir = None
    if config.proxy == "cnn":
        checkpoint_dir = checkpoint_folders.training_dir_for(samples, config.key)
        scores = train_cnn_proxy(
            paths,
            y,
            n_classes=len(classes),
            seed=config.seed,
            num_workers=config.num_workers,
            checkpoint_dir=checkpoint_dir,
            progress=report,
            images=images,
            **epochs,
            **(config.cnn_params or {}),
        )
    else:
        # default: 40 epochs, fewer where the pool is so large that they exceed the work budget
        mlp_epochs = config.epochs or scaled_proxy_epochs(X.shape[0], X.shape[1], len(classes))
        scores = train_mlp_proxy(
            X, y, n_classes=len(classes), seed=config.seed, progress=report, epochs=mlp_epochs
        )
    report(1.0, "done")

    results = {
        "n_samples": len(ids),
        "n_epochs": int(scores.n_epochs),
        "seconds": scores.info.get("seconds"),
        "resumed_from_epoch": scores.info.get("resumed_from_epoch", 0),
        "n_true_labels": n_true,
        "targets": targets,
        "n_classes": len(classes),
        "means": {s: float(np.mean(getattr(scores, s))) for s in runs.SCORE_NAMES},
        "n_skipped": len(skipped),  # images the CNN proxy could not read: no score
        "skipped": skipped,
    }
    cnn_recorded = ("arch", "width", "image_size", "batch_size", "lr")
    record.record(
        samples,
        names,
        STAGE,
        params={
            "proxy": config.proxy,
            "epochs": int(scores.n_epochs),
            "cnn_params": {
                **{k: scores.info[k] for k in cnn_recorded},
                "num_threads": (config.cnn_params or {}).get("num_threads"),
            }
            if config.proxy == "cnn"
            else {},
            "checkpoint_dir": checkpoint_dir,
            "seed": config.seed,
            "embeddings_field": field_name,
            "label_field": names.pseudo_label_field,
            "true_label_field": config.label_field,
            "score_fields": score_fields,
            # what the scores were learned from (None: not the pseudo-labels, or unknown)
            "pseudo_labels_version": None
            if targets == "labels + probe"
            else getattr(made_from, "labels_version", None),
        },
        results=results,
        outputs=record.Outputs(
            values={
                names.score_field(s): (ids, np.asarray(getattr(scores, s), dtype=float).tolist())
                for s in runs.SCORE_NAMES
            },
            checked=tuple(score_fields),  # a selection ranks them
        ),
        held=held,
    )
    return results
