"""The shipped base presents the world's three regimes (a smaller sample of notebook 00's profile).

Sampling is seeded, so these numbers are the same on every run of the same code;
the thresholds are those of the world's design (``REGIME_RULES`` and the
reliability of the procedure where the base uses it).
"""

import numpy as np
import pytest

from rlnb.metrics import reward_spread
from rlnb.profile import classify, measure_profile
from rlnb.world import LEVELS, REGIMES, levels_in

N = 64


@pytest.fixture(scope="module")
def profile(base):
    model, tok = base
    summary, _, _ = measure_profile(model, tok, LEVELS, per_level=24, n=N)
    return summary


def test_regimes_cover_every_level_and_each_regime():
    assert set(REGIMES) == set(LEVELS)
    assert set(REGIMES.values()) == {"inside", "latent", "outside"}


def test_measured_regime_of_every_level_is_the_declared_one(profile):
    measured = profile["regime"].to_dict()
    assert measured == {lvl: REGIMES[lvl] for lvl in LEVELS}, profile.round(4).to_string()


def test_easiest_inside_level_knows_more_than_it_says(profile):
    row = profile.loc[min(levels_in("inside"))]
    assert 0.05 <= row["task pass@1"] <= 0.5, row
    assert row[f"task pass@{N}"] >= row["task pass@1"] + 0.3, row


def test_procedure_is_reliable_where_the_base_uses_it(profile):
    for lvl in levels_in("inside"):
        assert profile.loc[lvl, "steps chosen"] > 0.05, profile.loc[lvl]
        assert profile.loc[lvl, "steps right"] >= 0.9, profile.loc[lvl]


def test_latent_levels_are_known_but_not_chosen(profile):
    for lvl in levels_in("latent"):
        assert profile.loc[lvl, "worked pass@1"] >= 0.7, profile.loc[lvl]
        assert profile.loc[lvl, "steps chosen"] <= 0.01 and profile.loc[lvl, "task pass@1"] <= 0.01, profile.loc[lvl]


def test_on_policy_sampling_almost_never_meets_a_reward_on_the_hardest_latent_level(profile):
    hardest = max(levels_in("latent"))
    assert profile.loc[hardest, f"task pass@{N}"] <= 0.05, profile.loc[hardest]


def test_outside_level_is_out_of_reach_in_both_forms(profile):
    for lvl in levels_in("outside"):
        assert profile.loc[lvl, f"task pass@{N}"] <= 0.02, profile.loc[lvl]
        assert profile.loc[lvl, "worked pass@1"] <= 0.05, profile.loc[lvl]


def test_task_pass_at_1_does_not_rise_with_the_level(profile):
    values = profile.loc[list(LEVELS), "task pass@1"].to_numpy()
    assert np.all(np.diff(values) <= 1e-9), values


@pytest.mark.parametrize(
    "numbers, regime",
    [((0.3, 1.0, 1.0, 0.2), "inside"), ((0.0, 0.03, 0.9, 0.0), "latent"), ((0.0, 0.0, 0.01, 0.0), "outside"),
     ((0.001, 0.08, 0.9, 0.0), "latent"), ((0.0, 0.2, 0.9, 0.05), None), ((0.6, 0.7, 1.0, 0.5), None)],
)
def test_classify_applies_the_rules(numbers, regime):
    assert classify(*numbers) == regime


def test_reward_spread_matches_the_hand_computed_group():
    # n = 4 samples, c = 2 right, groups of 2: of the 6 pairs, 1 is all right and 1 all wrong.
    assert reward_spread(4, 2, 2) == pytest.approx(4 / 6)
    assert reward_spread(64, 0, 16) == 0.0 and reward_spread(64, 64, 16) == 0.0
    np.testing.assert_allclose(reward_spread(np.array([64, 64]), np.array([1, 63]), 16), [0.25, 0.25])
