"""Notebook 06's pieces: one switch per method, the ratio methods on one batch, accumulation weights,
zero-spread groups, dynamic sampling's cost, and the seed-band table."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from rlnb.evaluate import per_seed_levels, seed_band_table, zero_spread
from rlnb.experiments import (ENTROPY_INTERVENTIONS, GRPO_FAMILY_METHODS, RATIO_METHODS, entropy_intervention_config,
                              grpo_family_base_config, grpo_family_config, grpo_family_job, zero_rl_config)
from rlnb.grpo_family import clip_bands, ratio_effect, token_clip_range
from rlnb.logs import loss_and_gradient, loss_gradient_summary
from rlnb.metrics import dynamic_sampling_cost
from rlnb.train import RunConfig
from rlnb.trainers import accumulation_weights


def test_each_method_is_one_switch_on_the_shared_settings():
    base = grpo_family_base_config("ci", 1).to_dict()
    assert base["grpo"]["steps_per_generation"] == 2 and list(base["levels"]) == [3, 4] and base["num_generations"] == 16
    for name, switch in GRPO_FAMILY_METHODS.items():
        cfg = grpo_family_config("ci", name, 1).to_dict()
        changed = {k for k in base if cfg[k] != base[k]}
        assert changed <= set(switch) | {"grpo", "method_options"}, (name, changed)
        assert cfg["grpo"] == {**base["grpo"], **switch.get("grpo", {})}
        assert cfg["method_options"] == switch.get("method_options", {})
    assert grpo_family_config("ci", "GRPO", 1).to_dict() == base


def test_notebooks_03_and_06_build_on_one_off_policy_zero_rl():
    """Both keep zero-RL's reward scaling and take two optimiser steps per generation batch, whatever a
    method switches (DAPO's and CISPO's loss types; KL-Cov's options next to the entropy measurement)."""
    for cfg in [grpo_family_config("ci", m) for m in GRPO_FAMILY_METHODS] + \
               [entropy_intervention_config("ci", n) for n in ENTROPY_INTERVENTIONS]:
        assert cfg.grpo["steps_per_generation"] == 2 and cfg.scale_rewards == "group", cfg
    assert grpo_family_config("ci", "CISPO").loss_type == "cispo"
    kl_cov = entropy_intervention_config("ci", "KL-Cov").method_options
    assert kl_cov["measure_entropy_change"] is True and kl_cov["kl_coef"] == 5.0


def test_zero_rl_checkpoints_follow_the_runs_own_length():
    assert zero_rl_config("ci").save_steps == zero_rl_config("ci").max_steps // 4
    assert zero_rl_config("ci", max_steps=20).save_steps == 5
    assert zero_rl_config("ci", max_steps=20, save_steps=7).save_steps == 7
    assert set(RATIO_METHODS) < set(GRPO_FAMILY_METHODS)
    assert grpo_family_job("ci", "pass@4", 0).name == "pass-at-4"
    with pytest.raises(ValueError, match="unknown GRPO-family method 'PPO'"):
        grpo_family_config("ci", "PPO")


def test_accumulation_weights_by_hand():
    # 4 rows of lengths 1, 2, 3, 2 (8 tokens); split into 2 micro-batches: rows 0-1 (3 tokens), rows 2-3 (5 tokens).
    mask = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1], [1, 1, 0]], dtype=torch.float64)
    lengths = mask.sum(1, keepdim=True)
    for acc in (1, 2, 4):
        torch.testing.assert_close(accumulation_weights(mask, "dapo", acc, 3), mask / 8)
        torch.testing.assert_close(accumulation_weights(mask, "grpo", acc, 3), mask / (4 * lengths))
        torch.testing.assert_close(accumulation_weights(mask, "dr_grpo", acc, 3), mask / (4 * 3))
    torch.testing.assert_close(accumulation_weights(mask, "bnpo", 1, 3), mask / 8)
    by_hand = torch.cat([mask[:2] / (2 * 3), mask[2:] / (2 * 5)])  # each micro-batch's own tokens, / accumulation
    torch.testing.assert_close(accumulation_weights(mask, "bnpo", 2, 3), by_hand)
    with pytest.raises(ValueError, match="4 rows do not split into 3 equal micro-batches"):
        accumulation_weights(mask, "dapo", 3, 3)


def test_dynamic_sampling_cost():
    assert dynamic_sampling_cost(0.0, 4, 16) == 64
    assert dynamic_sampling_cost(0.75, 4, 16) == 256
    np.testing.assert_allclose(dynamic_sampling_cost(np.array([0.5, 1.0]), 2, 8), [32, np.inf])
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        dynamic_sampling_cost(1.5, 4, 16)


def test_zero_spread_by_hand():
    # Level 3: one problem 1 of 2 right (a group of 2 has spread with probability 1); level 4: never right.
    table = pd.DataFrame({"level": [3, 4, 4], "n": [2, 2, 2], "correct": [1, 0, 0]})
    out = zero_spread(table, [1, 2])
    assert out.loc[3, 1] == 1.0 and out.loc[3, 2] == 0.0 and (out.loc[4] == 1.0).all()
    with pytest.raises(ValueError, match="exceed the 2 samples per problem"):
        zero_spread(table, [4])


def test_seed_bands_and_pass_at_k_per_seed():
    table = pd.DataFrame({"level": [3, 3], "n": [4, 4], "correct": [1, 4], "steps": [0, 4], "mean_length": [5.0, 5.0]})
    out = per_seed_levels({("a", 0): table}, ks=(1, 2))
    assert math.isclose(out["pass@1"].iloc[0], 5 / 8) and math.isclose(out["pass@2"].iloc[0], (0.5 + 1) / 2)
    values = {"x": pd.DataFrame({0: [0.1, 0.5], 1: [0.3, 0.7]}, index=["a", "b"])}
    assert seed_band_table(values, 2).loc["a", "x"] == "0.20 [0.10, 0.30]"


def test_loss_and_gradient_from_the_logs():
    metrics = pd.DataFrame({"run": "r", "seed": 0, "step": [1, 1, 2, 2], "metric": ["loss", "grad_norm"] * 2,
                            "level": None, "value": [0.01, 2.0, -0.03, 4.0]})
    log = loss_and_gradient(metrics)
    assert list(log["loss"]) == [0.01, -0.03] and list(log["grad_norm"]) == [2.0, 4.0]
    summary = loss_gradient_summary(log).loc["r"]
    assert math.isclose(summary["median_abs_loss"], 0.02) and summary["max_abs_loss"] == 0.03
    assert summary["median_grad_norm"] == 3.0


def test_ratio_methods_do_nothing_on_policy(tmp_path):
    tiny = dict(max_steps=2, prompts_per_step=2, num_generations=4, max_completion_length=24, learning_rate=1e-2,
                levels=(3,))
    configs = {name: grpo_family_config("ci", name, 0, **tiny) for name in ("GRPO",) + RATIO_METHODS}
    effect = ratio_effect(configs, tmp_path, prompts=2)
    out = effect.table.set_index(["method", "state"])
    on, off = "on-policy (first step)", "off-policy (after one step)"
    assert out.loc[("GRPO", on), "max |ratio - 1|"] < 1e-5 < out.loc[("GRPO", off), "mean |ratio - 1|"]
    for name in RATIO_METHODS:
        assert out.loc[(name, on), "clip share"] == 0
        assert out.loc[(name, on), "gradient change vs unclipped"] < 1e-4
    # After a large step, GSPO's sequence-ratio clip (3e-4 / 4e-4) cuts sequences and changes the gradient.
    assert out.loc[("GSPO", off), "clip share"] > 0 and out.loc[("GSPO", off), "gradient change vs unclipped"] > 1e-2
    # The token ratios reproduce the shares TRL logged for the token-level clips, and their spread.
    tokens = effect.tokens[effect.tokens.state == off]
    bands = clip_bands(tokens, {m: token_clip_range(configs[m]) for m in ("GRPO", "DAPO", "GMPO")})
    for name in ("GRPO", "DAPO", "GMPO"):
        assert bands.loc[name, "clip share"] == pytest.approx(out.loc[(name, off), "clip share"], abs=1e-6)
    assert (tokens.ratio - 1).abs().max() == pytest.approx(out.loc[("GRPO", off), "max |ratio - 1|"], rel=1e-6)


def test_token_clip_ranges_follow_each_methods_clip():
    ranges = {m: token_clip_range(grpo_family_config("ci", m)) for m in ("GRPO", "DAPO", "GMPO")}
    assert ranges["GRPO"] == pytest.approx((0.8, 1.2)) and ranges["DAPO"] == pytest.approx((0.8, 1.28))
    assert ranges["GMPO"] == pytest.approx((math.exp(-0.4), math.exp(0.4)))  # GMPO clips the log-ratio
    for name in ("GSPO", "CISPO"):
        with pytest.raises(ValueError, match="token-level"):
            token_clip_range(grpo_family_config("ci", name))


def test_clip_bands_count_the_tokens_a_wider_range_lets_through():
    tokens = pd.DataFrame({"ratio": [1.0, 1.25, 1.25, 0.75, 2.0, 0.3],
                           "advantage": [1.0, 1.0, -1.0, -1.0, 1.0, -1.0]})
    bands = clip_bands(tokens, {"narrow": (0.8, 1.2), "wide high": (0.8, 1.3), "wide": (0.5, 1.5)})
    # narrow cuts 1.25 (A > 0), 0.75 (A < 0), 2.0 and 0.3; the 1.25 with A < 0 sits on the side a clip leaves alone.
    assert bands["tokens clipped"].tolist() == [4, 3, 2]
    assert bands.loc["narrow", "clip share"] == pytest.approx(4 / 6)
    assert bands.loc["narrow", "smallest |log ratio| clipped"] == pytest.approx(math.log(1.25))
    assert bands.loc["wide", "smallest |log ratio| clipped"] == pytest.approx(math.log(2.0))
    assert bands["clipped by narrow, not here"].tolist() == [0, 1, 2] and bands["clipped, not by narrow"].tolist() == [0, 0, 0]
    assert bands["tokens between these bounds and narrow's"].tolist() == [0, 2, 3]
    # With no token between the bounds, differently wide ranges clip exactly the same tokens.
    far = pd.DataFrame({"ratio": [1.0, 1.01, 3.0, 0.2], "advantage": [1.0, -1.0, 1.0, -1.0]})
    same = clip_bands(far, {"narrow": (0.8, 1.2), "wide": (0.5, 1.5)})
    assert same["clip share"].nunique() == 1 and same["tokens between these bounds and narrow's"].eq(0).all()
    with pytest.raises(ValueError, match="low < 1 < high"):
        clip_bands(tokens, {"bad": (1.1, 1.2)})
