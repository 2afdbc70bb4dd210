"""The sweep scripts behind data/sweeps/ run end to end on a tiny setting and write the table their notebook reads."""

from __future__ import annotations

import importlib.util

import pandas as pd
import pytest

from rlnb.paths import PROJECT_ROOT


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, PROJECT_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_luffy_speed_sweep_writes_one_row_per_setting_and_seed_with_the_columns_notebook_02_reads(tmp_path):
    sweep = _script("sweep_luffy_speed")
    out = tmp_path / "luffy_speed.csv"
    sweep.main(["--gammas", "0.1", "1.0", "--traces", "1", "2", "--seeds", "0", "--steps", "2", "--workers", "1",
                "--out", str(out)])
    table = pd.read_csv(out)
    assert list(table["knob"]) == ["gamma", "gamma", "traces", "no shaping"]
    assert set(table["steps"]) == {2} and (table["seed"] == 0).all()
    assert table.loc[table.knob == "no shaping", "policy_shaping"].tolist() == [False]
    assert table.loc[table.knob == "traces", ["shaping_gamma", "expert_traces"]].values.tolist() == [[0.1, 2]]
    assert table["own_acc_last10"].between(0, 1).all()
    committed = pd.read_csv(PROJECT_ROOT / "data" / "sweeps" / "luffy_speed.csv")
    assert list(committed.columns) == list(table.columns)


def test_a_first_step_is_none_when_a_run_never_reaches_the_threshold():
    sweep = _script("sweep_luffy_speed")
    steps = pd.Series(range(1, 11))
    metrics = pd.DataFrame({"step": list(steps) * 3, "metric": "accuracy", "level": [4] * 10 + [5] * 10 + [6] * 10,
                            "value": [0.0] * 30})
    score = sweep.score(metrics, (4, 5, 6))
    assert score["first_step_own_acc_0.1"] is None and score["steps"] == 10
    rising = metrics.assign(value=[s / 20 for s in steps] * 3)
    assert sweep.score(rising, (4, 5, 6))["first_step_own_acc_0.1"] == 3  # rolling means 0.05, 0.075, 0.1 ...


def test_the_base_large_k_sweep_samples_notebook_04s_problems_and_writes_their_counts(tmp_path):
    from rlnb.evaluate import HeldOut
    from rlnb.world import EVAL_SEED, LEVELS

    sweep = _script("sweep_base_large_k")
    out = tmp_path / "base_large_k.csv"
    sweep.main(["--n", "4", "--problems", "2", "--levels", "5", "--out", str(out)])
    table = pd.read_csv(out)
    expected = [(p.a, p.b) for p in HeldOut.for_preset("ci", LEVELS, 2, EVAL_SEED).problems if p.level == 5]
    assert list(zip(table["a"], table["b"])) == expected and set(table["n"]) == {4}
    assert table["correct"].between(0, 4).all()
    committed = pd.read_csv(PROJECT_ROOT / "data" / "sweeps" / "base_large_k.csv")
    assert list(committed.columns) == list(table.columns) and set(committed["n"]) == {4096}


def test_the_grpo_family_long_sweep_writes_the_base_and_each_run_on_the_same_held_out_problems(tmp_path):
    sweep = _script("sweep_grpo_family")
    out = tmp_path / "grpo_family_long.csv"
    sweep.main(["long", "--methods", "GRPO", "NSR", "--seeds", "0", "--steps", "2", "--problems", "2",
                "--samples", "3", "--workers", "1", "--out", str(out)])
    table = pd.read_csv(out)
    assert list(dict.fromkeys(table["method"])) == ["base", "GRPO", "NSR"]
    problems = table.groupby("method")[["level", "a", "b"]].apply(lambda t: sorted(map(tuple, t.values)))
    assert problems["base"] == problems["GRPO"] == problems["NSR"] and len(problems["base"]) == 4  # 2 levels x 2
    assert set(table["n"]) == {3} and table["correct"].between(0, 3).all() and set(table["steps"].dropna()) == {2}
    committed = pd.read_csv(PROJECT_ROOT / "data" / "sweeps" / "grpo_family_long.csv")
    assert list(committed.columns) == list(table.columns) and set(committed["n"]) == {64}


def test_the_gspo_clip_sweep_scales_both_ends_of_the_clip_range_and_logs_the_clipped_share(tmp_path):
    from rlnb.experiments import GRPO_FAMILY_METHODS

    sweep = _script("sweep_grpo_family")
    keyed = sweep.gspo_clip_jobs([1.0, 10.0], [0])
    paper = GRPO_FAMILY_METHODS["GSPO"]["grpo"]
    for labels, job in keyed:
        grpo = job.config.grpo
        assert grpo["epsilon"] == paper["epsilon"] * labels["clip_scale"] == labels["epsilon"]
        assert grpo["epsilon_high"] == paper["epsilon_high"] * labels["clip_scale"]
        assert grpo["importance_sampling_level"] == "sequence"
    out = tmp_path / "gspo_clip.csv"
    sweep.main(["gspo-clip", "--scales", "10", "--seeds", "0", "--steps", "2", "--problems", "1", "--samples", "2", "--workers", "1",
                "--out", str(out)])
    table = pd.read_csv(out)
    runs = table[table.method == "GSPO"]
    assert set(runs["clip_scale"]) == {10.0} and runs["clip_share"].between(0, 1).all()
    committed = pd.read_csv(PROJECT_ROOT / "data" / "sweeps" / "gspo_clip.csv")
    assert list(committed.columns) == list(table.columns) and set(committed["n"]) == {8}


def test_the_learning_rate_sweep_scales_only_the_learning_rate_of_each_method(tmp_path):
    from rlnb.experiments import grpo_family_config

    sweep = _script("sweep_grpo_family")
    for labels, job in sweep.lr_jobs(["GRPO", "pass@4"], [0.3, 3.0], [1]):
        shared = grpo_family_config("ci", labels["method"], 1).to_dict()
        assert job.config.learning_rate == pytest.approx(shared["learning_rate"] * labels["lr_scale"])
        assert {k for k, v in job.config.to_dict().items() if v != shared[k]} == {"learning_rate"}
    out = tmp_path / "grpo_family_lr.csv"
    sweep.main(["lr", "--methods", "GRPO", "--scales", "3", "--seeds", "0", "--steps", "2", "--problems", "1",
                "--samples", "2", "--workers", "1", "--out", str(out)])
    runs = pd.read_csv(out).query("method == 'GRPO'")
    assert set(runs["lr_scale"]) == {3.0} and runs["learning_rate"].tolist() == pytest.approx([3e-4] * len(runs))
    committed = pd.read_csv(PROJECT_ROOT / "data" / "sweeps" / "grpo_family_lr.csv")
    assert list(committed.columns) == list(pd.read_csv(out).columns) and set(committed["n"]) == {8}


def test_the_compute_sweep_evaluates_every_checkpoint_with_the_completions_generated_by_then(tmp_path):
    sweep = _script("sweep_grpo_family")
    out = tmp_path / "grpo_family_compute.csv"
    sweep.main(["compute", "--methods", "GRPO", "DAPO-DS", "--seeds", "0", "--steps", "4", "--ds-steps", "2",
                "--every", "2", "--problems", "1", "--samples", "2", "--workers", "1", "--out", str(out)])
    table = pd.read_csv(out)
    spent = table.groupby(["method", "step"])["completions"].first()
    per_step = 4 * 16  # notebook 06's prompts a step x group size
    assert spent["GRPO"].to_dict() == {2: 2 * per_step, 4: 4 * per_step}
    assert list(spent["DAPO-DS"].index) == [2] and spent["DAPO-DS"][2] >= 2 * per_step  # refills cost more
    assert spent["DAPO-DS"][2] % 16 == 0  # whole groups
    committed = pd.read_csv(PROJECT_ROOT / "data" / "sweeps" / "grpo_family_compute.csv")
    assert list(committed.columns) == list(table.columns) and set(committed["n"]) == {8}


def test_the_entropy_dose_sweep_scales_one_knob_per_intervention_around_notebook_03s_strength(tmp_path):
    from rlnb.experiments import ENTROPY_INTERVENTIONS

    sweep = _script("sweep_entropy_dose")
    value, switch = sweep.dose("KL-Cov", 4.0)
    assert value == 4.0 * ENTROPY_INTERVENTIONS["KL-Cov"]["method_options"]["kl_coef"] == switch["method_options"]["kl_coef"]
    assert switch["method_options"]["kl_cov_ratio"] == ENTROPY_INTERVENTIONS["KL-Cov"]["method_options"]["kl_cov_ratio"]
    assert ENTROPY_INTERVENTIONS["KL-Cov"]["method_options"]["kl_coef"] != value  # the notebook's switch is untouched
    out = tmp_path / "entropy_dose.csv"
    sweep.main(["--interventions", "entropy bonus", "--factors", "0.25", "--seeds", "0", "--steps", "2",
                "--problems", "2", "--samples", "2", "--workers", "1", "--out", str(out)])
    table = pd.read_csv(out)
    assert list(dict.fromkeys(table["intervention"])) == ["base", "baseline", "entropy bonus"]
    bonus = table[table.intervention == "entropy bonus"]
    assert set(bonus["strength"]) == {0.25 * ENTROPY_INTERVENTIONS["entropy bonus"]["grpo"]["entropy_coef"]}
    assert (table.loc[table.intervention != "base", "end_entropy"] > 0).all() and set(table["n"]) == {2}
    committed = pd.read_csv(PROJECT_ROOT / "data" / "sweeps" / "entropy_dose.csv")
    assert list(committed.columns) == list(table.columns) and set(committed["n"]) == {16}


def test_the_lora_transfer_sweep_compares_every_rank_with_full_fine_tuning_and_its_update_cut_to_each_rank(tmp_path):
    from rlnb.experiments import LORA_RATES, LORA_STEPS, ZERO_RL_NOTEBOOK

    sweep = _script("sweep_lora_transfer")
    keyed = sweep.jobs([1, 32], [0])
    assert [labels["run"] for labels, _ in keyed] == ["full", "r1", "r32"]
    full, r1, r32 = (job for _, job in keyed)
    assert full.notebook == ZERO_RL_NOTEBOOK and full.config.lora is None  # notebook 01's run itself
    assert r1.config.learning_rate == LORA_RATES[1] and r32.config.max_steps == LORA_STEPS["ci"]
    out = tmp_path / "lora_transfer.csv"
    sweep.main(["--ranks", "1", "--seeds", "0", "--steps", "2", "--problems", "2", "--samples", "2", "--workers", "1",
                "--out", str(out)])
    table = pd.read_csv(out)
    assert list(dict.fromkeys(table["run"])) == ["base", "full", "full cut to r1", "full, LoRA's matrices", "r1"]
    assert set(table.loc[table.run != "base", "step"]) == {2}
    assert len(table) == 5 * 2 * 2 and set(table["n"]) == {2}  # 5 models x 2 levels x 2 problems
    training = pd.read_csv(tmp_path / "lora_transfer_training.csv")
    assert list(training.columns) == ["run", "seed", "step", "level", "accuracy"]
    assert set(training["run"]) == {"full", "r1"} and set(training["step"]) == {1, 2} and set(training["level"]) <= {3, 4}
    committed = pd.read_csv(PROJECT_ROOT / "data" / "sweeps" / "lora_transfer.csv")
    assert list(committed.columns) == list(table.columns) and set(committed["seed"]) == set(range(6))
    assert set(committed.loc[committed.run == "r1", "step"]) == {15, 30, 45} and "full cut to r4" in set(committed["run"])


def test_the_base_reference_is_the_shipped_bases_and_refuses_other_weights(tmp_path):
    import json

    from rlnb.evaluate import base_reference, base_reference_line
    from rlnb.world import LEVELS

    committed = base_reference()
    assert list(committed.index) == list(LEVELS) and set(committed["problems"]) == {128} and set(committed["samples"]) == {32}
    assert (committed["low"] <= committed["pass@1"]).all() and (committed["pass@1"] <= committed["high"]).all()
    assert 0.1 < committed.loc[3, "pass@1"] < 0.3 and committed.loc[7, "pass@1"] == 0.0  # inside and outside levels
    out = tmp_path / "base_reference.csv"
    _script("base_reference").main(["--problems", "2", "--samples", "2", "--out", str(out)])
    line = base_reference_line(path=out)
    assert "2 problems x 2 samples per level" in line and all(f"{lvl} digits" in line for lvl in LEVELS)
    key = json.loads(out.with_suffix(".json").read_text())
    out.with_suffix(".json").write_text(json.dumps({**key, "model": "0" * 16}))
    with pytest.raises(ValueError, match="other weights than the shipped base"):
        base_reference(out)
    out.with_suffix(".json").unlink()
    with pytest.raises(FileNotFoundError, match="benchmarks/base_reference.py"):
        base_reference(out)
