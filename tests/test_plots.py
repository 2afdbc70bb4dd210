"""Every shared plotting helper, executed on small data, draws axes a reader can read: both axis labels in
words, and a legend wherever more than one colour of line or bar is drawn."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from rlnb import plots


def _curves() -> pd.DataFrame:
    ks = [1, 2, 4, 8]
    return pd.concat([pd.DataFrame({"k": ks, "pass_at_k": np.linspace(0.1, 0.5, 4) + shift, "lo": 0.0, "hi": 1.0,
                                    "model": name}) for name, shift in (("base", 0.0), ("luffy", 0.3))])


def _per_seed() -> pd.DataFrame:
    return pd.DataFrame([{"run": run, "seed": s, "level": level, "pass@1": 0.1 * s + 0.2 * level / 6}
                         for run in ("grpo", "sft") for s in (0, 1, 2) for level in (3, 4)])


def _log() -> pd.DataFrame:
    return pd.DataFrame([{"run": run, "seed": s, "step": step, "metric": "entropy", "value": 1.0 / step,
                          "loss": 0.0, "grad_norm": 0.1 * step}
                         for run in ("grpo", "DAPO") for s in (0, 1) for step in range(1, 6)])


def _drawn_on(draw) -> list[plt.Axes]:
    """The axes a helper that returns a table, not its axes, was given to draw on."""
    ax = plt.subplots()[1]
    draw(ax)
    return [ax]


HELPERS = {
    "pass_at_k_curves": lambda: [plots.pass_at_k_curves(_curves(), hue="model")],
    "seed_bars": lambda: _drawn_on(lambda ax: plots.seed_bars(_per_seed(), "pass@1", ["grpo", "sft"], ax=ax)),
    "metric_over_steps": lambda: [plots.metric_over_steps(_log(), "entropy", smooth=2)],
    "seed_band": lambda: [plots.seed_band(_log().rename(columns={"value": "entropy"}), "step", "entropy")],
    "loss_and_gradient": lambda: list(plots.loss_and_gradient(_log())),
    "seed_points": lambda: [plots.seed_points({"full": [0.8, 0.0, 0.7], "r4": [0.1, 0.0, 0.2]}, ylabel="held-out pass@1")],
}


def _colours(ax: plt.Axes) -> set[str]:
    lines = {matplotlib.colors.to_hex(line.get_color()) for line in ax.get_lines()}
    bars = {matplotlib.colors.to_hex(p.get_facecolor()) for p in ax.patches}
    return lines | bars


@pytest.mark.parametrize("helper", HELPERS)
def test_a_helpers_axes_have_labels_and_a_legend_when_colours_differ(helper):
    plots.setup()
    plt.close("all")
    axes = HELPERS[helper]()
    figure_has_legend = any(ax.get_legend() is not None for ax in axes) or bool(plt.gcf().legends)
    for ax in axes:
        assert ax.get_xlabel().strip() and ax.get_ylabel().strip(), f"{helper}: an axis without a label"
        if len(_colours(ax)) > 1:
            assert figure_has_legend, f"{helper}: {len(_colours(ax))} colours and no legend"
    plt.close("all")


def test_the_check_catches_a_figure_without_a_legend():
    plt.close("all")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1], color="red")
    ax.plot([0, 1], [1, 0], color="blue")
    ax.set(xlabel="step", ylabel="loss")
    assert len(_colours(ax)) == 2 and ax.get_legend() is None
    plt.close("all")


def test_seed_band_takes_a_colour_per_curve_where_given_and_the_series_colour_otherwise():
    plt.close("all")
    ax = plots.seed_band(_log().rename(columns={"value": "entropy"}), "step", "entropy", colors={"DAPO": "#123456"})
    assert _colours(ax) == {"#123456", plots.run_color("grpo")}
    plt.close("all")
