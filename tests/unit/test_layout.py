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


def _package_imports() -> dict:
    """Each module of pml_vmf and the modules of pml_vmf it imports, anywhere in it (TYPE_CHECKING blocks too)."""
    root = REPO / "pml_vmf"

    def name_of(path):
        parts = path.relative_to(REPO).with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    modules = {name_of(path): path for path in root.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    imported.add(full if full in modules else target)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
        graph[name] = {m for m in imported if m in modules and m != name}
    return graph


def test_no_module_of_the_package_imports_one_that_imports_it_back():
    graph = _package_imports()
    assert graph["pml_vmf.training.engine"] and "pml_vmf.vmf_loss" in graph["pml_vmf.partial_fc"]  # the graph is read
    circles, state = [], {}

    def visit(module, path):
        state[module] = "open"
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                circles.append(" -> ".join([*path[path.index(imported) :], imported]))
            elif imported not in state:
                visit(imported, [*path, imported])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_progress_bars_go_through_one_helper_that_leaves_tqdm_disable_in_force():
    callers = [
        p.name for p in (REPO / "pml_vmf").rglob("*.py") if "tqdm(" in p.read_text() and p.name != "progress_bars.py"
    ]
    assert callers == []
    probe = "from pml_vmf.progress_bars import progress_bar; print(progress_bar(range(3), show=True).disable)"
    environment = {**child_environment(), "TQDM_DISABLE": "1"}
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=environment, cwd=REPO)
    assert shown.stdout.strip() == "True", shown.stderr
    environment.pop("TQDM_DISABLE")
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=environment, cwd=REPO)
    assert shown.stdout.strip() == "False", shown.stderr
