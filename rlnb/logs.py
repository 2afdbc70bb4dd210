"""Reading the tidy training logs (``metrics.csv``: ``step, metric, level, value``) of several runs.

The notebooks stack the logs of their runs into one frame with ``run`` and
``seed`` columns (:func:`rlnb.seeds.seed_metrics`); these helpers cut the
series, windows and step pairs out of it that more than one notebook reads.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def series(metrics: pd.DataFrame, run: str, metric: str, seed: int | None = None) -> pd.Series:
    """One run's metric per step (the mean over levels or seeds where the log has several rows a step)."""
    rows = metrics[(metrics["run"] == run) & (metrics["metric"] == metric)]
    if seed is not None:
        rows = rows[rows["seed"] == seed]
    if rows.empty:
        raise KeyError(f"no {metric!r} logged for run {run!r}" + (f" seed {seed}" if seed is not None else ""))
    return rows.groupby("step")["value"].mean()


def head_tail(values: pd.Series, fraction: float = 0.1) -> tuple[float, float]:
    """Means of the first and the last ``fraction`` of a series (at least one value each)."""
    if not 0 < fraction <= 0.5:
        raise ValueError(f"fraction must lie in (0, 0.5], got {fraction}")
    n = max(1, int(len(values) * fraction))
    return float(values.iloc[:n].mean()), float(values.iloc[-n:].mean())


def tail_means(metrics: pd.DataFrame, metric: str, fraction: float = 0.2) -> pd.DataFrame:
    """``run x seed`` table of a metric's mean over the last ``fraction`` of each run's steps."""
    rows = metrics[metrics["metric"] == metric]
    last = rows["step"] > (1 - fraction) * rows.groupby(["run", "seed"])["step"].transform("max")
    return rows[last].groupby(["run", "seed"], sort=False)["value"].mean().unstack("seed")


def update_pairs(metrics: pd.DataFrame, steps_per_generation: int = 2) -> pd.DataFrame:
    """Entropy before and after one optimiser step, measured on the same generation batch.

    With ``steps_per_generation = 2`` each generation batch is split into two halves,
    consumed by two consecutive optimiser steps ``t`` and ``t + 1``; both halves hold
    completions of the same prompts. The entropy logged at ``t + 1`` is the policy's
    after update ``t``, at ``t`` before it, so ``dH = H[t+1] - H[t]`` is update ``t``'s
    entropy change free of the prompt-to-prompt noise that separates two generation
    batches, and ``cov`` (the centred Cov(log pi, A) of step ``t``'s tokens) is
    Cui et al.'s predictor of it. One row per pair: ``run, seed, step, dH, cov``.
    """
    if steps_per_generation != 2:
        raise ValueError("update_pairs reads pairs of optimiser steps on one generation batch: "
                         f"steps_per_generation must be 2, got {steps_per_generation}")
    out = []
    keys = ["run", "seed"] if "seed" in metrics else ["run"]
    for key, grp in metrics[metrics["metric"].isin(["entropy", "cov_logp_adv"])].groupby(keys, sort=False):
        wide = grp.groupby(["step", "metric"])["value"].mean().unstack("metric")
        first = wide[(wide.index - 1) % 2 == 0]  # steps 1, 3, 5, ...: the first step on a new generation batch
        after = wide["entropy"].reindex(first.index + 1)
        frame = pd.DataFrame({"step": first.index, "dH": after.to_numpy() - first["entropy"].to_numpy(),
                              "cov": first["cov_logp_adv"].to_numpy()}).dropna()
        ids = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        out.append(frame.assign(**ids))
    return pd.concat(out, ignore_index=True)[keys + ["step", "dH", "cov"]]


def slope_against_null(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None, n_perm: int = 2000, seed: int = 0
) -> dict[str, float]:
    """Least-squares slope of ``y`` on ``x`` with a 95% bootstrap interval, and a permutation null.

    The null shuffles ``x`` within each group (a run), which keeps every run's level of
    ``x`` and ``y`` but breaks their step-by-step pairing; its 2.5-97.5% quantiles are the
    slopes chance alone gives. Returns ``slope, lo, hi, null_lo, null_hi, p`` (two-sided
    permutation p-value).
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) != len(y) or len(x) < 3:
        raise ValueError(f"need at least 3 paired values, got {len(x)} and {len(y)}")
    groups = np.zeros(len(x), dtype=int) if groups is None else np.asarray(groups)
    rng = np.random.default_rng(seed)

    def slope(a: np.ndarray, b: np.ndarray) -> float:
        a = a - a.mean()
        return float((a * (b - b.mean())).sum() / (a * a).sum())

    est = slope(x, y)
    boot = [slope(x[i], y[i]) for i in (rng.integers(0, len(x), len(x)) for _ in range(n_perm))]
    null = []
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    for _ in range(n_perm):
        shuffled = x.copy()
        for idx in members:
            shuffled[idx] = rng.permutation(x[idx])
        null.append(slope(shuffled, y))
    null = np.asarray(null)
    return {"slope": est, "lo": float(np.quantile(boot, 0.025)), "hi": float(np.quantile(boot, 0.975)),
            "null_lo": float(np.quantile(null, 0.025)), "null_hi": float(np.quantile(null, 0.975)),
            "p": float((np.abs(null) >= abs(est)).mean())}
