"""Tests of Cui et al.'s entropy law that notebook 03 runs: per state, per update with the phase held, and as a fit.

The law (Cui et al. 2025) says a policy-gradient step changes the entropy of a state's action
distribution by about ``-eta Cov_{a~pi}(log pi(a|s), A(s, a))``, and that across training the reward
follows ``R = -a exp(H) + b``. Three ways to test it:

* :func:`first_token_law`: exactly, at one state, the first completion token of a prompt, where the
  vocabulary is small enough to compute the covariance over every token;
* :func:`phase_held_slopes`: across updates, with the training phase held fixed (each update's entropy
  change on its own batch against that batch's covariance, from :func:`rlnb.logs.entropy_changes`);
* :func:`extrapolate_law`: the reward law fitted on early training and used to predict the rest.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlnb.logs import least_squares_slope, slope_against_null
from rlnb.metrics import EntropyLawFit, fit_entropy_reward_law


# --------------------------------------------------------------------------- #
# Per update, with the training phase held fixed
# --------------------------------------------------------------------------- #


def label_updates(pairs: pd.DataFrame, steps_per_generation: int) -> pd.DataFrame:
    """``pairs`` with ``kind`` (the first step on a generation batch is on-policy, the others off-policy) and
    ``series`` (run/seed/kind): the two kinds alternate, so each is detrended as a series of its own."""
    kind = np.where((pairs["step"] - 1) % steps_per_generation == 0, "on-policy", "off-policy")
    group = pairs["run"] + "/" + pairs["seed"].astype(str)
    return pairs.assign(group=group, kind=kind, series=group + "/" + kind)


def _detrended(frame: pd.DataFrame, points: int) -> pd.DataFrame:
    """Each series' ``cov`` and ``dH`` minus their centred rolling mean over ``points`` updates."""
    out = frame.copy()
    for col in ("cov", "dH"):
        trend = frame.groupby("series")[col].transform(lambda v: v.rolling(points, center=True, min_periods=1).mean())
        out[col] = frame[col] - trend
    return out


def _run_bootstrap(frame: pd.DataFrame, n_boot: int, seed: int) -> np.ndarray:
    """95% interval of the pooled slope when whole runs (``group``) are resampled: a run's updates are not independent."""
    groups = frame["group"].unique()
    parts = {g: frame[frame.group == g] for g in groups}
    rng = np.random.default_rng(seed)
    slopes = []
    for _ in range(n_boot):
        pick = pd.concat([parts[g] for g in rng.choice(groups, len(groups))])
        slopes.append(least_squares_slope(pick["cov"].to_numpy(), pick["dH"].to_numpy()))
    return np.quantile(slopes, [0.025, 0.975])


def phase_held_slopes(
    pairs: pd.DataFrame, steps_per_generation: int, window: int, n_perm: int = 1000, n_boot: int = 1000, seed: int = 0,
) -> pd.DataFrame:
    """The slope of dH on Cov for all, on-policy and off-policy updates: shuffled across steps, and with the phase held.

    A null that shuffles the covariance across all of a run's steps destroys the time trend both series share
    (large early, small late), so a slope beyond it can be a contrast between training phases. Held fixed here:
    each series is detrended (minus its centred rolling mean over ``window`` steps), the null shuffles only within
    windows of ``window`` neighbouring steps, and the interval resamples whole runs. One row per subset.

    What it cannot remove: a trend that bends *within* a window (the first steps, where both series fall
    fastest) survives the rolling mean in part, and a relation that lives only between phases is, by
    construction, not measured. The first-token test (:func:`first_token_law`) has no time axis at all.
    """
    labelled = label_updates(pairs, steps_per_generation)
    rows = []
    for subset in ("all", "on-policy", "off-policy"):
        sel = labelled if subset == "all" else labelled[labelled["kind"] == subset]
        flat = _detrended(sel, max(1, window // steps_per_generation))
        windows = (flat["series"] + "/" + ((flat["step"] - 1) // window).astype(str)).to_numpy()
        kept = slope_against_null(flat["cov"].to_numpy(), flat["dH"].to_numpy(), windows, n_perm=n_perm, seed=seed)
        crude = slope_against_null(sel["cov"].to_numpy(), sel["dH"].to_numpy(), sel["group"].to_numpy(), n_perm=n_perm,
                                   seed=seed)
        lo, hi = _run_bootstrap(flat, n_boot, seed)
        rows.append({"updates": subset, "n": len(sel), "slope, shuffled across steps": crude["slope"],
                     "its null": f"[{crude['null_lo']:.4f}, {crude['null_hi']:.4f}]", "p (across steps)": crude["p"],
                     "slope, detrended": kept["slope"], "95% over runs": f"[{lo:.4f}, {hi:.4f}]",
                     "null within windows": f"[{kept['null_lo']:.4f}, {kept['null_hi']:.4f}]",
                     "p (within windows)": kept["p"]})
    return pd.DataFrame(rows).set_index("updates")


# --------------------------------------------------------------------------- #
# Exactly, at the first completion token
# --------------------------------------------------------------------------- #


def _centred_cov(weights: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """Cov_{a ~ weights}(x, y), exact over the tokens."""
    return float((weights * (x - (weights * x).sum()) * (y - (weights * y).sum())).sum())


def first_token_law(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, problems: Sequence, *, rollouts: int, lr: float,
    temperature: float, max_new_tokens: int, min_p: float = 0.002,
) -> pd.DataFrame:
    """Per problem: the first token's entropy change after one SGD step on that state alone, beside both covariances.

    ``pi(a|s)`` comes from one forward pass; ``A(s, a) = Q(s, a) - V(s)`` for every first token with
    ``pi >= min_p``, ``Q`` from ``rollouts`` continuations sampled after forcing ``a``; the covariances
    Cov(log pi, A) (the law's natural-gradient form) and Cov(log pi, pi A) (a plain gradient step on softmax
    logits) are exact over those tokens. The step is plain SGD on the exact expected first-token policy
    gradient ``sum_a pi(a|s) A(s, a) grad log pi(a|s)``, from ``model`` (left unchanged): the law describes a
    gradient step, and Adam's first step is a sign step. ``dH first order`` is the change's first-order
    expansion ``-Cov(log pi, Delta log pi)``, to check that ``lr`` is small enough.
    """
    from rlnb.evaluate import score_rollouts
    from rlnb.rollout import sample

    def logp_of(m: PreTrainedModel, prompt: str) -> torch.Tensor:
        return torch.log_softmax(m(**tokenizer([prompt], return_tensors="pt")).logits[0, -1].float() / temperature, -1)

    was_training = model.training
    model.eval()
    guess_id = tokenizer.convert_tokens_to_ids("A")
    rows = []
    try:
        for i, prob in enumerate(problems):
            with torch.no_grad():
                logp = logp_of(model, prob.prompt)
            p = logp.exp()
            cand = [int(a) for a in torch.nonzero(p >= min_p).flatten()]
            starts = [tokenizer.decode([a]) for a in cand]
            roll = sample(model, tokenizer, [prob.prompt + t for t in starts], rollouts, max_new_tokens=max_new_tokens,
                          temperature=temperature, seed=i, progress=False)
            q = score_rollouts([prob] * len(cand), roll, starts)["correct"].to_numpy() / rollouts
            pc, lc = p[cand].double().numpy(), logp[cand].double().numpy()
            w = pc / pc.sum()
            adv = q - (w * q).sum()
            stepped = copy.deepcopy(model)
            loss = -(torch.tensor(pc * adv, dtype=torch.float32) * logp_of(stepped, prob.prompt)[cand]).sum()
            loss.backward()
            torch.optim.SGD(stepped.parameters(), lr=lr).step()
            with torch.no_grad():
                new = logp_of(stepped, prob.prompt)
            p_all, l_all = p.double().numpy(), logp.double().numpy()
            rows.append({"prompt": prob.prompt, "mass": pc.sum(), "tokens": len(cand), "p(guess)": float(p[guess_id]),
                         "V": float((w * q).sum()), "H": float(-(p * logp).sum()),
                         "dH": float(-(new.exp() * new).sum() + (p * logp).sum()),
                         "dH first order": -_centred_cov(p_all, l_all, (new - logp).double().numpy()),
                         "Cov(log pi, A)": _centred_cov(w, lc, adv), "Cov(log pi, pi A)": _centred_cov(w, lc, w * adv)})
    finally:
        model.train(was_training)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- #
# The reward law, fitted early and extrapolated
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Extrapolation:
    """The law and a straight line fitted on early blocks, and every block's prediction errors."""

    law: EntropyLawFit
    line: np.ndarray  # numpy.polyfit coefficients, highest power first
    blocks: pd.DataFrame  # every block, with ``part``, ``law error`` and ``line error``
    late_errors: pd.DataFrame  # mean errors over each run's late blocks, indexed by (run, seed)
    gap: np.ndarray  # line minus law error per run, over the runs that were fitted
    gap_ci: tuple[float, float]  # its t interval over those runs


def extrapolate_law(blocks: pd.DataFrame, fit_until: int, not_fitted: Sequence[str], ci: float = 0.95) -> Extrapolation:
    """Fit ``R = -a exp(H) + b`` and a line on the blocks up to step ``fit_until`` and predict the later ones.

    ``blocks`` has ``entropy, accuracy, last step, run, seed``. Runs in ``not_fitted`` are left out of the
    fit and of the comparison and only predicted. The interval is a t interval over the runs, as a run's
    blocks follow one another and are not independent.
    """
    blocks = blocks.assign(part=np.where(blocks["last step"] <= fit_until, "early (fitted)", "late (predicted)"))
    fitted = blocks[(blocks.part == "early (fitted)") & ~blocks["run"].isin(not_fitted)]
    law = fit_entropy_reward_law(fitted["entropy"].to_numpy(), fitted["accuracy"].to_numpy())
    line = np.polyfit(fitted["entropy"], fitted["accuracy"], 1)
    blocks["law error"] = np.abs(law.predict(blocks["entropy"].to_numpy()) - blocks["accuracy"])
    blocks["line error"] = np.abs(np.polyval(line, blocks["entropy"]) - blocks["accuracy"])
    late = blocks[blocks.part == "late (predicted)"]
    late_errors = late.groupby(["run", "seed"], sort=False)[["law error", "line error"]].mean()
    compared = late_errors[~late_errors.index.get_level_values("run").isin(not_fitted)]
    gap = (compared["line error"] - compared["law error"]).to_numpy()
    interval = stats.ttest_1samp(gap, 0.0).confidence_interval(ci)
    return Extrapolation(law, line, blocks, late_errors, gap, (float(interval.low), float(interval.high)))
