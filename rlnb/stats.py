"""The one place where the series decides whether two things differ, and how sure it is of a rate.

A notebook's claim "method A beats method B" rests on a few training seeds, each evaluated on the
same few dozen held-out problems with a few samples each. Two sources of noise move the answer: which
seeds were trained (a seed effect shared by all of a run's problems) and which problems were drawn
(shared by both methods, so the comparison is paired). :func:`paired_difference` resamples both in
one vectorised bootstrap and says whether the interval excludes 0; :func:`calibrate` simulates pairs
of configurations from a real run's table to measure how often that rule calls a difference that is
not there (false calls), how often it finds one that is (power), and whether its intervals cover the
truth. :func:`pass_at_k_band` is the same two-stage resampling for one configuration's pass@k curve,
and :func:`event_rate` gives threshold events ("4 of 6 seeds crossed 0.5") a Wilson interval;
:func:`seed_difference` compares a quantity measured once per run (no problems to resample) by Welch's interval,
and :func:`support_dynamics` counts which problems an RL model keeps, gains and loses against its base.

Tables are per-problem evaluation tables as :meth:`rlnb.evaluate.HeldOut.evaluate` returns them,
stacked over training seeds with a ``seed`` column (:func:`stack_seeds`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

from rlnb.metrics import pass_at_k

Levels = int | Sequence[int] | None
"""A level, several levels, or ``None`` for every level in the tables."""
_COUNT_COLUMNS = ("seed", "level", "n", "correct")


# --------------------------------------------------------------------------- #
# Tables
# --------------------------------------------------------------------------- #


def stack_seeds(tables: Mapping[tuple[str, int], pd.DataFrame], run: str) -> pd.DataFrame:
    """One run's per-problem tables of every training seed, stacked with a ``seed`` column.

    ``tables`` is what the notebooks build, ``{(run name, training seed): HeldOut.evaluate(...)}``;
    the result is the input :func:`paired_difference`, :func:`pass_at_k_band` and :func:`calibrate` take.
    """
    frames = [table.assign(seed=seed) for (name, seed), table in tables.items() if name == run]
    if not frames:
        raise KeyError(f"no tables for run {run!r}; runs present: {sorted({name for name, _ in tables})}")
    return pd.concat(frames, ignore_index=True)


def _problem_keys(table: pd.DataFrame, name: str) -> list[str]:
    """The columns naming a problem: ``problem`` in data-set tables, ``a, b`` in the tiny world's."""
    if "problem" in table:
        return ["level", "problem"]
    if "a" in table and "b" in table:
        return ["level", "a", "b"]
    raise ValueError(f"table {name} has neither a 'problem' column nor 'a' and 'b' columns, so its rows cannot be "
                     "matched to problems: pass HeldOut.evaluate tables (stacked with stack_seeds)")


def _select(table: pd.DataFrame, level: Levels, name: str) -> pd.DataFrame:
    """The table's rows at ``level`` (all rows for ``None``), after checking the columns every function needs."""
    missing = [c for c in _COUNT_COLUMNS if c not in table]
    if missing:
        hint = (" (stack each training seed's table with stack_seeds, or pd.concat([t.assign(seed=s) ...]))"
                if "seed" in missing else "")
        raise ValueError(f"table {name} lacks columns {missing}{hint}; it has {list(table.columns)}")
    if level is None:
        rows = table
    else:
        wanted = [level] if isinstance(level, (int, np.integer)) else list(level)
        rows = table[table["level"].isin(wanted)]
        absent = sorted(set(wanted) - set(rows["level"]))
        if absent:
            raise ValueError(f"table {name} has no rows at levels {absent}; "
                             f"its levels are {sorted(table['level'].unique())}")
    if rows.empty:
        raise ValueError(f"table {name} is empty: there are no problems to compare")
    return rows


@dataclass(frozen=True)
class _SeedProblems:
    """pass@k per training seed and problem, ``values[seed, problem, k]``, with the problems' identity and level."""

    values: np.ndarray
    seeds: list
    problems: pd.Index
    levels: np.ndarray


def _seed_problems(table: pd.DataFrame, ks: Sequence[int], name: str) -> _SeedProblems:
    """The ``seed x problem x k`` array of unbiased per-problem pass@k; every seed must hold every problem once."""
    keys = _problem_keys(table, name)
    doubled = table.duplicated(["seed", *keys])
    if doubled.any():
        row = table.loc[doubled, ["seed", *keys]].iloc[0].to_dict()
        raise ValueError(f"table {name} holds {int(doubled.sum())} repeated (seed, problem) rows, e.g. {row}: "
                         "stack each training seed's table once")
    too_few = table[table["n"] < max(ks)]
    if not too_few.empty:
        raise ValueError(f"k={max(ks)} exceeds the n={int(too_few['n'].min())} samples per problem of table {name} "
                         f"at levels {sorted(too_few['level'].unique())}: lower k or evaluate with more samples")
    problems = pd.MultiIndex.from_frame(table[keys]).unique().sort_values()
    seeds = sorted(table["seed"].unique())
    counts = table.groupby("seed").size()
    short = counts[counts != len(problems)]
    if not short.empty:
        raise ValueError(f"table {name}: seeds {short.index.tolist()} hold {short.tolist()} problems, but the table "
                         f"holds {len(problems)}: every training seed must be evaluated on the same held-out problems")
    per_row = pass_at_k(table["n"].to_numpy()[:, None], table["correct"].to_numpy()[:, None], np.asarray(ks)[None, :])
    frame = pd.DataFrame(per_row, index=pd.MultiIndex.from_frame(table[["seed", *keys]]))
    values = np.stack([frame.xs(s, level="seed").reindex(problems).to_numpy() for s in seeds])
    return _SeedProblems(values, seeds, problems, problems.get_level_values("level").to_numpy())


# --------------------------------------------------------------------------- #
# The two-stage bootstrap
# --------------------------------------------------------------------------- #


def _check_level(ci: float) -> None:
    """Refuse a confidence level outside (0, 1) before any work is done."""
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must lie strictly between 0 and 1, got {ci}")


def _check_interval(ci: float, n_boot: int) -> None:
    """Refuse a level or resample count that would make the interval meaningless before any work is done."""
    _check_level(ci)
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")


def _multiplicities(rng: np.random.Generator, n_boot: int, size: int) -> np.ndarray:
    """``[n_boot, size]``: how often each of ``size`` units is drawn in a resample of ``size`` with replacement."""
    draws = rng.integers(0, size, size=(n_boot, size)) + np.arange(n_boot)[:, None] * size
    return np.bincount(draws.ravel(), minlength=n_boot * size).reshape(n_boot, size)


def _problem_weights(rng: np.random.Generator, n_boot: int, levels: np.ndarray) -> np.ndarray:
    """Problem multiplicities, resampled within each level: the held-out set fixes how many problems each level has."""
    weights = np.zeros((n_boot, levels.size))
    for level in np.unique(levels):
        at = np.flatnonzero(levels == level)
        weights[:, at] = _multiplicities(rng, n_boot, at.size)
    return weights


def _seed_weights(rng: np.random.Generator, n_boot: int, seeds: int) -> np.ndarray:
    """Seed multiplicities; a single seed cannot be resampled, so it keeps weight 1."""
    return np.ones((n_boot, 1)) if seeds == 1 else _multiplicities(rng, n_boot, seeds).astype(float)


def _resampled_means(values: np.ndarray, seed_w: np.ndarray, problem_w: np.ndarray) -> np.ndarray:
    """``[n_boot, k]`` means over seeds and problems of ``values[seed, problem, k]`` under the given multiplicities."""
    n_seeds, n_problems, n_ks = values.shape
    by_seed = (seed_w @ values.reshape(n_seeds, -1)).reshape(len(seed_w), n_problems, n_ks)
    return np.einsum("bpk,bp->bk", by_seed, problem_w) / (n_seeds * n_problems)


def _interval(boot: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray]:
    """The percentile interval of the resampled statistics (per column)."""
    tail = (1.0 - ci) / 2.0
    low, high = np.quantile(boot, [tail, 1.0 - tail], axis=0)
    return low, high


# --------------------------------------------------------------------------- #
# Differences
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Difference:
    """Mean pass@k of configuration A minus B with its bootstrap interval (see :func:`paired_difference`)."""

    estimate: float
    low: float
    high: float
    k: int
    seeds: tuple[int, int]
    problems: int
    ci: float

    @property
    def resolved(self) -> bool:
        """The interval excludes 0: the series may call the two configurations different."""
        return bool(self.low > 0.0 or self.high < 0.0)

    def __str__(self) -> str:
        return f"{self.estimate:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"

    def describe(self, name_a: str, name_b: str) -> str:
        """A one-line verdict: "A above B in pass@1 by +0.031 [+0.012, +0.050]", or why it is not resolved."""
        if self.resolved:
            side = "above" if self.estimate > 0 else "below"
            return f"{name_a} {side} {name_b} in pass@{self.k} by {self}"
        a, b = self.seeds
        seeds = f"{a} seeds" if a == b else f"{a} and {b} seeds"
        return f"{name_a} vs {name_b} in pass@{self.k} not resolved with {seeds} x {self.problems} problems: {self}"


def paired_difference(
    a: pd.DataFrame, b: pd.DataFrame, *, level: Levels = None, k: int = 1, ci: float = 0.95,
    n_boot: int = 2000, seed: int = 0,
) -> Difference:
    """Mean pass@k(a) - mean pass@k(b) over training seeds and held-out problems, with a bootstrap interval.

    ``a`` and ``b`` stack every training seed's per-problem table (``seed`` column, :func:`stack_seeds`) of two
    configurations evaluated on the *same* held-out problems; ``level`` picks levels (``None`` pools them all,
    every problem weighing the same). pass@k is the unbiased per-problem estimate (:func:`rlnb.metrics.pass_at_k`).

    The interval resamples each table's training seeds (independently: seed s of A is not paired with seed s of
    B) and the held-out problems, within each level, jointly for both tables: the problems are shared, so a hard
    problem pulls both means down together and only the difference it makes between the methods counts. A table
    with one seed is allowed, but its seed cannot be resampled: the interval then holds only problem noise and
    understates the seed-to-seed spread, which one seed cannot measure.

    Raises:
        ValueError: for missing columns, tables holding different problems, a seed missing problems, repeated
            rows, k above a problem's sample count, or an empty selection.
    """
    _check_interval(ci, n_boot)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    rows_a, rows_b = _select(a, level, "a"), _select(b, level, "b")
    keys_a, keys_b = _problem_keys(rows_a, "a"), _problem_keys(rows_b, "b")
    if keys_a != keys_b:
        raise ValueError(f"table a names its problems by {keys_a} and table b by {keys_b}: "
                         "compare tables of one HeldOut set")
    sa, sb = _seed_problems(rows_a, [k], "a"), _seed_problems(rows_b, [k], "b")
    if not sa.problems.equals(sb.problems):
        only_a, only_b = sa.problems.difference(sb.problems), sb.problems.difference(sa.problems)
        example = (only_a if len(only_a) else only_b)[0]
        raise ValueError(f"tables a and b hold different problems at the levels compared: {len(only_a)} only in a, "
                         f"{len(only_b)} only in b (e.g. {dict(zip(keys_a, example))}); "
                         "evaluate both on the same HeldOut set")
    rng = np.random.default_rng(seed)
    problem_w = _problem_weights(rng, n_boot, sa.levels)
    boot = (_resampled_means(sa.values, _seed_weights(rng, n_boot, len(sa.seeds)), problem_w)
            - _resampled_means(sb.values, _seed_weights(rng, n_boot, len(sb.seeds)), problem_w))[:, 0]
    low, high = _interval(boot, ci)
    estimate = float(sa.values.mean() - sb.values.mean())
    return Difference(estimate, float(low), float(high), int(k), (len(sa.seeds), len(sb.seeds)), len(sa.problems), ci)


def differences_by_step(
    table: pd.DataFrame, runs: Sequence[str], reference: str, base_pass1: Mapping[int, float], *,
    levels: Sequence[int], min_reference_gain: float = 0.1,
) -> pd.DataFrame:
    """Each run against ``reference`` at every step a sweep evaluated them, per level: ``run, step, level``,
    ``minus <reference>`` (a :class:`Difference` from :func:`paired_difference`) and ``gain / <reference>'s``.

    ``table`` is a sweep's per-problem table (``run, seed, step, level`` and the problem counts). The gain
    ratio is the run's mean pass@1 minus the base's (``base_pass1`` per level) over the reference's gain,
    NaN where the reference has gained less than ``min_reference_gain``: below that the ratio divides by
    noise, which is why the difference, not the ratio, carries the interval.
    """
    mean_rate = lambda rows: float((rows["correct"] / rows["n"]).mean())
    rows = []
    for step in sorted(set(table.loc[table["run"].isin(runs), "step"])):
        ref = table[(table["run"] == reference) & (table["step"] == step)]
        for level in levels:
            ref_gain = mean_rate(ref[ref["level"] == level]) - base_pass1[level]
            for run in runs:
                at = table[(table["run"] == run) & (table["step"] == step)]
                gain = mean_rate(at[at["level"] == level]) - base_pass1[level]
                rows.append({"run": run, "step": step, "level": level,
                             f"minus {reference}": paired_difference(at, ref, level=level),
                             f"gain / {reference}'s": gain / ref_gain if ref_gain >= min_reference_gain else np.nan})
    return pd.DataFrame(rows)


def base_reach(curves: pd.DataFrame, base: pd.DataFrame, models: Sequence[str], *, at_k: int) -> pd.DataFrame:
    """How far the base must sample to match each RL model's pass@``at_k``, per level.

    ``curves`` holds banded pass@k curves (``model, level, k, estimate, low, high``, :func:`pass_at_k_band`),
    the base's (``model = "base"``) to its largest k; ``base`` is the base's per-problem table. Per level and
    model: the model's pass@``at_k`` with its band, the base's at ``at_k`` and at its largest k, the first k at
    which the base's estimate reaches the model's (``"> K"`` when it never does within the table), and the
    base's success rate per try.
    """
    by = curves.set_index(["model", "level", "k"])
    rows = []
    for level in sorted(base["level"].unique()):
        base_curve = curves[(curves["model"] == "base") & (curves["level"] == level)].set_index("k")
        top = int(base_curve.index.max())
        part = base[base["level"] == level]
        for model in models:
            target = by.loc[(model, level, at_k)]
            hit = base_curve.index[base_curve["estimate"] >= target["estimate"]]
            rows.append({"level": level, "RL model": model,
                         f"RL pass@{at_k}": f"{target['estimate']:.3f} [{target['low']:.3f}, {target['high']:.3f}]",
                         f"base pass@{at_k}": f"{base_curve.loc[at_k, 'estimate']:.3f}",
                         f"base pass@{top}": f"{base_curve.loc[top, 'estimate']:.3f} [{base_curve.loc[top, 'low']:.3f}, "
                                             f"{base_curve.loc[top, 'high']:.3f}]",
                         f"first k where the base reaches RL pass@{at_k}": int(hit[0]) if len(hit) else f"> {top}",
                         "base success per try": part["correct"].sum() / part["n"].sum()})
    return pd.DataFrame(rows)


def pass_at_k_band(
    table: pd.DataFrame, ks: int | Sequence[int], *, level: Levels = None, ci: float = 0.95, n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """``k, estimate, low, high``: pooled pass@k over seeds and problems with a two-stage bootstrap band.

    Seeds and problems (within each level) are resampled as clusters, not the ``problem x seed`` rows as if
    independent: a seed's rows share its training, so treating them as separate draws narrows the band falsely.
    A single-seed table resamples problems only (see :func:`paired_difference`).
    """
    _check_interval(ci, n_boot)
    ks_list = [int(ks)] if isinstance(ks, (int, np.integer)) else [int(x) for x in ks]
    if not ks_list or min(ks_list) < 1:
        raise ValueError(f"ks must be positive integers, got {ks!r}")
    sp = _seed_problems(_select(table, level, "table"), ks_list, "table")
    rng = np.random.default_rng(seed)
    problem_w = _problem_weights(rng, n_boot, sp.levels)
    boot = _resampled_means(sp.values, _seed_weights(rng, n_boot, len(sp.seeds)), problem_w)
    low, high = _interval(boot, ci)
    return pd.DataFrame({"k": ks_list, "estimate": sp.values.mean(axis=(0, 1)), "low": low, "high": high})


@dataclass(frozen=True)
class SeedDifference:
    """Mean of a per-run quantity of configuration A minus B with Welch's interval (see :func:`seed_difference`)."""

    estimate: float
    low: float
    high: float
    seeds: tuple[int, int]
    ci: float

    @property
    def resolved(self) -> bool:
        """The interval excludes 0."""
        return bool(self.low > 0.0 or self.high < 0.0)

    def format(self, digits: int = 3) -> str:
        return f"{self.estimate:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"

    def describe(self, name_a: str, name_b: str, what: str, digits: int = 3) -> str:
        """"A above B in <what> by +x [lo, hi]", or "A vs B in <what> not resolved with N seeds: ..."."""
        if self.resolved:
            return f"{name_a} {'above' if self.estimate > 0 else 'below'} {name_b} in {what} by {self.format(digits)}"
        a, b = self.seeds
        seeds = f"{a} seeds" if a == b else f"{a} and {b} seeds"
        return f"{name_a} vs {name_b} in {what} not resolved with {seeds}: {self.format(digits)}"


def seed_difference(a: Sequence[float], b: Sequence[float], ci: float = 0.95) -> SeedDifference:
    """Mean(a) - mean(b) for a quantity measured once per training run, with Welch's t interval.

    For what has no held-out problems to resample (an end-of-training entropy, a length gap from the
    training logs), the runs are the only replicates: SciPy's Welch test (``ttest_ind(equal_var=False)``)
    gives the interval, wide with three seeds a side, as it should be. Two runs whose values do not vary
    at all get a zero-width interval at their difference.

    Raises:
        ValueError: for fewer than two values a side (one run has no spread to test against) or non-finite values.
    """
    _check_level(ci)
    va, vb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if va.size < 2 or vb.size < 2:
        raise ValueError(f"seed_difference needs at least two runs a side, got {va.size} and {vb.size}: "
                         "one run has no spread to test a difference against")
    if not (np.isfinite(va).all() and np.isfinite(vb).all()):
        raise ValueError("seed_difference got non-finite values (a run that diverged?): look at the runs first")
    estimate = float(va.mean() - vb.mean())
    if va.std() == 0.0 and vb.std() == 0.0:
        return SeedDifference(estimate, estimate, estimate, (va.size, vb.size), ci)
    interval = stats.ttest_ind(va, vb, equal_var=False).confidence_interval(confidence_level=ci)
    return SeedDifference(estimate, float(interval.low), float(interval.high), (va.size, vb.size), ci)


def paired_seed_difference(a: Sequence[float], b: Sequence[float], ci: float = 0.95) -> SeedDifference:
    """Mean of ``a[i] - b[i]`` for two quantities measured in the *same* run ``i``, with a one-sample t interval.

    Two curves of one run (its format reward and its accuracy, say) share everything a seed changes, so
    their difference per run is the replicate: pairing removes the seed-to-seed spread that
    :func:`seed_difference` has to carry. Runs whose differences do not vary give a zero-width interval.

    Raises:
        ValueError: for unequal lengths, fewer than two runs, or non-finite values.
    """
    _check_level(ci)
    va, vb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if va.shape != vb.shape or va.ndim != 1:
        raise ValueError(f"paired_seed_difference needs one value of each per run, got shapes {va.shape} and {vb.shape}")
    if va.size < 2:
        raise ValueError(f"paired_seed_difference needs at least two runs, got {va.size}: one run has no spread")
    if not (np.isfinite(va).all() and np.isfinite(vb).all()):
        raise ValueError("paired_seed_difference got non-finite values (a run that diverged?): look at the runs first")
    diff = va - vb
    estimate = float(diff.mean())
    if diff.std() == 0.0:
        return SeedDifference(estimate, estimate, estimate, (va.size, va.size), ci)
    interval = stats.ttest_1samp(diff, 0.0).confidence_interval(confidence_level=ci)
    return SeedDifference(estimate, float(interval.low), float(interval.high), (va.size, va.size), ci)


# --------------------------------------------------------------------------- #
# Rates of threshold events
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Rate:
    """A share of trials with its Wilson interval (see :func:`event_rate`)."""

    successes: int
    trials: int
    estimate: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.successes} of {self.trials}, {self.estimate:.2f} [{self.low:.2f}, {self.high:.2f}]"


def event_rate(successes: int, trials: int, ci: float = 0.95) -> Rate:
    """The share of trials with an event ("crossed 0.5 by step 30") and its Wilson score interval.

    Wilson, not the normal approximation: with a handful of seeds the normal interval leaves [0, 1] and
    collapses to a point at 0 of n and n of n, where the Wilson interval stays honest.
    """
    _check_level(ci)
    for value, what in ((successes, "successes"), (trials, "trials")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{what} must be an integer count, got {value!r}")
    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials >= 1, got {successes} of {trials}")
    z = float(stats.norm.ppf(0.5 + ci / 2.0))
    p, z2n = successes / trials, z * z / trials
    center = (p + z2n / 2.0) / (1.0 + z2n)
    half = z / (1.0 + z2n) * np.sqrt(p * (1.0 - p) / trials + z2n / (4.0 * trials))
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == trials else min(1.0, center + half)
    return Rate(int(successes), int(trials), p, float(low), float(high))


# --------------------------------------------------------------------------- #
# Support: which problems each model solves at all
# --------------------------------------------------------------------------- #

SUPPORT_COLUMNS = ("preserved", "expanded", "shrunk", "out", "SRR", "NDR", "SDS", "NSCR")
"""The columns of :func:`support_dynamics` after ``seed``: the four counts, then the four rates."""


def support_dynamics(base: pd.DataFrame, rl: pd.DataFrame, *, k: int, level: Levels = None) -> pd.DataFrame:
    """Wu et al.'s ("The Invisible Leash", 2025) support metrics of an RL model against its base, per training seed.

    A problem is in a model's empirical support at ``k`` when one of ``k`` samples solves it. Counted over the
    held-out problems, as the paper's tables count them: *preserved* (P, both solve it), *expanded* (E, only the
    RL model), *shrunk* (S, only the base) and *out* (O, neither). Then

    * support retention rate SRR = P / (P + S): the share of the base's solvable problems the RL model keeps;
    * net discovery rate NDR = E / (P + E): the share of the RL model's support that is new;
    * support dynamic score SDS = 2 SRR NDR / (SRR + NDR), their harmonic mean;
    * net support change rate NSCR = (E - S) / (P + E + S), in [-1, 1]: above 0 the support grew.

    The counts are expectations under each problem's unbiased pass@k (base and RL sampled independently),
    so at ``k`` equal to both tables' sample count they are the plain indicator counts, and below it they
    do not depend on which ``k`` of the ``n`` samples were drawn. ``base`` holds one seed (several are
    averaged into one pass@k per problem); ``rl`` stacks its training seeds (:func:`stack_seeds`), each
    with its own row. A rate whose denominator is 0 is NaN.

    Raises:
        ValueError: for missing columns, tables holding different problems, or ``k`` above a table's ``n``.
    """
    rows_base, rows_rl = _select(base, level, "base"), _select(rl, level, "rl")
    sb, sr = _seed_problems(rows_base, [k], "base"), _seed_problems(rows_rl, [k], "rl")
    if not sb.problems.equals(sr.problems):
        raise ValueError(f"tables base and rl hold different problems ({len(sb.problems)} and {len(sr.problems)}): "
                         "evaluate both on the same HeldOut set")
    found_base = sb.values[:, :, 0].mean(axis=0)
    out = []
    for seed, found_rl in zip(sr.seeds, sr.values[:, :, 0]):
        p = float(np.sum(found_base * found_rl))
        e = float(np.sum((1 - found_base) * found_rl))
        s = float(np.sum(found_base * (1 - found_rl)))
        o = float(np.sum((1 - found_base) * (1 - found_rl)))
        ratio = lambda num, den: num / den if den > 0 else float("nan")
        srr, ndr = ratio(p, p + s), ratio(e, p + e)
        out.append({"seed": seed, "preserved": p, "expanded": e, "shrunk": s, "out": o, "SRR": srr, "NDR": ndr,
                    "SDS": ratio(2 * srr * ndr, srr + ndr), "NSCR": ratio(e - s, p + e + s)})
    return pd.DataFrame(out, columns=["seed", *SUPPORT_COLUMNS])


# --------------------------------------------------------------------------- #
# Calibration of the decision rule
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Calibration:
    """How :func:`paired_difference`'s ``resolved`` behaves on simulated pairs with a known true difference."""

    shift: float
    resolved_rate: float
    coverage: float
    n_sims: int
    seeds_per_side: int
    problems: int
    seed_sd: float

    def __str__(self) -> str:
        what = "false calls" if self.shift == 0 else f"power for a pass@1 difference of {self.shift:+.3f}"
        return (f"{what}: {self.resolved_rate:.3f}, interval coverage {self.coverage:.3f} "
                f"over {self.n_sims} simulations ({self.seeds_per_side} seeds a side, {self.problems} problems, "
                f"seed logit sd {self.seed_sd:.2f})")


def _seed_logit_sd(rows: pd.DataFrame, keys: list[str], logits: pd.Series) -> float:
    """Spread of the training seeds' logit offsets: each seed's offset moves every problem's logit so that the
    seed's mean pass@1 is matched. Binomial noise widens it a little, which errs on the cautious side."""
    if rows["seed"].nunique() < 2:
        return 0.0
    offsets = []
    for _, grp in rows.groupby("seed"):
        at = logits.reindex(pd.MultiIndex.from_frame(grp[keys])).to_numpy()
        rate = float(np.clip(grp["correct"].sum() / grp["n"].sum(), 1e-3, 1 - 1e-3))
        offsets.append(optimize.brentq(lambda o: special.expit(at + o).mean() - rate, -40.0, 40.0))
    return float(np.std(offsets, ddof=1))


def _mean_rate(logits: np.ndarray, seed_sd: float, nodes: np.ndarray, weights: np.ndarray) -> float:
    """Population pass@1: the mean over problems and over Normal(0, seed_sd) seed offsets (Gauss-Hermite)."""
    return float((special.expit(logits[:, None] + seed_sd * nodes[None, :]) @ weights).mean())


def calibrate(
    table: pd.DataFrame, *, n_sims: int = 200, shift: float = 0.0, seeds_per_side: int = 3, seed: int = 0,
    level: Levels = None, problems: int | None = None, samples: int | None = None, seed_sd: float | None = None,
    ci: float = 0.95, n_boot: int = 2000,
) -> Calibration:
    """Simulate pairs of configurations from a real run's table and score :func:`paired_difference` on them (pass@1).

    Each problem's pass@1 is its pooled rate over the table's seeds, (correct + 1/2) / (n + 1) so that no problem
    is certain; each simulated training seed adds a Normal(0, ``seed_sd``) logit offset to every problem (by
    default the spread of the table's fitted per-seed offsets, 0 for a one-seed table, whose seed effect cannot
    be measured: pass ``seed_sd`` then); configuration A adds the logit shift that makes
    the population difference exactly ``shift``. Every simulation draws ``problems`` per level (default: as many
    as the table has) from the table's problems and ``samples`` completions each (default: the table's ``n``).

    Returns the share of simulations whose difference is resolved (the false-call rate at ``shift=0``, the power
    otherwise) and the share whose interval covers ``shift``.
    """
    if n_sims < 1 or seeds_per_side < 1:
        raise ValueError(f"n_sims and seeds_per_side must be at least 1, got {n_sims} and {seeds_per_side}")
    rows = _select(table, level, "table")
    keys = _problem_keys(rows, "table")
    pooled = rows.groupby(keys)[["n", "correct"]].sum()
    per_draw = rows.groupby(keys)["n"].first()
    problem_logits = special.logit((pooled["correct"] + 0.5) / (pooled["n"] + 1.0))
    logits = problem_logits.to_numpy()
    levels = pooled.index.get_level_values("level").to_numpy()
    sd = _seed_logit_sd(rows, keys, problem_logits) if seed_sd is None else float(seed_sd)
    nodes, weights = np.polynomial.hermite_e.hermegauss(32)
    weights = weights / weights.sum()
    base = _mean_rate(logits, sd, nodes, weights)
    if not -base < shift < 1.0 - base:
        raise ValueError(f"shift {shift:+.3f} is out of reach from the table's pass@1 {base:.3f}: pick one in "
                         f"({-base:+.3f}, {1 - base:+.3f})")
    delta = 0.0 if shift == 0 else optimize.brentq(
        lambda d: _mean_rate(logits + d, sd, nodes, weights) - base - shift, -40.0, 40.0)

    rng = np.random.default_rng(seed)
    by_level = {lvl: np.flatnonzero(levels == lvl) for lvl in np.unique(levels)}
    resolved = covered = 0
    for _ in range(n_sims):
        drawn = np.concatenate([rng.choice(at, size=problems or at.size) for at in by_level.values()])
        n = np.full(drawn.size, samples) if samples else per_draw.to_numpy()[drawn]
        sides = []
        for offset_shift in (delta, 0.0):
            offsets = rng.normal(0.0, sd, size=seeds_per_side)
            correct = rng.binomial(n, special.expit(logits[drawn][None, :] + offsets[:, None] + offset_shift))
            sides.append(pd.DataFrame({
                "seed": np.repeat(np.arange(seeds_per_side), drawn.size),
                "level": np.tile(levels[drawn], seeds_per_side),
                "problem": np.tile(np.arange(drawn.size), seeds_per_side), "n": np.tile(n, seeds_per_side),
                "correct": correct.ravel()}))
        diff = paired_difference(*sides, ci=ci, n_boot=n_boot, seed=int(rng.integers(2**31)))
        resolved += diff.resolved
        covered += diff.low <= shift <= diff.high
    drawn_problems = sum(problems or at.size for at in by_level.values())
    return Calibration(float(shift), resolved / n_sims, covered / n_sims, n_sims, seeds_per_side, drawn_problems, sd)
