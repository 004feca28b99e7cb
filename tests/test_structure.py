"""The shape of the package: the array packages stand alone, modules stay small, no module reaches
into another's private names."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "fiftyone_elfs")
ARRAY_PACKAGES = ("embeddings", "pseudo_labels", "difficulty", "selection")


def _loaded_after(code: str) -> dict[str, bool]:
    """Which heavy libraries a fresh interpreter has loaded after running `code`."""
    probe = (
        f"{code}\nimport json, sys\n"
        "print(json.dumps({m: m in sys.modules for m in ('fiftyone', 'torch')}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_selection_loads_neither_fiftyone_nor_torch():
    assert _loaded_after("import fiftyone_elfs.selection") == {"fiftyone": False, "torch": False}


def test_the_package_root_and_torch_free_array_names_load_lazily():
    code = (
        "import fiftyone_elfs as elfs\n"
        "elfs.ElfsInputError\n"
        "from fiftyone_elfs.pseudo_labels import kmeans_pseudo_labels, cluster_accuracy\n"
        "from fiftyone_elfs.embeddings import pca_reduce\n"
        "from fiftyone_elfs.selection import double_end_prune, d2_prune\n"
    )
    assert _loaded_after(code) == {"fiftyone": False, "torch": False}


def test_every_name_the_readme_calls_on_the_package_root_exists():
    """The README's snippets say `elfs.<name>` (import fiftyone_elfs as elfs): each must resolve,
    else a user copying them gets an AttributeError."""
    import re

    import fiftyone_elfs as elfs

    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        used = set(re.findall(r"\belfs\.([A-Za-z_]\w*)\b(?!\.)", f.read()))
    assert {"run_pipeline", "summarize_run", "select_more"} <= used
    assert sorted(name for name in used if not hasattr(elfs, name)) == []


def test_the_readme_layout_names_every_fiftyone_layer_module():
    """A newcomer finds a module from the README's layout: each module of the package root,
    of ``stages/`` and of ``plugin/`` is named there (the array packages are described as
    folders)."""
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    layout = text[text.index("## Layout") :]
    layout = layout[: layout.index("```", layout.index("```") + 3)]
    modules = [
        name
        for folder in ("", "stages", "plugin")
        for name in os.listdir(os.path.join(PACKAGE, folder))
        if name.endswith(".py") and name != "__init__.py"
    ]
    assert len(modules) > 40
    assert sorted(m for m in modules if m not in layout) == []


def _modules(*parts: str) -> list[str]:
    root = os.path.join(PACKAGE, *parts)
    return sorted(
        os.path.join(folder, name)
        for folder, _, names in os.walk(root)
        for name in names
        if name.endswith(".py")
    )


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, REPO)[: -len(".py")].replace(os.sep, ".")
    return rel.removesuffix(".__init__")


def test_no_array_module_imports_fiftyone():
    names = [_module_name(p) for pkg in ARRAY_PACKAGES for p in _modules(pkg)]
    code = "\n".join(f"import {n}" for n in names)
    assert not _loaded_after(code)["fiftyone"]


def _fiftyone_layer() -> list[str]:
    """The modules this package's FiftyOne layer and plugin consist of (not the algorithms)."""
    array = {os.path.join(PACKAGE, pkg) for pkg in ARRAY_PACKAGES}
    return [p for p in _modules() if os.path.dirname(p) not in array]


@pytest.mark.parametrize("path", _fiftyone_layer(), ids=_module_name)
def test_modules_stay_small_or_say_why(path):
    with open(path) as f:
        source = f.read()
    n_lines = source.count("\n")
    docstring = ast.get_docstring(ast.parse(source)) or ""
    assert n_lines <= 420 or "on purpose" in docstring, (
        f"{_module_name(path)} has {n_lines} lines: split it, or say at its top why not"
    )


@pytest.mark.parametrize("path", _fiftyone_layer(), ids=_module_name)
def test_no_module_imports_private_names_of_another(path):
    with open(path) as f:
        tree = ast.parse(f.read())
    private = [
        f"{node.module}.{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fiftyone_elfs")
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")
    ]
    assert private == []


def test_every_operator_is_one_small_class_on_the_shared_base():
    from fiftyone_elfs.plugin.annotation_operators import ANNOTATION_OPERATORS
    from fiftyone_elfs.plugin.base import ElfsOperator
    from fiftyone_elfs.plugin.operators import OPERATORS

    for operator in (*OPERATORS, *ANNOTATION_OPERATORS):
        assert issubclass(operator, ElfsOperator)
        assert "execute" not in vars(operator) and "__call__" in vars(operator)
        assert "resolve_input" not in vars(operator)
