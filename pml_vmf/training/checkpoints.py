"""Atomic, verified, resumable checkpoints through ``accelerate``'s save_state, with the last and the best one kept."""

from __future__ import annotations

import json
import pickle
import re
import shutil
import warnings
from pathlib import Path
from typing import Optional

import torch
from accelerate import Accelerator
from safetensors import SafetensorError

from ..errors import DamagedFileError
from ..files import atomic_write_text, file_problem, file_sha256

INDEX = "index.json"
MANIFEST = "manifest.json"
CHECKPOINT_NAME = re.compile(r"epoch_\d{4}(_step_\d{6})?")


class CheckpointMismatchError(ValueError):
    """A checkpoint's tensors do not fit the run's model, optimizer or loss (an architecture key changed on resume)."""


def _load_tensors(path: Path):
    """``torch.load`` that only rebuilds tensors and plain containers: a crafted file cannot run code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise DamagedFileError(
            f"{path} holds more than tensors and plain values, and is not loaded: {str(error).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError) as error:
        raise DamagedFileError(
            f"{path} cannot be read ({str(error).splitlines()[0]}): the file is truncated or damaged."
        ) from None


def _first_unsafe_file(path: Path) -> Path:
    """The first pickle of a checkpoint folder that accelerate's ``weights_only`` load (tensors, plain values and
    numpy's RNG state types) refuses; the folder itself when none does."""
    for file in sorted(p for p in path.iterdir() if p.suffix in (".bin", ".pkl", ".pt")):
        try:
            _accelerate_load(file)
        except pickle.UnpicklingError:
            return file
    return path


def _accelerate_load(path: Path):
    """accelerate's own reader of its checkpoint files: ``weights_only`` unpickling with numpy's RNG types allowed."""
    from accelerate.utils.other import load

    return load(path, map_location="cpu")


class CheckpointKeeper:
    """Writes checkpoint folders (one per epoch, and one mid-epoch when a run is stopped), keeps only the last and
    the best, and reads them back verified.

    ``accelerator.save_state`` writes the model, optimizer and RNG states; accelerate reads them back with
    ``weights_only`` unpickling (the RNG states with numpy's types allowed), so no file can run code. The run's own
    objects (scheduler, loss and its vMF means, sampler, progress) are not registered with accelerate, whose custom
    checkpoints are full pickles; they are written here as ``<name>.pt`` and read with ``weights_only=True``.
    Everything goes into a temporary folder renamed into place once complete, with ``manifest.json`` (every file's
    size and SHA-256); ``index.json``, replaced atomically, names the last and the best. A crash at any moment leaves
    the previous checkpoint intact, and a file damaged later is named when the run resumes, which then falls back to
    the other checkpoint kept.

    ``save_state`` writes from the main process only, which is right for state that is the same on every process.
    State that differs between processes, as ``GlobalMeanMiner``'s running sums do between two mean updates, goes in
    ``per_process``: each process writes its own ``<name>_process<rank>.pt`` and reads its own back. Resumed on
    another number of processes, such an object must offer ``combine_process_states(states, is_first)``.

    Args:
        accelerator: the run's accelerator.
        folder: the ``checkpoints`` folder of the run.
        shared: objects with ``state_dict``/``load_state_dict`` whose state is the same on every process, by name.
        per_process: objects with ``state_dict``/``load_state_dict`` whose state differs between processes, by name.
    """

    def __init__(
        self, accelerator: Accelerator, folder: Path, shared: Optional[dict] = None, per_process: Optional[dict] = None
    ) -> None:
        self.accelerator = accelerator
        self.folder = Path(folder)
        self.shared = shared or {}
        self.per_process = per_process or {}

    def index(self) -> dict:
        """``index.json`` (``{"last": name, "best": name}``), or ``{}`` when it is missing or damaged."""
        path = self.folder / INDEX
        try:
            index = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return {}
        if not isinstance(index, dict):
            return {}
        # Only the plain names of checkpoint folders inside this run: a path elsewhere is never followed.
        return {
            k: v
            for k, v in index.items()
            if k in ("last", "best") and isinstance(v, str) and CHECKPOINT_NAME.fullmatch(v)
        }

    def exists(self) -> bool:
        """Whether any checkpoint folder has been written (intact or not)."""
        return any(self._folders())

    def _folders(self) -> list:
        """The checkpoint folders present, newest first (names sort by epoch, then step; an epoch's end last)."""
        if not self.folder.is_dir():
            return []
        # A link is never a checkpoint of this run: it may point anywhere, and pruning it would delete elsewhere.
        found = [
            p for p in self.folder.iterdir() if p.is_dir() and not p.is_symlink() and CHECKPOINT_NAME.fullmatch(p.name)
        ]
        return sorted(found, key=lambda p: (p.name[:10], p.name[10:] == "", p.name), reverse=True)

    def save(self, name: str, is_best: bool, best_name: Optional[str] = None) -> Path:
        """Writes checkpoint ``name`` (e.g. ``epoch_0003``), makes it the last one, and the best one if ``is_best``
        or if there is no best yet. Every process must call it.

        ``best_name``: the best checkpoint as the run's progress records it, used when ``index.json`` is lost or
        damaged; with neither, no folder is pruned."""
        tmp = self.folder / f".{name}.tmp"
        if self.accelerator.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(tmp))
        self.accelerator.wait_for_everyone()  # the folder exists for every process's own files
        if self.accelerator.is_main_process:
            for key, obj in self.shared.items():
                torch.save(obj.state_dict(), tmp / f"{key}.pt")
        for key, obj in self.per_process.items():
            torch.save(obj.state_dict(), tmp / f"{key}_process{self.accelerator.process_index}.pt")
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            manifest = {
                p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
                for p in sorted(tmp.iterdir())
                if p.is_file()
            }
            atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=1))
            final = self.folder / name
            if final.is_symlink():
                final.unlink()  # a link in the way: removed, never what it points to
            elif final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
            index = self.index()
            # Prune only what intact bookkeeping says is neither last nor best: with index.json lost or naming a
            # folder that is gone, a folder's role is unknown and every one is kept (repair_index rebuilds it).
            known = self._names_checkpoints(index, "last", "best")
            index["last"] = name
            if is_best:
                index["best"] = name
            elif not known and best_name is not None and _is_checkpoint(self.folder / best_name):
                index["best"], known = best_name, True
            elif not known and not self._names_checkpoints(index, "best"):
                index.pop("best", None)  # unknown: loading "best" falls back to the newest intact; nothing is pruned
            atomic_write_text(self.folder / INDEX, json.dumps(index, indent=2))
            if known or is_best:
                for old in self._folders():
                    if old.name not in (index["last"], index["best"]):
                        shutil.rmtree(old)
        self.accelerator.wait_for_everyone()
        return self.folder / name

    def repair_index(self, last: Path, best_name: Optional[str]) -> Optional[str]:
        """Rebuilds ``index.json`` when it is lost, damaged or names a folder that is gone, from the checkpoint just
        loaded (``last``) and the best checkpoint's name as the run's own progress records it (``best_name``, kept
        only if that folder is there; else the last). Main process only. Returns what was repaired, or None."""
        if self._names_checkpoints(self.index(), "last", "best") or not self.accelerator.is_main_process:
            return None
        best = best_name if best_name and _is_checkpoint(self.folder / best_name) else last.name
        atomic_write_text(self.folder / INDEX, json.dumps({"last": last.name, "best": best}, indent=2))
        return f"{self.folder / INDEX} was missing or damaged: rebuilt from the checkpoints (last {last.name}, best {best})."

    def _names_checkpoints(self, index: dict, *keys: str) -> bool:
        """Whether ``index`` (as :meth:`index` read it) names a checkpoint folder of this run for every key."""
        return all(key in index and _is_checkpoint(self.folder / index[key]) for key in keys)

    def path(self, which: str) -> Optional[Path]:
        """The ``last`` or ``best`` checkpoint folder ``index.json`` names, or None when there is none yet."""
        name = self.index().get(which)
        return self.folder / name if name else None

    def damage(self, path: Path) -> Optional[str]:
        """What is wrong with checkpoint folder ``path`` (a missing, truncated or altered file, named), or None."""
        manifest_path = path / MANIFEST
        try:
            manifest = json.loads(manifest_path.read_text())
        except FileNotFoundError:
            return f"{manifest_path} is missing (the checkpoint is incomplete, or from an older pml-vmf)"
        except (json.JSONDecodeError, UnicodeDecodeError):
            return f"{manifest_path} is damaged"
        if not isinstance(manifest, dict) or not manifest:
            return f"{manifest_path} is damaged (not a record of the checkpoint's files)"
        for name, expected in manifest.items():
            if (
                "/" in name
                or "\\" in name
                or name in (".", "..")
                or not isinstance(expected, dict)
                or not isinstance(expected.get("bytes"), int)
                or not isinstance(expected.get("sha256"), str)
            ):
                return f"{manifest_path} is damaged (its entry {name!r} is not a file name with bytes and sha256)"
        for name, expected in manifest.items():
            problem = file_problem(path / name, expected)
            if problem:
                return problem
        return None

    def load(self, which: str) -> Path:
        """Loads the ``last`` (or ``best``) checkpoint into the run, verified against its manifest. When it is damaged
        or ``index.json`` is lost, warns with what is wrong and loads the newest intact checkpoint instead.

        Raises:
            FileNotFoundError: when no checkpoint has been written.
            DamagedFileError: when every checkpoint is damaged; the message names each damaged file.
            CheckpointMismatchError: when the checkpoint does not fit the run (an architecture key changed).
        """
        named = self.path(which)
        if named is not None and named.is_symlink():
            warnings.warn(f"{named} is a link, not a checkpoint folder of this run: it is not loaded.", stacklevel=2)
        usable = named is not None and _is_checkpoint(named)
        candidates = [named] if usable else []
        if not usable:
            lost = (
                f"{self.folder / INDEX} is missing or damaged"
                if named is None
                else f"{named}, which {INDEX} names, is missing"
            )
            if not self._folders():
                raise FileNotFoundError(f"No checkpoint in {self.folder}: the run has not finished an epoch yet.")
            warnings.warn(
                f"{lost}; looking for the newest intact checkpoint among {', '.join(p.name for p in self._folders())}.",
                stacklevel=2,
            )
        candidates += [p for p in self._folders() if p not in candidates]
        problems = []
        for path in candidates:
            problem = self.damage(path)
            if problem is None:
                if problems:
                    warnings.warn(f"{'; '.join(problems)}: loading {path} instead.", stacklevel=2)
                self._load_folder(path)
                return path
            problems.append(problem)
        raise DamagedFileError(
            f"No intact checkpoint in {self.folder}: {'; '.join(problems)}. Start a new run (run.name=...)."
        )

    def _check_process_layout(self, path: Path) -> None:
        """Refuses a checkpoint whose per-process states cannot be spread over this run's processes: sharded class
        means (one loss state per process, no way to combine them yet) resumed on another number of processes, or
        with ``loss.means.shard`` changed."""
        world_size = self.accelerator.num_processes
        for key, obj in {**self.shared, **self.per_process}.items():
            written_by = len(list(path.glob(f"{key}_process*.pt")))
            shared_but_split = key in self.shared and written_by and not (path / f"{key}.pt").is_file()
            if (
                key in self.per_process
                and written_by == 0
                and (path / f"{key}.pt").is_file()
                and not hasattr(obj, "combine_process_states")
            ):
                raise ValueError(
                    f"{path} holds the class means whole (a run without loss.means.shard) and this run shards them: "
                    "resume it with loss.means.shard=false, or start a new run to shard them."
                )
            if shared_but_split or (
                key in self.per_process and written_by != world_size and not hasattr(obj, "combine_process_states")
            ):
                raise ValueError(
                    f"{path} was written by {written_by} processes with sharded class means and this run has {world_size} "
                    f"process(es): sharded means cannot be redistributed yet. Resume it "
                    f"on {written_by} processes (accelerate launch --num_processes {written_by}) with loss.means.shard=true."
                )

    def _load_folder(self, path: Path) -> None:
        self._check_process_layout(path)
        try:
            # accelerate skips RNG states it cannot read with only a log line, which would break exact resume
            # silently: read them first (small files), so that a refused one is named.
            for rng_file in path.glob("random_states_*.pkl"):
                _accelerate_load(rng_file)
            planted = next(path.glob("custom_checkpoint_*.pkl"), None)  # accelerate would unpickle these in full
            if planted is not None:
                raise DamagedFileError(
                    f"{planted} is not a file pml-vmf writes (a full pickle, which can run code) and is not loaded: remove it to resume."
                )
            self.accelerator.load_state(str(path))
            for key, obj in self.shared.items():
                obj.load_state_dict(_load_tensors(path / f"{key}.pt"))
        except pickle.UnpicklingError:  # accelerate's weights_only load refused a file: name it
            raise DamagedFileError(
                f"{_first_unsafe_file(path)} holds more than tensors and plain values, and is not loaded."
            ) from None
        except (SafetensorError, KeyError, EOFError) as error:
            # A file that passed the manifest but is not what its name says (written so by hand, or by a newer tool).
            raise DamagedFileError(
                f"{path} holds a file its loader cannot read ({type(error).__name__}: {str(error)[:200]}): this checkpoint is damaged."
            ) from None
        except RuntimeError as error:  # load_state_dict's size mismatch: the config that built the run differs
            first = " ".join(str(error).strip().splitlines()[:2])
            raise CheckpointMismatchError(
                f"{path} does not fit this run's model or loss ({first[:300]}): a --resume keeps the run's "
                "architecture (model.*, loss.name and the loss's size); remove the override that changes it, or start a new run."
            ) from None
        rank, world_size = self.accelerator.process_index, self.accelerator.num_processes
        for key, obj in self.per_process.items():
            files = sorted(path.glob(f"{key}_process*.pt"), key=lambda f: int(f.stem.rsplit("process", 1)[1]))
            if len(files) == world_size:
                obj.load_state_dict(_load_tensors(files[rank]))
            else:  # another number of processes than the run that wrote it
                states = [_load_tensors(f) for f in files]
                obj.load_state_dict(obj.combine_process_states(states, is_first=rank == 0))


def _is_checkpoint(path: Path) -> bool:
    """A real folder (not a link to one elsewhere)."""
    return path.is_dir() and not path.is_symlink()
