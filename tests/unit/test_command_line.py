"""recipes/train.py --help: answers without loading the training stack, and lists every loss and config key."""

import subprocess
import sys
from pathlib import Path

from pml_vmf.training import LOSSES, RecipeConfig
from pml_vmf.training.config import LOSS_NAMES, _valid_keys

TRAIN = Path(__file__).resolve().parents[2] / "recipes" / "train.py"


def test_the_loss_names_readable_without_torch_are_the_registry():
    assert LOSS_NAMES == tuple(LOSSES)


def _help_without_torch(script: Path) -> str:
    """``SCRIPT --help``'s output, after checking that printing it loaded no torch."""
    probe = (
        f"import runpy, sys; sys.argv = [{script.name!r}, '--help']\n"
        f"try:\n    runpy.run_path({str(script)!r}, run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('TORCH_LOADED' if 'torch' in sys.modules else 'NO_TORCH')\n"
    )
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().endswith("NO_TORCH")
    return completed.stdout


def test_train_help_lists_losses_and_keys_and_imports_no_torch():
    output = _help_without_torch(TRAIN)
    assert "losses (loss.name): " + ", ".join(LOSSES) in output
    for key in _valid_keys(RecipeConfig()):
        assert f"\n  {key}  " in output, key
    assert "train.epochs  int = 30" in output and "optim.backbone_lr  float or null = null" in output


def test_calibrate_help_answers_without_torch_and_offers_every_open_set_score():
    import runpy

    from pml_vmf.open_set import SCORES

    calibrate = runpy.run_path(str(TRAIN.parent / "calibrate.py"))
    assert calibrate["SCORES"] == SCORES
    output = _help_without_torch(TRAIN.parent / "calibrate.py")
    assert "--known" in output and "{vmf_log_likelihood,vmf_max_posterior,max_cosine}" in output
