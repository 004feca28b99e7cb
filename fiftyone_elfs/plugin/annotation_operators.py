"""Operators for the annotation loop: send to Label Studio, load answers, select the next budget.

Label Studio's URL and API key come from the plugin secrets `FIFTYONE_LABELSTUDIO_URL` and
`FIFTYONE_LABELSTUDIO_API_KEY` (environment variables of the same names in open-source FiftyOne).
Like the stage operators, each class names its table and library function; the form, ``execute``
and ``__call__`` come from `base.ElfsOperator`.
"""

from __future__ import annotations

from typing import Any

import fiftyone.operators.types as types

from fiftyone_elfs import annotation, api, dataset_io
from fiftyone_elfs.params import Param
from fiftyone_elfs.plugin.base import ElfsOperator
from fiftyone_elfs.stages import selection, selection_rounds


def send_preflight(samples: Any, values: dict[str, Any]) -> None:
    """The form's cheap checks of send_to_label_studio: a new annotation key, a label field
    that can take the answers (the default 'ground_truth' of a class-folder import holds labels
    already), a pre-label field that exists."""
    annotation.preflight(samples, values)
    if values.get("label_field"):
        overwrite, anno_key = bool(values.get("overwrite")), values.get("anno_key") or ""
        annotation.check_label_field(samples, values["label_field"], overwrite, anno_key)
    if values.get("prelabel_field"):
        field = values["prelabel_field"]
        dataset_io.require_field(samples, field, "prelabel_field", "pre-label field")


class _LabelStudioOperator(ElfsOperator):
    """Takes Label Studio's URL and key from the plugin secrets (None: the library's lookup)."""

    notify = True

    def context_values(self, ctx: Any) -> dict[str, Any]:
        secrets = ctx.secrets
        return {
            "url": secrets.get(annotation.URL_ENV) or None,
            "api_key": secrets.get(annotation.API_KEY_ENV) or None,
        }


class SendToLabelStudio(_LabelStudioOperator):
    name = "send_to_label_studio"
    label = "ELFS: send to Label Studio"
    description = (
        "Create a Label Studio project with these samples, pseudo-labels as pre-annotations"
    )
    operation = "send_to_label_studio"
    function = staticmethod(annotation.send_to_label_studio)
    checks = (send_preflight,)
    usage = (
        'foo.get_operator("@fiftyone-elfs/elfs/send_to_label_studio")'
        '(coreset_view, "round1", ["cat", "dog"], label_field="human")'
    )

    def done_label(self, result: dict[str, Any], kwargs: dict[str, Any]) -> str:
        return f"Sent {result['n_sent']} samples to Label Studio: {result['project_url']}"


class LoadFromLabelStudio(_LabelStudioOperator):
    name = "load_from_label_studio"
    label = "ELFS: load labels from Label Studio"
    description = "Load the answered tasks into the label field; unanswered ones stay unlabeled"
    form_title = "ELFS: load labels"
    operation = "load_from_label_studio"
    function = staticmethod(annotation.load_from_label_studio)
    on_view = False  # loads into the dataset the run was sent from
    usage = 'foo.get_operator("@fiftyone-elfs/elfs/load_from_label_studio")(dataset, "round1")'

    def custom_input(self, ctx: Any, inputs: types.Object, param: Param) -> Any:
        """The annotation key as a dropdown of the runs sent from this dataset."""
        if param.name != "anno_key":
            return None
        keys = annotation.list_annotation_runs(ctx.dataset)
        choices = types.DropdownView()
        for k in keys:
            choices.add_choice(k, label=k)
        prop = inputs.enum(
            "anno_key",
            keys,
            required=True,
            label=param.label,
            view=choices,
            default=keys[-1] if keys else None,
        )
        if not keys:
            prop.invalid = True
            prop.error_message = "Nothing was sent to Label Studio from this dataset yet"
        return prop

    def extra_inputs(self, ctx: Any, inputs: types.Object) -> None:
        """What was sent under the chosen key and what came back so far."""
        anno_key = ctx.params.get("anno_key")
        if anno_key not in annotation.list_annotation_runs(ctx.dataset):
            return
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

    def done_label(self, result: annotation.AnnotationSummary, kwargs: dict[str, Any]) -> str:
        extra = "".join(
            f", {n} {what}"
            for n, what in (
                (result.n_kept, "kept as edited"),
                (result.n_unusable, "submitted without a class"),
                (result.n_deleted, "deleted"),
                (result.n_gone, "gone from the project"),
            )
            if n
        )
        notes = "".join(f" {notice}" for notice in result.notices)
        return (
            f"'{result.label_field}': {result.n_labeled} of {result.n_sent} labeled, "
            f"{result.n_skipped} skipped, {result.n_unanswered} unanswered{extra}.{notes}"
        )


class SelectMore(ElfsOperator):
    name = "select_more"
    label = "ELFS: select the next budget"
    description = "Tag N more samples to label, never one already selected or labeled"
    operation = "select_more"
    function = staticmethod(api.select_more)
    checks = (selection_rounds.preflight,)
    usage = (
        'foo.get_operator("@fiftyone-elfs/elfs/select_more")'
        '(dataset, budget_count=200, label_field="human")'
    )

    def done_label(self, result: selection.CoresetResult, kwargs: dict[str, Any]) -> str:
        notes = "".join(f" {notice}" for notice in result.notices)
        notes = f".{notes}" if notes else ""
        return f"round {result.round}: selected {result.budget} more (tag '{result.tag}'){notes}"


ANNOTATION_OPERATORS = (SendToLabelStudio, LoadFromLabelStudio, SelectMore)
