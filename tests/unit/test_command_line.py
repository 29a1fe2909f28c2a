"""recipes/train.py --help: answers without loading the training stack, and lists every loss and config key."""

import subprocess
import sys
from pathlib import Path

from pml_vmf.training import LOSSES, RecipeConfig
from pml_vmf.training.config import LOSS_NAMES, _valid_keys

TRAIN = Path(__file__).resolve().parents[2] / "recipes" / "train.py"


def test_the_loss_names_readable_without_torch_are_the_registry():
    assert LOSS_NAMES == tuple(LOSSES)


def test_train_help_lists_losses_and_keys_and_imports_no_torch():
    probe = (
        "import runpy, sys; sys.argv = ['train.py', '--help']\n"
        f"try:\n    runpy.run_path({str(TRAIN)!r}, run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('TORCH_LOADED' if 'torch' in sys.modules else 'NO_TORCH')\n"
    )
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().endswith("NO_TORCH")
    assert "losses (loss.name): " + ", ".join(LOSSES) in completed.stdout
    for key in _valid_keys(RecipeConfig()):
        assert f"\n  {key}  " in completed.stdout, key
    assert (
        "train.epochs  int = 30" in completed.stdout and "optim.backbone_lr  float or null = null" in completed.stdout
    )


def test_calibrate_help_answers_without_torch_and_offers_every_open_set_score():
    import runpy

    from pml_vmf.open_set import SCORES

    calibrate = runpy.run_path(str(TRAIN.parent / "calibrate.py"))
    assert calibrate["SCORES"] == SCORES
    probe = (
        "import runpy, sys; sys.argv = ['calibrate.py', '--help']\n"
        f"try:\n    runpy.run_path({str(TRAIN.parent / 'calibrate.py')!r}, run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('TORCH_LOADED' if 'torch' in sys.modules else 'NO_TORCH')\n"
    )
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0 and completed.stdout.strip().endswith("NO_TORCH"), completed.stderr
    assert "--known" in completed.stdout and "{vmf_log_likelihood,vmf_max_posterior,max_cosine}" in completed.stdout
