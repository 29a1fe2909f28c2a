"""The dataset-building scripts as a user runs them."""

from tests.recipe_runs import REPO, run_script

CODES = ["1f600", "1f601", "1f44d", "1f44d-1f3fd", "1f602", "2764-fe0f", "1f603", "1f604", "1f605"]


def test_the_script_refuses_to_write_into_a_non_empty_folder(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    completed = run_script(REPO / "recipes" / "build_emoji_dataset.py", "--npm-dir", str(tmp_path), "--out", str(tmp_path / "out"),
                           expect_success=False)  # fmt: skip
    assert completed.returncode == 2 and (tmp_path / "out" / "keep.txt").read_text() == "mine"
