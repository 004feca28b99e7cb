"""The base class of every ELFS operator: everything but its names comes from its table.

An operator subclass names its parameter table, its library function and its labels; from the
table `ElfsOperator` derives its form (`forms.build_form`), its ``execute`` (``ctx.params`` ->
library call, with progress reported one way: `execution.report_progress`) and its
``__call__`` (every table parameter under the API's names, checked as the API does). A
``__call__`` from a script draws the progress as a bar in the terminal and returns FiftyOne's
``ExecutionResult`` with the library function's return value as its ``.result`` (for a
generator operator FiftyOne itself keeps nothing there), blocking even where an event loop runs
(a notebook cell), and raises the library's `ElfsInputError` when the run refused its data.
How a call runs (worker thread, progress, stopped by Ctrl-C): `fiftyone_elfs.plugin.execution`.
"""

from __future__ import annotations

import inspect
import os
import uuid
from collections.abc import Callable, Generator
from typing import Any

import fiftyone.operators as foo
import fiftyone.operators.types as types
from fiftyone.operators.executor import ExecutionError

from fiftyone_elfs import dataset_io
from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.label_studio import url_secrets
from fiftyone_elfs.params import OPERATIONS, Operation, Param
from fiftyone_elfs.plugin.delegation import execution_options
from fiftyone_elfs.plugin.execution import (
    SCRIPT_CALL_PARAM,
    SCRIPT_CALLS,
    ScriptCall,
    execute_blocking,
    reload_dataset,
    report_progress,
    run_with_progress,
    script_call,
)
from fiftyone_elfs.plugin.forms import (
    Check,
    build_form,
    call_to_params,
    form_names,
    form_to_kwargs,
    plain,
    target_preflight,
)
from fiftyone_elfs.progress import stop_progress, terminal_progress

#: Folder parameters: a relative path is resolved where the run is asked for (the caller's
#: working directory), not in a delegated worker's.
FOLDER_PARAMS = ("export_dir",)


def refuse_stored_credentials(values: dict[str, Any]) -> None:
    """Refuses Label Studio credentials (``api_key``, a ``user:password@`` URL) in a run to be
    queued: the queued operation keeps its parameters in plain text in the database, where
    every user of it can read them (``fiftyone delegated info``)."""
    url = values.get("url")
    in_url = isinstance(url, str) and bool(url_secrets(url))
    given = (["api_key"] if values.get("api_key") else []) + (["url"] if in_url else [])
    if given:
        what = " and ".join("a url with user:password@" if n == "url" else n for n in given)
        raise ElfsInputError(
            f"delegate=True with {what}: the queued operation would keep the credentials in "
            "plain text in the database, readable by anyone who can list delegated operations. "
            "Fix: leave them out and set the plugin secrets FIFTYONE_LABELSTUDIO_URL / "
            "FIFTYONE_LABELSTUDIO_API_KEY (or those environment variables on the workers), or "
            "run without delegate=True.",
            param=given[0],
        )


# --------------------------------------------------------------------------- the base class


class ElfsOperator(foo.Operator):
    """An ELFS operator: everything but its names and library function comes from its table.

    Subclasses set:
        name, label, description, form_title: the operator's URI name and App texts;
        operation: the name of its table in `fiftyone_elfs.params.OPERATIONS`;
        function: the library function `execute` calls with the form's values;
        checks: cheap data checks the form runs on the target, ``check(samples, values)``,
            after `target_preflight` (unless check_target is False);
        on_view: False for operators that work on the whole dataset (no view choice);
        notify: also show the final message as a notification in the App;
        usage: a usage example, the start of ``__call__``'s docstring;
        returns: what the library function returns, for ``__call__``'s docstring.
    and may override `done_label`, `context_values`, `custom_input`, `extra_inputs`.
    """

    name = ""
    label = ""
    description = ""
    form_title = ""
    operation = ""
    function: Callable[..., Any] = staticmethod(lambda **kwargs: None)
    checks: tuple[Check, ...] = ()
    check_target = True  # the form refuses an empty target or one of other media (the stages)
    on_view = True
    notify = False  # also show the final message as a notification in the App
    usage = ""
    returns = "see the library function"  # what ``.result`` of a script's call holds

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.operation:
            cls.__call__ = _make_call(cls)  # type: ignore[method-assign]

    @property
    def table(self) -> Operation:
        return OPERATIONS[self.operation]

    @property
    def config(self) -> foo.OperatorConfig:
        """A dynamic form, progress streamed from a generator, delegation allowed."""
        return foo.OperatorConfig(
            name=self.name,
            label=self.label,
            description=self.description,
            dynamic=True,
            execute_as_generator=True,
            allow_delegated_execution=True,
        )

    def resolve_execution_options(self, ctx: Any) -> foo.ExecutionOptions:
        return execution_options(self.name, ctx)

    def resolve_delegation(self, ctx: Any) -> None:
        """Not forced either way; as the run is asked for (immediate or to be queued, before
        its parameters are stored), resolves relative folders in this process's directory."""
        if ctx.delegated:
            return None
        for name in FOLDER_PARAMS:
            value = ctx.params.get(name)
            if name in self.table.names and isinstance(value, str) and value.strip():
                ctx.params[name] = os.path.abspath(os.path.expanduser(value))
        if ctx.requesting_delegated_execution:  # a script's call has no business in the queue
            ctx.request_params.pop(SCRIPT_CALL_PARAM, None)
        return None

    def resolve_input(self, ctx: Any) -> types.Property:
        call = script_call(ctx)
        refused = call.refuse if call is not None else None
        checks = ((target_preflight,) if self.on_view and self.check_target else ()) + self.checks
        inputs = build_form(ctx, self.table, checks, self.custom_input, self.on_view, refused)
        if "dataset_gone" not in inputs.properties:
            self.extra_inputs(ctx, inputs)
        return types.Property(inputs, view=types.View(label=self.form_title or self.label))

    def execute(self, ctx: Any) -> Generator[Any, None, Any]:
        """Reads ``ctx.params``, calls the library, reports progress, reloads the App."""
        try:
            return (yield from self._execute(ctx))
        except ElfsInputError as e:
            call = script_call(ctx)
            if call is not None:
                call.refuse(e)  # raised as it is by the script's __call__
            raise

    def _execute(self, ctx: Any) -> Generator[Any, None, Any]:
        kwargs = form_to_kwargs(self.table, ctx.params, self.context_values(ctx))
        samples = ctx.target_view() if self.on_view else ctx.dataset
        options = dict(kwargs)
        positional = [options.pop(p.name) for p in self.table.params if p.required]
        result = yield from run_with_progress(
            ctx, _bind(type(self).function, samples, positional), **options
        )
        message = self.done_label(result, kwargs)
        yield from report_progress(ctx, 1.0, message)
        if not ctx.delegated and self.notify:
            yield ctx.ops.notify(message, variant="success")
        yield from reload_dataset(ctx)
        call = script_call(ctx)
        if call is not None:
            call.result = result
        return result

    def done_label(self, result: Any, kwargs: dict[str, Any]) -> str:
        """The final progress label."""
        return "done"

    def context_values(self, ctx: Any) -> dict[str, Any]:
        """Values of parameters the form does not show, taken from the execution context."""
        if "num_workers" not in self.table.names:
            return {}
        # an immediate run decodes in the App's own process (no worker processes forked from
        # the server); a delegated one takes the library's default (`cpus.decode_workers`)
        return {"num_workers": None if ctx.delegated else 0}

    def custom_input(self, ctx: Any, inputs: types.Object, param: Param) -> Any:
        """Draws `param` differently from the default input (return its property), or None."""
        return None

    def extra_inputs(self, ctx: Any, inputs: types.Object) -> None:
        """Adds read-only views (notices) after the parameters."""

    def _call(self, samples: Any, arguments: dict[str, Any]) -> Any:
        delegate = bool(arguments.pop("delegate", False))
        values = self.table.validate(arguments)
        if delegate:
            refuse_stored_credentials(values)
        # plain Python values: a queued run's parameters are stored in MongoDB
        params = plain(call_to_params(self.table, values))
        token = uuid.uuid4().hex
        progress = (lambda fraction, label: None) if delegate else terminal_progress(self.label)
        SCRIPT_CALLS[token] = call = ScriptCall(progress)
        refusal, finished = None, False
        context = {"view": samples.view(), SCRIPT_CALL_PARAM: token}
        if samples.media_type == "group":  # a queued run's worker loads the default slice
            context["group_slice"] = samples.group_slice
        try:
            execution = execute_blocking(
                self.uri,
                context,
                on_interrupt=call.interrupted.set,
                params=params,
                request_delegation=delegate,
            )
            finished = True
        except ExecutionError:
            if call.error is None:
                raise
            refusal = call.error  # the library's refusal of the data, as the API raises it
        finally:
            SCRIPT_CALLS.pop(token, None)
            if not finished:
                stop_progress(progress, "(failed)")
        if refusal is not None:
            raise refusal
        if not delegate:
            execution.result = call.result
        return execution


def _bind(fn: Callable[..., Any], samples: Any, positional: list[Any]) -> Callable[..., Any]:
    """`fn` with its leading arguments bound, keeping the keyword-only signature visible."""

    def call(**kwargs: Any) -> Any:
        return fn(samples, *positional, **kwargs)

    signature = inspect.signature(fn)
    call.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for p in signature.parameters.values() if p.kind == p.KEYWORD_ONLY]
    )
    return call


def _make_call(cls: type[ElfsOperator]) -> Callable[..., Any]:
    """The operator's ``__call__``: the table's parameters as keywords, checked like the API."""
    operation = OPERATIONS[cls.operation]
    P = inspect.Parameter
    parameters = [P("self", P.POSITIONAL_OR_KEYWORD), P("samples", P.POSITIONAL_OR_KEYWORD)]
    parameters += [P(p.name, P.POSITIONAL_OR_KEYWORD) for p in operation.params if p.required]
    parameters += [
        P(p.name, P.KEYWORD_ONLY, default=p.default) for p in operation.params if not p.required
    ]
    aliases = {  # the form's names of dict keys, e.g. cnn_width=8 for cnn_params={"width": 8}
        name: (p.name, sub.name)
        for p in operation.params
        if p.type == "dict" and p.form_prefix
        for name, sub, _ in form_names(p)
        if sub.form
    }
    parameters += [P(name, P.KEYWORD_ONLY, default=None) for name in aliases]
    parameters.append(P("delegate", P.KEYWORD_ONLY, default=False))
    signature = inspect.Signature(parameters)

    def __call__(self: ElfsOperator, samples: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs = operation.rename_deprecated(kwargs)
        arguments = signature.bind(self, samples, *args, **kwargs).arguments
        arguments.pop("self"), arguments.pop("samples")
        for name, (dict_name, key) in aliases.items():
            value = arguments.pop(name, None)
            if value is not None:
                arguments[dict_name] = {**(arguments.get(dict_name) or {}), key: value}
        return self._call(dataset_io.with_every_field(samples), arguments)

    __call__.__signature__ = signature  # type: ignore[attr-defined]
    __call__.__doc__ = (
        f"Runs '{cls.label}' on a dataset or view from a script, as the App would.\n\n"
        f"Example::\n\n    {cls.usage}\n\n"
        "Checks the arguments like the library function does (raising ElfsInputError), runs\n"
        "the operator through FiftyOne's operator machinery with a progress bar in the terminal\n"
        "(blocking, also in a notebook cell), and returns FiftyOne's ExecutionResult whose\n"
        f"``.result`` is what the library function returned ({cls.returns}). A refusal of the\n"
        "data raises the library's ElfsInputError too, other failures FiftyOne's ExecutionError.\n"
        "``delegate=True`` queues the run for a delegated worker instead (``.result`` then\n"
        "describes the queued operation; Label Studio credentials are refused there: the\n"
        "workers take them from the plugin secrets).\n\n"
        + operation.args_doc()
        + "".join(
            f"\n    {name}: the App form's name for {dict_name}={{'{key}': ...}} (same values)."
            for name, (dict_name, key) in aliases.items()
        )
        + "\n    delegate: True queues the run for a delegated worker (default False)."
    )
    return __call__
