"""Tests for rlnb.metrics: each checks a value derived independently of the code under test."""

from __future__ import annotations

import itertools
import math
import time
import tracemalloc
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
import torch

from rlnb.metrics import (
    EntropyLawFit,
    bootstrap_pass_at_k,
    centered_logp_adv_cov,
    coverage_table,
    crossover_k,
    fit_entropy_reward_law,
    forking_token_positions,
    logp_adv_covariance,
    masked_mean,
    pass_at_k,
    pass_at_k_curve,
    powers_of_two,
    token_entropy,
    top_entropy_mask,
)

# --------------------------------------------------------------------------- #
# pass@k
# --------------------------------------------------------------------------- #


def _brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(samples, k))
    return sum(any(s) for s in subsets) / len(subsets)


def test_pass_at_k_matches_enumeration_of_all_subsets() -> None:
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                expected = _brute_force_pass_at_k(n, c, k)
                assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12), (n, c, k)


@pytest.mark.parametrize("c", [0, 1, 3, 100, 512, 1000, 1020, 1024])
@pytest.mark.parametrize("k", [1, 2, 5, 64, 500, 1024])
def test_pass_at_k_matches_exact_fractions_for_large_n(c: int, k: int) -> None:
    n = 1024
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), abs=1e-9)


def test_pass_at_k_is_exactly_one_when_every_subset_holds_a_correct_sample() -> None:
    assert pass_at_k(10, 7, 4) == 1.0
    assert pass_at_k(4096, 4096, 4096) == 1.0
    assert math.copysign(1.0, pass_at_k(10, 0, 4)) == 1.0  # +0.0, not -0.0


def test_pass_at_k_stable_at_4096() -> None:
    values = pass_at_k(4096, np.arange(0, 4097, 64), 512)
    assert np.all(np.isfinite(values))
    assert np.all(np.diff(values) >= 0)
    exact = 1 - Fraction(math.comb(4096 - 3, 512), math.comb(4096, 512))
    assert pass_at_k(4096, 3, 512) == pytest.approx(float(exact), abs=1e-12)


def test_pass_at_k_broadcasts_and_matches_scalar_calls() -> None:
    c = np.array([[0], [1], [5], [16]])
    k = np.array([1, 4, 16])
    out = pass_at_k(16, c, k)
    assert isinstance(out, np.ndarray)
    assert out.shape == (4, 3)
    for i, j in itertools.product(range(4), range(3)):
        assert out[i, j] == pass_at_k(16, int(c[i, 0]), int(k[j]))

    mixed_n = pass_at_k(np.array([8, 16]), np.array([2, 2]), 4)
    assert mixed_n == pytest.approx([pass_at_k(8, 2, 4), pass_at_k(16, 2, 4)])


def test_pass_at_k_returns_python_float_for_scalars() -> None:
    assert type(pass_at_k(4, 1, 2)) is float
    assert type(pass_at_k(np.int64(4), np.int64(1), np.int64(2))) is float
    assert isinstance(pass_at_k(4, [1], 2), np.ndarray)


@pytest.mark.parametrize(
    ("n", "c", "k", "name"),
    [
        (4, 1, 5, "k"),  # k > n
        (4, 5, 1, "c"),  # c > n
        (-1, 0, 1, "n"),
        (4, -1, 1, "c"),
        (4, 1, -1, "k"),
        (4, 1, 0, "k"),
        (4, 1.5, 1, "c"),
        (4.5, 1, 1, "n"),
        (4, np.array([1, 5]), 2, "c"),
    ],
)
def test_pass_at_k_rejects_bad_input_naming_the_argument(n, c, k, name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        pass_at_k(n, c, k)


HUGE_N_CASES = [
    # (n, c, k, exact pass@k); C(n-c, k) / C(n, k) is computed exactly, with small k or c.
    (10**12, 1, 1, Fraction(1, 10**12)),
    (10**12, 10**8, 3, 1 - Fraction(math.comb(10**12 - 10**8, 3), math.comb(10**12, 3))),
    (10**12, 5 * 10**11, 2, 1 - Fraction(math.comb(5 * 10**11, 2), math.comb(10**12, 2))),
    (10**15, 123_456_789, 4, 1 - Fraction(math.comb(10**15 - 123_456_789, 4), math.comb(10**15, 4))),
    # c = 2: C(n-2, k) / C(n, k) = (n-k)(n-k-1) / (n(n-1)), with k a million.
    (10**12, 2, 10**6, 1 - Fraction((10**12 - 10**6) * (10**12 - 10**6 - 1), 10**12 * (10**12 - 1))),
]


@pytest.mark.parametrize(("n", "c", "k", "exact"), HUGE_N_CASES)
def test_pass_at_k_for_huge_n_is_exact_without_materialising_n_terms(n: int, c: int, k: int, exact: Fraction) -> None:
    # Issue #17 item 8: pass_at_k(10**12, 1, 1) tried to allocate 7 TiB (one term per sample).
    tracemalloc.start()
    start = time.perf_counter()
    try:
        value = pass_at_k(n, c, k)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert value == pytest.approx(float(exact), rel=1e-12)
    assert peak < 2**20
    assert time.perf_counter() - start < 1.0


def test_pass_at_k_for_huge_n_broadcasts_like_small_n() -> None:
    c = np.array([0, 1, 10**8, 10**12])
    out = pass_at_k(10**12, c, 3)
    assert out.tolist() == [pass_at_k(10**12, int(value), 3) for value in c]
    assert out[0] == 0.0 and out[-1] == 1.0
    with pytest.raises(ValueError, match=r"^k \(10000000000001\) must not exceed n"):
        pass_at_k(10**13, 1, 10**13 + 1)


def test_pass_at_k_is_exactly_one_once_failure_is_below_double_precision() -> None:
    # c k / n = 42: the failure probability is below exp(-42), under half an ulp of 1.0.
    assert pass_at_k(10**12, 7 * 10**6, 6 * 10**6) == 1.0
    assert pass_at_k(4096, 420, 420) == 1.0 == 1 - float(Fraction(math.comb(4096 - 420, 420), math.comb(4096, 420)))


def test_powers_of_two() -> None:
    assert powers_of_two(1) == [1]
    assert powers_of_two(16) == [1, 2, 4, 8, 16]
    assert powers_of_two(12) == [1, 2, 4, 8, 12]
    with pytest.raises(ValueError, match="^n"):
        powers_of_two(0)


def test_pass_at_k_curve_is_mean_over_problems() -> None:
    correct = np.array([0, 3, 12, 7])
    curve = pass_at_k_curve(12, correct)
    expected = [np.mean([pass_at_k(12, c, k) for c in correct]) for k in [1, 2, 4, 8, 12]]
    assert curve == pytest.approx(expected)
    assert pass_at_k_curve(12, correct, ks=[3]) == pytest.approx(
        [np.mean([pass_at_k(12, c, 3) for c in correct])]
    )
    with pytest.raises(ValueError, match="^correct"):
        pass_at_k_curve(12, np.array([13]))
    with pytest.raises(ValueError, match="^ks"):
        pass_at_k_curve(12, correct, ks=[16])


# --------------------------------------------------------------------------- #
# bootstrap
# --------------------------------------------------------------------------- #


def test_bootstrap_frame_shape_and_determinism() -> None:
    rng = np.random.default_rng(1)
    correct = rng.binomial(256, rng.beta(0.5, 2.0, size=500))
    start = time.perf_counter()
    table = bootstrap_pass_at_k(256, correct)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0
    assert list(table.columns) == ["k", "pass_at_k", "lo", "hi"]
    assert table["k"].tolist() == powers_of_two(256)
    assert table["pass_at_k"].to_numpy() == pytest.approx(pass_at_k_curve(256, correct))
    assert np.all(table["lo"] <= table["pass_at_k"])
    assert np.all(table["pass_at_k"] <= table["hi"])
    assert np.all(table["hi"] - table["lo"] > 0)
    pd.testing.assert_frame_equal(table, bootstrap_pass_at_k(256, correct))


def test_bootstrap_band_covers_true_pass_at_k_at_nominal_rate() -> None:
    """Problems are drawn from a known population, so the bootstrap's target is known."""
    rng = np.random.default_rng(2025)
    population = rng.beta(0.4, 1.2, size=200)
    ks = np.array([1, 8])
    truth = np.array([np.mean(1 - (1 - population) ** k) for k in ks])
    trials = 200
    covered = np.zeros(len(ks))
    for trial in range(trials):
        p = population[rng.integers(0, population.size, size=population.size)]
        correct = rng.binomial(32, p)
        band = bootstrap_pass_at_k(32, correct, ks=ks, n_boot=300, seed=trial)
        covered += (band["lo"].to_numpy() <= truth) & (truth <= band["hi"].to_numpy())
    coverage = covered / trials
    assert np.all((coverage >= 0.85) & (coverage <= 0.99)), coverage


def test_bootstrap_rejects_bad_ci() -> None:
    with pytest.raises(ValueError, match="^ci"):
        bootstrap_pass_at_k(4, np.array([1, 2]), ci=1.0)


# --------------------------------------------------------------------------- #
# token entropy
# --------------------------------------------------------------------------- #


def test_token_entropy_matches_categorical() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 50) * 3
    expected = torch.distributions.Categorical(logits=logits).entropy()
    out = token_entropy(logits)
    assert out.dtype == torch.float32
    assert out.shape == (3, 5)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("scale", [10.0, 1e3])
def test_token_entropy_low_precision_large_logits(dtype: torch.dtype, scale: float) -> None:
    torch.manual_seed(1)
    low = (torch.randn(4, 6, 300) * scale).to(dtype)
    assert torch.isfinite(low).all()
    out = token_entropy(low)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    expected = torch.distributions.Categorical(logits=low.float()).entropy()
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


def test_token_entropy_handles_masked_vocabulary() -> None:
    logits = torch.tensor(
        [
            [1.0, 2.0, float("-inf"), 0.5, float("-inf")],
            [float("-inf"), 3.0, float("-inf"), float("-inf"), float("-inf")],
        ],
        requires_grad=True,
    )
    out = token_entropy(logits)
    assert torch.isfinite(out).all()
    finite = torch.distributions.Categorical(logits=torch.tensor([1.0, 2.0, 0.5])).entropy()
    torch.testing.assert_close(out[0], finite)
    assert out[1].item() == 0.0
    out.sum().backward()
    assert torch.isfinite(logits.grad).all()


# --------------------------------------------------------------------------- #
# masked mean and Cov(log pi, A)
# --------------------------------------------------------------------------- #


def test_masked_mean_respects_mask_and_empty_mask() -> None:
    values = torch.tensor([[1.0, 2.0, float("nan")], [3.0, float("inf"), 6.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]])
    assert masked_mean(values, mask).item() == pytest.approx(3.0)
    assert masked_mean(values, mask.bool()).item() == pytest.approx(3.0)
    assert masked_mean(values, torch.zeros_like(mask)).item() == 0.0
    with pytest.raises(ValueError, match="^mask"):
        masked_mean(values, mask[:, :2])


def test_centered_logp_adv_cov_on_constructed_case() -> None:
    nan = float("nan")
    logps = torch.tensor([[-1.0, -3.0, nan], [-2.0, -2.0, -4.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    advantages = torch.tensor([1.0, -1.0])
    # valid log pi: -1 -3 -2 -2 -4 (mean -2.4); per-token A: 1 1 -1 -1 -1 (mean -0.2)
    expected = torch.tensor([[1.4 * 1.2, -0.6 * 1.2, 0.0], [0.4 * -0.8, 0.4 * -0.8, -1.6 * -0.8]])
    out = centered_logp_adv_cov(logps, advantages, mask)
    torch.testing.assert_close(out, expected)

    per_token = advantages[:, None].expand(2, 3).clone()
    per_token[0, 2] = 100.0  # padding advantage must not matter
    torch.testing.assert_close(centered_logp_adv_cov(logps, per_token, mask), expected)

    valid_logps = np.array([-1.0, -3.0, -2.0, -2.0, -4.0])
    valid_adv = np.array([1.0, 1.0, -1.0, -1.0, -1.0])
    reference = np.cov(valid_logps, valid_adv, bias=True)[0, 1]
    assert logp_adv_covariance(logps, advantages, mask) == pytest.approx(reference)
    assert reference == pytest.approx(0.32)


def test_centered_logp_adv_cov_rejects_bad_advantage_shape() -> None:
    with pytest.raises(ValueError, match="^advantages"):
        centered_logp_adv_cov(torch.zeros(2, 3), torch.zeros(3), torch.ones(2, 3))


# --------------------------------------------------------------------------- #
# forking tokens
# --------------------------------------------------------------------------- #


def test_top_entropy_mask_selects_top_fifth_of_valid_tokens() -> None:
    entropies = torch.tensor([[3.0, 9.0, 0.0, 5.0, 1.0, 6.0], [8.0, 2.0, 7.0, 4.0, 100.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    selected = top_entropy_mask(entropies, mask, quantile=0.2)
    expected = torch.zeros(2, 6, dtype=torch.bool)
    expected[0, 1] = True
    expected[1, 0] = True
    assert selected.dtype == torch.bool
    assert torch.equal(selected, expected)
    np.testing.assert_allclose(forking_token_positions(entropies, mask, 0.2), [0.2, 0.0])


def test_top_entropy_mask_keeps_ties_and_agrees_with_torch_quantile() -> None:
    flat = torch.ones(2, 4)
    assert torch.equal(top_entropy_mask(flat, torch.ones(2, 4)), torch.ones(2, 4, dtype=torch.bool))

    torch.manual_seed(3)
    entropies = torch.rand(8, 40)
    mask = torch.rand(8, 40) > 0.3
    threshold = torch.quantile(entropies[mask], 0.7)
    expected = mask & (entropies >= threshold)
    assert torch.equal(top_entropy_mask(entropies, mask, quantile=0.3), expected)
    assert not top_entropy_mask(entropies, torch.zeros_like(mask)).any()


def test_forking_positions_count_valid_tokens_only() -> None:
    # Left-padded row of length 3, then a one-token completion.
    entropies = torch.tensor([[50.0, 0.1, 0.2, 9.0], [0.0, 8.0, 50.0, 50.0]])
    mask = torch.tensor([[0, 1, 1, 1], [0, 1, 0, 0]])
    # valid entropies: 0.1 0.2 9.0 8.0 -> top half is {9.0, 8.0}
    positions = forking_token_positions(entropies, mask, quantile=0.5)
    np.testing.assert_allclose(positions, [1.0, 0.0])


# --------------------------------------------------------------------------- #
# entropy-reward law
# --------------------------------------------------------------------------- #


def test_law_fit_exact_data() -> None:
    h = np.linspace(0.05, 1.5, 20)
    fit = fit_entropy_reward_law(h, -0.3 * np.exp(h) + 0.95)
    assert isinstance(fit, EntropyLawFit)
    assert fit.a == pytest.approx(0.3)
    assert fit.b == pytest.approx(0.95)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    assert fit.ceiling == pytest.approx(0.65)
    assert fit.predict(0.0) == pytest.approx(0.65)
    assert fit.predict(np.array([0.0, 1.0])) == pytest.approx([0.65, 0.95 - 0.3 * np.e])


def test_law_fit_recovers_parameters_from_noisy_data() -> None:
    rng = np.random.default_rng(7)
    h = np.linspace(0.1, 2.0, 60)
    a, b = 0.12, 0.9
    reward = -a * np.exp(h) + b + rng.normal(0, 0.02, size=h.size)
    fit = fit_entropy_reward_law(h, reward)
    assert abs(fit.a - a) < 4 * fit.a_se
    assert abs(fit.b - b) < 4 * fit.b_se
    assert 0.9 < fit.r2 < 1.0

    # The 95% intervals cover the true parameters at close to the nominal rate.
    draws = 400
    covered = np.zeros(2)
    for _ in range(draws):
        noisy = fit_entropy_reward_law(h, -a * np.exp(h) + b + rng.normal(0, 0.02, size=h.size))
        covered += [noisy.a_ci[0] <= a <= noisy.a_ci[1], noisy.b_ci[0] <= b <= noisy.b_ci[1]]
    assert np.all((covered / draws > 0.9) & (covered / draws < 0.99)), covered / draws

    # Standard errors agree with numpy's independent polynomial-fit covariance.
    (slope, intercept), cov = np.polyfit(np.exp(h), reward, 1, cov=True)
    assert fit.a == pytest.approx(-slope)
    assert fit.b == pytest.approx(intercept)
    assert fit.a_se == pytest.approx(np.sqrt(cov[0, 0]))
    assert fit.b_se == pytest.approx(np.sqrt(cov[1, 1]))


def test_law_fit_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        fit_entropy_reward_law(np.array([0.1, 0.2]), np.array([0.5, 0.4]))
    with pytest.raises(ValueError, match="equal length"):
        fit_entropy_reward_law(np.array([0.1, 0.2, 0.3]), np.array([0.5, 0.4]))


# --------------------------------------------------------------------------- #
# crossover and coverage
# --------------------------------------------------------------------------- #

KS = [1, 2, 4, 8, 16]
RL = [0.5, 0.6, 0.7, 0.75, 0.8]


def test_crossover_interpolates_in_log2_k() -> None:
    base = [0.3, 0.5, 0.65, 0.8, 0.9]  # gap -0.05 at k=4, +0.05 at k=8 -> halfway in log2
    assert crossover_k(KS, RL, base) == pytest.approx(2**2.5)


def test_crossover_exactly_at_a_point_and_none_cases() -> None:
    assert crossover_k(KS, RL, [0.3, 0.5, 0.7, 0.8, 0.9]) == 4.0
    assert crossover_k(KS, RL, [0.1, 0.2, 0.3, 0.4, 0.5]) is None
    assert crossover_k(KS, RL, [0.6, 0.7, 0.8, 0.9, 1.0]) is None  # base never below


def test_crossover_validates_input() -> None:
    with pytest.raises(ValueError, match="equal length"):
        crossover_k(KS, RL, [0.1, 0.2])
    with pytest.raises(ValueError, match="increasing"):
        crossover_k([1, 4, 2, 8, 16], RL, RL)


def test_coverage_table_on_constructed_case() -> None:
    base = np.array([0, 1, 3, 0, 2, 0])
    rl = np.array([0, 0, 4, 5, 1, 0])
    table = coverage_table(base, rl)
    assert list(table.index) == ["base only", "rl only", "both", "neither"]
    assert table["problems"].tolist() == [1, 1, 2, 2]
    assert table["fraction"].to_numpy() == pytest.approx([1 / 6, 1 / 6, 2 / 6, 2 / 6])
    assert list(coverage_table(base, rl, names=("a", "b")).index[:2]) == ["a only", "b only"]
    with pytest.raises(ValueError, match="equal shapes"):
        coverage_table(base, rl[:3])


def _band(means, half=0.02):
    means = np.asarray(means, dtype=float)
    return pd.DataFrame({"k": KS, "pass_at_k": means, "lo": np.clip(means - half, 0, 1), "hi": np.clip(means + half, 0, 1)})


@pytest.mark.parametrize("rl, base, verdict", [
    ([0.5, 0.6, 0.7, 0.75, 0.8], [0.3, 0.45, 0.65, 0.85, 0.95], "crossover"),
    ([0.5, 0.7, 0.9, 1.0, 1.0], [0.2, 0.4, 0.7, 0.99, 1.0], "RL ahead, then both saturate"),
    ([0.5, 0.6, 0.7, 0.75, 0.8], [0.3, 0.45, 0.65, 0.76, 0.81], "RL ahead, then tied"),
    ([0.5, 0.6, 0.7, 0.75, 0.8], [0.1, 0.2, 0.3, 0.4, 0.5], "RL ahead at every k"),
    ([0.0, 0.01, 0.1, 0.3, 0.5], [0.0, 0.0, 0.02, 0.05, 0.1], "RL ahead at large k"),
    ([0.3, 0.45, 0.65, 0.76, 0.8], [0.3, 0.45, 0.65, 0.76, 0.81], "tied at every k"),
    ([0.0] * 5, [0.0] * 5, "both zero"),
    ([0.1, 0.2, 0.3, 0.4, 0.5], [0.3, 0.4, 0.5, 0.6, 0.7], "base ahead"),
])
def test_compare_pass_at_k_claims_a_crossover_only_beyond_the_bands(rl, base, verdict):
    from rlnb.metrics import CURVE_VERDICTS, compare_pass_at_k

    result = compare_pass_at_k(_band(rl), _band(base))
    assert result.verdict == verdict and verdict in CURVE_VERDICTS
    if verdict == "crossover":
        assert result.rl_ahead == (1, 2, 4) and result.base_ahead == (8, 16)
        assert result.crossover == pytest.approx(crossover_k(KS, rl, base))
    else:
        assert result.crossover is None


def test_compare_pass_at_k_needs_the_same_ks():
    from rlnb.metrics import compare_pass_at_k

    with pytest.raises(ValueError, match="share their ks"):
        compare_pass_at_k(_band(RL), _band(RL).iloc[:3])
