"""The parameter types: `Param` (one parameter of an operation) and `Switch` (parameters of
which at most, or exactly, one may be given).

Kept apart from the tables (`fiftyone_elfs.params`) and the shared rows
(`fiftyone_elfs.param_rows`) because it imports nothing heavy: the main job's command line
checks its flags with these before it imports FiftyOne or torch.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fiftyone_elfs.errors import ElfsInputError, identifier_error


class _Required:
    """The default of a parameter that must be given (passed positionally after `samples`)."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

#: Parameter types: how a value is checked, documented and shown in a form.
TYPES = ("int", "float", "bool", "str", "choice", "identifier", "dict", "str_list", "subset")


@dataclass(frozen=True)
class Param:
    """One parameter of an operation.

    Attributes:
        name: the keyword of the API function, the operator parameter and the recorded run.
        type: one of `TYPES`.
        default: the API default (`REQUIRED`: no default, passed positionally).
        help: what it does, shown in docstrings and forms.
        label: the form label (default: the name).
        min, max: inclusive bounds of an int or float; `min_open` / `max_open` exclude them.
        choices: the allowed values of a "choice" or "subset" parameter.
        noun: what a value is, for messages ("clustering method", "run key").
        example: an example value for identifier messages.
        optional: None is accepted (it means "not set" or "derive it").
        fix: how to fix a bad value, appended to the message as "Fix: ...".
        form: whether the App form shows it (hidden ones are still accepted by `__call__`).
        suggestion: what the form pre-fills for an optional parameter.
        widget: "radio" or "dropdown" for a choice in the form.
        fields: the allowed keys of a "dict" parameter, each a `Param` (empty: any keys).
        form_prefix: a "dict" or "subset" parameter appears in the form as one field per key or
            choice, named ``<form_prefix>_<key>``.
        shown_when: (other parameter, value): the form shows it only then; otherwise an operator
            passes None.
        choice_labels: the form label of each choice of a "subset" parameter.
    """

    name: str
    type: str
    default: Any = None
    help: str = ""
    label: str = ""
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False
    choices: tuple[Any, ...] = ()
    noun: str = ""
    example: str = ""
    optional: bool = False
    fix: str = ""
    form: bool = True
    suggestion: Any = None
    widget: str = ""
    fields: tuple[Param, ...] = ()
    form_prefix: str = ""
    shown_when: tuple[str, Any] | None = None
    choice_labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"unknown parameter type {self.type!r}")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def range_text(self) -> str:
        """The allowed values in words: "an integer >= 2", "a number in (0, 1]" ..."""
        if self.type in ("int", "float"):
            what = "an integer" if self.type == "int" else "a number"
            if self.min is not None and self.max is not None:
                lo, hi = "(" if self.min_open else "[", ")" if self.max_open else "]"
                return f"{what} in {lo}{_num(self.min)}, {_num(self.max)}{hi}"
            if self.min is not None:
                return f"{what} {'>' if self.min_open else '>='} {_num(self.min)}"
            if self.max is not None:
                return f"{what} {'<' if self.max_open else '<='} {_num(self.max)}"
            return what
        return {
            "bool": "True or False",
            "str": "a non-empty string",
            "choice": "one of " + ", ".join(map(str, self.choices)),
            "identifier": "letters, digits and underscores, not starting with '_'",
            "dict": "a dict"
            + (f" with keys among {[f.name for f in self.fields]}" * bool(self.fields)),
            "str_list": "a non-empty list of distinct, non-empty names",
            "subset": "a non-empty list of " + ", ".join(map(str, self.choices)),
        }[self.type]

    def error(self, value: Any, shown_name: str | None = None) -> ElfsInputError:
        """The error for a bad `value`, in the one format every check uses."""
        name = shown_name or self.name
        if self.type == "choice" and isinstance(value, str):
            options = ", ".join(map(str, self.choices))
            message = (
                f"Unknown {self.noun or name} {value!r} for {name}. Fix: use one of {options}."
            )
        elif self.type == "identifier" and isinstance(value, str):
            return identifier_error(self.noun or name, value, self.example, param=self.name)
        else:
            optional = " (or None)" if self.optional else ""
            message = f"{name} must be {self.range_text()}{optional}; got {value!r}."
            message += f" Fix: {self.fix or self.default_fix()}"
        return ElfsInputError(message, param=self.name)

    def default_fix(self) -> str:
        """The fix of a bad value when the row names none: the allowed values, an example (the
        default, when it is one) and None where None is allowed ("pass an integer >= 1, e.g.
        256 (the default)")."""
        if self.type == "bool":
            return f"pass {self.name}=True or {self.name}=False (a bool, not a string)."
        fix = f"pass {self.range_text()}"
        number = isinstance(self.default, numbers.Real) and not isinstance(self.default, bool)
        if self.type in ("int", "float") and number and self._in_range(self.default):
            fix += f", e.g. {self.default!r} (the default)"
        if self.optional:
            fix += ", or None for the default"
        return fix + "."

    def check(self, value: Any, shown_name: str | None = None) -> Any:
        """Returns `value` as the plain Python value the library uses, or raises `error`.

        numpy scalars are accepted and converted (``np.float32(0.2)`` is a valid beta).
        """
        if value is None and self.optional:
            return None
        bad = self.error(value, shown_name)
        if self.type == "bool":
            if isinstance(value, bool) or type(value).__name__ == "bool_":
                return bool(value)
            raise bad
        if self.type in ("int", "float"):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise bad
            if self.type == "int" and not isinstance(value, numbers.Integral):
                raise bad
            # a numpy float32 means its shortest decimal (0.45, not 0.449999988...)
            lower_precision = type(value).__module__ == "numpy" and self.type == "float"
            number = (
                int(value)
                if self.type == "int"
                else float(str(value) if lower_precision else value)
            )
            if math.isnan(number) or not self._in_range(number):
                raise bad
            return number
        if self.type == "str":
            if not isinstance(value, str) or not value.strip():
                raise bad
            return value
        if self.type == "choice":
            if not isinstance(value, str) or value not in self.choices:
                raise bad
            return value
        if self.type == "identifier":
            if not isinstance(value, str) or not value.isidentifier() or value.startswith("_"):
                raise bad
            return value
        if self.type == "dict":
            return self._check_dict(value, bad, shown_name or self.name)
        if self.type == "str_list":
            if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
                raise bad
            names = [str(v).strip() for v in value]
            if any(not n for n in names) or len(set(names)) != len(names):
                raise bad
            return names
        # subset
        if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
            raise bad
        if any(v not in self.choices for v in value):
            raise bad
        return tuple(value)

    def _in_range(self, number: float) -> bool:
        if self.min is not None and (number <= self.min if self.min_open else number < self.min):
            return False
        return self.max is None or (number < self.max if self.max_open else number <= self.max)

    def _check_dict(self, value: Any, bad: ElfsInputError, shown: str) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise bad
        value = dict(value)
        if not self.fields:
            return value
        allowed = [f.name for f in self.fields]
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise ElfsInputError(
                f"Unknown {shown} {unknown}. Fix: use only {allowed}.", param=self.name
            )
        by_name = {f.name: f for f in self.fields}
        return {k: by_name[k].check(v, f"{shown}['{k}']") for k, v in value.items()}

    def doc_line(self) -> str:
        """One Args entry: ``name (int >= 2, default 10): help``."""
        if self.required:
            head = self.range_text()
        else:
            head = f"{self.range_text()}{' or None' if self.optional else ''}, default "
            head += repr(self.default)
        line = f"{self.name} ({head}): {self.help}"
        if self.fields:
            subs = "; ".join(
                f"{f.name} ({f.range_text()}, default {f.default!r})" for f in self.fields
            )
            line += f" Keys: {subs}."
        return line


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


@dataclass(frozen=True)
class Switch:
    """A choice between parameters, such as the budget as a fraction or as a count.

    At the API boundary at most one of its parameters may be set (exactly one if `required`);
    in a form it is a radio button (named `name`, a form-only field) showing the chosen one.
    An option without a parameter (None) means "none of them" (the label-free beta).
    """

    name: str
    label: str
    options: tuple[tuple[str, Param | None], ...]
    required: bool = False
    noun: str = ""
    help: str = ""

    @property
    def params(self) -> tuple[Param, ...]:
        return tuple(p for _, p in self.options if p is not None)

    def check(self, values: Mapping[str, Any]) -> None:
        """Refuses two of the parameters set together, or none when one is required."""
        given = [p.name for p in self.params if values.get(p.name) is not None]
        if len(given) > 1:
            shown = " and ".join(f"{n}={values[n]!r}" for n in given)
            raise ElfsInputError(
                f"Both {shown} were given. Fix: pass only one of them.", param=given[-1]
            )
        if self.required and not given:
            names = " or ".join(p.name for p in self.params)
            raise ElfsInputError(
                f"No {self.noun} given. Fix: pass {names}, e.g. "
                + ", or ".join(f"{p.name}={p.suggestion!r}" for p in self.params)
                + ".",
                param=self.params[0].name,
            )

    def selected(self, values: Mapping[str, Any]) -> str:
        """The radio value matching `values` (the first option when none is set)."""
        for option, param in self.options:
            if param is not None and values.get(param.name) is not None:
                return option
        return self.options[0][0]
