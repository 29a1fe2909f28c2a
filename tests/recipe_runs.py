"""Helpers that run recipes/train.py on the digits image folder with a tiny timm backbone."""

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from tests.multiprocess import child_environment

REPO = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = REPO / "recipes" / "train.py"
DIGITS_CONFIG = REPO / "tests" / "configs" / "digits.yaml"
SHORT_RUN = ("train.epochs=3", "train.max_steps_per_epoch=4")  # digits: 12 steps, a few seconds of training


def run_script(
    script: Path, *args: str, expect_success: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess:
    """``python SCRIPT ARGS`` in a fresh process, one CPU thread, hub offline."""
    completed = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_environment(),
        cwd=REPO,
    )
    if expect_success and completed.returncode != 0:
        raise AssertionError(
            f"{script.name} {' '.join(args)} exited with {completed.returncode}:\n{completed.stderr[-6000:]}"
        )
    return completed


def run_train_script(*args: str, expect_success: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python recipes/train.py ARGS``; see :func:`run_script`."""
    return run_script(TRAIN_SCRIPT, *args, expect_success=expect_success, timeout=timeout)


def load_script(path: Path) -> ModuleType:
    """A script of benchmarks/ or recipes/ imported as a module (they are not a package), to call its functions and
    ``main(argv)`` in this process."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = sys.modules[path.stem] = importlib.util.module_from_spec(spec)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module
