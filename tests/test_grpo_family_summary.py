"""Notebook 06's summary functions, on small tables whose answers are known."""

import numpy as np
import pandas as pd
import pytest

from rlnb.grpo_family_summary import (
    aa_line,
    best_learning_rates,
    clip_band_line,
    compute_matched,
    dynamic_sampling_lines,
    entropy_line,
    generation_entropy,
    learning_rate_table,
    loss_line,
    nearest_step,
    ranking_lines,
    ratio_lines,
    spread_and_accumulation_lines,
)

PROBLEMS = 12


def _held_out(correct: dict[int, int], n: int = 8) -> pd.DataFrame:
    """A per-problem table with ``correct[level]`` of ``n`` right on every problem of each level."""
    rows = [{"level": level, "a": 100 + i, "b": 200 + i, "n": n, "correct": c, "steps": 0, "mean_length": 10.0}
            for level, c in correct.items() for i in range(PROBLEMS)]
    return pd.DataFrame(rows)


def _tables() -> dict:
    """GRPO at 4 of 8 on 3 digits; 'better' 7 of 8 and 'same' like GRPO; nothing on 4 digits but 'better' 1 of 8."""
    tables = {("base", 0): _held_out({3: 1, 4: 0})}
    for seed in (0, 1, 2):
        tables[("GRPO", seed)] = _held_out({3: 4, 4: 0})
        tables[("better", seed)] = _held_out({3: 7, 4: 1})
        tables[("same", seed)] = _held_out({3: 4 + (seed == 1) - (seed == 2), 4: 0})
    return tables


def test_ranking_lines_rank_resolve_and_compare_with_the_reference():
    lines = ranking_lines(_tables(), ["GRPO", "better", "same"], (3, 4))
    assert lines[0] == "- Ranked by held-out pass@1 on 3 digits: better 0.875; GRPO 0.500; same 0.500 (base 0.125)."
    assert "GRPO 0.500 vs better 0.875" in lines[1] and "better 0.875 vs same 0.500" in lines[1]
    assert "GRPO 0.500 vs same" not in lines[1] and lines[1].endswith("(of 3 pairs).")
    assert "better +0.375 [+0.375, +0.375] resolved" in lines[2]
    same = lines[2].split("same ")[1]
    assert same.startswith("+0.000 [-") and "resolved" not in same  # its seeds straddle GRPO's
    assert lines[4].startswith("- 4 digits against GRPO") and "better +0.1250" in lines[4]


def test_entropy_and_aa_lines_report_welch_intervals_and_split_verdicts():
    entropy = pd.DataFrame({0: [0.2, 0.5], 1: [0.3, 0.6], 2: [0.25, 0.55]}, index=["GRPO", "NSR"])
    line = entropy_line(entropy)
    assert line.startswith("- End entropy (nats), mean: GRPO 0.250; NSR 0.550; minus GRPO's")
    assert "NSR +0.300 [" in line and line.endswith("resolved.")
    aa = pd.DataFrame({"level": [3, 3, 4, 4], "difference": [-0.01, 0.02, 0.0, 0.0], "resolved": [False, True, False, False]})
    assert aa_line(aa, [0, 1, 2, 3], 2) == ("- A/A, GRPO's seeds [0, 1, 2, 3] split into halves of 2: 3 digits 1 of 2 splits "
                                            "resolved, differences from -0.010 to +0.020; 4 digits 0 of 2 splits resolved, "
                                            "differences from +0.000 to +0.000.")


def test_mechanics_lines_quote_their_tables():
    on_off = pd.DataFrame({"method": ["GRPO", "GSPO"] * 2, "state": ["on-policy"] * 2 + ["off-policy"] * 2,
                           "clip share": [0.0, 0.0, 0.027, 0.7], "gradient change vs unclipped": [0.0, 0.0, 0.45, 0.995],
                           "mean |ratio - 1|": [0.0, 0.0, 0.04, 0.04], "max |ratio - 1|": [0.0, 0.0, 0.76, 0.76]})
    columns = pd.MultiIndex.from_product([["mean clip share", "median gradient norm"], ["first", "second"]])
    clip_log = pd.DataFrame([[0.0, 0.01, 0.66, 0.62], [0.0, 0.68, 0.78, 0.23]], index=["GRPO", "GSPO"], columns=columns)
    on, off, norms = ratio_lines(on_off, clip_log)
    assert "clip share GRPO 0.000, GSPO 0.000" in on and "gradient change GRPO 0.450, GSPO 0.995" in off
    assert norms.endswith("GSPO 0.780 / 0.2300; GSPO's mean clip share on the second step 0.680.")
    bands = pd.DataFrame({"low": [0.8, 0.67], "high": [1.2, 1.49], "clip share": [0.025, 0.025], "tokens clipped": [25, 25],
                          "smallest |log ratio| clipped": [0.45, 0.45], "tokens between these bounds and GRPO's": [0, 0]}, index=pd.Index(["GRPO", "GMPO"], name="range"))
    line = clip_band_line(bands)
    assert "GMPO (0.670, 1.490) 25 (0.025000), the nearest at |log ratio| 0.450" in line
    assert line.endswith("lies between a range's bounds and GRPO's: GMPO 0.")
    loss = pd.DataFrame({"median_abs_loss": [0.059], "median |loss summed over a generation batch|": [0.004],
                         "median_grad_norm": [0.66]}, index=["GRPO"])
    assert loss_line(loss).endswith("GRPO 0.059 / 0.004 / 0.660.")
    no_spread = pd.DataFrame({16: [0.0, 1.0]}, index=[3, 4])
    ga = pd.DataFrame({"moved": [0.0, 0.12]}, index=["grpo", "bnpo"])
    assert spread_and_accumulation_lines(no_spread, 16, ga) == [
        "- Base groups of 16 with no reward spread: 3 digits 0.000, 4 digits 1.000 (group size 16).",
        "- Gradient accumulation 4 vs 1, weight moved: grpo 0.000, bnpo 0.120."]
    ds = pd.DataFrame({"x": [2.5, 2.0], "groups_dropped": [30.0, 31.0], "measured completions": [np.nan, 2560.0],
                       "measured x": [np.nan, 2.5]}, index=["GRPO", "DAPO-DS"])
    ds_runs = pd.DataFrame({"rounds per batch": [2.5], "filled_groups": [0.0], "unused_groups": [14.0]}, index=["DAPO-DS"])
    first, ds_line = dynamic_sampling_lines(ds, ds_runs, pd.Series({"GRPO": 11.0, "DAPO-DS": 18.0}))
    assert first == "- Dynamic sampling would have generated GRPO x2.50, DAPO-DS x2.00 the completions, dropping GRPO 30.0, DAPO-DS 31.0 groups per run."
    assert ds_line.startswith("- DAPO-DS generated 2560 completions a run, x2.50 (predicted from its own logs x2.00)")
    assert ds_line.endswith("training 18 s against GRPO's 11 s.")


def test_generation_entropy_reads_every_generation_where_dynamic_sampling_logs_it():
    rows = [("GRPO", 1, "entropy", 0.8), ("GRPO", 2, "entropy", 0.7), ("GRPO", 3, "entropy", 0.6),
            ("DS", 1, "entropy", 0.5), ("DS", 1, "dynamic_sampling/entropy", 0.78), ("DS", 2, "entropy", 0.45),
            ("DS", 3, "entropy", 0.4), ("DS", 3, "dynamic_sampling/entropy", 0.65)]
    metrics = pd.DataFrame([{"run": r, "seed": 0, "step": s, "metric": m, "level": None, "value": v} for r, s, m, v in rows])
    out = generation_entropy(metrics, steps_per_generation=2).set_index(["run", "step"])
    assert list(out.loc["GRPO"].index) == [1, 3]  # the first step on each batch, at the sampling policy
    assert out.loc[("GRPO", 1), "every generation"] == out.loc[("GRPO", 1), "trained batch"] == 0.8
    assert out.loc[("DS", 1), "every generation"] == 0.78 and out.loc[("DS", 1), "trained batch"] == 0.5
    assert out.loc[("DS", 3), "every generation"] == 0.65
    with pytest.raises(ValueError, match="steps_per_generation"):
        generation_entropy(metrics, 0)


def _sweep_rows(method: str, seed: int, correct: int, **labels) -> pd.DataFrame:
    return _held_out({3: correct, 4: 0}).drop(columns=["steps", "mean_length"]).assign(method=method, seed=seed, **labels)


def test_compute_matched_pairs_checkpoints_and_finds_the_nearest_one():
    table = pd.concat([_sweep_rows("DAPO", s, c, step=step, completions=64.0 * step)
                       for s in (0, 1) for step, c in ((4, 2), (8, 5))]
                      + [_sweep_rows("DAPO-DS", s, 6, step=4, completions=500.0 + 20 * s) for s in (0, 1)], ignore_index=True)
    assert nearest_step(table, "DAPO", 510.0) == 8 and nearest_step(table, "DAPO", 100.0) == 4
    out = compute_matched(table, [(("DAPO-DS", 4), ("DAPO", 4)), (("DAPO-DS", 4), ("DAPO", 8))], [3]).set_index("B")
    assert out.loc["DAPO step 4", "A - B"] == pytest.approx(0.5) and out.loc["DAPO step 8", "A - B"] == pytest.approx(0.125)
    assert out.loc["DAPO step 8", "completions A"] == 510.0 and out.loc["DAPO step 8", "completions B"] == 512.0
    assert out.loc["DAPO step 8", "pass@1 A"] == 0.75 and out.loc["DAPO step 8", "pass@1 B"] == 0.625  # of that level
    assert out["resolved"].all()
    with pytest.raises(KeyError, match="step 12"):
        compute_matched(table, [(("DAPO", 12), ("DAPO", 4))], [3])


def test_learning_rate_tables_compare_at_each_scale_and_at_each_methods_best():
    # GRPO is best at x1 (5 of 8); 'fast' is best at x0.3 (6 of 8) and worse than GRPO at x1 (3 of 8).
    grid = {"GRPO": {0.3: 3, 1.0: 5, 3.0: 4}, "fast": {0.3: 6, 1.0: 3, 3.0: 1}}
    table = pd.concat([_sweep_rows(m, s, c, lr_scale=scale, learning_rate=1e-4 * scale)
                       for m, by_scale in grid.items() for scale, c in by_scale.items() for s in (0, 1, 2)], ignore_index=True)
    at_scale = learning_rate_table(table, level=3).set_index(["method", "lr_scale"])
    assert at_scale.loc[("fast", 1.0), "minus GRPO"] == pytest.approx(-0.25) and at_scale.loc[("fast", 1.0), "resolved"]
    assert at_scale.loc[("fast", 0.3), "pass@1"] == pytest.approx(0.75) and at_scale.loc[("GRPO", 1.0), "minus GRPO"] == 0
    best = best_learning_rates(table, level=3)
    assert best.loc["GRPO", "best lr_scale"] == 1.0 and not best.loc["GRPO", "at an end of the grid"]
    assert best.loc["fast", "best lr_scale"] == 0.3 and best.loc["fast", "at an end of the grid"]
    assert best.loc["fast", "minus GRPO's best"] == pytest.approx(0.125) and best.loc["fast", "resolved"]
    with pytest.raises(KeyError, match="scale 1.0"):
        learning_rate_table(table[~((table.method == "GRPO") & (table.lr_scale == 1.0))], level=3)
