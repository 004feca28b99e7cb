"""Per-epoch checkpoints that make long trainings resumable (model, optimiser, schedule, RNG and
whatever the loop accumulates), tied to the run's settings by a digest; and their removal when
the key that trained them is deleted (`remove_key_checkpoints`: torch is not loaded for it)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

#: The folder of a key's contrastive training is named "<key><CONTRASTIVE_SUFFIX>"
#: (`stages.contrastive`), its file `CONTRASTIVE_FILE` (`difficulty.contrastive`); TEMI's and
#: the CNN proxy's files are in the key's own folder.
CONTRASTIVE_SUFFIX = "_contrastive"
CONTRASTIVE_FILE = "simclr.pt"


class EpochCheckpoint:
    """One training run's checkpoint file in `folder` (None: checkpointing off).

    `restore` returns the epoch to start from and the loop's saved extra state; a checkpoint
    written with another `digest` (other data or settings) is ignored. `save` writes atomically,
    so an interruption never leaves a half-written file; `finish` removes it.
    """

    def __init__(self, folder: str | None, filename: str, digest: str) -> None:
        self.folder, self.digest = folder, digest
        self.path = os.path.join(folder, filename) if folder else None

    def restore(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        generator: torch.Generator,
        device: torch.device,
    ) -> tuple[int, dict[str, Any]]:
        import torch

        if not self.path or not os.path.exists(self.path):
            return 0, {}
        state = torch.load(self.path, map_location=device, weights_only=False)
        if state.get("digest") != self.digest:
            return 0, {}
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        return int(state["epoch"]), state["extra"]

    def save(
        self,
        epoch: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        generator: torch.Generator,
        extra: dict[str, Any],
    ) -> None:
        import torch

        if not self.path:
            return
        os.makedirs(self.folder, exist_ok=True)
        state = {
            "digest": self.digest,
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "generator": generator.get_state(),
            "extra": extra,
        }
        torch.save(state, self.path + ".tmp")
        os.replace(self.path + ".tmp", self.path)

    def finish(self) -> None:
        if self.path and os.path.exists(self.path):
            os.remove(self.path)


def remove_files(folder: str, wanted: Callable[[str], bool]) -> list[str]:
    """Removes the files of `folder` whose names `wanted` accepts (with the folder, and its
    parent, once empty); returns their paths."""
    if not os.path.isdir(folder):
        return []
    removed = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isfile(path) and wanted(name):
            os.remove(path)
            removed.append(path)
    for empty in (folder, os.path.dirname(folder)):
        if os.path.isdir(empty) and not os.listdir(empty):
            os.rmdir(empty)
    return removed


def remove_key_checkpoints(folder_of: Callable[[str], str], key: str) -> list[str]:
    """Removes what interrupted trainings of `key` left (a finished training removes its own);
    returns the files removed. `folder_of(name)`: the checkpoint folder of trainings named
    `name` on the dataset (`checkpoint_folders.checkpoint_dir_for`).

    The key's folder loses every file, except the contrastive file when that folder is also
    another key's contrastive folder (keys ``a`` and ``a_contrastive``); the key's contrastive
    folder loses only the contrastive file (it may be a key's own folder too).
    """

    def own(name: str) -> bool:
        return not (key.endswith(CONTRASTIVE_SUFFIX) and name.startswith(CONTRASTIVE_FILE))

    removed = remove_files(folder_of(key), own)
    contrastive = folder_of(key + CONTRASTIVE_SUFFIX)
    return removed + remove_files(contrastive, lambda name: name.startswith(CONTRASTIVE_FILE))
