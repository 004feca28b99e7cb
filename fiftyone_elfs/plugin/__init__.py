"""FiftyOne plugin entry point (`py_entry` in fiftyone.yml): registers the operators and panel.

This folder is the plugin folder (its fiftyone.yml sits here, and ships in the wheel): make it
discoverable with `fiftyone-elfs install-plugin`, which links it into FiftyOne's plugins
directory.
"""

import os
import sys
from typing import Any

try:
    import fiftyone_elfs  # noqa: F401
except ImportError:  # a checkout linked into the plugins dir without `pip install`
    sys.path.insert(
        0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
    )

from fiftyone_elfs.plugin.annotation_operators import ANNOTATION_OPERATORS  # noqa: E402
from fiftyone_elfs.plugin.operators import OPERATORS  # noqa: E402
from fiftyone_elfs.plugin.panel import ElfsPanel  # noqa: E402


def register(p: Any) -> None:
    """Called by FiftyOne's plugin loader."""
    for operator in (*OPERATORS, *ANNOTATION_OPERATORS):
        p.register(operator)
    p.register(ElfsPanel)
