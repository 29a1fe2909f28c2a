"""Train and evaluate an embedding model: ``accelerate launch recipes/train.py --config recipes/configs/X.yaml``.

Any config key can be overridden after the options: ``loss.name=multi_similarity train.epochs=10``.

    accelerate launch recipes/train.py --config recipes/configs/fashion_mnist.yaml loss.name=triplet train.epochs=5
    accelerate launch --multi_gpu --num_processes 2 recipes/train.py --config recipes/configs/cub200.yaml --data-root data/CUB_200_2011
    python recipes/train.py --resume runs/fashion-mnist-vmf
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pml_vmf.training.config import LOSS_NAMES, describe_keys  # no torch: --help answers at once

if TYPE_CHECKING:
    from pml_vmf.training import RunHook


# A full or read-only disk, an output folder under a file: the run cannot go on, and the user can fix it.
WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR)


def parse_args(argv: list) -> argparse.Namespace:
    epilog = (
        f"losses (loss.name): {', '.join(LOSS_NAMES)}\n\nconfig keys (KEY=VALUE overrides; a config file sets the same "
        "keys in YAML sections):\n  " + "\n  ".join(describe_keys())
    )
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="a YAML recipe config, e.g. recipes/configs/cub200.yaml")
    parser.add_argument("--data-root", help="the dataset folder (sets data.root)")
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint, with its saved config"
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. loss.name=triplet")
    return parser.parse_intermixed_args(argv)  # overrides may sit before or after the options


def main(argv: list, hooks: Sequence[RunHook] = ()) -> int:
    """Runs the script; ``hooks`` (:class:`~pml_vmf.training.RunHook`) are called at the end of each step and epoch."""
    args = parse_args(argv)
    from pml_vmf.data import UnreadableImageError
    from pml_vmf.errors import DamagedFileError, one_line
    from pml_vmf.training import NonFiniteLossError, RecipeRun, TrainingInterrupted, load_config

    overrides = list(args.overrides)
    if args.data_root is not None:
        overrides.append(f"data.root={args.data_root}")
    if args.resume is not None:
        run_dir = Path(os.path.abspath(args.resume))  # `--resume .` from inside the run folder names it too
        if not (run_dir / "config.yaml").is_file():
            what = "does not exist" if not run_dir.exists() else "holds no run (no config.yaml)"
            return fail(
                f"--resume {run_dir}: the folder {what}; pass a run folder, <run.output_dir>/<run.name> (runs/<name>)."
            )
        # The run's own resolved config; name and folder follow the folder passed, wherever it was moved to. A
        # resumed run trains to its end unless this command asks it to stop again.
        config_path = run_dir / "config.yaml"
        overrides = [
            "train.stop_after_epoch=null",
            *overrides,
            f"run.output_dir={run_dir.parent}",
            f"run.name={run_dir.name}",
        ]
    elif args.config is None:
        return fail("pass --config FILE (or --resume RUN_DIR).")
    else:
        config_path = Path(args.config)
    try:  # mistakes in the config, the dataset or the run folder: one line that says what to fix
        config = load_config(config_path, overrides, saved=args.resume is not None)
        run = RecipeRun(config, resume=args.resume is not None, hooks=hooks)
    except (ValueError, FileNotFoundError, FileExistsError) as error:  # ConfigError, DamagedFileError are ValueErrors
        return fail(str(error))
    except OSError as error:
        if error.errno not in WRITE_ERRORS:
            raise
        return fail(f"cannot write the run folder: {error}. Choose a writable run.output_dir with free space.")
    try:
        metrics = run.fit()
    except TrainingInterrupted as stop:
        return fail(str(stop), stop.exit_code)
    except (NonFiniteLossError, UnreadableImageError, DamagedFileError) as error:
        # A DataLoader worker's error arrives with the worker's traceback in its message: keep its last line.
        return fail(one_line(error), 3)
    except OSError as error:
        if error.errno not in WRITE_ERRORS:
            raise
        return fail(f"{error}. The checkpoints written before are kept: free space (or make {run.run.root} "
                    f"writable), then continue with --resume {run.run.root}.")  # fmt: skip
    finally:
        run.accelerator.end_training()
    if metrics:
        print_metrics(metrics, Path(config.run.output_dir) / config.run.name)
    return 0


def fail(message: str, exit_code: int = 2) -> int:
    """Prints ``train.py: message`` once, on the first process (every process of a run meets the same error), and
    returns ``exit_code``."""
    if os.environ.get("RANK", "0") == "0":
        print(f"train.py: {message}", file=sys.stderr)
    return exit_code


def print_metrics(metrics: dict, run_dir: Path) -> None:
    width = max(len(k) for k in metrics)
    print(f"\nTest metrics of the best checkpoint ({run_dir / 'metrics.json'}):")
    for key, value in metrics.items():
        print(f"  {key:<{width}}  {value:.4f}" if isinstance(value, float) else f"  {key:<{width}}  {value}")
    print(f"Plots: {run_dir / 'plots'}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
