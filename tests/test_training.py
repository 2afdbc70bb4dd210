"""GRPO through TRL on the tiny model: recording, caching and resuming of runs."""

import dataclasses
import json

import torch

import rlnb.train as train_mod
from rlnb.models import load_model
from rlnb.runs import load_or_train, run_path
from rlnb.tasks import WORLD
from rlnb.train import RunConfig
from rlnb.trainers import SAMPLES_FILE
from rlnb.world import LEVELS

TINY_RUN = dict(max_steps=2, prompts_per_step=2, num_generations=4, max_completion_length=24,
                learning_rate=1e-3, save_steps=2, levels=list(LEVELS[:2]))


def test_two_steps_change_the_weights_and_record_the_promised_metrics(monkeypatch):
    seen = []
    original = WORLD.reward_funcs[0]

    def accuracy_reward(completions, answer, **kwargs):  # same name: TRL logs rewards/<name>/mean
        seen.append(set(kwargs))
        out = original(completions, answer, **kwargs)
        assert len(out) == len(completions) and all(isinstance(x, float) for x in out)
        return out

    spy_task = dataclasses.replace(WORLD, reward_funcs=(accuracy_reward, WORLD.reward_funcs[1]))
    monkeypatch.setattr(train_mod, "get_task", lambda name: spy_task)
    cfg = RunConfig(**TINY_RUN, format_reward_weight=0.5)
    base, _ = load_model("tiny", device="cpu")
    run = load_or_train(cfg, "test", "two-steps")
    assert run.trained and run.info["steps"] == 2
    changed = [not torch.equal(p, q) for p, q in zip(base.parameters(), run.model.parameters())]
    assert any(changed)
    assert seen and {"prompts", "completion_ids", "level"} <= seen[0]

    m = run.metrics
    names = set(m["metric"])
    for metric in ["reward", "accuracy", "steps_used", "completions/mean_length", "entropy",
                   "clip_ratio/region_mean", "frac_reward_zero_std", "cov_logp_adv", "entropy_q50",
                   "rewards/format_reward/mean"]:
        assert metric in names, metric
    per_level = m[m["metric"] == "accuracy"]
    assert per_level["level"].notna().all() and set(per_level["step"]) == {1, 2}
    samples = [json.loads(line) for line in (run.run_dir / SAMPLES_FILE).read_text().splitlines()]
    assert samples and {"prompt", "completion", "correct", "advantage", "level"} <= set(samples[0])


def test_a_finished_run_is_reused_not_retrained():
    cfg = RunConfig(**TINY_RUN)
    first = load_or_train(cfg, "test", "cache")
    weights = first.run_dir / "final" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    second = load_or_train(cfg, "test", "cache")
    assert first.trained and not second.trained
    assert second.run_dir == first.run_dir and weights.stat().st_mtime_ns == stamp
    other = RunConfig(**{**TINY_RUN, "seed": 1})
    assert run_path(other, "test", "cache") != first.run_dir, "a changed config must not reuse the run"


def test_bad_run_configs_are_named():
    import pytest

    with pytest.raises(ValueError, match="unknown method 'ppo'"):
        RunConfig(method="ppo")
    with pytest.raises(ValueError, match="not GRPOConfig options: \\['epsilon_hi'\\]"):
        RunConfig(grpo={"epsilon_hi": 0.28})


def test_a_lora_run_keeps_its_adapter_and_ships_a_merged_model():
    cfg = RunConfig(**TINY_RUN, lora={"r": 4, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]})
    run = load_or_train(cfg, "test", "lora")
    assert (run.run_dir / "adapter" / "adapter_config.json").exists()
    assert type(run.model).__name__ == "Qwen2ForCausalLM", "final/ holds a plain merged model"


def test_the_command_line_entry_point_trains_a_yaml_config(tmp_path, capsys):
    import yaml

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_RUN))
    train_mod.main([str(config), str(tmp_path / "cli-run")])
    assert (tmp_path / "cli-run" / "final" / "config.json").exists()
    assert "run folder:" in capsys.readouterr().out
    train_mod.main([str(config), str(tmp_path / "cli-run")])
    assert "reusing finished run" in capsys.readouterr().out, "the same config in its own folder is reused"
