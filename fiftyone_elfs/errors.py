"""Errors raised for bad user input, and the one boundary that turns the array modules' input
errors into them.

Every message names the problem and the fix. The array packages (``embeddings``,
``pseudo_labels``, ``difficulty``, ``selection``) check their arguments with plain ``ValueError``
so that they stay usable without this package's FiftyOne layer; `input_boundary` (applied by
`fiftyone_elfs.params.public` to every public function) re-raises those as `ElfsInputError`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

_PACKAGE = "fiftyone_elfs."
F = TypeVar("F", bound=Callable[..., Any])


class ElfsInputError(ValueError):
    """A parameter, view or field that cannot be used; raised before the dataset is changed.

    Attributes:
        param: the name of the offending parameter when one parameter is to blame (the App's
            forms show the message on that field), else None.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def identifier_error(
    noun: str, value: object, example: str, param: str | None = None
) -> ElfsInputError:
    """The error for a bad key (run key, annotation key, brain key): they name fields and runs."""
    return ElfsInputError(
        f"Invalid {noun} {value!r}: it names fields and FiftyOne runs, so it must be a valid "
        "Python identifier not starting with '_'. Fix: use letters, digits and underscores, "
        f"e.g. '{example}'.",
        param=param,
    )


def _raised_by_this_package(error: BaseException) -> bool:
    """Whether the innermost frame of `error`'s traceback is a fiftyone_elfs module."""
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return str(tb.tb_frame.f_globals.get("__name__", "")).startswith(_PACKAGE)


@contextmanager
def input_boundary() -> Iterator[None]:
    """Re-raises a ``ValueError`` that one of this package's modules raised as `ElfsInputError`.

    Only errors raised by fiftyone_elfs code are converted: those are argument checks by
    contract. A ``ValueError`` from FiftyOne, numpy or torch propagates unchanged, since it may
    be a bug rather than bad input.
    """
    try:
        yield
    except ElfsInputError:
        raise
    except ValueError as e:
        if _raised_by_this_package(e):
            raise ElfsInputError(str(e)) from e
        raise


def at_input_boundary(fn: F) -> F:
    """Decorator form of `input_boundary`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with input_boundary():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
