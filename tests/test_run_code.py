"""Runs know their code (issue #13): a run made by other code is retrained, not silently reused."""

import json
import shutil
from pathlib import Path

from rlnb.paths import base_model_dir, display_path
from rlnb.runs import PACKAGE_DIR, code_record, load_or_train, source_hash
from rlnb.train import RunConfig
from rlnb.world import LEVELS

TINY = dict(max_steps=2, prompts_per_step=2, num_generations=4, max_completion_length=24,
            learning_rate=1e-3, save_steps=2, levels=list(LEVELS[:2]))


def test_the_source_hash_counts_the_package_python_files_only(tmp_path):
    for path in PACKAGE_DIR.glob("*.py"):
        shutil.copy(path, tmp_path / path.name)
    before = source_hash(tmp_path)
    assert before == source_hash(PACKAGE_DIR)
    (tmp_path / "notes.ipynb").write_text("{}")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("assert True\n")
    assert source_hash(tmp_path) == before, "notebooks and tests do not invalidate runs"
    with (tmp_path / "train.py").open("a") as f:
        f.write("\n# changed\n")
    assert source_hash(tmp_path) != before


def test_a_new_base_model_changes_the_code_record(tmp_path, monkeypatch):
    shutil.copytree(base_model_dir(), tmp_path / "tiny-base")
    monkeypatch.setenv("RLNB_DATA", str(tmp_path))
    before = code_record(RunConfig(**TINY))
    weights = tmp_path / "tiny-base" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    after = code_record(RunConfig(**TINY))
    assert after["model_weights"] != before["model_weights"]
    assert {k: v for k, v in after.items() if k != "model_weights"} == {
        k: v for k, v in before.items() if k != "model_weights"}


def test_a_run_made_by_other_code_is_moved_aside_and_retrained(capsys):
    cfg = RunConfig(**TINY)
    first = load_or_train(cfg, "test", "code")
    record = json.loads((first.run_dir / "code.json").read_text())
    assert record["rlnb_sources"] == source_hash() and "git_commit" in record and record["torch"]
    assert not load_or_train(cfg, "test", "code").trained, "the same code reuses the run"

    (first.run_dir / "code.json").write_text(json.dumps({**record, "torch": "0.0"}))
    capsys.readouterr()
    again = load_or_train(cfg, "test", "code")
    out = capsys.readouterr().out
    assert again.trained and again.run_dir == first.run_dir
    assert "made by other code (torch 0.0 -> " in out
    stale = [p for p in first.run_dir.parent.iterdir() if p.name.startswith(f"{first.run_dir.name}.stale-")]
    assert len(stale) == 1 and display_path(stale[0]) in out and str(stale[0]) not in out
    assert json.loads((stale[0] / "code.json").read_text())["torch"] == "0.0"
    assert (stale[0] / "final" / "model.safetensors").exists(), "the old run is kept, not deleted"
    assert json.loads((first.run_dir / "code.json").read_text())["torch"] == record["torch"]


def test_a_run_without_a_code_record_is_not_reused(capsys):
    cfg = RunConfig(**TINY)
    first = load_or_train(cfg, "test", "legacy")
    (first.run_dir / "code.json").unlink()
    assert load_or_train(cfg, "test", "legacy").trained
    assert "no readable code.json" in capsys.readouterr().out
    assert Path(f"{first.run_dir}.stale-unrecorded").is_dir()
