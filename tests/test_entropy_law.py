"""rlnb.entropy_law: the three tests of Cui et al.'s law tell a shared trend from a relation, and the exact
first-token test measures what it says on the shipped base."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rlnb.entropy_law import extrapolate_law, first_token_law, label_updates, phase_held_slopes
from rlnb.world import EVAL_SEED, make_problems


def _pairs(within_phase_slope: float, seed: int = 0) -> pd.DataFrame:
    """Four runs of 40 updates whose cov and dH both fall with the step; dH also follows cov within the phase.

    The trend is smooth at the scale of the 6-step windows: one that bends within a window (a time constant of
    8 steps) leaves a shared residual the detrending cannot remove, and that residual passes the null too."""
    rng = np.random.default_rng(seed)
    rows = []
    for run in range(4):
        step = np.arange(1, 41)
        trend = np.exp(-step / 20.0)
        wiggle = rng.normal(0, 0.05, step.size)
        cov = trend + wiggle
        dh = 0.5 * trend + within_phase_slope * wiggle + rng.normal(0, 0.01, step.size)
        rows.append(pd.DataFrame({"run": f"r{run}", "seed": 0, "step": step, "cov": cov, "dH": dh}))
    return pd.concat(rows, ignore_index=True)


def test_a_shared_trend_passes_the_across_steps_null_but_not_the_phase_held_one():
    table = phase_held_slopes(_pairs(within_phase_slope=0.0), steps_per_generation=2, window=6, n_perm=300, n_boot=200)
    assert list(table.index) == ["all", "on-policy", "off-policy"] and table.loc["all", "n"] == 160
    assert table.loc["all", "p (across steps)"] < 0.01  # the phase contrast looks like a relation
    assert table.loc["all", "p (within windows)"] > 0.05  # and is not one
    assert abs(table.loc["all", "slope, detrended"]) < table.loc["all", "slope, shuffled across steps"] / 5


def test_a_relation_within_the_phase_is_found_with_its_sign():
    table = phase_held_slopes(_pairs(within_phase_slope=-1.0), steps_per_generation=2, window=6, n_perm=300, n_boot=200)
    assert table.loc["all", "slope, detrended"] < -0.5 and table.loc["all", "p (within windows)"] < 0.01
    high = float(table.loc["all", "95% over runs"].strip("[]").split(",")[1])
    assert high < 0


def test_updates_alternate_on_and_off_policy_within_each_generation_batch():
    labelled = label_updates(_pairs(0.0).head(4), steps_per_generation=2)
    assert list(labelled["kind"]) == ["on-policy", "off-policy", "on-policy", "off-policy"]
    assert labelled["series"].iloc[0] == "r0/0/on-policy"


def test_the_law_extrapolates_blocks_that_follow_it_and_the_unfitted_run_is_left_out():
    entropy = np.linspace(0.4, 0.01, 8)
    blocks = []
    for run in ("a", "b", "c"):
        blocks.append(pd.DataFrame({"entropy": entropy, "accuracy": -1.5 * np.exp(entropy) + 2.5 + 0.05 * entropy ** 2,
                                    "last step": np.arange(1, 9) * 5, "run": run, "seed": 0}))
    blocks.append(pd.DataFrame({"entropy": np.full(4, 0.05), "accuracy": np.full(4, 0.3), "last step": np.arange(5, 9) * 5,
                                "run": "bonus", "seed": 0}))
    fit = extrapolate_law(pd.concat(blocks, ignore_index=True), fit_until=20, not_fitted=["bonus"])
    assert abs(fit.law.a - 1.5) < 0.1 and len(fit.gap) == 3
    assert fit.late_errors.loc[("bonus", 0), "law error"] > 0.5  # predicted, badly, but not fitted
    assert fit.gap.mean() > 0 and fit.gap_ci[0] > 0  # the line bends away from the curved law late


def test_the_first_token_test_on_the_base_covers_the_mass_and_stays_first_order(base):
    model, tokenizer = base
    was_training = model.training
    first = first_token_law(model, tokenizer, make_problems((3,), 2, seed=EVAL_SEED + 11), rollouts=8, lr=1e-3,
                            temperature=1.0, max_new_tokens=32)
    assert len(first) == 2 and (first["mass"] > 0.99).all() and (first["tokens"] >= 2).all()
    assert np.allclose(first["dH"], first["dH first order"], rtol=0.2, atol=2e-3)
    assert model.training == was_training  # handed back in the mode it came in, its weights untouched by the step
