"""Issue #17 item 8: small reliability fixes in sampling, evaluation, its cache, paths and the series runner."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest
from datasets import Dataset

from rlnb import evaluate as evaluation
from rlnb import paths
from rlnb.evaluate import cached_table, evaluate, evaluate_dataset
from rlnb.rollout import sample
from rlnb.series import main as run_series
from rlnb.world import LEVELS, make_problems

# ------------------------------------------------------------------------ sampling


def test_a_single_prompt_string_is_one_prompt_not_one_per_character(base) -> None:
    model, tok = base
    rollouts = sample(model, tok, "12+34=", n=2, max_new_tokens=4, progress=False)
    assert len(rollouts) == 2 and list(rollouts.prompt_index) == [0, 0]
    assert rollouts.prompts == ["12+34=", "12+34="]  # the prompt of each completion


# ---------------------------------------------------------------------- evaluation


def test_evaluating_no_problems_is_an_error(base) -> None:
    model, tok = base
    with pytest.raises(ValueError, match="evaluate got no problems"):
        evaluate(model, tok, [], n=2, progress=False)


def test_evaluating_an_empty_data_set_is_an_error(base) -> None:
    model, tok = base
    empty = Dataset.from_dict({"prompt": [], "answer": []})
    with pytest.raises(ValueError, match="evaluate_dataset got an empty data set"):
        evaluate_dataset(model, tok, empty, n=2, task="world", progress=False)


def _table() -> pd.DataFrame:
    return pd.DataFrame({"level": [3, 4], "a": [1, 2], "b": [3, 4], "n": [4, 4], "correct": [1, 2],
                         "steps": [0, 4], "steps_correct": [0, 2], "mean_length": [5.5, 6.0]})


def _must_not_compute() -> pd.DataFrame:
    raise AssertionError("a valid cache must be returned without recomputing")


GARBAGE_CACHES = {
    "binary": b"\x00\xff\xfe garbage \x81\x00",
    "other columns": b"x,y\n1,2\n",
    "header only": b"level,a,b,n,correct,steps,steps_correct,mean_length\n",
    "cut-off last row": b"level,a,b,n,correct,steps,steps_correct,mean_length\n3,1,3,4,1,0,0,5.5\n4,2,4,4\n",
    "empty file": b"",
}


@pytest.mark.parametrize("content", GARBAGE_CACHES.values(), ids=GARBAGE_CACHES.keys())
def test_a_garbage_cache_is_recomputed_and_overwritten(tmp_path: Path, content: bytes) -> None:
    cache = tmp_path / "table.csv"
    cache.write_bytes(content)
    with pytest.warns(UserWarning, match=r"evaluation cache .*table\.csv .*recomputing and overwriting"):
        table = cached_table(cache, _table, evaluation.WORLD_TABLE_COLUMNS)
    pd.testing.assert_frame_equal(table, _table())
    pd.testing.assert_frame_equal(cached_table(cache, _must_not_compute, evaluation.WORLD_TABLE_COLUMNS), _table())


def test_evaluate_writes_a_cache_it_accepts_on_the_next_call(base, tmp_path: Path) -> None:
    model, tok = base
    problems = make_problems(LEVELS[:1], 2, seed=0)
    cache = tmp_path / "eval.csv"
    cache.write_text("not,an,evaluation\n")
    with pytest.warns(UserWarning, match="has the columns"):
        first = evaluate(model, tok, problems, n=2, cache=cache, progress=False)
    assert tuple(first.columns) == evaluation.WORLD_TABLE_COLUMNS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = evaluate(model, tok, problems, n=2, cache=cache, progress=False)
    pd.testing.assert_frame_equal(again, first)


def test_evaluate_dataset_writes_a_cache_it_accepts_on_the_next_call(base, tmp_path: Path) -> None:
    model, tok = base
    problem = make_problems(LEVELS[:1], 1, seed=0)[0]
    dataset = Dataset.from_dict({"prompt": [problem.prompt], "answer": [str(problem.answer)]})
    cache = tmp_path / "dataset.csv"
    first = evaluate_dataset(model, tok, dataset, n=2, task="world", max_new_tokens=8, cache=cache, progress=False)
    assert tuple(first.columns) == evaluation.DATASET_TABLE_COLUMNS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = evaluate_dataset(model, tok, dataset, n=2, task="world", cache=cache, progress=False)
    counts = ["problem", "level", "n", "correct", "steps"]  # the CSV reads the answer "579" back as a number
    pd.testing.assert_frame_equal(again[counts], first[counts])


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize(("variable", "folder", "default"), [("RLNB_RUNS", paths.runs_dir, "runs"),
                                                             ("RLNB_DATA", paths.data_dir, "data")])
def test_an_empty_environment_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                       variable: str, folder, default: str) -> None:
    monkeypatch.setattr(paths, "PROJECT_ROOT", tmp_path / "project")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(variable, "")
    assert folder() == tmp_path / "project" / default
    monkeypatch.setenv(variable, str(tmp_path / "elsewhere"))
    assert folder() == tmp_path / "elsewhere"


# -------------------------------------------------------------------------- series


def test_series_only_with_no_matching_notebook_is_an_error_naming_the_notebooks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_series(["--only", "99_nothing"])
    assert exit_info.value.code != 0
    message = capsys.readouterr().err
    assert "99_nothing matches no notebook" in message
    assert "00_reasoning_world" in message and "01_zero_rl" in message
