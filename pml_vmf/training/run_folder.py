"""The files of one run: runs/<name>/{config.yaml, metrics.jsonl, metrics.json, plots/, checkpoints/, ...}."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_text(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` so that a crash leaves either the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a run's files are as readable as any other output
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunFolder:
    """Paths and writers of a run folder.

    Attributes:
        root: the folder.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    config = property(lambda self: self.root / "config.yaml")
    metrics_log = property(lambda self: self.root / "metrics.jsonl")
    final_metrics = property(lambda self: self.root / "metrics.json")
    plots = property(lambda self: self.root / "plots")
    checkpoints = property(lambda self: self.root / "checkpoints")
    embedding_model = property(lambda self: self.root / "embedding_model.pt")

    def holds_a_run(self) -> bool:
        return self.config.is_file() or self.checkpoints.is_dir()

    def append_metrics(self, record: dict) -> None:
        """Adds one evaluation as a line of ``metrics.jsonl``."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_log, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read_metrics_log(self) -> list:
        if not self.metrics_log.is_file():
            return []
        return [json.loads(line) for line in self.metrics_log.read_text().splitlines() if line.strip()]

    def truncate_metrics_log(self, last_epoch: int) -> None:
        """Drops log lines of epochs after ``last_epoch``: a resumed run logs them again."""
        kept = [r for r in self.read_metrics_log() if r.get("epoch", -1) <= last_epoch]
        atomic_write_text(self.metrics_log, "".join(json.dumps(r) + "\n" for r in kept))

    def write_final_metrics(self, metrics: dict[str, Any]) -> None:
        atomic_write_text(self.final_metrics, json.dumps(metrics, indent=2) + "\n")
