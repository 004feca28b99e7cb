"""Lazy package exports: a package's names are imported from its modules on first use.

The array packages use it so that importing one of them (or one of their modules) imports only
what that module needs: ``fiftyone_elfs.selection.baselines`` uses the k-means of
``pseudo_labels`` without loading TEMI, and so torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, Sequence[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """(``__getattr__``, ``__dir__``, ``__all__``) for `package` exporting, from each of its
    modules (relative name, e.g. ".kmeans"), the given names."""
    module_of = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        setattr(importlib.import_module(package), name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(importlib.import_module(package)), *module_of})

    return __getattr__, __dir__, sorted(module_of)
