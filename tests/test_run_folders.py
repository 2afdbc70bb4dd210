"""Run folders under stress (issue #17): another configuration, a second process, damage, interruption."""

import json
import os
from collections import Counter
from pathlib import Path

import pytest
import yaml
from transformers import TrainerCallback

import rlnb.runs as runs
from rlnb.paths import display_path
from rlnb.runs import RunFolderBusy, folder_lock, last_checkpoint, load_or_train, run_path
from rlnb.train import RunConfig, build_trainer, main
from rlnb.trainers import METRICS_FILE, SAMPLES_FILE, truncate_metrics, truncate_samples
from rlnb.world import LEVELS

TINY = dict(max_steps=2, prompts_per_step=2, num_generations=4, max_completion_length=24,
            learning_rate=1e-3, save_steps=2, levels=list(LEVELS[:2]))


class _Interrupted(Exception):
    """Stands for a kill: raised after the metrics of one step were written, before any later checkpoint."""


class _InterruptAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_log(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise _Interrupted(f"step {self.step}")


def train_until_interrupted(monkeypatch, cfg: RunConfig, name: str, step: int) -> Path:
    """Start ``cfg`` through load_or_train and interrupt it once ``step`` is logged; return its folder."""
    def interrupted_trainer(config, folder):
        trainer = build_trainer(config, folder)
        trainer.add_callback(_InterruptAt(step))
        return trainer

    with monkeypatch.context() as patch:
        patch.setattr(runs, "build_trainer", interrupted_trainer)
        with pytest.raises(_Interrupted):
            load_or_train(cfg, "test", name)
    return run_path(cfg, "test", name)


def sample_steps(folder: Path) -> Counter:
    return Counter(json.loads(line)["step"] for line in (folder / SAMPLES_FILE).read_text().splitlines())


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------- interruption and resume
def test_an_interrupted_run_resumes_from_its_checkpoint_and_records_each_step_once(monkeypatch):
    cfg = RunConfig(**{**TINY, "max_steps": 4, "method_options": {"sample_every": 2}})
    folder = train_until_interrupted(monkeypatch, cfg, "resume", step=3)
    assert (folder / "checkpoint-2").exists() and not (folder / "done.json").exists()
    assert sample_steps(folder) == {0: 4, 2: 4}, "the group of step 2 is written after checkpoint-2"
    run = load_or_train(cfg, "test", "resume")
    assert run.trained and run.info["resumed_from"] == "checkpoint-2" and run.info["steps"] == 4
    reward = run.metrics[run.metrics["metric"] == "reward"]
    assert list(reward["step"]) == [1, 2, 3, 4], "rows after the checkpoint are re-logged once, not duplicated"
    assert sample_steps(folder) == {0: 4, 2: 4}, "a resumed run writes each sample group once"


def test_a_checkpoint_without_optimizer_state_is_not_resumed_the_previous_one_is(monkeypatch, capsys):
    cfg = RunConfig(**{**TINY, "max_steps": 6, "grpo": {"save_total_limit": 2}})
    folder = train_until_interrupted(monkeypatch, cfg, "damaged", step=5)
    (folder / "checkpoint-4" / "optimizer.pt").unlink()
    run = load_or_train(cfg, "test", "damaged")
    assert run.info["resumed_from"] == "checkpoint-2" and run.info["steps"] == 6
    assert "incomplete checkpoint" in capsys.readouterr().out
    reward = run.metrics[run.metrics["metric"] == "reward"]
    assert list(reward["step"]) == [1, 2, 3, 4, 5, 6]


def _checkpoint(folder: Path, step: int) -> Path:
    ckpt = folder / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
        (ckpt / name).write_bytes(b"x")
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return ckpt


@pytest.mark.parametrize("damage", ["optimizer.pt", "scheduler.pt", "rng_state.pth", "model.safetensors",
                                    "trainer_state.json", "garbage trainer_state.json", "empty optimizer.pt"])
def test_the_newest_complete_checkpoint_is_the_one_resumed(tmp_path, damage):
    _checkpoint(tmp_path, 2)
    newest = _checkpoint(tmp_path, 4)
    assert last_checkpoint(tmp_path) == newest
    kind, _, name = damage.rpartition(" ")
    if kind == "garbage":
        (newest / name).write_text("{not json")
    elif kind == "empty":
        (newest / name).write_bytes(b"")
    else:
        (newest / name).unlink()
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-2"


# ---------------------------------------------------------------------- damaged files
def test_an_empty_metrics_file_is_removed_and_a_torn_row_dropped(tmp_path):
    (tmp_path / METRICS_FILE).write_text("")
    truncate_metrics(tmp_path, 2)  # today: IndexError on every retry
    assert not (tmp_path / METRICS_FILE).exists()
    (tmp_path / METRICS_FILE).write_text("step,metric,level,value\n1,reward,,0.5\n3,reward,,0.7\n3,rew")
    truncate_metrics(tmp_path, 3)
    assert (tmp_path / METRICS_FILE).read_text().splitlines() == ["step,metric,level,value", "1,reward,,0.5",
                                                                  "3,reward,,0.7"]
    (tmp_path / METRICS_FILE).write_text("garbage\n1,reward,,0.5\n")
    with pytest.raises(ValueError, match=METRICS_FILE):
        truncate_metrics(tmp_path, 3)


def test_samples_are_cut_back_to_before_the_resumed_step(tmp_path):
    lines = [json.dumps({"step": s, "completion": "A1"}) for s in (0, 0, 2, 2)] + ['{"step": 4, "compl']
    (tmp_path / SAMPLES_FILE).write_text("\n".join(lines))
    truncate_samples(tmp_path, 2)
    assert sample_steps(tmp_path) == {0: 2}


def test_an_unreadable_done_file_resumes_the_run_instead_of_a_json_error(capsys):
    cfg = RunConfig(**TINY)
    first = load_or_train(cfg, "test", "bad-done")
    (first.run_dir / "done.json").write_text("{garbage")
    again = load_or_train(cfg, "test", "bad-done")
    assert again.trained and again.info["steps"] == 2
    assert f"{display_path(first.run_dir / 'done.json')} is unreadable" in capsys.readouterr().out


# ---------------------------------------------------------------------- another configuration, another process
@pytest.mark.parametrize("state", ["finished", "interrupted"])
def test_the_cli_refuses_a_run_folder_of_another_configuration(tmp_path, state):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(RunConfig(**TINY).to_dict(), sort_keys=True))
    if state == "finished":
        (folder / "final").mkdir()
        (folder / "final" / "config.json").write_text("{}")
        (folder / "done.json").write_text(json.dumps({"steps": 2, "train_seconds": 1.0}))
    else:
        _checkpoint(folder, 2)
    before = tree(folder)
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**TINY, "seed": 1}))
    with pytest.raises(SystemExit) as refused:
        main([str(other), str(folder)])
    message = str(refused.value)
    assert str(other) in message and str(folder / "config.yaml") in message and "seed: 0 there, 1 asked" in message
    assert tree(folder) == before, "the folder of the other configuration is left as it was"


def test_a_folder_with_files_but_no_run_config_is_refused_and_left_alone(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(runs.RunFolderError, match="no config.yaml, so it is no run folder"):
        load_or_train(RunConfig(**TINY), "test", "x", run_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_a_run_folder_in_use_is_refused_naming_the_folder_and_the_holder(tmp_path):
    folder = tmp_path / "run"
    with folder_lock(folder):
        with pytest.raises(RunFolderBusy, match=f"{folder} is in use by process {os.getpid()}"):
            load_or_train(RunConfig(**TINY), "test", "busy", run_dir=folder)
        assert [p.name for p in folder.iterdir()] == ["run.lock"], "the refused process changed nothing"
    with folder_lock(folder):  # released with its holder
        pass


@pytest.mark.parametrize("lora", [None, {"r": 2, "lora_alpha": 8.0, "lora_dropout": 0.0, "target_modules": ["q_proj"]}])
def test_checkpoint_models_load_every_kept_checkpoint_full_or_lora(lora):
    import torch

    from rlnb.runs import checkpoint_models

    cfg = RunConfig(**{**TINY, "save_steps": 1}, grpo={"save_total_limit": None}, lora=lora)
    run = load_or_train(cfg, "test", "kept")
    models = checkpoint_models(run.run_dir, cfg.model)
    assert sorted(models) == [1, 2]
    ids = torch.tensor([[1, 5, 6, 7]])
    final, last = run.model(ids).logits, models[2](ids).logits
    assert torch.allclose(final, last, atol=1e-5)  # the last checkpoint (merged, for LoRA) is the final model


def test_checkpoint_models_names_a_run_that_kept_none(tmp_path):
    from rlnb.runs import checkpoint_models

    with pytest.raises(FileNotFoundError, match="save_total_limit None"):
        checkpoint_models(tmp_path, "tiny")
