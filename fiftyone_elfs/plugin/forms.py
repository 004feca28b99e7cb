"""Operator forms derived from the parameter tables of `fiftyone_elfs.params`.

- `build_form`: one input per parameter with its default, label and help; a `Switch` as a
  radio button; a dict such as ``cnn_params`` as one input per key (``cnn_width`` ...); each
  value checked with the API's own check and message, plus cheap data checks on the target;
- `form_to_kwargs`: an operator's ``ctx.params`` -> the library's keyword arguments;
- `call_to_params`: the library's keyword arguments -> ``ctx.params`` (an operator's
  ``__call__`` from a script: lists stay lists, where the form takes comma-separated text).

`fiftyone_elfs.plugin.base.ElfsOperator` puts them together for every operator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import fiftyone.operators.types as types
from fiftyone.core.dataset import DatasetNotFoundError

from fiftyone_elfs import dataset_io
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.params import Operation, Param, Switch

#: A cheap data check a form runs on its target: ``check(samples, values)`` raises
#: `ElfsInputError` (naming the parameter to blame in ``param``).
Check = Callable[[Any, dict[str, Any]], None]


# --------------------------------------------------------------------------- form <-> kwargs


def form_names(param: Param) -> list[tuple[str, Param | None, Any]]:
    """(form field name, sub-parameter, choice) of the form fields that hold `param`."""
    if param.type == "dict" and param.form_prefix:
        return [(f"{param.form_prefix}_{f.name}", f, None) for f in param.fields]
    if param.type == "subset":
        return [(f"{param.form_prefix}_{c}", None, c) for c in param.choices]
    return [(param.name, None, None)]


def _shown(param: Param, values: Mapping[str, Any]) -> bool:
    if param.shown_when is None:
        return True
    other, wanted = param.shown_when
    return values.get(other) == wanted


def _from_form(param: Param, params: Mapping[str, Any], values: Mapping[str, Any]) -> Any:
    """The library value of `param` from the form's fields (None: not set)."""
    if param.type == "dict" and param.form_prefix:
        if not _shown(param, values):  # the form's leftover fields; a script's dict is checked
            return params.get(param.name)
        given = {
            sub.name: params[name]
            for name, sub, _ in form_names(param)
            if params.get(name) is not None
        }
        return given or params.get(param.name)
    if param.type == "subset":
        if param.name in params:  # passed through as a list
            return params[param.name]
        return [c for name, _, c in form_names(param) if params.get(name, c in param.default)]
    value = params.get(param.name)
    if param.type == "str_list" and isinstance(value, str):
        if param.optional and not value.strip():
            return None  # an optional list left empty: not set
        return [v.strip() for v in value.split(",") if v.strip()]
    if param.type in ("str", "identifier") and param.optional and value == "":
        return None
    return value


def switch_choice(switch: Switch, params: Mapping[str, Any]) -> str:
    """The option of a switch: the form's radio value, else the option whose value is set."""
    chosen = params.get(switch.name)
    options = [o for o, _ in switch.options]
    return chosen if chosen in options else switch.selected(params)


def form_to_kwargs(
    operation: Operation, params: Mapping[str, Any], context: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The library's keyword arguments from an operator's ``ctx.params``.

    Parameters the form leaves empty get their API default, or the operator's `context`
    default (workers for delegated runs, credentials from the plugin secrets); a switch passes
    only its chosen parameter. Values are not checked here: the library checks them.
    """
    params = dict(params)
    for old, new in operation.deprecated.items():  # runs queued under the old names
        if old in params and new not in params:
            params[new] = params.pop(old)
    context = context or {}
    kwargs: dict[str, Any] = {}
    for item in operation.items:
        if isinstance(item, Switch):
            chosen = switch_choice(item, params)
            for option, param in item.options:
                if param is None:
                    continue
                value = _from_form(param, params, kwargs) if option == chosen else None
                if option == chosen and value is None:
                    value = param.suggestion
                kwargs[param.name] = value
            continue
        value = _from_form(item, params, kwargs)
        if value is None and item.name in context:
            value = context[item.name]
        elif value is None and not item.optional and not item.required:
            value = item.default
        kwargs[item.name] = value
    return kwargs


def call_to_params(operation: Operation, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """An operator's ``ctx.params`` from checked library keyword arguments (`__call__`).

    A list (``classes``) is passed as the list, not as the form's comma-separated text: a
    name may hold a comma (``"tabby, cat"``)."""
    params: dict[str, Any] = {}
    for switch in operation.switches:
        params[switch.name] = switch.selected(kwargs)
    for param in operation.params:
        value = kwargs.get(param.name)
        if value is None:
            continue
        if param.type == "dict" and param.form_prefix:  # whole: checked even where hidden
            params[param.name] = dict(value)
        elif param.type == "subset":
            params.update({name: c in value for name, _, c in form_names(param)})
        elif param.type == "str_list":
            params[param.name] = list(value)
        else:
            params[param.name] = value
    return params


def plain(value: Any) -> Any:
    """`value` with numpy values, also inside dicts and lists, as plain Python ones (MongoDB,
    which stores a queued run's parameters, takes no numpy values)."""
    if isinstance(value, Mapping):
        return {plain(k): plain(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(plain(v) for v in value)
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return value.tolist()
    return value


# --------------------------------------------------------------------------- the form


def _is_mapping(values: Mapping[str, Any], name: str) -> bool:
    return isinstance(values.get(name) or {}, Mapping)


def _invalid(prop: Any, message: str) -> None:
    prop.invalid = True
    prop.error_message = message


def _add_input(
    inputs: types.Object, name: str, param: Param, required: bool = False, listed: bool = False
) -> Any:
    """One form input for a scalar parameter (or one key of a dict parameter).

    Required: parameters without a default and the chosen option of a required switch; the
    others fall back to their default when left out (`form_to_kwargs`). `listed`: a list
    parameter given as a list (a script's call), not as the form's comma-separated text.
    """
    default = param.suggestion if param.suggestion is not None else param.default
    default = None if param.required else default
    required = required or param.required
    options = dict(label=param.label or param.name, description=param.help or None)
    if param.type == "choice":
        view = types.RadioGroup() if param.widget == "radio" else types.DropdownView()
        return inputs.enum(name, list(param.choices), default=default, view=view, **options)
    if param.type == "bool":
        return inputs.bool(name, default=bool(default), **options)
    if param.type == "int":
        return inputs.int(name, default=default, required=required, **options)
    if param.type == "float":
        return inputs.float(name, default=default, required=required, **options)
    if param.type == "str_list" and listed:
        return inputs.list(name, types.String(), required=required, **options)
    if param.type == "str_list" and isinstance(default, (list, tuple)):
        default = ", ".join(default)
    return inputs.str(name, default=default, required=required, **options)


def _values_valid(operation: Operation, values: dict[str, Any]) -> bool:
    """Whether every given value passes the API's checks, those of parameters the form does not
    show included (a script's call): the data checks come after them, as in the API."""
    try:
        operation.validate({k: v for k, v in values.items() if k in operation.names})
    except (ElfsInputError, TypeError):
        return False
    return True


def target_preflight(samples: Any, values: dict[str, Any]) -> None:
    """The data check every stage's form runs first: images, and at least one of them."""
    dataset_io.require_nonempty(samples)
    dataset_io.require_images(samples)


def dataset_gone(ctx: Any) -> str | None:
    """A notice when the App's dataset was deleted while its tab was open, else None."""
    try:
        ctx.dataset  # noqa: B018 - loads it
    except DatasetNotFoundError:
        name = ctx.request_params.get("dataset_name")
        return f"The dataset '{name}' no longer exists. Fix: open another dataset in the App."
    return None


def build_form(
    ctx: Any,
    operation: Operation,
    checks: tuple[Check, ...] = (),
    custom: Callable[[Any, types.Object, Param], Any] | None = None,
    on_view: bool = True,
    refused: Callable[[ElfsInputError], None] | None = None,
) -> types.Object:
    """The form of an operation: every `form` parameter of its table, in table order.

    Each value the user types is checked with `Param.check`, the API's own check, so the form
    shows the API's message on the field (and the App greys out Execute); when all values are
    valid, `checks` (cheap data checks such as "more clusters than samples") run on the target
    with the form's values. `custom(ctx, inputs, param)` may draw a parameter itself (return
    its property) or return None for the default input. `on_view=False`: the operator works on
    the whole dataset. `refused(error)` hears of a data check's refusal shown on the form.
    """
    inputs = types.Object()
    gone = dataset_gone(ctx)
    if gone is not None:  # deleted while its tab was open: the notice, and no Execute
        _invalid(inputs.view("dataset_gone", types.Error(label=gone)), gone)
        return inputs
    # Calling ctx.target_view() while resolving the input is what makes the App offer the
    # "Dataset / Current view / Selected samples" choice above the form (FiftyOne 1.22): it is
    # not dead code. Operators on the whole dataset skip it.
    target = ctx.target_view() if on_view else ctx.dataset
    params = ctx.params
    values = form_to_kwargs(operation, params)
    props: dict[str, Any] = {}
    errors: list[ElfsInputError] = []

    def add(param: Param, required: bool = False) -> None:
        if not param.form or not _shown(param, values):
            return
        prop = custom(ctx, inputs, param) if custom is not None else None
        if prop is not None:
            props[param.name] = prop
        elif param.type == "dict" and param.form_prefix and _is_mapping(values, param.name):
            given = values.get(param.name) or {}
            for name, sub, _ in form_names(param):
                if not sub.form:
                    continue
                props[name] = sub_prop = _add_input(inputs, name, sub)
                if given.get(sub.name) is not None:
                    try:
                        sub.check(given[sub.name], f"{param.name}['{sub.name}']")
                    except ElfsInputError as e:
                        _invalid(sub_prop, str(e))
                        errors.append(e)
            return
        elif param.type == "subset":
            for (name, _, choice), label in zip(
                form_names(param), param.choice_labels, strict=True
            ):
                props[name] = inputs.bool(name, default=choice in param.default, label=label)
            props[param.name] = props[name]
        else:
            listed = isinstance(params.get(param.name), (list, tuple))
            props[param.name] = _add_input(inputs, param.name, param, required, listed)
        value = values.get(param.name)
        if value is not None or (param.type == "subset"):
            try:
                param.check(value)
            except ElfsInputError as e:
                _invalid(props[param.name], str(e))
                errors.append(e)

    for item in operation.items:
        if isinstance(item, Switch):
            chosen = switch_choice(item, params)
            options = [o for o, _ in item.options]
            inputs.enum(
                item.name,
                options,
                default=options[0],
                label=item.label,
                description=item.help or None,
                view=types.RadioGroup(),
            )
            for option, param in item.options:
                if param is not None and option == chosen:
                    add(param, required=item.required)
        else:
            add(item)

    if not errors and target is not None and _values_valid(operation, values):
        for check in checks:
            try:
                check(target, values)
            except ElfsInputError as e:
                prop = props.get(e.param or "")
                if prop is None:  # the target itself (empty, not images): no field to blame
                    prop = inputs.view("target_error", types.Error(label=str(e)))
                _invalid(prop, str(e))
                if refused is not None:
                    refused(e)
                break
    return inputs
