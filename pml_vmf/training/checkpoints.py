"""Atomic, resumable checkpoints through ``accelerate``'s save_state, with the last and the best one kept."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

from accelerate import Accelerator

from .run_folder import atomic_write_text

INDEX = "index.json"


class CheckpointKeeper:
    """Writes one checkpoint folder per epoch and keeps only the last and the best.

    ``accelerator.save_state`` writes the model, optimizer, RNG states and every object registered with
    ``accelerator.register_for_checkpointing`` (scheduler, loss, miner, sampler, progress). It writes into a
    temporary folder that is renamed into place once complete, and ``index.json``, replaced atomically, names the last
    and the best: a crash at any moment leaves the previous checkpoint intact.

    Args:
        accelerator: the run's accelerator.
        folder: the ``checkpoints`` folder of the run.
    """

    def __init__(self, accelerator: Accelerator, folder: Path) -> None:
        self.accelerator = accelerator
        self.folder = Path(folder)

    def index(self) -> dict:
        path = self.folder / INDEX
        return json.loads(path.read_text()) if path.is_file() else {}

    def save(self, epoch: int, is_best: bool) -> Path:
        name = f"epoch_{epoch:04d}"
        tmp = self.folder / f".{name}.tmp"
        if self.accelerator.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(tmp))
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            final = self.folder / name
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
            index = self.index()
            index["last"] = name
            if is_best or "best" not in index:
                index["best"] = name
            atomic_write_text(self.folder / INDEX, json.dumps(index, indent=2))
            for old in self.folder.glob("epoch_*"):
                if old.name not in (index["last"], index["best"]):
                    shutil.rmtree(old)
        self.accelerator.wait_for_everyone()
        return self.folder / name

    def path(self, which: str) -> Optional[Path]:
        """The ``last`` or ``best`` checkpoint folder, or None when there is none yet."""
        name = self.index().get(which)
        return self.folder / name if name else None

    def load(self, which: str) -> Path:
        path = self.path(which)
        if path is None:
            raise FileNotFoundError(f"No {which} checkpoint in {self.folder}: the run has not finished an epoch yet.")
        self.accelerator.load_state(str(path))
        return path
