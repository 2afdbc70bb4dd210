"""Reading the tidy training logs (``metrics.csv``: ``step, metric, level, value``) of several runs.

The notebooks stack the logs of their runs into one frame with ``run`` and
``seed`` columns (:func:`rlnb.seeds.seed_metrics`); these helpers cut the
series, windows and step pairs out of it that more than one notebook reads.
"""

from __future__ import annotations

from typing import Sequence

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


def first_at_least(values: pd.Series, threshold: float) -> int | None:
    """The first step (index) where a per-step series reaches ``threshold``; None if it never does.

    "When did the run start solving?" read off a log: used with a rolling mean
    so that one lucky batch does not count as the start.
    """
    hit = values.index[values.to_numpy() >= threshold]
    return int(hit[0]) if len(hit) else None


def steps_to_reach(log: pd.DataFrame, column: str, threshold: float, by: Sequence[str], window: int = 5) -> pd.Series:
    """Per group of ``by`` in a per-step table: the first step where ``column``'s rolling mean over ``window``
    steps reaches ``threshold`` (:func:`first_at_least`), NaN where it never does ("steps to 0.8 accuracy")."""
    def first(group: pd.DataFrame) -> float:
        step = first_at_least(group.sort_values("step").set_index("step")[column].rolling(window, min_periods=1).mean(),
                              threshold)
        return np.nan if step is None else float(step)

    return log.groupby(list(by)).apply(first, include_groups=False).rename("step reached")


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


def entropy_changes(metrics: pd.DataFrame) -> pd.DataFrame:
    """Each update's entropy change on its own batch, beside the covariance Cui et al. predict it from.

    A run trained with ``measure_entropy_change`` logs, at step ``t + 1``, the mean token
    entropy of step ``t``'s batch after update ``t`` minus before it (``entropy_change``):
    the left side of H(pi_k+1) - H(pi_k) ~ -eta Cov(log pi_k, A), measured on the same tokens,
    so free of the prompt-to-prompt noise between batches. ``cov`` is step ``t``'s centred
    Cov(log pi, A) (``cov_logp_adv``). One row per update: ``run, seed, step, dH, cov``.
    """
    keys = ["run", "seed"] if "seed" in metrics else ["run"]
    out = []
    for key, grp in metrics[metrics["metric"].isin(["entropy_change", "cov_logp_adv"])].groupby(keys, sort=False):
        wide = grp.groupby(["step", "metric"])["value"].mean().unstack("metric")
        if "entropy_change" not in wide:
            raise KeyError(f"no entropy_change logged for {key}: train with measure_entropy_change=True")
        frame = pd.DataFrame({"step": wide.index, "cov": wide["cov_logp_adv"].to_numpy(),
                              "dH": wide["entropy_change"].shift(-1).to_numpy()}).dropna()
        ids = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        out.append(frame.assign(**ids))
    return pd.concat(out, ignore_index=True)[keys + ["step", "dH", "cov"]]


def least_squares_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of ``y`` on ``x``; NaN when ``x`` does not vary (a bootstrap resample of one value)."""
    x = np.asarray(x, dtype=float) - np.mean(x)
    spread = (x * x).sum()
    return float((x * (np.asarray(y, dtype=float) - np.mean(y))).sum() / spread) if spread > 0 else float("nan")


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
    est = least_squares_slope(x, y)
    boot = [least_squares_slope(x[i], y[i]) for i in (rng.integers(0, len(x), len(x)) for _ in range(n_perm))]
    null = []
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    for _ in range(n_perm):
        shuffled = x.copy()
        for idx in members:
            shuffled[idx] = rng.permutation(x[idx])
        null.append(least_squares_slope(shuffled, y))
    null = np.asarray(null)
    return {"slope": est, "lo": float(np.nanquantile(boot, 0.025)), "hi": float(np.nanquantile(boot, 0.975)),
            "null_lo": float(np.quantile(null, 0.025)), "null_hi": float(np.quantile(null, 0.975)),
            "p": float((np.abs(null) >= abs(est)).mean())}


def loss_and_gradient(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per run, seed and step: the loss TRL logs and the gradient norm it backpropagates (``loss``, ``grad_norm``).

    "My loss is 0": GRPO's logged loss sits near zero while the gradient does not
    (:func:`rlnb.plots.loss_and_gradient` draws both, :func:`loss_gradient_summary` sums them up).
    """
    rows = metrics[metrics["metric"].isin(["loss", "grad_norm"])]
    if rows.empty:
        raise KeyError("no 'loss' or 'grad_norm' rows in the metrics")
    return rows.pivot_table(index=["run", "seed", "step"], columns="metric", values="value").reset_index()


def loss_gradient_summary(log: pd.DataFrame) -> pd.DataFrame:
    """Per run of a :func:`loss_and_gradient` table: the median and largest |logged loss|, the median gradient norm."""
    return log.groupby("run").agg(median_abs_loss=("loss", lambda v: v.abs().median()),
                                   max_abs_loss=("loss", lambda v: v.abs().max()),
                                   median_grad_norm=("grad_norm", "median"))
