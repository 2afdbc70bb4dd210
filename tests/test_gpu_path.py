"""The `gpu` code path, run end to end on a CPU with the project's tiny model.

Everything but vLLM: a MATH-format data set written here, R1 prompts through
the tiny tokenizer's chat template, sampling, math-verify rewards, two GRPO and two LUFFY
steps through TRL (LUFFY's traces from a data-set column), and pass@k evaluation.
"""

import json

import numpy as np
import torch
import pandas as pd
import pytest

from rlnb.evaluate import evaluate_dataset
from rlnb.math_task import load_math_dataset
from rlnb.metrics import pass_at_k
from rlnb.runs import load_or_train
from rlnb.train import RunConfig

ROWS = [
    {"problem": "What is 1+1?", "solution": r"It is \boxed{2}.", "trace": r"<think>1+1=2</think> \boxed{2}"},
    {"problem": "Half of 1?", "solution": r"\boxed{\frac{1}{2}}", "trace": r"<think>1/2</think> \boxed{0.5}"},
    {"problem": "3*3?", "solution": r"\boxed{9}", "trace": r"<think>3*3=9</think> \boxed{9}"},
    {"problem": "10-4?", "solution": r"\boxed{6}", "trace": r"<think>10-4=6</think> \boxed{6}"},
]


@pytest.fixture
def math_file(tmp_path):
    path = tmp_path / "math.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS))
    return path


def test_math_grpo_two_steps_and_pass_at_k_on_cpu(math_file, base):
    cfg = RunConfig(task="math", dataset=str(math_file), trace_column="trace", max_steps=2, prompts_per_step=2,
                    num_generations=4, max_completion_length=16, learning_rate=1e-3, save_steps=2)
    run = load_or_train(cfg, "test", "math")
    assert run.trained and run.info["steps"] == 2
    assert "rewards/math_accuracy_reward/mean" in set(run.metrics["metric"])

    data = load_math_dataset(str(math_file), split="train", trace_column="trace")
    assert data["answer"] == ["2", r"\frac{1}{2}", "9", "6"]
    table = evaluate_dataset(run.model, run.tokenizer, data, n=4, max_new_tokens=8, progress=False)
    assert list(table["n"]) == [4] * 4 and table["correct"].between(0, 4).all()
    assert np.all(np.asarray(pass_at_k(4, table["correct"].to_numpy(), 2)) >= 0)


def test_expert_traces_verify_against_the_gold_answers(math_file):
    from rlnb.math_task import math_accuracy_reward

    data = load_math_dataset(str(math_file), split="train", trace_column="trace")
    assert math_accuracy_reward(data["expert"], answer=data["answer"]) == [1.0] * 4


def test_math_task_without_a_dataset_is_named():
    with pytest.raises(ValueError, match="task 'math' needs `dataset`"):
        RunConfig(task="math")
    with pytest.raises(ValueError, match="unknown task 'chess'"):
        RunConfig(task="chess")


def test_math_luffy_two_steps_with_traces_from_a_column(math_file):
    cfg = RunConfig(method="luffy", task="math", dataset=str(math_file), trace_column="trace", max_steps=2,
                    prompts_per_step=2, num_generations=4, max_completion_length=24, learning_rate=1e-3,
                    save_steps=2, loss_type="dr_grpo", scale_rewards="none", method_options={"expert_traces": 1})
    run = load_or_train(cfg, "test", "math-luffy")
    assert run.trained and run.info["steps"] == 2
    names = set(run.metrics["metric"])
    assert {"off_policy/prob", "on_policy/prob"} <= names


def test_held_out_math_set_gives_the_world_table_and_is_cached(math_file, base, tmp_path):
    from rlnb.evaluate import HeldOut

    model, tokenizer = base
    held = HeldOut(dataset=load_math_dataset(str(math_file), split="train"), max_new_tokens=8)
    assert held.levels == [0]  # no level column: one level, 0
    cache = tmp_path / "eval.csv"
    table = held.evaluate(model, tokenizer, 3, cache=cache)
    assert {"level", "n", "correct", "steps", "mean_length"} <= set(table.columns)
    assert cache.exists() and list(table["n"]) == [3] * len(ROWS)
    edited = pd.read_csv(cache, converters={"answer": str})
    edited.loc[0, "mean_length"] = 99.5  # a possible value no sampling here gives: read, not recomputed
    edited.to_csv(cache, index=False)
    assert held.evaluate(model, tokenizer, 3, cache=cache)["mean_length"].iloc[0] == 99.5


def test_held_out_for_the_gpu_preset_needs_an_evaluation_set():
    from rlnb.evaluate import HeldOut

    with pytest.raises(ValueError, match="pass eval_dataset"):
        HeldOut.for_preset("gpu", levels=(2,), size=4, seed=0)
    world = HeldOut.for_preset("ci", levels=(3, 5), size=3, seed=0)
    assert world.levels == [3, 5] and len(world.problems) == 6
    with pytest.raises(ValueError, match="pass a loaded model"):
        world.evaluate("some/model", None, 2)


def test_gpu_notebooks_load_notebook_01s_run(monkeypatch):
    """Notebook 01 passes its model and data set as overrides; notebooks 02-04 ask without them: one run, one hash."""
    import torch

    from rlnb.experiments import zero_rl_config
    from rlnb.runs import config_hash

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    nb01 = zero_rl_config("gpu", "grpo", 0, format_reward_weight=0.0, model="Qwen/Qwen2.5-Math-1.5B",
                          dataset="DigitalLearningGmbH/MATH-lighteval")
    assert config_hash(nb01) == config_hash(zero_rl_config("gpu", "grpo", 0, format_reward_weight=0.0))


def test_gpu_preset_turns_off_cudnn_attention(monkeypatch):
    """Issue #24: cuDNN's SDPA backward NaNs on LUFFY's bf16 batches; the gpu preset must disable that kernel."""
    import torch

    from rlnb import presets

    monkeypatch.setattr(presets.torch.cuda, "is_available", lambda: True)
    before = torch.backends.cuda.cudnn_sdp_enabled()
    try:
        torch.backends.cuda.enable_cudnn_sdp(True)
        presets.device_settings("gpu")
        assert not torch.backends.cuda.cudnn_sdp_enabled()
    finally:
        torch.backends.cuda.enable_cudnn_sdp(before)


def test_the_gpu_smoke_covers_every_method_and_refuses_a_machine_without_cuda(monkeypatch, capsys, math_file):
    """benchmarks/gpu_smoke.py (issue #24): every trainer of rlnb.train.METHODS is among its configurations, each
    switched to preset gpu with checkpoints on generation-batch boundaries; without CUDA it runs nothing."""
    import importlib.util

    from rlnb.paths import PROJECT_ROOT
    from rlnb.train import METHODS

    spec = importlib.util.spec_from_file_location("gpu_smoke", PROJECT_ROOT / "benchmarks" / "gpu_smoke.py")
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)
    assert smoke.main(["--no-record"]) == 2 and "needs a CUDA GPU" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the configurations only, nothing runs
    configs = smoke.smoke_configs()
    assert {cfg.method for cfg in configs.values()} == set(METHODS)
    assert set(smoke.HEADLINE) <= set(configs)
    for name, cfg in configs.items():
        gpu = smoke.on_gpu(cfg, 4, str(math_file))
        per_batch = gpu.grpo.get("steps_per_generation", 1)
        assert gpu.preset == "gpu" and gpu.max_steps == 4 and gpu.save_steps % per_batch == 0, name
        assert gpu.model == "tiny" and not gpu.grpo.get("use_vllm"), name
        assert gpu.task == "world" or gpu.dataset == str(math_file), name
