"""Issue #30 (runs and caches) and #31 (run messages): each test fails on the code before the fix."""

import os
import shutil

import pandas as pd
import pytest
import torch

import rlnb.runs as runs
from rlnb.evaluate import cached_table, evaluate
from rlnb.models import DamagedModelError, load_model
from rlnb.paths import display_path, runs_dir
from rlnb.train import RunConfig
from rlnb.world import make_problems


def test_display_path_is_relative_to_the_runs_folder_then_the_project():
    assert display_path(runs_dir() / "02_luffy_off_policy" / "luffy-7d24c7de") == "02_luffy_off_policy/luffy-7d24c7de"
    assert display_path(runs.PACKAGE_DIR / "runs.py") == "rlnb/runs.py"
    assert display_path("/somewhere/else/run-1") == "run-1"


def test_an_editor_lock_in_the_package_is_not_hashed(tmp_path):
    for path in runs.package_modules():
        shutil.copy(path, tmp_path / path.name)
    before = runs.source_hash(tmp_path)
    os.symlink("user@host.1234", tmp_path / ".#plots.py")  # Emacs' lock: a dangling symlink
    assert runs.source_hash(tmp_path) == before


def test_files_changed_since_import_stop_training_and_reuse(monkeypatch):
    monkeypatch.setattr(runs, "IMPORTED_SOURCES", "0" * 16)
    with pytest.raises(runs.CodeChangedError, match="Restart the kernel"):
        runs.load_or_train(RunConfig(max_steps=1, save_steps=1), "test", "changed")
    monkeypatch.setattr(runs, "IMPORTED_SOURCES", runs.source_hash())
    with pytest.raises(runs.CodeChangedError, match="1" * 16):
        runs.check_sources(expected="1" * 16)


def test_a_save_step_inside_a_generation_batch_is_refused(tmp_path):
    cfg = RunConfig(max_steps=6, save_steps=3, prompts_per_step=2, num_generations=8, max_completion_length=24,
                    levels=[3], learning_rate=1e-3, grpo={"steps_per_generation": 2})
    with pytest.raises(ValueError, match="save_steps 3 is not a multiple of steps_per_generation 2"):
        runs.load_or_train(cfg, "test", "odd")


def test_a_cache_of_another_model_or_request_is_recomputed(base, tmp_path, capsys):
    model, tok = base
    problems = make_problems([3], 2, seed=0)
    cache = tmp_path / "base.csv"
    first = evaluate(model, tok, problems, n=2, cache=cache, progress=False)
    zeroed, _ = load_model("tiny", device="cpu")
    with torch.no_grad():
        for p in zeroed.parameters():
            p.zero_()
    again = evaluate(zeroed, tok, problems, n=2, cache=cache, progress=False)
    assert again["correct"].sum() == 0 and "base.csv was made for another request (model " in capsys.readouterr().out
    more = evaluate(model, tok, make_problems([4], 2, seed=0), n=3, cache=cache, progress=False)
    assert set(more["level"]) == {4} and set(more["n"]) == {3}


def test_impossible_counts_are_not_read_from_a_cache(tmp_path):
    cache = tmp_path / "t.csv"
    cache.write_text("level,a,b,n,correct,steps,steps_correct,mean_length\n3,1,2,4,9,0,0,5.0\n")
    good = pd.DataFrame({"level": [3], "a": [1], "b": [2], "n": [4], "correct": [1], "steps": [0],
                         "steps_correct": [0], "mean_length": [5.0]})
    with pytest.warns(UserWarning, match="correct > n"):
        table = cached_table(cache, lambda: good, list(good.columns))
    assert table["correct"].tolist() == [1]


def test_damaged_weights_name_the_file_and_the_fix(tmp_path):
    folder = tmp_path / "final"
    shutil.copytree(runs.resolve_model_path("tiny"), folder)
    (folder / "model.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(DamagedModelError, match=f"{folder / 'model.safetensors'} is damaged.*Delete"):
        load_model(str(folder), device="cpu")


def test_a_worker_refuses_to_train_when_the_parent_runs_other_code():
    from rlnb.seeds import RunJob, _train_in_worker

    job = RunJob(RunConfig(max_steps=1, save_steps=1), "test", "worker")
    with pytest.raises(runs.CodeChangedError, match="the process that started it runs 1111"):
        _train_in_worker(job, parent_sources="1" * 16)
    assert not runs.run_path(job.config, "test", "worker").exists()


def test_reverting_an_edit_restores_the_runs_stale_copy_instead_of_training(monkeypatch, capsys):
    cfg = RunConfig(max_steps=1, save_steps=1, prompts_per_step=2, num_generations=4, max_completion_length=8,
                    levels=[3], learning_rate=1e-3)
    first = runs.load_or_train(cfg, "test", "revert")
    real_record = runs.code_record
    monkeypatch.setattr(runs, "code_record", lambda c: {**real_record(c), "rlnb_sources": "e" * 16})
    edited = runs.load_or_train(cfg, "test", "revert")  # "edited" code: the run is retired and trained again
    assert edited.trained and "made by other code" in capsys.readouterr().out
    monkeypatch.setattr(runs, "code_record", real_record)  # not undo(): that would drop the isolated RLNB_RUNS too
    reverted = runs.load_or_train(cfg, "test", "revert")
    assert not reverted.trained and "restoring test/revert-" in capsys.readouterr().out
    assert reverted.run_dir == first.run_dir and runs.is_current(cfg, first.run_dir)


@pytest.mark.parametrize("make", ["file", "under a file"])
def test_a_runs_folder_that_is_a_file_is_named(tmp_path, monkeypatch, make):
    (tmp_path / "f").write_text("")
    monkeypatch.setenv("RLNB_RUNS", str(tmp_path / "f" if make == "file" else tmp_path / "f" / "runs"))
    with pytest.raises(NotADirectoryError, match="RLNB_RUNS .* is a file"):
        runs_dir()
