"""Evaluation and training-dynamics metrics shared by the notebooks.

Three families live here:

* **pass@k** (Chen et al. 2021) with a problem-level bootstrap, the currency of
  the "does RL expand or only sharpen the base model's support?" question, plus
  the crossover point where the base model's pass@k catches up with the RL
  model's and a per-problem coverage table;
* **entropy dynamics** (Cui et al. 2025): per-token entropy, the centred
  Cov(log pi, A) term that drives entropy change, and the fit of the empirical
  law R = -a * exp(H) + b whose intercept is the reward ceiling at entropy 0;
* **forking tokens** (Wang et al. 2025): the high-entropy minority of tokens
  and where they sit inside completions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats

ArrayLike = int | float | Sequence[int] | np.ndarray


# --------------------------------------------------------------------------- #
# pass@k
# --------------------------------------------------------------------------- #


def _as_counts(value: ArrayLike, name: str) -> np.ndarray:
    """Coerce to non-negative int64 so a float count like 2.5 fails loudly.

    Integral floats (3.0) are accepted because counts often pass through
    pandas, which turns integer columns into floats.
    """
    arr = np.asarray(value)
    integral = arr.dtype.kind in "iu" or (
        arr.dtype.kind == "f" and bool(np.all(np.isfinite(arr) & (arr == np.round(arr))))
    )
    if not integral:
        raise ValueError(f"{name} must hold integers, got {arr.dtype} values {value!r}")
    arr = arr.astype(np.int64)
    if np.any(arr < 0):
        raise ValueError(f"{name} must be non-negative, got {arr[arr < 0].flat[0]}")
    return arr


def _first_violation(bad: np.ndarray, *arrays: np.ndarray) -> tuple[int, ...]:
    """The values at the first offending position, so an error shows a concrete case."""
    index = tuple(np.argwhere(bad)[0])
    return tuple(int(a[index]) for a in arrays)


_SURE_PASS_EXPONENT = 40.0
"""C(n-c, k) / C(n, k) <= exp(-c k / n), so once c k / n exceeds this the failure
probability is below 2**-54 and pass@k rounds to exactly 1.0 in float64."""
_CHUNK_ELEMENTS = 2**20
"""Rows of k factors are summed this many elements at a time, to bound memory."""


def _pass_at_k_fixed(n: int, k: int, c: np.ndarray) -> np.ndarray:
    """pass@k for one (n, k) and many c, from at most min(c, k) factors per c.

    The failure probability C(n-c, k) / C(n, k) is symmetric in c and k:
    prod_{j<c} (1 - k/(n-j)) = prod_{j<k} (1 - c/(n-j)). Summing log1p of the
    factors avoids factorials that overflow past n ~ 170, and never touches all n
    of them (n may be 10**12). For c <= k one cumulative sum of the c-form serves
    every c at once; for c > k each distinct c takes k factors. Once c > n - k
    every k-subset contains a correct sample, and once c k / n is large the
    result rounds to 1: both are exactly 1 with no factors. ``-expm1`` keeps
    relative precision when pass@k itself is tiny.
    """
    log_fail = np.zeros(c.shape, dtype=np.float64)
    sure = (c > n - k) | (c.astype(np.float64) * k > _SURE_PASS_EXPONENT * n)
    few = ~sure & (c <= k)
    if few.any():
        j = np.arange(int(c[few].max()), dtype=np.float64)
        cumulative = np.concatenate([[0.0], np.cumsum(np.log1p(-k / (n - j)))])
        log_fail[few] = cumulative[c[few]]
    many = ~sure & (c > k)
    if many.any():
        values, inverse = np.unique(c[many], return_inverse=True)
        log_fail[many] = _log_fail_from_k_factors(n, k, values)[inverse.ravel()]
    # 0.0 - x rather than -x, so that c = 0 gives +0.0, not -0.0.
    return np.where(sure, 1.0, 0.0 - np.expm1(log_fail))


def _log_fail_from_k_factors(n: int, k: int, c: np.ndarray) -> np.ndarray:
    """sum_{j<k} log1p(-c / (n - j)) for each c, in chunks of rows of k factors."""
    remaining = n - np.arange(k, dtype=np.float64)
    rows = max(1, _CHUNK_ELEMENTS // k)
    return np.concatenate([
        np.log1p(-(c[start : start + rows, None] / remaining)).sum(axis=1) for start in range(0, c.size, rows)
    ])


def pass_at_k(n: ArrayLike, c: ArrayLike, k: ArrayLike) -> float | np.ndarray:
    """Unbiased pass@k estimate from c correct out of n samples (Chen et al. 2021).

    The naive estimate 1 - (1 - c/n)^k is biased low; 1 - C(n-c,k)/C(n,k) is the
    probability that a random k-subset of the n samples contains a correct one.
    Arguments broadcast like numpy arrays; all-scalar input returns a float.
    """
    scalar = all(np.ndim(v) == 0 for v in (n, c, k))
    n_arr, c_arr, k_arr = _as_counts(n, "n"), _as_counts(c, "c"), _as_counts(k, "k")
    if np.any(k_arr < 1):
        raise ValueError(f"k must be at least 1, got {k_arr[k_arr < 1].flat[0]}")
    try:
        n_b, c_b, k_b = np.broadcast_arrays(n_arr, c_arr, k_arr)
    except ValueError as err:
        raise ValueError(
            f"n, c and k do not broadcast: shapes {n_arr.shape}, {c_arr.shape}, {k_arr.shape}"
        ) from err
    if np.any(c_b > n_b):
        bad_c, bad_n = _first_violation(c_b > n_b, c_b, n_b)
        raise ValueError(f"c ({bad_c}) must not exceed n ({bad_n})")
    if np.any(k_b > n_b):
        bad_k, bad_n = _first_violation(k_b > n_b, k_b, n_b)
        raise ValueError(f"k ({bad_k}) must not exceed n ({bad_n})")

    flat_n, flat_c, flat_k = n_b.ravel(), c_b.ravel(), k_b.ravel()
    out = np.empty(flat_n.shape, dtype=np.float64)
    pairs, inverse = np.unique(np.stack([flat_n, flat_k], axis=1), axis=0, return_inverse=True)
    inverse = inverse.ravel()
    for group, (group_n, group_k) in enumerate(pairs):
        members = inverse == group
        out[members] = _pass_at_k_fixed(int(group_n), int(group_k), flat_c[members])
    out = out.reshape(n_b.shape)
    return float(out) if scalar else out


def powers_of_two(n: int) -> list[int]:
    """1, 2, 4, ... up to n, with n appended when it is not a power of two.

    pass@k curves are read on a log2(k) axis, so this is the natural grid, and
    ending at n keeps the most informative point (pass@n) on the curve.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    ks = [1 << e for e in range(int(n).bit_length()) if (1 << e) <= n]
    return ks if ks[-1] == n else [*ks, int(n)]


def _resolve_ks(n: int, ks: ArrayLike | None) -> np.ndarray:
    """Default to the powers-of-two grid; validate a caller's grid against n."""
    if ks is None:
        return np.asarray(powers_of_two(n), dtype=np.int64)
    ks_arr = _as_counts(ks, "ks")
    if ks_arr.ndim != 1 or ks_arr.size == 0:
        raise ValueError(f"ks must be a non-empty 1-D sequence, got shape {ks_arr.shape}")
    if np.any(ks_arr < 1) or np.any(ks_arr > n):
        raise ValueError(f"ks must lie in [1, n={n}], got {ks_arr.tolist()}")
    return ks_arr


def _problem_counts(n: int, correct: ArrayLike) -> np.ndarray:
    """Validate per-problem correct counts so errors name ``correct``, not ``c``."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    counts = _as_counts(correct, "correct")
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"correct must be a non-empty 1-D array of counts, got shape {counts.shape}")
    if np.any(counts > n):
        raise ValueError(f"correct holds counts above n={n}: max {counts.max()}")
    return counts


def _per_problem_pass_at_k(n: int, correct: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """[problems, ks] matrix: the bootstrap resamples its rows instead of recomputing."""
    return pass_at_k(n, correct[:, None], ks[None, :])


def pass_at_k_curve(n: int, correct: np.ndarray, ks: ArrayLike | None = None) -> np.ndarray:
    """Mean pass@k over problems for each k (default: :func:`powers_of_two`)."""
    counts = _problem_counts(n, correct)
    ks_arr = _resolve_ks(n, ks)
    return _per_problem_pass_at_k(n, counts, ks_arr).mean(axis=0)


def bootstrap_pass_at_k(
    n: int,
    correct: np.ndarray,
    ks: ArrayLike | None = None,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """pass@k with percentile-bootstrap bands over problems.

    Problems, not samples, are resampled: the benchmark is one draw of problems
    and that is the dominant uncertainty when comparing models on a few hundred
    of them. Each resample is turned into per-problem multiplicities so the
    resampled means are one matrix product, [n_boot, problems] @ [problems, ks],
    with memory independent of the number of ks.
    """
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must lie strictly between 0 and 1, got {ci}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    counts = _problem_counts(n, correct)
    ks_arr = _resolve_ks(n, ks)
    per_problem = _per_problem_pass_at_k(n, counts, ks_arr)
    n_problems = counts.size

    rng = np.random.default_rng(seed)
    resample = rng.integers(0, n_problems, size=(n_boot, n_problems))
    offsets = np.arange(n_boot)[:, None] * n_problems
    multiplicity = np.bincount((resample + offsets).ravel(), minlength=n_boot * n_problems)
    boot_means = multiplicity.reshape(n_boot, n_problems) @ per_problem / n_problems

    tail = (1.0 - ci) / 2.0
    lo, hi = np.quantile(boot_means, [tail, 1.0 - tail], axis=0)
    return pd.DataFrame(
        {"k": ks_arr, "pass_at_k": per_problem.mean(axis=0), "lo": lo, "hi": hi}
    )


# --------------------------------------------------------------------------- #
# Token-level entropy and the covariance that drives it
# --------------------------------------------------------------------------- #


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """Upcast half precisions (and integers): their sums and exps overflow or lose digits."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of the softmax over the last axis, as float32.

    Policies are run in bf16/fp16 where softmax of large logits overflows, so
    the work is done in float32 via log_softmax. Masked vocabulary entries
    (-inf logits) have p = 0 and contribute 0 (the 0 * log 0 = 0 convention);
    their log-probs are zeroed before the product so neither the value nor the
    gradient becomes NaN. A row whose logits are all -inf has no distribution
    and yields NaN.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    finite_logp = logp.masked_fill(torch.isneginf(logp), 0.0)
    return -(logp.exp() * finite_logp).sum(dim=-1)


def _bool_mask(mask: torch.Tensor, like: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """Treat any non-zero entry as valid; checking values would force a device sync."""
    if mask.shape != like.shape:
        raise ValueError(f"{name} shape {tuple(mask.shape)} does not match values {tuple(like.shape)}")
    return mask if mask.dtype == torch.bool else mask != 0


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over entries where mask is set; 0 (not NaN) for an empty mask.

    Padding is excluded with ``where`` rather than multiplication so NaN or inf
    garbage in padded positions cannot leak into the result.
    """
    valid = _bool_mask(mask, values)
    total = torch.where(valid, _at_least_float32(values), 0.0).sum()
    return total / valid.sum().clamp(min=1)


def centered_logp_adv_cov(
    logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Per-token (log pi - mean log pi) * (A - mean A), zero on padding.

    Cui et al. 2025 show the entropy change under policy gradient is
    approximately -eta * Cov(log pi, A): confident tokens with positive
    advantage collapse entropy. Both means are over all valid tokens in the
    batch (token-weighted), matching a token-level loss. The per-token terms
    are what Clip-Cov/KL-Cov rank; autograd is left intact, so detach when the
    terms only select tokens.
    """
    if logps.ndim != 2:
        raise ValueError(f"logps must be [B, T], got shape {tuple(logps.shape)}")
    valid = _bool_mask(mask, logps)
    if advantages.ndim == 1 and advantages.shape[0] == logps.shape[0]:
        advantages = advantages[:, None].expand_as(logps)
    elif advantages.shape != logps.shape:
        raise ValueError(
            f"advantages must be [B] or [B, T] matching logps {tuple(logps.shape)}, "
            f"got {tuple(advantages.shape)}"
        )
    logps, advantages = _at_least_float32(logps), _at_least_float32(advantages)
    centred = (logps - masked_mean(logps, valid)) * (advantages - masked_mean(advantages, valid))
    return torch.where(valid, centred, 0.0)


def logp_adv_covariance(
    logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor
) -> float:
    """Batch Cov(log pi, A) over valid tokens; its sign predicts the entropy trend."""
    terms = centered_logp_adv_cov(logps, advantages, mask)
    return float(masked_mean(terms.detach(), mask))


# --------------------------------------------------------------------------- #
# Forking tokens
# --------------------------------------------------------------------------- #


def _linear_quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """torch.quantile's linear rule via sort, which has no 16M-element cap.

    The result is clamped to the upper bracketing value so rounding in the
    interpolation cannot push the threshold above a tied entry.
    """
    ordered = values.sort().values
    position = q * (ordered.numel() - 1)
    below, above = int(np.floor(position)), int(np.ceil(position))
    lower, upper = ordered[below], ordered[above]
    return torch.minimum(lower + (position - below) * (upper - lower), upper)


def top_entropy_mask(
    entropies: torch.Tensor, mask: torch.Tensor, quantile: float = 0.2
) -> torch.Tensor:
    """Bool [B, T]: valid tokens in the top ``quantile`` of entropy ("forking tokens").

    Wang et al. 2025 find RLVR's gains come almost entirely from the ~20%
    highest-entropy tokens. The threshold is the (1 - quantile) quantile of the
    valid tokens of the whole batch (linear interpolation, like torch.quantile);
    tokens equal to it are kept, so ties can select more than the fraction.
    """
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must lie in (0, 1], got {quantile}")
    if entropies.ndim != 2:
        raise ValueError(f"entropies must be [B, T], got shape {tuple(entropies.shape)}")
    valid = _bool_mask(mask, entropies)
    valid_entropies = entropies[valid]
    if valid_entropies.numel() == 0:
        return torch.zeros_like(valid)
    threshold = _linear_quantile(valid_entropies, 1.0 - quantile)
    return valid & (entropies >= threshold)


def forking_token_positions(
    entropies: torch.Tensor, mask: torch.Tensor, quantile: float = 0.2
) -> np.ndarray:
    """Relative position in [0, 1] of each forking token within its completion.

    Positions count valid tokens only, so left padding does not shift them;
    position / (length - 1) puts the first token at 0 and the last at 1 (a
    one-token completion sits at 0). Output is in row-major token order.
    """
    selected = top_entropy_mask(entropies, mask, quantile)
    valid = _bool_mask(mask, entropies).long()
    rank = valid.cumsum(dim=1) - 1
    length = valid.sum(dim=1, keepdim=True)
    relative = rank.double() / (length - 1).clamp(min=1).double()
    return relative[selected].cpu().numpy()


# --------------------------------------------------------------------------- #
# Entropy-reward law
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class EntropyLawFit:
    """Least-squares fit of R = -a * exp(H) + b with 95% t-intervals."""

    a: float
    b: float
    a_se: float
    b_se: float
    a_ci: tuple[float, float]
    b_ci: tuple[float, float]
    r2: float

    @property
    def ceiling(self) -> float:
        """Predicted reward once entropy is exhausted (H = 0): the law's performance cap."""
        return -self.a + self.b

    def predict(self, entropy: ArrayLike) -> float | np.ndarray:
        """Reward the law predicts at the given entropy; float for scalar input."""
        reward = -self.a * np.exp(np.asarray(entropy, dtype=np.float64)) + self.b
        return float(reward) if np.ndim(reward) == 0 else reward


def fit_entropy_reward_law(entropy: np.ndarray, reward: np.ndarray) -> EntropyLawFit:
    """Fit Cui et al. 2025's R = -a * exp(H) + b.

    With x = exp(H) the model is linear in (a, b), so ordinary least squares
    gives the exact optimum and textbook standard errors (residual variance on
    n - 2 degrees of freedom); no iterative curve fitting is needed. r2 is NaN
    when the rewards are all equal (nothing to explain).
    """
    h = np.asarray(entropy, dtype=np.float64)
    r = np.asarray(reward, dtype=np.float64)
    if h.ndim != 1 or r.ndim != 1 or h.shape != r.shape:
        raise ValueError(f"entropy and reward must be 1-D of equal length, got {h.shape} and {r.shape}")
    if h.size < 3:
        raise ValueError(f"need at least 3 points to fit and get standard errors, got {h.size}")
    if not (np.all(np.isfinite(h)) and np.all(np.isfinite(r))):
        raise ValueError("entropy and reward must be finite")
    x = np.exp(h)
    x_mean, r_mean = x.mean(), r.mean()
    sxx = np.sum((x - x_mean) ** 2)
    if sxx <= 0.0:
        raise ValueError("entropy has no spread: a and b are not identifiable")

    slope = np.sum((x - x_mean) * (r - r_mean)) / sxx
    a, b = -slope, r_mean - slope * x_mean
    residual = r - (slope * x + b)
    rss, tss = float(residual @ residual), float(np.sum((r - r_mean) ** 2))
    dof = h.size - 2
    sigma2 = rss / dof
    a_se = float(np.sqrt(sigma2 / sxx))
    b_se = float(np.sqrt(sigma2 * (1.0 / h.size + x_mean**2 / sxx)))
    t = float(stats.t.ppf(0.975, dof))
    return EntropyLawFit(
        a=float(a),
        b=float(b),
        a_se=a_se,
        b_se=b_se,
        a_ci=(float(a - t * a_se), float(a + t * a_se)),
        b_ci=(float(b - t * b_se), float(b + t * b_se)),
        r2=1.0 - rss / tss if tss > 0 else float("nan"),
    )


# --------------------------------------------------------------------------- #
# Comparing two models
# --------------------------------------------------------------------------- #


def crossover_k(
    ks: ArrayLike, curve_a: ArrayLike, curve_b: ArrayLike
) -> float | None:
    """Smallest k where curve_b catches up with curve_a, interpolated in log2(k).

    Sign convention: with d(k) = curve_b - curve_a, a crossing needs d < 0 at the
    first k (b strictly below a, e.g. base below RL at pass@1); the result is
    where d first reaches >= 0, found by linear interpolation of d in log2(k)
    between the bracketing ks (exactly that k when d is 0 there). Returns None
    when b is not below a at the first k or never catches up within ks.
    """
    k_arr = np.asarray(ks, dtype=np.float64)
    a = np.asarray(curve_a, dtype=np.float64)
    b = np.asarray(curve_b, dtype=np.float64)
    if k_arr.ndim != 1 or a.shape != k_arr.shape or b.shape != k_arr.shape:
        raise ValueError(
            f"ks, curve_a and curve_b must be 1-D of equal length, "
            f"got {k_arr.shape}, {a.shape}, {b.shape}"
        )
    if k_arr.size < 2:
        raise ValueError(f"ks needs at least 2 points to locate a crossing, got {k_arr.size}")
    if not np.all(np.isfinite(k_arr)) or np.any(k_arr <= 0) or np.any(np.diff(k_arr) <= 0):
        raise ValueError(f"ks must be positive and strictly increasing, got {k_arr.tolist()}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("curve_a and curve_b must be finite")

    gap = b - a
    if gap[0] >= 0:
        return None
    caught_up = np.flatnonzero(gap >= 0)
    if caught_up.size == 0:
        return None
    j = int(caught_up[0])
    if gap[j] == 0:
        return float(k_arr[j])
    log_k = np.log2(k_arr)
    fraction = -gap[j - 1] / (gap[j] - gap[j - 1])
    return float(2.0 ** (log_k[j - 1] + fraction * (log_k[j] - log_k[j - 1])))


@dataclass(frozen=True)
class CurveComparison:
    """How an RL model's pass@k curve stands against the base's, judged only where their bands separate.

    ``verdict`` is one of :data:`CURVE_VERDICTS`; ``rl_ahead`` and ``base_ahead`` list the ks where one
    curve's lower band edge is above the other's upper edge; ``crossover`` is the k (interpolated on
    the means, :func:`crossover_k`) where the base catches up, set only for a crossover.
    """

    verdict: str
    rl_ahead: tuple[int, ...]
    base_ahead: tuple[int, ...]
    crossover: float | None


CURVE_VERDICTS = ("crossover", "RL ahead at every k", "RL ahead at large k", "RL ahead, then both saturate",
                  "RL ahead, then tied",
                  "base ahead", "base ahead, then RL", "tied at every k", "both zero")
"""The outcomes :func:`compare_pass_at_k` tells apart. Only ``crossover`` supports Yue et al.'s claim at a
level; both curves at 1.0 (saturation) or at 0 say nothing about support."""


def compare_pass_at_k(rl: pd.DataFrame, base: pd.DataFrame, saturated: float = 0.99) -> CurveComparison:
    """Compare two banded pass@k curves (``k, pass_at_k, lo, hi``, as :func:`bootstrap_pass_at_k` gives).

    A crossover is claimed only when the RL curve is above the base's beyond the bands at some k
    and the base's is above the RL's beyond the bands at a larger k: two curves that meet at 1.0,
    or whose means swap inside overlapping bands, are reported as such and not as a crossover.
    Marginal bands of the same problems are conservative for a paired comparison: a
    separation here is one a paired test would also find.
    """
    a = rl.sort_values("k").reset_index(drop=True)
    b = base.sort_values("k").reset_index(drop=True)
    if len(a) == 0 or not np.array_equal(a["k"].to_numpy(), b["k"].to_numpy()):
        raise ValueError(f"the curves must share their ks, got {a['k'].tolist()} and {b['k'].tolist()}")
    ks = a["k"].to_numpy()
    up = a["lo"].to_numpy() > b["hi"].to_numpy()
    down = b["lo"].to_numpy() > a["hi"].to_numpy()
    rl_ahead, base_ahead = tuple(int(k) for k in ks[up]), tuple(int(k) for k in ks[down])
    crossover = None
    if a["pass_at_k"].max() == 0 and b["pass_at_k"].max() == 0:
        verdict = "both zero"
    elif rl_ahead and base_ahead:
        if rl_ahead[0] < base_ahead[0]:
            verdict = "crossover"
            crossover = crossover_k(ks, a["pass_at_k"].to_numpy(), b["pass_at_k"].to_numpy())
        else:
            verdict = "base ahead, then RL"
    elif base_ahead:
        verdict = "base ahead"
    elif not rl_ahead:
        verdict = "tied at every k"
    elif up.all():
        verdict = "RL ahead at every k"
    elif up[-1]:
        verdict = "RL ahead at large k"
    elif min(a["pass_at_k"].iloc[-1], b["pass_at_k"].iloc[-1]) >= saturated:
        verdict = "RL ahead, then both saturate"
    else:
        verdict = "RL ahead, then tied"
    return CurveComparison(verdict, rl_ahead, base_ahead, crossover)


def coverage_table(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    names: tuple[str, str] = ("base", "rl"),
) -> pd.DataFrame:
    """Problems solved at least once by a only, b only, both, neither.

    pass@k at large k summarises support; this table shows it directly: a
    non-empty "rl only" row means RL solved problems the base never did within
    its samples, the "expands reasoning" claim.
    """
    a = _as_counts(correct_a, "correct_a")
    b = _as_counts(correct_b, "correct_b")
    if a.shape != b.shape:
        raise ValueError(f"correct_a and correct_b must have equal shapes, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("correct_a and correct_b are empty")
    if len(names) != 2 or names[0] == names[1]:
        raise ValueError(f"names must be two distinct labels, got {names!r}")
    solved_a, solved_b = a > 0, b > 0
    problems = {
        f"{names[0]} only": int(np.sum(solved_a & ~solved_b)),
        f"{names[1]} only": int(np.sum(~solved_a & solved_b)),
        "both": int(np.sum(solved_a & solved_b)),
        "neither": int(np.sum(~solved_a & ~solved_b)),
    }
    table = pd.DataFrame({"problems": pd.Series(problems)})
    table["fraction"] = table["problems"] / a.size
    return table


def reward_spread(n: ArrayLike, c: ArrayLike, group_size: int) -> float | np.ndarray:
    """Probability that a GRPO group of ``group_size`` samples has any reward spread (some right, some wrong).

    A group whose rewards are all equal has zero advantage everywhere, so it
    contributes no gradient: this is the fraction of a problem's groups that
    can teach anything. Estimated without bias from c correct of n samples, like
    pass@k: P(all wrong) = 1 - pass@g(n, c) and P(all right) = 1 - pass@g(n, n - c),
    so P(spread) = pass@g(n, c) + pass@g(n, n - c) - 1.
    """
    n_arr, c_arr = _as_counts(n, "n"), _as_counts(c, "c")
    spread = pass_at_k(n_arr, c_arr, group_size) + pass_at_k(n_arr, n_arr - c_arr, group_size) - 1.0
    spread = np.clip(spread, 0.0, 1.0)
    return float(spread) if np.ndim(n) == 0 and np.ndim(c) == 0 else spread


def dynamic_sampling_cost(frac_zero_spread: ArrayLike, groups: int, group_size: int) -> float | np.ndarray:
    """Expected completions DAPO's dynamic sampling generates to fill one batch of ``groups`` groups with spread.

    Groups whose rewards are all equal are dropped and more are sampled until ``groups`` groups
    with spread are in the batch. With a fraction ``f`` of groups without spread, the number of groups
    drawn is negative-binomial with mean ``groups / (1 - f)``, so the cost is ``groups * group_size / (1 - f)``
    completions (plain GRPO's ``groups * group_size`` when f = 0, infinite when f = 1: the batch never fills).
    """
    f = np.asarray(frac_zero_spread, dtype=float)
    if np.any((f < 0) | (f > 1)) or np.any(np.isnan(f)):
        raise ValueError(f"frac_zero_spread must lie in [0, 1], got {frac_zero_spread}")
    if groups < 1 or group_size < 1:
        raise ValueError(f"groups and group_size must be at least 1, got {groups} and {group_size}")
    with np.errstate(divide="ignore"):
        cost = np.where(f < 1, groups * group_size / np.where(f < 1, 1 - f, 1.0), np.inf)
    return float(cost) if np.ndim(frac_zero_spread) == 0 else cost
