"""The files of one run: runs/<name>/{config.yaml, metrics.jsonl, metrics.json, plots/, checkpoints/, ...}."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from ..errors import DamagedFileError
from ..files import atomic_write_text


def _append_jsonl(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _read_jsonl(path: Path) -> list:
    """The records of a JSON-lines log. A torn last line (a kill or a full disk during an append) is dropped with a
    warning, since the next append writes it again; a damaged line before the last is an error that names it."""
    if not path.is_file():
        return []
    lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as error:
            if number == len(lines):
                warnings.warn(f"{path}: dropped its last line, cut off while it was written ({error}).", stacklevel=2)
                break
            raise DamagedFileError(
                f"{path} line {number} is damaged ({error}): remove that line (or the file) and run again."
            ) from None
        records.append(record)
    return records


class RunFolder:
    """Paths and writers of a run folder.

    Attributes:
        root: the folder.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    config = property(lambda self: self.root / "config.yaml")
    metrics_log = property(lambda self: self.root / "metrics.jsonl")
    steps_log = property(lambda self: self.root / "train_steps.jsonl")
    final_metrics = property(lambda self: self.root / "metrics.json")
    plots = property(lambda self: self.root / "plots")
    checkpoints = property(lambda self: self.root / "checkpoints")
    model = property(lambda self: self.root / "model")  # the tested model: embedder.json + safetensors

    def holds_a_run(self) -> bool:
        return self.config.is_file() or self.checkpoints.is_dir()

    def append_metrics(self, record: dict) -> None:
        """Adds one evaluation as a line of ``metrics.jsonl``."""
        _append_jsonl(self.metrics_log, record)

    def append_step(self, record: dict) -> None:
        """Adds one training step (epoch, step, global_step, loss, lr) as a line of ``train_steps.jsonl``."""
        _append_jsonl(self.steps_log, record)

    def read_metrics_log(self) -> list:
        return _read_jsonl(self.metrics_log)

    def read_steps_log(self) -> list:
        return _read_jsonl(self.steps_log)

    def truncate_logs(self, epoch: int, global_step: int) -> None:
        """Drops what a resumed run logs again, so that its logs end as an uninterrupted run's: evaluations of
        ``epoch`` and later, the test record, and steps after the ``global_step`` steps its checkpoint had taken
        (steps are numbered from 1)."""
        keeps = (
            (self.metrics_log, lambda r: r.get("split") != "test" and r.get("epoch", -1) < epoch),
            (self.steps_log, lambda r: r["global_step"] <= global_step),
        )
        for path, keep in keeps:
            if path.is_file():
                atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in _read_jsonl(path) if keep(r)))

    def write_final_metrics(self, metrics: dict[str, Any]) -> None:
        atomic_write_text(self.final_metrics, json.dumps(metrics, indent=2) + "\n")
