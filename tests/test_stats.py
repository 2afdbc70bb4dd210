"""Tests for rlnb.stats: exact values on hand-built tables, scipy's Wilson interval, the calibrated decision rule."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from scipy.stats import binomtest

from rlnb.stats import Difference, calibrate, event_rate, paired_difference, pass_at_k_band, stack_seeds


def world_table(correct_by_seed: dict[int, list[int]], n: int = 4, level: int = 3) -> pd.DataFrame:
    """A stacked tiny-world table: problem i of ``level`` is (a, b) = (i, i + 1), seed s has ``correct_by_seed[s]``."""
    return pd.concat([
        pd.DataFrame({"seed": seed, "level": level, "a": np.arange(len(c)), "b": np.arange(len(c)) + 1,
                      "n": n, "correct": c, "steps": 0, "mean_length": 10.0})
        for seed, c in correct_by_seed.items()], ignore_index=True)


def exact_pass_at_k(n: int, c: int, k: int) -> float:
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


# --------------------------------------------------------------------------- #
# event_rate: Wilson interval
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("successes, trials", [(4, 6), (0, 6), (6, 6), (1, 3), (17, 40), (0, 1), (1, 1)])
@pytest.mark.parametrize("ci", [0.95, 0.8])
def test_event_rate_matches_scipy_wilson(successes, trials, ci):
    rate = event_rate(successes, trials, ci)
    expected = binomtest(successes, trials).proportion_ci(confidence_level=ci, method="wilson")
    assert rate.estimate == pytest.approx(successes / trials)
    assert rate.low == pytest.approx(expected.low, abs=1e-12)
    assert rate.high == pytest.approx(expected.high, abs=1e-12)


def test_event_rate_edges_and_text():
    assert event_rate(0, 5).low == 0.0 and event_rate(0, 5).high < 1.0
    assert event_rate(5, 5).high == 1.0 and event_rate(5, 5).low > 0.0
    assert str(event_rate(4, 6)) == "4 of 6, 0.67 [0.30, 0.90]"
    for bad in [(7, 6), (-1, 6), (0, 0), (2.5, 6)]:
        with pytest.raises(ValueError):
            event_rate(*bad)


# --------------------------------------------------------------------------- #
# paired_difference on hand-built tables
# --------------------------------------------------------------------------- #


def test_exact_estimate_for_pass_at_1_and_pass_at_2():
    a = world_table({0: [4, 2, 0], 1: [3, 1, 1]})
    b = world_table({5: [1, 1, 0], 6: [2, 0, 0], 7: [0, 0, 4]})
    mean = lambda t, k: np.mean([exact_pass_at_k(4, c, k) for c in t["correct"]])
    for k in (1, 2):
        diff = paired_difference(a, b, k=k)
        assert diff.estimate == pytest.approx(mean(a, k) - mean(b, k), abs=1e-12)
        assert diff.low <= diff.estimate <= diff.high and diff.k == k and diff.seeds == (2, 3) and diff.problems == 3
    assert paired_difference(a, b).estimate == pytest.approx(11 / 24 - 8 / 36)


def test_identical_single_seed_tables_give_a_degenerate_interval_at_zero():
    a = world_table({0: [4, 2, 0, 3, 1]})
    diff = paired_difference(a, a.copy())
    assert (diff.estimate, diff.low, diff.high) == (0.0, 0.0, 0.0)
    assert not diff.resolved
    assert str(diff) == "+0.000 [+0.000, +0.000]"


def test_same_runs_on_both_sides_are_not_resolved():
    """Seeds are resampled independently per side: three differing seeds give a spread around exactly 0."""
    a = world_table({0: [4, 3, 2, 4], 1: [1, 0, 2, 1], 2: [3, 3, 3, 2]})
    diff = paired_difference(a, a)
    assert diff.estimate == 0.0 and diff.low < 0.0 < diff.high and not diff.resolved


def test_problems_are_paired_across_tables():
    """B is A plus one correct sample on every problem: a paired interval sits on +1/4 however hard the problems are
    (resampling the problems of each table separately would spread it across the problems' difficulties)."""
    a = world_table({0: [0, 3, 1, 2, 0, 3]})
    b = world_table({0: [1, 4, 2, 3, 1, 4]})
    diff = paired_difference(b, a)
    assert diff.estimate == pytest.approx(0.25) and diff.low == pytest.approx(0.25) and diff.high == pytest.approx(0.25)


def test_a_large_shift_is_resolved_with_its_sign():
    rng = np.random.default_rng(0)
    strong = world_table({s: rng.binomial(8, 0.8, 40).tolist() for s in range(3)}, n=8)
    weak = world_table({s: rng.binomial(8, 0.3, 40).tolist() for s in range(3)}, n=8)
    up, down = paired_difference(strong, weak), paired_difference(weak, strong)
    assert up.resolved and up.low > 0.3 and down.resolved and down.high < -0.3
    assert up.describe("GMPO", "GRPO").startswith(f"GMPO above GRPO in pass@1 by +0.")
    assert down.describe("GRPO", "GMPO").startswith("GRPO below GMPO in pass@1 by -0.")
    close = paired_difference(strong, strong.assign(correct=strong["correct"].where(strong["a"] != 0, 0)))
    assert close.describe("A", "B").startswith("A vs B in pass@1 not resolved with 3 seeds x 40 problems: +0.0")


def test_difference_text():
    diff = Difference(0.031, 0.012, 0.05, k=1, seeds=(3, 2), problems=32, ci=0.95)
    assert str(diff) == "+0.031 [+0.012, +0.050]" and diff.resolved
    flat = Difference(0.01, -0.02, 0.04, k=4, seeds=(3, 2), problems=32, ci=0.95)
    assert flat.describe("A", "B") == ("A vs B in pass@4 not resolved with 3 and 2 seeds x 32 problems: "
                                       "+0.010 [-0.020, +0.040]")


def test_pooling_levels_versus_one_level():
    a = pd.concat([world_table({0: [4, 4], 1: [4, 2]}, level=3), world_table({0: [0, 0, 0], 1: [1, 0, 0]}, level=4)])
    b = pd.concat([world_table({0: [2, 2], 1: [2, 2]}, level=3), world_table({0: [0, 0, 0], 1: [0, 0, 0]}, level=4)])
    assert paired_difference(a, b, level=3).estimate == pytest.approx(14 / 16 - 8 / 16)
    assert paired_difference(a, b, level=4).estimate == pytest.approx(1 / 24)
    pooled = (14 + 1) / 40 - 8 / 40  # every problem (2 + 3 per seed) weighs the same
    assert paired_difference(a, b).estimate == pytest.approx(pooled)
    assert paired_difference(a, b, level=[3, 4]).estimate == pytest.approx(pooled)
    assert paired_difference(a, b, level=3).problems == 2 and paired_difference(a, b).problems == 5


def test_pooled_problems_are_resampled_within_their_level():
    """B gains +1/4 on every 3-digit problem and nothing on 4 digits: the held-out set fixes 2 and 4 problems per
    level, so the pooled difference is exactly 2/6 x 1/4 in every resample (drawing across levels would spread it)."""
    a = pd.concat([world_table({0: [0, 2]}, level=3), world_table({0: [0, 1, 3, 4]}, level=4)])
    b = a.assign(correct=a["correct"] + (a["level"] == 3))
    diff = paired_difference(b, a)
    assert diff.low == pytest.approx(1 / 12) and diff.high == pytest.approx(1 / 12)


def test_dataset_tables_are_matched_by_problem_text():
    table = lambda c: pd.DataFrame({"seed": 0, "problem": ["x", "y", "z"], "level": [1, 1, 2], "n": 4, "correct": c})
    assert paired_difference(table([4, 0, 2]), table([0, 0, 2])).estimate == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="different problems"):
        paired_difference(table([4, 0, 2]), table([0, 0, 2]).assign(problem=["x", "y", "w"]))


def test_clear_errors():
    a = world_table({0: [4, 2, 0], 1: [3, 1, 1]})
    with pytest.raises(ValueError, match="different problems.*1 only in a, 0 only in b"):
        paired_difference(a, a[a["a"] != 2])
    with pytest.raises(ValueError, match=r"lacks columns \['seed'\].*stack_seeds"):
        paired_difference(a.drop(columns="seed"), a)
    with pytest.raises(ValueError, match="k=5 exceeds the n=4"):
        paired_difference(a, a, k=5)
    with pytest.raises(ValueError, match=r"seeds \[1\] hold \[2\] problems"):
        paired_difference(a.iloc[:-1], a)
    with pytest.raises(ValueError, match="repeated"):
        paired_difference(pd.concat([a, a.iloc[:1]]), a)
    with pytest.raises(ValueError, match=r"no rows at levels \[4\]"):
        paired_difference(a, a, level=4)
    with pytest.raises(ValueError, match="ci must lie"):
        paired_difference(a, a, ci=1.0)


def test_two_thousand_resamples_of_three_seeds_by_200_problems_are_fast():
    rng = np.random.default_rng(1)
    a, b = (world_table({s: rng.binomial(8, 0.5, 200).tolist() for s in range(3)}, n=8) for _ in range(2))
    start = time.perf_counter()
    paired_difference(a, b, n_boot=2000)
    assert time.perf_counter() - start < 1.0


# --------------------------------------------------------------------------- #
# stack_seeds and pass_at_k_band
# --------------------------------------------------------------------------- #


def test_stack_seeds_adds_the_training_seed():
    one = world_table({0: [1, 2]}).drop(columns="seed")
    stacked = stack_seeds({("GRPO", 0): one, ("GRPO", 2): one, ("DAPO", 0): one}, "GRPO")
    assert sorted(stacked["seed"].unique()) == [0, 2] and len(stacked) == 4
    with pytest.raises(KeyError, match="runs present"):
        stack_seeds({("GRPO", 0): one}, "GSPO")


def test_band_resamples_seeds_as_clusters():
    """Seeds 0 and 2 solve everything and seed 1 nothing: 1 in 27 resamples draws seed 1 three times, so the 95%
    band reaches 0; resampling the 120 (seed, problem) rows as independent would give about 0.67 +- 0.09."""
    table = world_table({0: [4] * 40, 1: [0] * 40, 2: [4] * 40})
    band = pass_at_k_band(table, [1, 2])
    assert band["k"].tolist() == [1, 2]
    assert band["estimate"].tolist() == pytest.approx([2 / 3, 2 / 3])
    assert band["low"].tolist() == [0.0, 0.0] and band["high"].tolist() == [1.0, 1.0]


def test_band_estimate_is_the_unbiased_pooled_pass_at_k():
    table = pd.concat([world_table({0: [1, 3], 1: [0, 4]}, n=4, level=3), world_table({0: [2], 1: [5]}, n=8, level=4)])
    band = pass_at_k_band(table, 2)
    expected = np.mean([exact_pass_at_k(4, c, 2) for c in (1, 3, 0, 4)] + [exact_pass_at_k(8, c, 2) for c in (2, 5)])
    assert band["estimate"].iloc[0] == pytest.approx(expected)
    assert band["low"].iloc[0] <= expected <= band["high"].iloc[0]
    with pytest.raises(ValueError, match="k=8 exceeds the n=4"):
        pass_at_k_band(table, [1, 8])


# --------------------------------------------------------------------------- #
# Calibration of the decision rule at notebook 06's evaluation size
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def run_table() -> pd.DataFrame:
    """A stand-in for one notebook-06 method at one level: 32 held-out problems x 8 samples x 3 training seeds,
    problems' pass@1 spread around 0.6 (the binomially noisiest range) and seed logit offsets -0.2, 0, +0.2
    (notebook 06's committed run: DAPO and pass@4 at 3 digits span about that; GRPO less, NSR more)."""
    rates = np.sort(np.random.default_rng(5).beta(3, 2, 32))
    logits = np.log(rates / (1 - rates))
    return world_table({s: np.random.default_rng(10 + s).binomial(8, 1 / (1 + np.exp(-(logits + o)))).tolist()
                        for s, o in enumerate([-0.2, 0.0, 0.2])}, n=8)


def test_false_call_rate_on_identical_configurations(run_table):
    result = calibrate(run_table, n_sims=200, shift=0.0, seed=0)
    assert result.n_sims == 200 and result.problems == 32 and result.seed_sd > 0.05
    assert result.resolved_rate <= 0.08  # measured 0.020
    assert 0.88 <= result.coverage <= 0.99  # measured 0.980


def test_power_and_coverage_for_a_difference_of_0_1_at_notebook_06_size(run_table):
    """At 32 problems x 8 samples x 3 seeds the rule finds a +0.1 difference in pass@1 about 3 times in 4 (measured
    0.765), short of 0.8; 64 problems (both of notebook 06's levels pooled, or a larger held-out set) reach it."""
    at_06 = calibrate(run_table, n_sims=200, shift=0.1, seed=1)
    assert 0.88 <= at_06.coverage <= 0.99  # measured 0.965
    assert 0.6 <= at_06.resolved_rate < 0.8  # measured 0.765: notebook 06's size does NOT reach 0.8 power
    doubled = calibrate(run_table, n_sims=200, shift=0.1, seed=1, problems=64)
    assert doubled.resolved_rate >= 0.8  # measured 0.890
    assert 0.88 <= doubled.coverage <= 0.99  # measured 0.950


def test_calibrate_rejects_an_unreachable_shift(run_table):
    with pytest.raises(ValueError, match="out of reach"):
        calibrate(run_table, shift=0.6, n_sims=1)


def test_seed_difference_is_welchs_interval_on_per_run_values():
    from rlnb.stats import seed_difference

    a, b = [0.25, 0.27, 0.26], [0.20, 0.21, 0.22]
    d = seed_difference(a, b)
    # by hand: Welch's t with Satterthwaite's degrees of freedom
    va, vb = np.var(a, ddof=1) / 3, np.var(b, ddof=1) / 3
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    half = scipy_stats.t.ppf(0.975, df) * np.sqrt(va + vb)
    assert d.estimate == pytest.approx(0.05) and (d.low, d.high) == pytest.approx((0.05 - half, 0.05 + half))
    assert d.resolved and "above" in d.describe("A", "B", "entropy")
    wide = seed_difference([0.1, 0.9, 0.5], [0.4, 0.5, 0.6])
    assert not wide.resolved and "not resolved with 3 seeds" in wide.describe("A", "B", "pass@1")
    assert seed_difference([1.0, 1.0], [0.0, 0.0]).low == 1.0  # no spread: a point
    with pytest.raises(ValueError, match="at least two runs"):
        seed_difference([1.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="non-finite"):
        seed_difference([1.0, float("nan")], [0.0, 1.0])


def test_seed_difference_false_calls_on_identical_runs_are_near_nominal():
    from rlnb.stats import seed_difference

    rng = np.random.default_rng(0)
    calls = np.mean([seed_difference(rng.normal(0, 1, 3), rng.normal(0, 1, 3)).resolved for _ in range(400)])
    assert calls <= 0.08  # Welch at 3 against 3 is slightly conservative


def test_support_counts_at_k_equal_to_n_are_the_problems_each_model_solves_at_all():
    from rlnb.stats import SUPPORT_COLUMNS, support_dynamics

    base = world_table({0: [2, 0, 1, 0, 0]})   # solves problems 0 and 2
    rl = world_table({0: [4, 3, 0, 0, 1],      # keeps 0, gains 1 and 4, loses 2
                      1: [4, 0, 1, 0, 0]})     # exactly the base's support
    table = support_dynamics(base, rl, k=4).set_index("seed")
    assert list(table.columns) == list(SUPPORT_COLUMNS)
    assert table.loc[0, ["preserved", "expanded", "shrunk", "out"]].tolist() == [1, 2, 1, 1]
    assert table.loc[0, "SRR"] == 0.5 and table.loc[0, "NDR"] == pytest.approx(2 / 3)
    assert table.loc[0, "SDS"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert table.loc[0, "NSCR"] == pytest.approx((2 - 1) / 4)
    assert table.loc[1, ["SRR", "NDR", "NSCR"]].tolist() == [1.0, 0.0, 0.0] and table.loc[1, "SDS"] == 0.0


def test_support_counts_below_n_are_expectations_under_pass_at_k():
    from rlnb.stats import support_dynamics

    base, rl = world_table({0: [2, 4]}), world_table({0: [4, 0]})
    row = support_dynamics(base, rl, k=1).iloc[0]
    # pass@1 is c / n: base 0.5 and 1.0, RL 1.0 and 0.0
    assert row["preserved"] == pytest.approx(0.5) and row["expanded"] == pytest.approx(0.5)
    assert row["shrunk"] == pytest.approx(1.0) and row["out"] == pytest.approx(0.0)
    assert row[["preserved", "expanded", "shrunk", "out"]].sum() == pytest.approx(2)
    nobody = support_dynamics(world_table({0: [0, 0]}), world_table({0: [0, 0]}), k=4).iloc[0]
    assert nobody["out"] == 2 and np.isnan(nobody["SRR"]) and np.isnan(nobody["NSCR"])


def test_support_refuses_tables_of_different_problems_or_a_k_above_n():
    from rlnb.stats import support_dynamics

    with pytest.raises(ValueError, match="different problems"):
        support_dynamics(world_table({0: [1, 1]}), world_table({0: [1, 1, 1]}), k=1)
    with pytest.raises(ValueError, match="exceeds the n=4"):
        support_dynamics(world_table({0: [1]}), world_table({0: [1]}), k=8)


def test_paired_seed_difference_pairs_two_quantities_of_the_same_runs():
    from scipy import stats as sps

    from rlnb.stats import paired_seed_difference, seed_difference

    a, b = [0.9, 0.5, 0.7], [0.85, 0.42, 0.66]  # a large seed spread, a small and steady gap
    d = paired_seed_difference(a, b)
    diff = np.subtract(a, b)
    half = sps.t.ppf(0.975, 2) * diff.std(ddof=1) / np.sqrt(3)
    assert d.estimate == pytest.approx(diff.mean()) and d.low == pytest.approx(diff.mean() - half)
    assert d.resolved and not seed_difference(a, b).resolved  # pairing removes the spread between seeds
    assert paired_seed_difference([1.0, 2.0], [0.5, 1.5]).low == 0.5  # no spread in the differences: a point
    with pytest.raises(ValueError, match="one value of each per run"):
        paired_seed_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="at least two runs"):
        paired_seed_difference([1.0], [0.0])


def test_differences_by_step_compares_each_run_with_the_reference_at_every_step():
    from rlnb.stats import differences_by_step

    table = pd.concat([
        world_table({0: [2, 2], 1: [2, 2]}).assign(run="full", step=15),
        world_table({0: [1, 1], 1: [1, 1]}).assign(run="r4", step=15),
        world_table({0: [4, 4], 1: [4, 4]}).assign(run="full", step=30),
        world_table({0: [4, 4], 1: [4, 4]}).assign(run="r4", step=30),
        world_table({0: [0, 0]}).assign(run="base", step=0),
    ], ignore_index=True)
    out = differences_by_step(table, ["r4"], "full", {3: 0.0}, levels=[3]).set_index("step")
    assert list(out.index) == [15, 30]  # the base's step 0 is not one of the runs' steps
    assert out.loc[15, "minus full"].estimate == pytest.approx(-0.25) and out.loc[15, "gain / full's"] == pytest.approx(0.5)
    assert out.loc[30, "minus full"].estimate == 0.0 and out.loc[30, "gain / full's"] == 1.0
    noisy = differences_by_step(table, ["r4"], "full", {3: 0.45}, levels=[3]).set_index("step")
    assert np.isnan(noisy.loc[15, "gain / full's"])  # the reference gained 0.05 < 0.1: no ratio


def test_base_reach_finds_the_first_k_where_the_base_matches_a_model_or_says_it_never_does():
    from rlnb.stats import base_reach, pass_at_k_band

    base = world_table({0: [1, 0, 0, 0]}, n=8, level=5)  # one problem in four solved once in 8 tries
    rl = world_table({0: [8, 8, 0, 0], 1: [8, 0, 0, 0]}, n=8, level=5)
    curves = pd.concat([pass_at_k_band(base, [1, 2, 4, 8]).assign(model="base", level=5),
                        pass_at_k_band(rl, [1, 2]).assign(model="zero-RL", level=5),
                        pass_at_k_band(rl[rl.seed == 1], [1, 2]).assign(model="zero-RL seed 1", level=5)], ignore_index=True)
    out = base_reach(curves, base, ["zero-RL", "zero-RL seed 1"], at_k=2).set_index("RL model")
    assert out.loc["zero-RL", "first k where the base reaches RL pass@2"] == "> 8"  # RL 0.375 > the base's 0.25 at k=8
    assert out.loc["zero-RL seed 1", "first k where the base reaches RL pass@2"] == 8  # RL 0.25: the base gets there at 8
    assert out.loc["zero-RL", "base success per try"] == pytest.approx(1 / 32)
    assert out.loc["zero-RL", "RL pass@2"].startswith("0.375")
