"""Seaborn figures shared by the notebooks.

Figures are drawn at a modest dpi so executed notebooks stay small in git.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

FIG_DPI = 72


def setup() -> None:
    """One look for every notebook: seaborn's whitegrid, small PNGs."""
    sns.set_theme(style="whitegrid", context="notebook")
    plt.rcParams["figure.dpi"] = FIG_DPI
    plt.rcParams["savefig.dpi"] = FIG_DPI


def pass_at_k_curves(curves: pd.DataFrame, hue: str, ax: plt.Axes | None = None, title: str = "") -> plt.Axes:
    """pass@k against k on a log2 axis, one line per ``hue`` value, with its bootstrap band.

    ``curves`` has the columns of :func:`rlnb.metrics.bootstrap_pass_at_k`
    (``k, pass_at_k, lo, hi``) plus the ``hue`` column.
    """
    ax = ax or plt.subplots(figsize=(6, 4))[1]
    palette = sns.color_palette(n_colors=curves[hue].nunique())
    for color, (name, grp) in zip(palette, curves.groupby(hue, sort=False)):
        grp = grp.sort_values("k")
        ax.plot(grp["k"], grp["pass_at_k"], marker="o", ms=3, color=color, label=str(name))
        ax.fill_between(grp["k"], grp["lo"], grp["hi"], color=color, alpha=0.2, lw=0)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="k (samples)", ylabel="pass@k", ylim=(-0.02, 1.02), title=title)
    ax.legend(title=hue, fontsize="small")
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
    sns.lineplot(data=data, x="step", y="smoothed", hue=hue, ax=ax)
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
