"""Atomic, resumable checkpoints through ``accelerate``'s save_state, with the last and the best one kept."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import torch
from accelerate import Accelerator

from .run_folder import atomic_write_text

INDEX = "index.json"


class CheckpointKeeper:
    """Writes checkpoint folders (one per epoch, and one mid-epoch when a run is stopped) and keeps only the last and
    the best.

    ``accelerator.save_state`` writes the model, optimizer, RNG states and every object registered with
    ``accelerator.register_for_checkpointing`` (scheduler, loss and its vMF means, sampler, progress). It writes into a
    temporary folder that is renamed into place once complete, and ``index.json``, replaced atomically, names the last
    and the best: a crash at any moment leaves the previous checkpoint intact.

    ``save_state`` writes registered objects from the main process only, which is right for state that is the same
    on every process. State that differs between processes, as ``GlobalMeanMiner``'s running sums do between two mean
    updates, goes in ``per_process``: each process writes its own ``<name>_process<rank>.pt`` and reads its own back.
    Resumed on another number of processes, such an object must offer ``combine_process_states(states, is_first)``.

    Args:
        accelerator: the run's accelerator.
        folder: the ``checkpoints`` folder of the run.
        per_process: objects with ``state_dict``/``load_state_dict`` whose state differs between processes, by name.
    """

    def __init__(self, accelerator: Accelerator, folder: Path, per_process: Optional[dict] = None) -> None:
        self.accelerator = accelerator
        self.folder = Path(folder)
        self.per_process = per_process or {}

    def index(self) -> dict:
        path = self.folder / INDEX
        return json.loads(path.read_text()) if path.is_file() else {}

    def save(self, name: str, is_best: bool) -> Path:
        """Writes checkpoint ``name`` (e.g. ``epoch_0003``), makes it the last one, and the best one if ``is_best``
        or if there is no best yet. Every process must call it."""
        tmp = self.folder / f".{name}.tmp"
        if self.accelerator.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(tmp))
        self.accelerator.wait_for_everyone()
        for key, obj in self.per_process.items():
            torch.save(obj.state_dict(), tmp / f"{key}_process{self.accelerator.process_index}.pt")
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
        rank, world_size = self.accelerator.process_index, self.accelerator.num_processes
        for key, obj in self.per_process.items():
            files = sorted(path.glob(f"{key}_process*.pt"), key=lambda f: int(f.stem.rsplit("process", 1)[1]))
            if not files:
                raise FileNotFoundError(f"{path} has no {key}_process*.pt: it was written by an older pml-vmf; start a new run.")
            if len(files) == world_size:
                obj.load_state_dict(torch.load(files[rank], map_location="cpu", weights_only=False))
            else:  # another number of processes than the run that wrote it
                states = [torch.load(f, map_location="cpu", weights_only=False) for f in files]
                obj.load_state_dict(obj.combine_process_states(states, is_first=rank == 0))
        return path
