"""Operators for the annotation loop: send to Label Studio, load answers, select the next budget.

Label Studio's URL and API key come from the plugin secrets `FIFTYONE_LABELSTUDIO_URL` and
`FIFTYONE_LABELSTUDIO_API_KEY` (environment variables of the same names in open-source FiftyOne).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import fiftyone.operators as foo
import fiftyone.operators.types as types

from fiftyone_elfs import annotation, api
from fiftyone_elfs.plugin.operators import (
    _call,
    _ElfsOperator,
    _invalid,
    _key_input,
    _operator_config,
    _reload,
    _selection_inputs,
    _selection_kwargs,
    _selection_params,
)


def _credentials(ctx: Any) -> dict[str, str | None]:
    """The Label Studio URL and key from the plugin's secrets (None: the library's own lookup)."""
    secrets = ctx.secrets
    return {
        "url": secrets.get(annotation.URL_ENV) or None,
        "api_key": secrets.get(annotation.API_KEY_ENV) or None,
    }


def _anno_key_input(ctx: Any, inputs: types.Object, new: bool) -> str | None:
    """A new annotation key (validated), or a dropdown of the keys sent from this dataset."""
    if not new:
        keys = annotation.list_annotation_runs(ctx.dataset)
        choices = types.DropdownView()
        for k in keys:
            choices.add_choice(k, label=k)
        prop = inputs.enum(
            "anno_key",
            keys,
            required=True,
            label="Annotation run",
            view=choices,
            default=keys[-1] if keys else None,
        )
        if not keys:
            _invalid(prop, "Nothing was sent to Label Studio from this dataset yet")
        return ctx.params.get("anno_key")
    anno_key = ctx.params.get("anno_key")
    prop = inputs.str(
        "anno_key",
        required=True,
        label="Annotation key",
        description="Names this annotation run (letters, digits, _), e.g. 'round1'",
    )
    if anno_key:
        if not str(anno_key).isidentifier() or str(anno_key).startswith("_"):
            _invalid(prop, "Use letters, digits and underscores, e.g. 'round1'")
        elif anno_key in ctx.dataset.list_annotation_runs():
            _invalid(prop, "This annotation key is already used on this dataset")
    return anno_key


class SendToLabelStudio(_ElfsOperator):
    @property
    def config(self) -> foo.OperatorConfig:
        return _operator_config(
            "send_to_label_studio",
            "ELFS: send to Label Studio",
            "Create a Label Studio project with these samples, pseudo-labels as pre-annotations",
        )

    def resolve_input(self, ctx: Any) -> types.Property:
        inputs = types.Object()
        ctx.target_view()
        _anno_key_input(ctx, inputs, new=True)
        prop = inputs.str(
            "classes",
            required=True,
            label="Classes",
            description="Comma-separated class names the annotators choose from",
        )
        classes = [c.strip() for c in (ctx.params.get("classes") or "").split(",") if c.strip()]
        if ctx.params.get("classes") is not None and not classes:
            _invalid(prop, "Give at least one class name, e.g. 'cat, dog'")
        elif len(set(classes)) != len(classes):
            _invalid(prop, "Each class name must appear once")
        inputs.str(
            "label_field",
            default="ground_truth",
            required=True,
            label="Label field",
            description="Where the annotators' answers are loaded back",
        )
        inputs.str(
            "prelabel_field",
            required=False,
            label="Pre-annotation field (optional)",
            description="e.g. 'elfs_pseudo_label': clusters map to the class annotators gave "
            "their members in earlier rounds",
        )
        inputs.bool(
            "overwrite",
            default=False,
            label="Let answers replace labels these samples already have",
        )
        return types.Property(inputs, view=types.View(label="ELFS: send to Label Studio"))

    def execute(self, ctx: Any) -> Generator[Any, None, None]:
        p = ctx.params
        sent = annotation.send_to_label_studio(
            ctx.target_view(),
            p["anno_key"],
            classes=[c.strip() for c in p["classes"].split(",") if c.strip()],
            label_field=p.get("label_field") or "ground_truth",
            prelabel_field=p.get("prelabel_field") or None,
            overwrite=bool(p.get("overwrite", False)),
            **_credentials(ctx),
        )
        message = f"Sent {sent['n_sent']} samples to Label Studio: {sent['project_url']}"
        yield ctx.ops.set_progress(progress=1.0, label=message)
        if not ctx.delegated:
            yield ctx.ops.notify(message, variant="success")
        yield from _reload(ctx)

    def __call__(
        self,
        samples: Any,
        anno_key: str,
        classes: list[str],
        label_field: str = "ground_truth",
        prelabel_field: str | None = None,
        overwrite: bool = False,
        delegate: bool = False,
    ) -> Any:
        params = dict(
            anno_key=anno_key,
            classes=", ".join(classes),
            label_field=label_field,
            prelabel_field=prelabel_field,
            overwrite=overwrite,
        )
        return _call(self, samples, params, delegate)


class LoadFromLabelStudio(_ElfsOperator):
    @property
    def config(self) -> foo.OperatorConfig:
        return _operator_config(
            "load_from_label_studio",
            "ELFS: load labels from Label Studio",
            "Load the answered tasks into the label field; unanswered ones stay unlabeled",
        )

    def resolve_input(self, ctx: Any) -> types.Property:
        inputs = types.Object()
        anno_key = _anno_key_input(ctx, inputs, new=False)
        if anno_key in annotation.list_annotation_runs(ctx.dataset):
            info = annotation.annotation_summary(ctx.dataset, anno_key)
            status = (
                f"Last load: {info['n_labeled']} labeled, {info['n_skipped']} skipped, "
                f"{info['n_unanswered']} unanswered"
                if info["loaded"]
                else "Not loaded yet"
            )
            inputs.view(
                "status",
                types.Notice(
                    label=f"{info['n_sent']} samples sent to {info['project_url']} for "
                    f"'{info['label_field']}'. {status}."
                ),
            )
        return types.Property(inputs, view=types.View(label="ELFS: load labels"))

    def execute(self, ctx: Any) -> Generator[Any, None, None]:
        summary = annotation.load_from_label_studio(
            ctx.dataset, ctx.params["anno_key"], **_credentials(ctx)
        )
        message = (
            f"'{summary.label_field}': {summary.n_labeled} of {summary.n_sent} labeled, "
            f"{summary.n_skipped} skipped, {summary.n_unanswered} unanswered"
        )
        yield ctx.ops.set_progress(progress=1.0, label=message)
        if not ctx.delegated:
            yield ctx.ops.notify(message, variant="success")
        yield from _reload(ctx)

    def __call__(self, samples: Any, anno_key: str, delegate: bool = False) -> Any:
        return _call(self, samples, dict(anno_key=anno_key), delegate)


class SelectMore(_ElfsOperator):
    @property
    def config(self) -> foo.OperatorConfig:
        return _operator_config(
            "select_more",
            "ELFS: select the next budget",
            "Tag N more samples to label, never one already selected or labeled",
        )

    def resolve_input(self, ctx: Any) -> types.Property:
        inputs = types.Object()
        ctx.target_view()
        _key_input(ctx, inputs)
        _selection_inputs(ctx, inputs)
        prop = inputs.str(
            "label_field",
            required=False,
            label="Label field (optional)",
            description="Samples already labeled here are never selected again",
        )
        field = ctx.params.get("label_field")
        if field and ctx.dataset.get_field(field) is None:
            _invalid(prop, f"The dataset has no field '{field}'")
        return types.Property(inputs, view=types.View(label="ELFS: select the next budget"))

    def execute(self, ctx: Any) -> Generator[Any, None, None]:
        p = ctx.params
        result = api.select_more(
            ctx.target_view(),
            key=p.get("key", "elfs"),
            label_field=p.get("label_field") or None,
            **_selection_kwargs(p),
        )
        yield ctx.ops.set_progress(
            progress=1.0,
            label=f"round {result.round}: selected {result.budget} more (tag '{result.tag}')",
        )
        yield from _reload(ctx)

    def __call__(
        self,
        samples: Any,
        budget_count: int | None = None,
        budget_fraction: float | None = None,
        key: str = "elfs",
        label_field: str | None = None,
        beta: float | None = None,
        score: str = "aum",
        delegate: bool = False,
    ) -> Any:
        params = _selection_params(budget_count, budget_fraction, beta, score)
        return _call(self, samples, dict(params, key=key, label_field=label_field), delegate)


ANNOTATION_OPERATORS = (SendToLabelStudio, LoadFromLabelStudio, SelectMore)
