"""The sweep scripts behind data/sweeps/ run end to end on a tiny setting and write the table their notebook reads."""

from __future__ import annotations

import importlib.util

import pandas as pd

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
