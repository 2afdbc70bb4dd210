"""rlnb.logs: series, windows and before/after pairs cut out of stacked training logs, and the slope test."""

import numpy as np
import pandas as pd
import pytest

from rlnb.logs import completions_generated, entropy_changes, head_tail, series, slope_against_null, tail_means
from rlnb.world import token_role


def _log(run, seed, steps, **metrics):
    return pd.DataFrame([{"run": run, "seed": seed, "step": s, "metric": m, "level": "", "value": f(s)}
                         for s in steps for m, f in metrics.items()])


def test_series_tail_means_and_head_tail():
    log = pd.concat([_log("a", 0, range(1, 11), entropy=lambda s: 1.0 / s),
                     _log("a", 1, range(1, 11), entropy=lambda s: 2.0 / s)])
    both = series(log, "a", "entropy")
    assert both[2] == pytest.approx((0.5 + 1.0) / 2)
    assert series(log, "a", "entropy", seed=1)[4] == 0.5
    with pytest.raises(KeyError, match="no 'loss' logged for run 'a'"):
        series(log, "a", "loss")
    table = tail_means(log, "entropy", 0.2)  # steps 9 and 10
    assert table.loc["a", 0] == pytest.approx((1 / 9 + 1 / 10) / 2) and table.loc["a", 1] == pytest.approx(2 * table.loc["a", 0])
    head, tail = head_tail(pd.Series(np.arange(10.0)), 0.2)
    assert (head, tail) == (0.5, 8.5)
    with pytest.raises(ValueError, match="fraction"):
        head_tail(pd.Series([1.0]), 0.9)


def test_entropy_changes_pair_each_update_with_the_covariance_of_its_own_batch():
    # update t's change is logged at step t + 1: change[t + 1] = -t, cov[t] = 10 t
    log = _log("r", 0, range(1, 5), cov_logp_adv=lambda s: 10.0 * s)
    log = pd.concat([log, _log("r", 0, range(2, 5), entropy_change=lambda s: -(s - 1.0))])
    pairs = entropy_changes(log)
    assert pairs["step"].tolist() == [1, 2, 3]
    assert pairs["cov"].tolist() == [10.0, 20.0, 30.0] and pairs["dH"].tolist() == [-1.0, -2.0, -3.0]
    with pytest.raises(KeyError, match="measure_entropy_change"):
        entropy_changes(_log("r", 0, range(1, 3), cov_logp_adv=lambda s: 1.0))


def test_slope_against_null_finds_a_planted_slope_and_not_a_missing_one():
    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    groups = np.repeat([0, 1, 2], 100)
    planted = slope_against_null(x, -2.0 * x + rng.normal(size=300), groups, n_perm=500)
    assert planted["lo"] < -2.0 < planted["hi"] and planted["hi"] < planted["null_lo"] and planted["p"] < 0.01
    none = slope_against_null(x, rng.normal(size=300), groups, n_perm=500)
    assert none["null_lo"] < none["slope"] < none["null_hi"] and none["p"] > 0.01
    with pytest.raises(ValueError, match="at least 3"):
        slope_against_null(np.ones(2), np.ones(2))


def test_token_roles_of_a_world_completion():
    tokens = ["3", "+", "4", "+", "0", "=", "7", ";", "A", "7", "</s>"]
    roles = [token_role(tokens, i, "</s>") for i in range(len(tokens))]
    assert roles[0] == "first token (steps or guess?)" and roles[1] == "step token"
    assert roles[8] == "answer marker A" and roles[9] == "answer digit" and roles[10] == "end of sequence"


def test_first_at_least_gives_the_first_step_at_the_threshold_or_none():
    from rlnb.logs import first_at_least

    values = pd.Series([0.0, 0.05, 0.12, 0.08, 0.3], index=[1, 2, 3, 4, 5])
    assert first_at_least(values, 0.1) == 3
    assert first_at_least(values, 0.3) == 5  # reaching the threshold counts
    assert first_at_least(values, 0.5) is None


def test_steps_to_reach_reads_the_first_step_a_rolling_mean_crosses_and_nan_where_none_does():
    from rlnb.logs import steps_to_reach

    log = pd.DataFrame({"run": ["a"] * 6 + ["b"] * 6, "step": list(range(1, 7)) * 2,
                        "accuracy": [0.0, 1.0, 1.0, 1.0, 1.0, 1.0] + [0.2] * 6})
    reached = steps_to_reach(log.sample(frac=1, random_state=0), "accuracy", 0.6, ["run"], window=3)
    assert reached["a"] == 3.0 and np.isnan(reached["b"])  # (0 + 1 + 1) / 3 = 0.67 at step 3; unsorted input
    assert steps_to_reach(log, "accuracy", 0.6, ["run"], window=1)["a"] == 2.0


def test_completions_generated_counts_dynamic_samplings_refills():
    plain = pd.DataFrame({"step": [1, 2], "metric": "loss", "level": None, "value": [0.1, 0.2]})
    assert completions_generated(plain, [2, 4], per_step=64).tolist() == [128.0, 256.0]
    refilled = pd.DataFrame({"step": [1, 1, 3, 3], "metric": ["dynamic_sampling/generations", "loss"] * 2,
                             "level": None, "value": [256.0, 0.1, 384.0, 0.2]})
    out = completions_generated(refilled, [2, 3, 4], per_step=64)
    assert out.to_dict() == {2: 256.0, 3: 640.0, 4: 640.0}  # each batch counted on its first step
