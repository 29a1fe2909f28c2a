"""The promises of the package layout (README, "Architecture"): each concern has one home, and what uses a trained
model, or only the loss, does not load the training stack."""

import ast
import subprocess
import sys

import pytest

from tests.multiprocess import child_environment
from tests.recipe_runs import REPO


def _modules_loaded_by(statement: str) -> set:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=child_environment(), cwd=REPO, check=True
    )
    return set(completed.stdout.split())


@pytest.mark.parametrize(
    "statement, forbidden",
    [
        (
            "import pml_vmf",
            ("timm", "accelerate", "matplotlib", "pml_vmf.training", "pml_vmf.models"),
        ),  # faiss: PML imports it
        ("import pml_vmf.inference", ("accelerate", "matplotlib", "pml_vmf.training")),
        ("import pml_vmf.evaluation", ("matplotlib", "pml_vmf.training")),
    ],
)
def test_using_the_loss_or_a_trained_model_does_not_load_the_training_stack(statement, forbidden):
    loaded = _modules_loaded_by(statement)
    assert not {
        m for m in loaded if m.split(".")[0] in forbidden or any(m == f or m.startswith(f + ".") for f in forbidden)
    }


def test_the_engine_never_asks_which_loss_it_trains():
    """The vMF mean step lives in mean_schedule.py; the engine calls its hooks whatever the loss."""
    engine = (REPO / "pml_vmf" / "training" / "engine.py").read_text()
    assert "is_vmf" not in engine and "VMFLoss" not in engine and "vmf" not in engine.lower().replace("pml_vmf", "")


def test_the_installed_package_holds_no_benchmark_orchestration():
    """The loss benchmark's runner, plan, grids and plots live beside its CLI in benchmarks/."""
    for path in (REPO / "pml_vmf").rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
        assert not names & {"plot_benchmark", "plot_tuning_curves", "summary_table", "PlannedRun", "parse_grid"}, path


def test_recipes_holds_scripts_only_and_no_script_edits_the_import_path():
    for path in (REPO / "recipes").glob("*.py"):
        assert 'if __name__ == "__main__":' in path.read_text(), f"{path.name} is a module, not a script"
    for path in [*(REPO / "recipes").glob("*.py"), *(REPO / "benchmarks").glob("*.py")]:
        assert "sys.path.insert" not in path.read_text(), path
