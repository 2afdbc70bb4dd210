"""Seaborn figures shared by the notebooks.

Figures are drawn at a modest dpi so executed notebooks stay small in git.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

FIG_DPI = 72

RUN_COLORS: dict[str, str] = {
    # the base and the reference methods
    "base": "#4d4d4d",
    "grpo": "#1f77b4", "on-policy": "#1f77b4", "baseline": "#1f77b4", "full": "#1f77b4",
    "dr_grpo": "#17becf",
    # notebook 02: guidance and imitation
    "on-policy-no-bonus": "#aec7e8", "luffy": "#d62728", "luffy-no-shaping": "#ff9896", "sft": "#2ca02c", "sft-grpo": "#98df8a",
    "rl+sft": "#9467bd", "expert": "#8c564b",
    # notebook 03: entropy interventions
    "clip-higher": "#ff7f0e", "entropy bonus": "#e377c2", "80/20 mask": "#bcbd22",
    "Clip-Cov": "#9467bd", "KL-Cov": "#8c564b",
    # notebook 06: the GRPO family (DAPO is clip-higher plus the token-level loss)
    "GRPO": "#1f77b4", "DAPO": "#ff7f0e", "GSPO": "#637939", "CISPO": "#8c6d31", "NSR": "#843c39",
    "W-REINFORCE": "#7b4173", "pass@4": "#393b79", "entropy-shaped": "#de9ed6",
    "DAPO-DS": "#ffbb78", "GMPO": "#b5cf6b",  # DAPO's lighter shade (DAPO plus dynamic sampling); GSPO's (a sequence ratio)
    # notebook 07: guidance (a prefix's light shade: the same prefix without a gradient on it)
    "hint": "#e6550d", "prefix": "#6a3d9a", "prefix-no-grad": "#cab2d6", "adaptive": "#b15928", "mismatched": "#969696",
    "uft": "#fdae6b",
}
"""One colour per run name for the whole series, so a method looks the same in every notebook's figures.

Runs that share a colour are the same method under each notebook's name (GRPO is the
``on-policy`` baseline of notebook 02 and the ``baseline`` of notebook 03)."""

REGIME_COLORS: dict[str, str] = {"inside": "#2ca02c", "latent": "#ff7f0e", "outside": "#7f7f7f"}
"""The three regimes of the world (:data:`rlnb.world.REGIMES`), the same colour in every figure."""


def run_color(name: str) -> str:
    """The series' colour for a run; names outside :data:`RUN_COLORS` (LoRA ranks, new methods)
    get a stable colour from a qualitative palette, chosen by a hash of the name."""
    if name in RUN_COLORS:
        return RUN_COLORS[name]
    import hashlib

    palette = sns.color_palette("tab20").as_hex()
    return palette[int(hashlib.md5(name.encode()).hexdigest(), 16) % len(palette)]


def run_palette(names) -> dict[str, str]:
    """``{name: colour}`` for seaborn's ``palette=`` argument."""
    return {str(name): run_color(str(name)) for name in names}


def level_palette(levels) -> dict:
    """Levels coloured by their regime, from a light tint to a dark shade of the regime's colour as the level
    gets harder.

    The shades span the whole tint-to-shade range of the regime (a lone level gets the regime's own colour),
    so that three latent levels read as three colours, not as one orange three times.
    """
    from rlnb.world import REGIMES

    out = {}
    for regime, base in REGIME_COLORS.items():
        members = sorted(lvl for lvl in levels if REGIMES.get(int(lvl)) == regime)
        if len(members) == 1:
            out[members[0]] = base
        elif members:
            ramp = sns.blend_palette([sns.light_palette(base, 5)[2], base, sns.dark_palette(base, 5)[2]],
                                     n_colors=len(members)).as_hex()
            out.update(zip(members, ramp))
    return out


def setup() -> None:
    """One look for every notebook: seaborn's whitegrid, small PNGs."""
    sns.set_theme(style="whitegrid", context="notebook")
    plt.rcParams["figure.dpi"] = FIG_DPI
    plt.rcParams["savefig.dpi"] = FIG_DPI


def pass_at_k_curves(
    curves: pd.DataFrame, hue: str, ax: plt.Axes | None = None, title: str = "", colors: dict | None = None
) -> plt.Axes:
    """pass@k against k on a log2 axis, one line per ``hue`` value, with its bootstrap band.

    ``curves`` has the columns of :func:`rlnb.metrics.bootstrap_pass_at_k`
    (``k, pass_at_k, lo, hi``) plus the ``hue`` column. Lines take the series'
    run colours (:func:`run_color`) unless ``colors`` maps hue values to colours.
    """
    ax = ax or plt.subplots(figsize=(6, 4))[1]
    for name, grp in curves.groupby(hue, sort=False):
        color = colors.get(name) if colors else run_color(str(name))
        grp = grp.sort_values("k")
        ax.plot(grp["k"], grp["pass_at_k"], marker="o", ms=3, color=color, label=str(name))
        ax.fill_between(grp["k"], grp["lo"], grp["hi"], color=color, alpha=0.2, lw=0)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="k (samples)", ylabel="pass@k", ylim=(-0.02, 1.02), title=title)
    ax.legend(title=hue, fontsize="small")
    return ax


def seed_bars(
    table: pd.DataFrame, y: str, runs: list[str], ax: plt.Axes | None = None, level_labels: dict | None = None,
    title: str = "",
) -> pd.DataFrame:
    """Grouped bars per level: the mean over seeds of ``y`` for each run, a black line from the lowest seed to the highest.

    ``table`` has ``run, seed, level`` and ``y`` columns (:func:`rlnb.evaluate.per_seed_levels`).
    Returns the ``run x level`` table of means that the bars show, for printing beside the figure.
    """
    ax = ax or plt.subplots(figsize=(12, 3.8))[1]
    stats = table.groupby(["run", "level"], sort=False)[y].agg(["mean", "min", "max"]).reset_index()
    levels = sorted(stats["level"].unique())
    width = 0.8 / len(runs)
    for i, name in enumerate(runs):
        rows = stats[stats["run"] == name].set_index("level").reindex(levels)
        xs = np.arange(len(levels)) + (i - (len(runs) - 1) / 2) * width
        n_seeds = table.loc[table["run"] == name, "seed"].nunique()
        ax.bar(xs, rows["mean"], width, color=run_color(name), label=f"{name} ({n_seeds} seeds)" if n_seeds > 1 else name)
        ax.vlines(xs, rows["min"], rows["max"], color="k", lw=1)
    ax.set_xticks(np.arange(len(levels)), [(level_labels or {}).get(level, str(level)) for level in levels])
    ax.set(ylabel=y, xlabel="level", title=title)
    ax.legend(fontsize="x-small", ncol=4)
    return stats.pivot(index="run", columns="level", values="mean").reindex(runs)


def seed_points(
    values: Mapping[str, Sequence[float]], ax: plt.Axes | None = None, *, colors: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None, xlabel: str = "configuration", ylabel: str = "", title: str = "",
    mean_color: str | None = None,
) -> plt.Axes:
    """One column per configuration: a point per training seed, spread sideways, and a bar at their mean.

    With six seeds a reader should see every seed, not a bar and an interval alone; the tick labels name the
    columns (``labels`` may rewrap them), so no legend is needed. ``colors`` default to :func:`run_color`,
    and the mean bar takes the column's colour unless ``mean_color`` is given.
    """
    ax = ax or plt.subplots(figsize=(7, 3.4))[1]
    for i, (name, seeds) in enumerate(values.items()):
        at = np.asarray(seeds, dtype=float)
        color = (colors or {}).get(name, run_color(name))
        ax.scatter(i + np.linspace(-0.15, 0.15, len(at)), at, color=color, s=26)
        ax.hlines(at.mean(), i - 0.25, i + 0.25, color=mean_color or color, lw=2)
    ax.set_xticks(range(len(values)), [(labels or {}).get(name, name) for name in values])
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    return ax


def metric_over_steps(
    metrics: pd.DataFrame, metric: str, hue: str = "run", ax: plt.Axes | None = None,
    smooth: int = 10, ylabel: str | None = None,
) -> plt.Axes:
    """A logged metric against training step, rolling-mean smoothed, one line per ``hue`` value.

    ``metrics`` is a tidy table as written by :class:`rlnb.trainers.TidyMetricsCallback`,
    with the ``hue`` column added by the caller (for example the run name).
    """
    ax = ax or plt.subplots(figsize=(6, 4))[1]
    data = metrics[metrics["metric"] == metric].sort_values("step").copy()
    data["smoothed"] = data.groupby(hue)["value"].transform(lambda s: s.rolling(smooth, min_periods=1).mean())
    sns.lineplot(data=data, x="step", y="smoothed", hue=hue, ax=ax, palette=run_palette(data[hue].unique()))
    ax.set(ylabel=ylabel or metric)
    return ax


def token_view(rows: list[list[tuple[str, float, bool]]], labels: list[str] | None = None, vmax: float | None = None):
    """Completions as coloured tokens: background shade = entropy, red border = forking token.

    Each row is a list of ``(token text, entropy, is_forking)``; the result is an
    IPython ``HTML`` object that renders inline in a notebook and falls back to
    its text repr elsewhere.
    """
    import html

    from IPython.display import HTML

    vmax = vmax or max((e for row in rows for _, e, _ in row), default=1.0) or 1.0
    cmap = plt.get_cmap("Blues")
    lines = []
    for i, row in enumerate(rows):
        cells = []
        for text, entropy, forking in row:
            r, g, b, _ = cmap(0.1 + 0.8 * min(entropy / vmax, 1.0))
            border = "2px solid #d62728" if forking else "2px solid transparent"
            cells.append(
                f'<span title="H={entropy:.3f}" style="background:rgb({r*255:.0f},{g*255:.0f},{b*255:.0f});'
                f'border:{border};padding:1px 2px;margin:0 1px;font-family:monospace">{html.escape(text)}</span>'
            )
        label = f"<b>{html.escape(labels[i])}</b> " if labels else ""
        lines.append(f"<div style='margin:3px 0'>{label}{''.join(cells)}</div>")
    return HTML("".join(lines))


def seed_band(
    table: pd.DataFrame, x: str, y: str, hue: str = "run", seed: str = "seed", ax: plt.Axes | None = None,
    smooth: int = 1, ylabel: str | None = None, xlabel: str | None = None, colors: Mapping[str, str] | None = None,
) -> plt.Axes:
    """Mean over seeds as a line, and the range across seeds (min to max) as a band, per ``hue`` value.

    With three seeds a standard-error band would be a guess about a distribution
    we have three draws of; the min-max range shows exactly what the seeds did.
    ``smooth`` applies a rolling mean along ``x`` to each seed before averaging. Each line takes the
    series' colour of its ``hue`` value (:func:`run_color`) unless ``colors`` names one for it.
    """
    ax = ax or plt.subplots(figsize=(6, 4))[1]
    data = table.sort_values(x).copy()
    if smooth > 1:
        data[y] = data.groupby([hue, seed])[y].transform(lambda s: s.rolling(smooth, min_periods=1).mean())
    stats = data.groupby([hue, x], sort=False)[y].agg(["mean", "min", "max", "count"]).reset_index()
    for name, grp in stats.groupby(hue, sort=False):
        color = (colors or {}).get(str(name)) or run_color(str(name))
        n_seeds = int(data.loc[data[hue] == name, seed].nunique())
        ax.plot(grp[x], grp["mean"], color=color, label=f"{name} ({n_seeds} seeds)" if n_seeds > 1 else str(name))
        if n_seeds > 1:
            ax.fill_between(grp[x], grp["min"], grp["max"], color=color, alpha=0.2, lw=0)
    ax.set(xlabel=xlabel or x, ylabel=ylabel or y)
    ax.legend(fontsize="small")
    return ax


def loss_and_gradient(log: pd.DataFrame, axes=None):
    """Two panels from :func:`rlnb.logs.loss_and_gradient`: the logged loss and the gradient norm per step,
    one thin line per run and seed, coloured by run; one legend entry per run, outside the panels so that no
    curve hides behind it."""
    axes = axes if axes is not None else plt.subplots(1, 2, figsize=(13, 3.6))[1]
    labelled: set[str] = set()
    for (run, _), grp in log.groupby(["run", "seed"]):
        label = None if run in labelled else run
        labelled.add(run)
        axes[0].plot(grp["step"], grp["loss"], color=run_color(run), lw=0.7, alpha=0.7)
        axes[1].plot(grp["step"], grp["grad_norm"], color=run_color(run), lw=0.7, alpha=0.7, label=label)
    axes[0].set(xlabel="step", ylabel="logged loss", title="the loss TRL logs")
    axes[1].set(xlabel="step", ylabel="gradient norm (before clipping)", title="the gradient it backpropagates",
                yscale="log")
    axes[1].legend(title="run", loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    return axes
