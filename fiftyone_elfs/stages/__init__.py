"""The FiftyOne wiring of each pipeline stage: one module per stage.

Each module holds a frozen ``...Config`` (its fields are the public function's parameters; their
defaults, ranges and help live in `fiftyone_elfs.params`) and the stage function
``run(samples, config, progress)``, which always has the same shape:

1. check what depends on the data (sample counts, fields, ownership of the outputs);
2. read arrays through `fiftyone_elfs.dataset_io`;
3. run the algorithm of the matching array package (``embeddings``, ``pseudo_labels``,
   ``difficulty``, ``selection``), which knows nothing of FiftyOne;
4. hand the outputs to `fiftyone_elfs.stages.record`, which deletes the key's previous outputs,
   writes the new ones and records the run.

The public functions of `fiftyone_elfs.api` check the parameters, build the config and call
``run``; `pipeline` chains the stages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from fiftyone_elfs import params

C = TypeVar("C", bound="StageConfig")


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """Base of the stage configs: built from the checked arguments of a public function."""

    #: The parameter table (`fiftyone_elfs.params.OPERATIONS`) the fields come from.
    OPERATION: ClassVar[str]

    @classmethod
    def from_arguments(cls: type[C], arguments: Mapping[str, Any]) -> C:
        """The config from a mapping holding (at least) every field, e.g. a function's locals."""
        return cls(**{f.name: arguments[f.name] for f in dataclasses.fields(cls)})

    @classmethod
    def with_defaults(cls: type[C], **values: Any) -> C:
        """The config with the table's defaults for every field not given."""
        return cls(**{**params.OPERATIONS[cls.OPERATION].defaults(), **values})
