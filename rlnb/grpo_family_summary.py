"""Notebook 06's readings of its result tables: the comparisons it prints, as tested functions.

The notebook builds the tables (held-out evaluations, training logs, one-batch measurements, the sweeps
under ``data/sweeps/``); these functions turn them into the lines of its summary, each number computed
from the tables with :mod:`rlnb.stats`, so that a reading quoted in the notebook's prose can be checked
against a printed line, and a change of format or rule is made once and tested on small tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from rlnb.evaluate import per_seed_levels, pooled_pass1, seed_values
from rlnb.stats import Difference, paired_difference, seed_difference, stack_seeds

Tables = Mapping[tuple[str, int], pd.DataFrame]
"""``{(run name, training seed): per-problem held-out table}``, as notebook 06 builds them."""


def _interval(d: Difference, digits: int) -> str:
    return f"{d.estimate:+.{digits}f} [{d.low:+.{digits}f}, {d.high:+.{digits}f}]"


# ---------------------------------------------------------------- the main comparison
def ranking_lines(tables: Tables, methods: Sequence[str], levels: Sequence[int], reference: str = "GRPO",
                  base: str = "base", digits: Sequence[int] = (3, 4)) -> list[str]:
    """The methods ranked by held-out pass@1 on the first level, then per level the pairs of methods whose
    paired difference (:func:`rlnb.stats.paired_difference`, 95%) is resolved and each method against
    ``reference``, printed with ``digits`` decimals per level."""
    final = per_seed_levels(dict(tables))
    first = levels[0]
    mean = lambda m, level: float(seed_values(final, m, level).mean())
    versus = lambda a, b, level: paired_difference(stack_seeds(tables, a), stack_seeds(tables, b), level=level)
    rank = sorted(methods, key=lambda m: -mean(m, first))
    lines = [f"- Ranked by held-out pass@1 on {first} digits: " + "; ".join(f"{m} {mean(m, first):.3f}" for m in rank)
             + f" (base {mean(base, first):.3f})."]
    n_pairs = len(methods) * (len(methods) - 1) // 2
    for level, d in zip(levels, digits):
        pairs = [(a, b) for i, a in enumerate(methods) for b in methods[i + 1:] if versus(a, b, level).resolved]
        lines.append(f"- {level} digits, pairs of methods whose difference's 95% interval excludes 0: " + (", ".join(
            f"{a} {mean(a, level):.{d}f} vs {b} {mean(b, level):.{d}f}" for a, b in pairs) or "none")
            + f" (of {n_pairs} pairs).")
        against = {m: versus(m, reference, level) for m in methods if m != reference}
        lines.append(f"- {level} digits against {reference} (95% intervals over seeds and problems): " + "; ".join(
            f"{m} {_interval(v, d)}" + (" resolved" if v.resolved else "") for m, v in against.items()) + ".")
    return lines


def entropy_line(entropy: pd.DataFrame, reference: str = "GRPO", what: str = "End entropy (nats)") -> str:
    """Each method's mean of a once-per-run entropy (``method x seed``) and its Welch interval against
    ``reference``'s (:func:`rlnb.stats.seed_difference`)."""
    against = {m: seed_difference(entropy.loc[m].dropna(), entropy.loc[reference].dropna())
               for m in entropy.index if m != reference}
    return (f"- {what}, mean: " + "; ".join(f"{m} {entropy.loc[m].mean():.3f}" for m in entropy.index)
            + f"; minus {reference}'s (Welch's 95% interval over seeds): "
            + "; ".join(f"{m} {v.format(3)}" + (" resolved" if v.resolved else "") for m, v in against.items()) + ".")


def aa_line(aa: pd.DataFrame, seeds: Sequence[int], half: int) -> str:
    """The A/A check's verdicts (``level, difference, resolved`` per split) in one line."""
    return f"- A/A, GRPO's seeds {list(seeds)} split into halves of {half}: " + "; ".join(
        f"{level} digits {int(rows.resolved.sum())} of {len(rows)} splits resolved, "
        f"differences from {rows.difference.min():+.3f} to {rows.difference.max():+.3f}"
        for level, rows in aa.groupby("level")) + "."


# ---------------------------------------------------------------- the mechanics
def ratio_lines(on_off: pd.DataFrame, clip_log: pd.DataFrame) -> list[str]:
    """One batch on- and off-policy (:func:`rlnb.grpo_family.ratio_effect`'s table), and the logged clip shares
    and gradient norms of the first and second optimiser step on each batch (``clip_log``: per method, columns
    ``(quantity, step)``)."""
    on = on_off[on_off.state.str.startswith("on")].set_index("method")
    off = on_off[on_off.state.str.startswith("off")].set_index("method")
    lines = [
        "- One batch, on-policy: largest |ratio - 1| " + f"{on['max |ratio - 1|'].max():.1e}; clip share "
        + ", ".join(f"{m} {on.loc[m, 'clip share']:.3f}" for m in on.index) + "; gradient change vs unclipped "
        + ", ".join(f"{m} {on.loc[m, 'gradient change vs unclipped']:.1e}" for m in on.index) + ".",
        "- Off-policy (one step later): mean |ratio - 1| " + f"{off['mean |ratio - 1|'].iloc[0]:.4f}; clip share "
        + ", ".join(f"{m} {off.loc[m, 'clip share']:.3f}" for m in off.index) + "; gradient change "
        + ", ".join(f"{m} {off.loc[m, 'gradient change vs unclipped']:.3f}" for m in off.index) + "."]
    first, second = clip_log["median gradient norm"].columns[:2]
    line = f"- Median gradient norm, {first} / {second}: " + "; ".join(
        f"{m} {clip_log.loc[m, ('median gradient norm', first)]:.3f} / {clip_log.loc[m, ('median gradient norm', second)]:.4f}"
        for m in clip_log.index)
    if "GSPO" in clip_log.index:
        line += f"; GSPO's mean clip share on the second step {clip_log.loc['GSPO', ('mean clip share', second)]:.3f}"
    return lines + [line + "."]


def clip_band_line(bands: pd.DataFrame) -> str:
    """:func:`rlnb.grpo_family.clip_bands`'s table in one line: each range's clipped tokens (the nearest to 1 at
    what |log ratio|), and the tokens whose ratio lies between its bounds and the first range's."""
    first = bands.index[0]
    between = f"tokens between these bounds and {first}'s"
    return ("- Off-policy token ratios, clipped tokens per range: " + "; ".join(
        f"{m} ({r['low']:.3f}, {r['high']:.3f}) {int(r['tokens clipped'])} ({r['clip share']:.6f}), the nearest at "
        f"|log ratio| {r['smallest |log ratio| clipped']:.3f}" for m, r in bands.iterrows())
        + f"; tokens whose ratio lies between a range's bounds and {first}'s: "
        + ", ".join(f"{m} {int(r[between])}" for m, r in bands.iterrows() if m != first) + ".")


def loss_line(loss_summary: pd.DataFrame) -> str:
    """The logged loss against the gradient norm, per method (:func:`rlnb.logs.loss_gradient_summary` plus a
    ``median |loss summed over a generation batch|`` column)."""
    return "- Logged loss, median |per step| / median |summed over a generation batch| / median gradient norm: " + "; ".join(
        f"{m} {r['median_abs_loss']:.3f} / {r['median |loss summed over a generation batch|']:.3f} / {r['median_grad_norm']:.3f}"
        for m, r in loss_summary.iterrows()) + "."


def spread_and_accumulation_lines(no_spread: pd.DataFrame, group_size: int, accumulation: pd.DataFrame) -> list[str]:
    """The base's share of groups without reward spread at ``group_size`` (:func:`rlnb.evaluate.zero_spread`),
    and the weight gradient accumulation moves per loss type (first column of ``accumulation``)."""
    return [f"- Base groups of {group_size} with no reward spread: "
            + ", ".join(f"{level} digits {no_spread.loc[level, group_size]:.3f}" for level in no_spread.index)
            + f" (group size {group_size}).",
            "- Gradient accumulation 4 vs 1, weight moved: "
            + ", ".join(f"{t} {v:.3f}" for t, v in accumulation.iloc[:, 0].items()) + "."]


def dynamic_sampling_lines(ds: pd.DataFrame, ds_runs: pd.DataFrame, train_seconds: pd.Series,
                           reference: str = "GRPO") -> list[str]:
    """What dynamic sampling would have cost each run (``ds``: predicted ``x`` and ``groups_dropped``, measured
    columns where a run used it) and, per run that used it (``ds_runs``), what it measured; ``train_seconds``
    is the mean training time per method."""
    lines = ["- Dynamic sampling would have generated " + ", ".join(f"{m} x{ds.loc[m, 'x']:.2f}" for m in ds.index)
             + " the completions, dropping " + ", ".join(f"{m} {ds.loc[m, 'groups_dropped']:.1f}" for m in ds.index)
             + " groups per run."]
    for m in ds_runs.index:
        lines.append(f"- {m} generated {ds.loc[m, 'measured completions']:.0f} completions a run, x{ds.loc[m, 'measured x']:.2f} "
                     f"(predicted from its own logs x{ds.loc[m, 'x']:.2f}), in {ds_runs.loc[m, 'rounds per batch']:.2f} rounds "
                     f"per batch; {ds_runs.loc[m, 'filled_groups']:.1f} groups without spread kept at the cap and "
                     f"{ds_runs.loc[m, 'unused_groups']:.1f} with spread discarded per run; training "
                     f"{train_seconds[m]:.0f} s against {reference}'s {train_seconds[reference]:.0f} s.")
    return lines


# ---------------------------------------------------------------- DAPO-DS: entropy of every generation, compute
def generation_entropy(metrics: pd.DataFrame, steps_per_generation: int) -> pd.DataFrame:
    """Per run, seed and generation batch: the token entropy of every completion generated for it, and of the
    batch trained on (``run, seed, step, every generation, trained batch``).

    The first optimiser step on a batch runs at the sampling policy, so a run without dynamic sampling logs
    the entropy of all its generations there (``entropy``); a run with it trains on the groups with reward
    spread only and logs the entropy of every generation, refills included, as ``dynamic_sampling/entropy``.
    """
    if steps_per_generation < 1:
        raise ValueError(f"steps_per_generation must be at least 1, got {steps_per_generation}")
    logged = metrics[metrics["metric"].isin(["entropy", "dynamic_sampling/entropy"])]
    first = logged[(logged["step"] - 1) % steps_per_generation == 0]
    wide = first.pivot_table(index=["run", "seed", "step"], columns="metric", values="value").reset_index()
    every = wide["dynamic_sampling/entropy"] if "dynamic_sampling/entropy" in wide else np.nan
    return pd.DataFrame({"run": wide["run"], "seed": wide["seed"], "step": wide["step"],
                         "every generation": pd.Series(every, index=wide.index).fillna(wide["entropy"]),
                         "trained batch": wide["entropy"]})


def compute_matched(table: pd.DataFrame, pairs: Sequence[tuple[tuple[str, int], tuple[str, int]]],
                    levels: Sequence[int]) -> pd.DataFrame:
    """Paired held-out differences between checkpoints of the compute sweep (``method, seed, step, completions``
    and per-problem counts): each pair ``((method, step), (method, step))``, per level, with the completions
    each had generated (mean over seeds)."""
    def at(method: str, step: int) -> pd.DataFrame:
        rows = table[(table["method"] == method) & (table["step"] == step)]
        if rows.empty:
            raise KeyError(f"no checkpoint of {method!r} at step {step} in the compute table")
        return rows

    out = []
    for (ma, sa), (mb, sb) in pairs:
        a, b = at(ma, sa), at(mb, sb)
        for level in levels:
            d = paired_difference(a, b, level=level)
            out.append({"A": f"{ma} step {sa}", "B": f"{mb} step {sb}", "level": level,
                        "completions A": a.groupby("seed")["completions"].first().mean(),
                        "completions B": b.groupby("seed")["completions"].first().mean(),
                        "pass@1 A": float(pooled_pass1(a[a["level"] == level], ["seed"]).mean()),
                        "pass@1 B": float(pooled_pass1(b[b["level"] == level], ["seed"]).mean()),
                        "A - B": d.estimate, "low": d.low, "high": d.high, "resolved": d.resolved})
    return pd.DataFrame(out)


def nearest_step(table: pd.DataFrame, method: str, completions: float) -> int:
    """The checkpoint of ``method`` whose completions generated (mean over seeds) are nearest ``completions``."""
    spent = table[table["method"] == method].groupby("step")["completions"].mean()
    if spent.empty:
        raise KeyError(f"no checkpoints of {method!r} in the table")
    return int((spent - completions).abs().idxmin())


# ---------------------------------------------------------------- the learning-rate sweep
def learning_rate_table(table: pd.DataFrame, level: int, reference: str = "GRPO") -> pd.DataFrame:
    """Per method and learning-rate scale of the lr sweep (``method, seed, lr_scale, learning_rate`` and
    per-problem counts): held-out pass@1 on ``level`` (mean over seeds) and the paired difference from
    ``reference`` at the same scale."""
    runs = table[table["method"] != "base"]
    rows = []
    for (method, scale), at in runs.groupby(["method", "lr_scale"], sort=False):
        d = paired_difference(at, _at_scale(runs, reference, scale), level=level)
        rows.append({"method": method, "lr_scale": scale, "learning_rate": float(at["learning_rate"].iloc[0]),
                     "pass@1": float(pooled_pass1(at[at["level"] == level], ["seed"]).mean()),
                     f"minus {reference}": d.estimate, "low": d.low, "high": d.high, "resolved": d.resolved})
    return pd.DataFrame(rows)


def best_learning_rates(table: pd.DataFrame, level: int, reference: str = "GRPO") -> pd.DataFrame:
    """Per method, the learning-rate scale of the sweep at which its held-out pass@1 on ``level`` is highest,
    whether that is an end of the grid, and its paired difference from ``reference`` at *its* best scale.

    Each best is picked on the same held-out problems it is then scored on, which flatters every method
    alike; the difference of two bests is what a reader who tunes both would see.
    """
    runs = table[table["method"] != "base"]
    means = pooled_pass1(runs[runs["level"] == level], ["method", "lr_scale", "seed"]).groupby(["method", "lr_scale"]).mean()
    best = means.groupby(level="method", sort=False).idxmax().map(lambda key: key[1])
    scales = sorted(runs["lr_scale"].unique())
    reference_best = _at_scale(runs, reference, best[reference])
    rows = []
    for method in dict.fromkeys(runs["method"]):
        d = paired_difference(_at_scale(runs, method, best[method]), reference_best, level=level)
        rows.append({"method": method, "best lr_scale": best[method], "at an end of the grid": best[method] in (scales[0], scales[-1]),
                     "pass@1 at best": float(means[(method, best[method])]), f"minus {reference}'s best": d.estimate,
                     "low": d.low, "high": d.high, "resolved": d.resolved})
    return pd.DataFrame(rows).set_index("method")


def _at_scale(runs: pd.DataFrame, method: str, scale: float) -> pd.DataFrame:
    rows = runs[(runs["method"] == method) & (runs["lr_scale"] == scale)]
    if rows.empty:
        raise KeyError(f"no runs of {method!r} at learning-rate scale {scale} in the table")
    return rows
