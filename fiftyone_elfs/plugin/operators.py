"""FiftyOne operators: one per pipeline stage plus the whole pipeline.

Each operator builds its form in `resolve_input` (defaults, validation messages, view target),
reads `ctx.params` in `execute` and calls the library; `__call__` runs it from a script.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Generator
from typing import Any

import fiftyone.operators as foo
import fiftyone.operators.types as types

from fiftyone_elfs import api, export, runs
from fiftyone_elfs.difficulty import (
    ARCHITECTURES,
    CONTRASTIVE_METHODS,
    DEFAULT_CNN_WIDTH,
    DEFAULT_CONTRASTIVE_EPOCHS,
)
from fiftyone_elfs.embeddings import DEFAULT_ENCODER

PLUGIN_NAME = "@fiftyone-elfs/elfs"
# Work above this many samples defaults to delegated execution (immediate runs time out at 600 s).
CNN_DELEGATE_ABOVE = 2000  # training on pixels: minutes per thousand images on a CPU
DELEGATE_ABOVE = {
    "compute_embeddings": 5000,
    "compute_pseudo_labels": 20000,
    "compute_difficulty": 20000,
    "compute_contrastive_scores": CNN_DELEGATE_ABOVE,
    "run_elfs_pipeline": 3000,
}


def run_reporting_progress(
    ctx: Any, fn: Callable[..., Any], **kwargs: Any
) -> Generator[Any, None, Any]:
    """Runs `fn(progress=..., **kwargs)` in a worker thread and streams its progress.

    Immediate runs yield `set_progress` ops so the App draws a bar; delegated runs record the
    progress on the operation. Returns what `fn` returned, re-raising its error.
    """
    updates: queue.Queue = queue.Queue()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = fn(progress=lambda f, label: updates.put((f, label)), **kwargs)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            outcome["error"] = e
        finally:
            updates.put(None)

    worker = threading.Thread(target=target, name="fiftyone-elfs", daemon=True)
    worker.start()
    last = -1.0
    while (item := updates.get()) is not None:
        fraction, label = item
        if fraction - last < 0.01 and fraction < 1.0:
            continue
        last = fraction
        if ctx.delegated:
            ctx.set_progress(progress=fraction, label=label)
        else:
            yield ctx.ops.set_progress(progress=fraction, label=label)
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")


def _reload(ctx: Any) -> Generator[Any, None, None]:
    if not ctx.delegated:
        yield ctx.trigger("reload_dataset")


def _invalid(prop: Any, message: str) -> None:
    prop.invalid = True
    prop.error_message = message


def _key_input(ctx: Any, inputs: types.Object) -> str:
    key = ctx.params.get("key", "elfs")
    prop = inputs.str(
        "key",
        default="elfs",
        required=True,
        label="Run key",
        description="Names this selection's fields, tag, saved view and runs (letters, digits, _)",
    )
    if key is not None and (not str(key).isidentifier() or str(key).startswith("_")):
        _invalid(prop, "Use letters, digits and underscores, e.g. 'elfs' or 'elfs_round2'")
    return key


def _seed_input(inputs: types.Object) -> None:
    inputs.int("seed", default=0, label="Random seed", description="Same seed, same selection")


def _execution_options(name: str, ctx: Any) -> foo.ExecutionOptions:
    """Allows both modes; defaults to delegated when the target is large enough to be slow."""
    threshold = DELEGATE_ABOVE.get(name)
    if ctx.params.get("proxy") == "cnn":
        threshold = min(threshold or CNN_DELEGATE_ABOVE, CNN_DELEGATE_ABOVE)
    large = threshold is not None and ctx.view is not None and len(ctx.view) > threshold
    return foo.ExecutionOptions(
        allow_immediate_execution=True,
        allow_delegated_execution=True,
        default_choice_to_delegated=large,
    )


def _call(operator: foo.Operator, samples: Any, params: dict[str, Any], delegate: bool) -> Any:
    """Executes the operator on a dataset or view from a script, as the App would."""
    ctx = {"view": samples.view()}
    return foo.execute_operator(operator.uri, ctx, params=params, request_delegation=delegate)


def _operator_config(name: str, label: str, description: str) -> foo.OperatorConfig:
    """Every ELFS operator has a dynamic form, streams progress and may be delegated."""
    return foo.OperatorConfig(
        name=name,
        label=label,
        description=description,
        dynamic=True,
        execute_as_generator=True,
        allow_delegated_execution=True,
    )


class _ElfsOperator(foo.Operator):
    """Shared behaviour: execution options sized to the work, progress, reload after writes."""

    def resolve_execution_options(self, ctx: Any) -> foo.ExecutionOptions:
        return _execution_options(self.config.name, ctx)


class ComputeEmbeddings(_ElfsOperator):
    @property
    def config(self) -> foo.OperatorConfig:
        return _operator_config(
            "compute_embeddings",
            "ELFS: compute embeddings",
            "Embed every image with a frozen pretrained encoder",
        )

    def resolve_input(self, ctx: Any) -> types.Property:
        inputs = types.Object()
        ctx.target_view()
        _key_input(ctx, inputs)
        inputs.str(
            "model",
            default=DEFAULT_ENCODER,
            label="Encoder",
            description="'efficientnet-lite0' (offline), 'timm:<name>' or 'zoo:<zoo model>'",
        )
        size = inputs.int("image_size", default=128, label="Image size (px)")
        if (ctx.params.get("image_size") or 128) < 32:
            _invalid(size, "Use at least 32 px")
        inputs.int("batch_size", default=64, label="Batch size")
        inputs.bool("overwrite", default=False, label="Recompute existing embeddings")
        return types.Property(inputs, view=types.View(label="ELFS: compute embeddings"))

    def execute(self, ctx: Any) -> Generator[Any, None, None]:
        p = ctx.params
        yield from run_reporting_progress(
            ctx,
            api.compute_embeddings,
            samples=ctx.target_view(),
            key=p.get("key", "elfs"),
            model=p.get("model", DEFAULT_ENCODER),
            image_size=p.get("image_size", 128),
            batch_size=p.get("batch_size", 64),
            overwrite=p.get("overwrite", False),
            num_workers=2 if ctx.delegated else 0,
        )
        yield from _reload(ctx)

    def __call__(
        self,
        samples: Any,
        key: str = "elfs",
        model: str = DEFAULT_ENCODER,
        image_size: int = 128,
        batch_size: int = 64,
        overwrite: bool = False,
        delegate: bool = False,
    ) -> Any:
        return _call(
            self,
            samples,
            dict(
                key=key,
                model=model,
                image_size=image_size,
                batch_size=batch_size,
                overwrite=overwrite,
            ),
            delegate,
        )


def _proxy_inputs(ctx: Any, inputs: types.Object) -> None:
    """The difficulty proxy: an MLP on the embeddings or a CNN on the images (with its size)."""
    inputs.enum(
        "proxy",
        list(api.PROXIES),
        default="mlp",
        label="Proxy model",
        view=types.RadioGroup(),
        description="MLP on the embeddings (fast) or a CNN trained on the images (the paper's)",
    )
    if ctx.params.get("proxy") != "cnn":
        return
    inputs.enum(
        "cnn_arch",
        list(ARCHITECTURES),
        default="small",
        label="CNN",
        view=types.DropdownView(),
        description="'small' suits a CPU; 'resnet18' is the paper's, for a GPU",
    )
    width = inputs.int("cnn_width", default=DEFAULT_CNN_WIDTH, label="Small CNN width")
    if (ctx.params.get("cnn_width") or DEFAULT_CNN_WIDTH) < 4:
        _invalid(width, "Use a width of at least 4")
    size = inputs.int("cnn_image_size", default=32, label="Training image size (px)")
    if (ctx.params.get("cnn_image_size") or 32) < 8:
        _invalid(size, "Use at least 8 px")


def _cnn_params(p: dict[str, Any]) -> dict[str, Any] | None:
    if p.get("proxy") != "cnn":
        return None
    return dict(
        arch=p.get("cnn_arch", "small"),
        width=p.get("cnn_width", DEFAULT_CNN_WIDTH),
        image_size=p.get("cnn_image_size", 32),
    )


def _clusters_input(ctx: Any, inputs: types.Object) -> None:
    prop = inputs.int(
        "n_clusters",
        default=10,
        required=True,
        label="Number of clusters",
        description="Pseudo-classes; typically the number of classes you expect",
    )
    k = ctx.params.get("n_clusters", 10)
    if k is not None and k < 2:
        _invalid(prop, "Use at least 2 clusters")
    elif k is not None and ctx.view is not None and k > len(ctx.target_view()):
        _invalid(prop, f"More clusters than samples ({len(ctx.target_view())})")
    inputs.enum(
        "clustering",
        ["temi", "kmeans"],
        default="temi",
        label="Clustering",
        view=types.RadioGroup(),
        description="TEMI deep clustering (better) or k-means (faster)",
    )


class ComputePseudoLabels(_ElfsOperator):
    @property
    def config(self) -> foo.OperatorConfig:
        return _operator_config(
            "compute_pseudo_labels",
            "ELFS: compute pseudo-labels",
            "Cluster the embeddings into pseudo-labels (TEMI or k-means)",
        )

    def resolve_input(self, ctx: Any) -> types.Property:
        inputs = types.Object()
        ctx.target_view()
        _key_input(ctx, inputs)
        _clusters_input(ctx, inputs)
        inputs.str(
            "embeddings_field",
            required=False,
            label="Embeddings field (optional)",
            description="Use an existing vector field instead of '<key>_embedding'",
        )
        _seed_input(inputs)
        return types.Property(inputs, view=types.View(label="ELFS: compute pseudo-labels"))

    def execute(self, ctx: Any) -> Generator[Any, None, None]:
        p = ctx.params
        yield from run_reporting_progress(
            ctx,
            api.compute_pseudo_labels,
            samples=ctx.target_view(),
            n_clusters=p.get("n_clusters", 10),
            method=p.get("clustering", "temi"),
            key=p.get("key", "elfs"),
            embeddings_field=p.get("embeddings_field") or None,
            seed=p.get("seed", 0),
        )
        yield from _reload(ctx)

    def __call__(
        self,
        samples: Any,
        n_clusters: int = 10,
        clustering: str = "temi",
        key: str = "elfs",
        embeddings_field: str | None = None,
        seed: int = 0,
        delegate: bool = False,
    ) -> Any:
        return _call(
            self,
            samples,
            dict(
                n_clusters=n_clusters,
                clustering=clustering,
                key=key,
                embeddings_field=embeddings_field,
                seed=seed,
            ),
            delegate,
        )


class ComputeDifficulty(_ElfsOperator):
    @property
    def config(self) -> foo.OperatorConfig:
        return _operator_config(
            "compute_difficulty",
            "ELFS: compute difficulty",
            "Train a proxy on the pseudo-labels; store AUM, forgetting and EL2N",
        )

    def resolve_input(self, ctx: Any) -> types.Property:
        inputs = types.Object()
        ctx.target_view()
        _key_input(ctx, inputs)
        inputs.str("embeddings_field", required=False, label="Embeddings field (optional)")
        _proxy_inputs(ctx, inputs)
        epochs = inputs.int(
            "epochs",
            required=False,
            label="Proxy epochs (optional)",
            description="Leave empty for the default schedule",
        )
        if (ctx.params.get("epochs") or 1) < 1:
            _invalid(epochs, "Use at least 1 epoch")
        _seed_input(inputs)
        return types.Property(inputs, view=types.View(label="ELFS: compute difficulty"))

    def execute(self, ctx: Any) -> Generator[Any, None, None]:
        p = ctx.params
        yield from run_reporting_progress(
            ctx,
            api.compute_difficulty,
            samples=ctx.target_view(),
            key=p.get("key", "elfs"),
            proxy=p.get("proxy", "mlp"),
            embeddings_field=p.get("embeddings_field") or None,
            epochs=p.get("epochs") or None,
            seed=p.get("seed", 0),
            cnn_params=_cnn_params(p),
            num_workers=2 if ctx.delegated else 0,
        )
        yield from _reload(ctx)

    def __call__(
        self,
        samples: Any,
        key: str = "elfs",
        proxy: str = "mlp",
        embeddings_field: str | None = None,
        epochs: int | None = None,
        seed: int = 0,
        cnn_arch: str = "small",
        cnn_width: int = DEFAULT_CNN_WIDTH,
        cnn_image_size: int = 32,
        delegate: bool = False,
    ) -> Any:
        params = dict(key=key, proxy=proxy, embeddings_field=embeddings_field, epochs=epochs)
        params.update(seed=seed, cnn_arch=cnn_arch, cnn_width=cnn_width)
        params.update(cnn_image_size=cnn_image_size)
        return _call(self, samples, params, delegate)


class ComputeVisualization(_ElfsOperator):
    @property
    def config(self) -> foo.OperatorConfig:
        return _operator_config(
            "compute_visualization",
            "ELFS: embedding plot",
            "2-D UMAP layout of the embeddings for the App's Embeddings panel",
        )

    def resolve_input(self, ctx: Any) -> types.Property:
        inputs = types.Object()
        ctx.target_view()
        key = _key_input(ctx, inputs)
        inputs.str("embeddings_field", required=False, label="Embeddings field (optional)")
        inputs.enum(
            "method",
            list(api.VISUALIZATION_METHODS),
            default="umap",
            label="Layout",
            view=types.RadioGroup(),
            description="UMAP (neighbourhoods kept) or PCA (fast, linear)",
        )
        prop = inputs.str(
            "brain_key",
            required=False,
            label="Brain key (optional)",
            description="Defaults to '<key>_umap'; the Embeddings panel lists it",
        )
        brain_key = ctx.params.get("brain_key")
        if brain_key and not str(brain_key).isidentifier():
            _invalid(prop, "Use letters, digits and underscores")
        elif brain_key and ctx.dataset is not None and str(key).isidentifier():
            owner = runs.brain_run_owner(ctx.dataset, brain_key)
            if brain_key in ctx.dataset.list_brain_runs() and owner != key:
                _invalid(prop, f"'{brain_key}' is another brain run: choose a new key")
        _seed_input(inputs)
        return types.Property(inputs, view=types.View(label="ELFS: embedding plot"))

    def execute(self, ctx: Any) -> Generator[Any, None, None]:
        p = ctx.params
        yield from run_reporting_progress(
            ctx,
            api.compute_visualization,
            samples=ctx.target_view(),
            key=p.get("key", "elfs"),
            embeddings_field=p.get("embeddings_field") or None,
            brain_key=p.get("brain_key") or None,
            method=p.get("method", "umap"),
            seed=p.get("seed", 0),
        )
        yield from _reload(ctx)

    def __call__(
        self,
        samples: Any,
        key: str = "elfs",
        embeddings_field: str | None = None,
        brain_key: str | None = None,
        method: str = "umap",
        seed: int = 0,
        delegate: bool = False,
    ) -> Any:
        params = dict(key=key, embeddings_field=embeddings_field, brain_key=brain_key)
        params.update(method=method, seed=seed)
        return _call(self, samples, params, delegate)


class ComputeContrastiveScores(_ElfsOperator):
    @property
    def config(self) -> foo.OperatorConfig:
        return _operator_config(
            "compute_contrastive_scores",
            "ELFS: contrastive similarity scores",
            "Train SimCLR on the images; low view similarity marks informative samples",
        )

    def resolve_input(self, ctx: Any) -> types.Property:
        inputs = types.Object()
        ctx.target_view()
        _key_input(ctx, inputs)
        epochs = inputs.int("epochs", default=DEFAULT_CONTRASTIVE_EPOCHS, label="Epochs")
        if (ctx.params.get("epochs") or 1) < 1:
            _invalid(epochs, "Use at least 1 epoch")
        size = inputs.int("image_size", default=32, label="Training image size (px)")
        if (ctx.params.get("image_size") or 32) < 8:
            _invalid(size, "Use at least 8 px")
        inputs.int("width", default=DEFAULT_CNN_WIDTH, label="CNN width")
        inputs.enum(
            "method",
            list(CONTRASTIVE_METHODS),
            default="simclr",
            label="Contrastive method",
            description="SimCLR (in-batch negatives) or MoCo (momentum encoder, queue)",
        )
        _seed_input(inputs)
        return types.Property(inputs, view=types.View(label="ELFS: contrastive similarity"))

    def execute(self, ctx: Any) -> Generator[Any, None, None]:
        p = ctx.params
        yield from run_reporting_progress(
            ctx,
            api.compute_contrastive_scores,
            samples=ctx.target_view(),
            key=p.get("key", "elfs"),
            epochs=p.get("epochs", DEFAULT_CONTRASTIVE_EPOCHS),
            image_size=p.get("image_size", 32),
            width=p.get("width", DEFAULT_CNN_WIDTH),
            seed=p.get("seed", 0),
            method=p.get("method", "simclr"),
            num_workers=2 if ctx.delegated else 0,
        )
        yield from _reload(ctx)

    def __call__(
        self,
        samples: Any,
        key: str = "elfs",
        epochs: int = DEFAULT_CONTRASTIVE_EPOCHS,
        image_size: int = 32,
        width: int = DEFAULT_CNN_WIDTH,
        seed: int = 0,
        method: str = "simclr",
        delegate: bool = False,
    ) -> Any:
        params = dict(
            key=key, epochs=epochs, image_size=image_size, width=width, seed=seed, method=method
        )
        return _call(self, samples, params, delegate)


def _selection_inputs(ctx: Any, inputs: types.Object) -> None:
    """Budget (fraction or count, two distinct fields) and beta (label-free or manual)."""
    p = ctx.params
    inputs.enum(
        "budget_mode",
        ["fraction", "count"],
        default="fraction",
        label="Budget as",
        view=types.RadioGroup(),
    )
    if p.get("budget_mode", "fraction") == "count":
        prop = inputs.int(
            "budget_count", default=100, required=True, label="Number of samples to label"
        )
        if (p.get("budget_count") or 0) <= 0 and p.get("budget_count") is not None:
            _invalid(prop, "The budget must be at least 1 sample")
    else:
        prop = inputs.float(
            "budget_fraction",
            default=0.1,
            required=True,
            label="Fraction of samples to label",
            description="In (0, 1]",
        )
        f = p.get("budget_fraction")
        if f is not None and not 0 < f <= 1:
            _invalid(prop, "Use a fraction in (0, 1], or switch the budget to a count")
    inputs.enum(
        "beta_mode",
        ["label-free", "manual"],
        default="label-free",
        label="Hard-end cut (beta)",
        view=types.RadioGroup(),
        description="Label-free: estimated from how noisy the pseudo-labels look",
    )
    if p.get("beta_mode") == "manual":
        prop = inputs.float(
            "beta",
            default=0.1,
            required=True,
            label="Beta",
            description="Fraction of hardest samples dropped, in [0, 1)",
        )
        b = p.get("beta")
        if b is not None and not 0 <= b < 1:
            _invalid(prop, "Beta must be in [0, 1)")
    inputs.enum(
        "score",
        list(runs.SELECTION_SCORES),
        default="aum",
        label="Difficulty score",
        view=types.DropdownView(),
        description="aum / forgetting / el2n from the proxy, or contrastive (keeps the lowest)",
    )


def _selection_kwargs(p: dict[str, Any]) -> dict[str, Any]:
    count = p.get("budget_mode", "fraction") == "count"
    return dict(
        budget_count=p.get("budget_count") if count else None,
        budget_fraction=None if count else p.get("budget_fraction", 0.1),
        beta=p.get("beta") if p.get("beta_mode") == "manual" else None,
        score=p.get("score", "aum"),
    )


def _selection_params(
    budget_count: int | None, budget_fraction: float | None, beta: float | None, score: str
) -> dict[str, Any]:
    return dict(
        budget_mode="count" if budget_count is not None else "fraction",
        budget_count=budget_count,
        budget_fraction=budget_fraction,
        beta_mode="manual" if beta is not None else "label-free",
        beta=beta,
        score=score,
    )


class SelectCoreset(_ElfsOperator):
    @property
    def config(self) -> foo.OperatorConfig:
        return _operator_config(
            "select_coreset",
            "ELFS: select coreset",
            "Double-end pruning on difficulty: tag the samples worth labeling",
        )

    def resolve_input(self, ctx: Any) -> types.Property:
        inputs = types.Object()
        ctx.target_view()
        _key_input(ctx, inputs)
        _selection_inputs(ctx, inputs)
        inputs.str(
            "tag", required=False, label="Tag (optional)", description="Defaults to '<key>_coreset'"
        )
        return types.Property(inputs, view=types.View(label="ELFS: select coreset"))

    def execute(self, ctx: Any) -> Generator[Any, None, None]:
        p = ctx.params
        result = api.select_coreset(
            ctx.target_view(),
            key=p.get("key", "elfs"),
            tag=p.get("tag") or None,
            **_selection_kwargs(p),
        )
        yield ctx.ops.set_progress(progress=1.0, label=f"selected {result.budget} samples")
        yield from _reload(ctx)

    def __call__(
        self,
        samples: Any,
        budget_count: int | None = None,
        budget_fraction: float | None = None,
        beta: float | None = None,
        score: str = "aum",
        key: str = "elfs",
        tag: str | None = None,
        delegate: bool = False,
    ) -> Any:
        params = _selection_params(budget_count, budget_fraction, beta, score)
        return _call(self, samples, dict(params, key=key, tag=tag), delegate)


class ExportCoreset(_ElfsOperator):
    @property
    def config(self) -> foo.OperatorConfig:
        return _operator_config(
            "export_coreset",
            "ELFS: export coreset for annotation",
            "Media + CSV manifest, FiftyOne dataset, Label Studio tasks",
        )

    def resolve_input(self, ctx: Any) -> types.Property:
        inputs = types.Object()
        ctx.target_view()
        _key_input(ctx, inputs)
        prop = inputs.str("export_dir", required=True, label="Export folder")
        overwrite = bool(ctx.params.get("overwrite", False))
        d = ctx.params.get("export_dir")
        if d and os.path.isdir(os.path.expanduser(d)) and os.listdir(os.path.expanduser(d)):
            if not overwrite:
                _invalid(prop, "This folder is not empty: choose another or tick 'overwrite'")
        for fmt, label in (
            ("media", "Media folder + CSV manifest"),
            ("fiftyone", "FiftyOne dataset"),
            ("labelstudio", "Label Studio task file"),
        ):
            inputs.bool(f"format_{fmt}", default=True, label=label)
        inputs.bool(
            "include_pseudo_labels",
            default=True,
            label="Pseudo-labels as Label Studio pre-annotations",
        )
        inputs.bool("overwrite", default=False, label="Overwrite this exporter's outputs there")
        return types.Property(inputs, view=types.View(label="ELFS: export coreset"))

    def execute(self, ctx: Any) -> Generator[Any, None, dict[str, str]]:
        p = ctx.params
        formats = [f for f in export.FORMATS if p.get(f"format_{f}", True)]
        outputs = export.export_coreset(
            ctx.target_view(),
            p["export_dir"],
            key=p.get("key", "elfs"),
            formats=formats,
            include_pseudo_labels=p.get("include_pseudo_labels", True),
            overwrite=p.get("overwrite", False),
        )
        yield ctx.ops.set_progress(progress=1.0, label=f"exported to {p['export_dir']}")
        return outputs

    def __call__(
        self,
        samples: Any,
        export_dir: str,
        key: str = "elfs",
        formats: tuple[str, ...] = export.FORMATS,
        include_pseudo_labels: bool = True,
        overwrite: bool = False,
        delegate: bool = False,
    ) -> Any:
        params = {f"format_{f}": f in formats for f in export.FORMATS}
        params.update(
            export_dir=export_dir,
            key=key,
            overwrite=overwrite,
            include_pseudo_labels=include_pseudo_labels,
        )
        return _call(self, samples, params, delegate)


class RunElfsPipeline(_ElfsOperator):
    @property
    def config(self) -> foo.OperatorConfig:
        return _operator_config(
            "run_elfs_pipeline",
            "ELFS: select a coreset (whole pipeline)",
            "Embeddings, pseudo-labels, difficulty and selection in one run",
        )

    def resolve_input(self, ctx: Any) -> types.Property:
        inputs = types.Object()
        ctx.target_view()
        _key_input(ctx, inputs)
        _selection_inputs(ctx, inputs)
        _clusters_input(ctx, inputs)
        _proxy_inputs(ctx, inputs)
        inputs.str("model", default=DEFAULT_ENCODER, label="Encoder")
        inputs.str(
            "embeddings_field",
            required=False,
            label="Existing embeddings field (optional)",
            description="Skip the embedding stage and use this vector field",
        )
        inputs.bool(
            "visualize",
            default=True,
            label="Embedding plot",
            description="Also lay the embeddings out in 2-D for the Embeddings panel (UMAP)",
        )
        _seed_input(inputs)
        return types.Property(inputs, view=types.View(label="ELFS: select a coreset"))

    def execute(self, ctx: Any) -> Generator[Any, None, None]:
        p = ctx.params
        yield from run_reporting_progress(
            ctx,
            api.run_pipeline,
            samples=ctx.target_view(),
            key=p.get("key", "elfs"),
            n_clusters=p.get("n_clusters", 10),
            clustering=p.get("clustering", "temi"),
            model=p.get("model", DEFAULT_ENCODER),
            embeddings_field=p.get("embeddings_field") or None,
            seed=p.get("seed", 0),
            num_workers=2 if ctx.delegated else 0,
            visualize=p.get("visualize", True),
            proxy=p.get("proxy", "mlp"),
            cnn_params=_cnn_params(p),
            **_selection_kwargs(p),
        )
        yield from _reload(ctx)

    def __call__(
        self,
        samples: Any,
        budget_count: int | None = None,
        budget_fraction: float | None = None,
        n_clusters: int = 10,
        clustering: str = "temi",
        key: str = "elfs",
        model: str = DEFAULT_ENCODER,
        embeddings_field: str | None = None,
        beta: float | None = None,
        score: str = "aum",
        seed: int = 0,
        visualize: bool = True,
        proxy: str = "mlp",
        delegate: bool = False,
    ) -> Any:
        params = _selection_params(budget_count, budget_fraction, beta, score)
        params.update(
            visualize=visualize,
            proxy=proxy,
            n_clusters=n_clusters,
            clustering=clustering,
            key=key,
            model=model,
            embeddings_field=embeddings_field,
            seed=seed,
        )
        return _call(self, samples, params, delegate)


OPERATORS = (
    ComputeEmbeddings,
    ComputePseudoLabels,
    ComputeDifficulty,
    ComputeVisualization,
    ComputeContrastiveScores,
    SelectCoreset,
    ExportCoreset,
    RunElfsPipeline,
)
