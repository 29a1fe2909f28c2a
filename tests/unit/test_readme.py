"""The README's Python blocks run as written, in order, in one namespace, then docs/inference.md's on the model the
quick start trained: the quick start must train."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
INFERENCE = README.parent / "docs" / "inference.md"


def _python_blocks(page: Path = README) -> "list[str]":
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.S | re.M)


@pytest.mark.slow
def test_readme_python_blocks_run_and_the_quick_start_trains(report):
    blocks = _python_blocks()
    assert len(blocks) >= 2, "the README lost its quick start"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    inference_blocks = _python_blocks(INFERENCE)
    assert inference_blocks, "docs/inference.md lost its example"
    for block in inference_blocks:
        exec(compile(block, str(INFERENCE), "exec"), namespace)
    report(f"README quick start: nearest-mean training accuracy {namespace['accuracy']:.3f} after 5 epochs")
    assert namespace["accuracy"] > 0.9
    assert namespace["loss_func"].means.abs().sum(dim=1).gt(0).all()
