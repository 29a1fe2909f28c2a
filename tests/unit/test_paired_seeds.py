"""benchmarks/paired_seeds.py: two settings' per-seed differences, their mean and Student-t interval."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest

from pml_vmf.files import write_rows

_SPEC = importlib.util.spec_from_file_location("paired_seeds", Path(__file__).resolve().parents[2] / "benchmarks" / "paired_seeds.py")
paired_seeds = sys.modules["paired_seeds"] = importlib.util.module_from_spec(_SPEC)  # a script, not a package module
_SPEC.loader.exec_module(paired_seeds)


def test_the_interval_is_students_t_on_the_per_seed_differences():
    result = paired_seeds.paired_difference({0: 3.0, 1: 5.0, 2: 7.0, 9: 1.0}, {0: 2.0, 1: 3.0, 2: 4.0})  # seed 9: unpaired
    assert result.seeds == (0, 1, 2) and result.mean == 2.0  # differences 1, 2, 3: standard deviation 1
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2 degrees of freedom)
    assert result.low == pytest.approx(2.0 - half) and result.high == pytest.approx(2.0 + half)
    assert result.verdict == "not resolved"  # [-0.48, 4.48] holds 0
    assert paired_seeds.paired_difference({0: 3.0, 1: 3.1, 2: 3.2}, {0: 2.0, 1: 2.0, 2: 2.0}).verdict == "A ahead"
    assert paired_seeds.paired_difference({0: 1.0, 1: 1.1}, {0: 2.0, 1: 2.0}).verdict == "B ahead"
    assert math.isnan(paired_seeds.paired_difference({0: 1.0}, {0: 2.0}).low)
    with pytest.raises(ValueError, match="share no seed"):
        paired_seeds.paired_difference({0: 1.0}, {1: 1.0})


def _rows(loss, values, phase="final"):
    return [{"name": f"{loss}-seed{s}", "phase": phase, "loss": loss, "seed": str(s), "acc": str(v)} for s, v in enumerate(values)]


def test_the_cli_pairs_two_losses_of_one_csv_and_names_what_is_wrong(tmp_path, capsys):
    csv = tmp_path / "runs.csv"
    write_rows(csv, [*_rows("vmf", [0.91, 0.92, 0.93]), *_rows("softmax", [0.90, 0.90, 0.90]), *_rows("vmf", [0.5], phase="tune")])
    assert paired_seeds.main([str(csv), "--loss-a", "vmf", "--loss-b", "softmax", "--metric", "acc"]) == 0
    out = capsys.readouterr().out
    assert "| 2 | 0.9300 | 0.9000 | +0.0300 |" in out and "mean +0.0200, 95% interval [-0.0048, +0.0448]: not resolved" in out
    for argv, message in (
        ([str(csv), "--metric", "acc"], "final runs of 2 losses"),
        ([str(csv), "--loss-a", "vmf", "--loss-b", "arcface", "--metric", "acc"], "No final run of loss 'arcface'"),
        ([str(csv), "--loss-a", "vmf", "--loss-b", "softmax"], "has no 'mean_average_precision_at_r'"),
        ([str(tmp_path / "missing.csv")], "does not exist"),
    ):
        assert paired_seeds.main(argv) == 2
        assert message in capsys.readouterr().err
