"""The open-set benchmark (benchmarks/open_set.py): disjoint parts of the data, a row per score and posterior, and
a summary that pairs vMF's own score with the best other by seed."""

import csv

import torch
from open_set import load_data, run, summary  # benchmarks/, on pytest's pythonpath


def test_the_four_parts_are_disjoint_and_the_unknown_part_holds_only_unseen_classes():
    data = load_data("digits")
    train, calibration, known = (data[part] for part in ("train", "calibration", "known"))
    for _, y in (train, calibration, known):
        assert set(y.unique().tolist()) == {0, 1, 2, 3, 4}
    rows = [tuple(r) for part in (train, calibration, known) for r in part[0].tolist()]
    assert len(rows) == len(train[0]) + len(calibration[0]) + len(known[0]) == 901  # digits 0-4, once each
    assert len(set(rows) & {tuple(r) for r in data["unknown"].tolist()}) <= 2  # digits 5-9 (a few 8x8 twins)
    assert 0.18 < len(known[0]) / 901 < 0.22 and 0.18 < len(calibration[0]) / 901 < 0.22
    assert load_data("digits")["known"][0].equal(known[0])  # a fixed split: seeds change only the training


def test_a_run_writes_every_score_and_posterior_and_the_summary_pairs_by_seed(tmp_path):
    out = tmp_path / "rows.csv"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: more threads only contend
    try:
        run(["digits"], ["vmf", "softmax"], [0, 1], out)
    finally:
        torch.set_num_threads(threads)
    rows = list(csv.DictReader(out.open()))
    scores = {(r["loss"], r["name"]) for r in rows if r["kind"] == "score"}
    assert {
        ("vmf", s) for s in ("vmf_log_likelihood", "vmf_max_posterior", "max_cosine", "knn", "msp", "energy")
    } <= scores
    assert ("softmax", "energy") in scores
    for r in rows:
        if r["kind"] == "score":
            assert 0.5 < float(r["auroc"]) <= 1 and 0 <= float(r["fpr95"]) <= 1
        else:
            assert 0 <= float(r["ece"]) < 0.2 and float(r["temperature"]) > 0 and float(r["accuracy"]) > 0.9
    run(["digits"], ["vmf"], [0, 1], out)  # done already: nothing appended
    assert len(list(csv.DictReader(out.open()))) == len(rows)
    text = summary(out)
    assert "| vmf | " in text and "| softmax | " in text
    assert "* vmf, vmf_log_likelihood minus the best other (softmax, " in text
    assert "AUROC over 2 seeds" in text
