"""The base model's profile per level: what it *chooses* to do against what it *knows*.

Each level is sampled twice, under the task prompt (what on-policy RL sees) and
under the worked-solution prompt (whether the procedure is in the model at
all). The two together place a level in one of the world's three regimes
(:data:`rlnb.world.REGIMES`), by the rules of :data:`REGIME_RULES`; notebook 00
draws the profile, ``tests/test_regimes.py`` checks the shipped base against it,
and :func:`write_profile` stores it beside the weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlnb.evaluate import evaluate
from rlnb.metrics import pass_at_k, reward_spread
from rlnb.rollout import text_logprobs
from rlnb.stats import paired_difference, pass_at_k_band
from rlnb.world import EVAL_SEED, LEVELS, STEP_SEP, Problem, expert_trace, make_problems

GROUP_SIZE = 16
"""The GRPO group size the spread column is computed for (notebooks 01-03 sample 16 per prompt)."""

REGIME_RULES: dict[str, str] = {
    "inside": "task pass@1 >= 0.05 and task pass@n >= task pass@1 + 0.3",
    "latent": "worked pass@1 >= 0.7, while under the task prompt steps are chosen <= 1% of the time and "
              "task pass@1 <= 0.01",
    "outside": "task pass@n <= 0.02 and worked pass@1 <= 0.05",
}
"""How a level's regime is read off its profile (n = the samples per problem, 64 in notebook 00).

A latent level is defined by the *choice*: the procedure is known and almost never chosen, so
almost every sampled answer is a guess. How often a guess lands still varies with the length of the
numbers: at the easiest latent level pass@64 is a few percent, at the harder ones it is zero.
"""


def classify(task_pass1: float, task_pass_n: float, worked_pass1: float, steps_chosen: float) -> str | None:
    """The regime whose rule of :data:`REGIME_RULES` the numbers satisfy, or None when none fits."""
    if task_pass_n <= 0.02 and worked_pass1 <= 0.05:
        return "outside"
    if worked_pass1 >= 0.7 and steps_chosen <= 0.01 and task_pass1 <= 0.01:
        return "latent"
    if task_pass1 >= 0.05 and task_pass_n >= task_pass1 + 0.3:
        return "inside"
    return None


def summarize_profile(task: pd.DataFrame, worked: pd.DataFrame) -> pd.DataFrame:
    """Per level: pass@1 and pass@n under both prompts, how often steps are chosen and how often they are
    right, the fraction of GRPO groups with reward spread, and the regime the numbers place the level in."""
    n = int(task["n"].iloc[0])
    rows = []
    for level, grp in task.groupby("level"):
        wgrp = worked[worked["level"] == level]
        row = {
            "level": int(level),
            "task pass@1": float(np.mean(pass_at_k(grp["n"], grp["correct"], 1))),
            f"task pass@{n}": float(np.mean(pass_at_k(grp["n"], grp["correct"], n))),
            "worked pass@1": float(np.mean(pass_at_k(wgrp["n"], wgrp["correct"], 1))),
            "steps chosen": grp["steps"].sum() / grp["n"].sum(),
            "steps right": grp["steps_correct"].sum() / grp["steps"].sum() if grp["steps"].sum() else np.nan,
            f"groups of {GROUP_SIZE} with spread": float(np.mean(reward_spread(grp["n"], grp["correct"], GROUP_SIZE))),
        }
        row["regime"] = classify(row["task pass@1"], row[f"task pass@{n}"], row["worked pass@1"], row["steps chosen"])
        rows.append(row)
    return pd.DataFrame(rows).set_index("level")


def measure_profile(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, levels: Sequence[int] = LEVELS,
    per_level: int = 48, n: int = 64, seed: int = EVAL_SEED, cache_dir: str | Path | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Sample held-out problems under both prompts: ``(summary, task table, worked table)``.

    The per-problem tables are those of :func:`rlnb.evaluate.evaluate`; with
    ``cache_dir`` they are kept there, so re-running a notebook does not sample again.
    """
    problems = make_problems(levels, per_level, seed=seed)
    tables = {}
    for form in ("task", "worked"):
        cache = None if cache_dir is None else Path(cache_dir) / f"{form}-{per_level}x{n}-seed{seed}.csv"
        tables[form] = evaluate(model, tokenizer, problems, n, seed=seed, cache=cache, progress=False,
                                prompt_form=form)
    return summarize_profile(tables["task"], tables["worked"]), tables["task"], tables["worked"]


def forced_choice_table(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, levels: Sequence[int] = LEVELS,
    per_level: int = 48, n: int = 64, seed: int = EVAL_SEED, cache_dir: str | Path | None = None,
) -> pd.DataFrame:
    """:func:`measure_profile`'s problems sampled with the expert's first step forced after the task prompt.

    The completion continues ``47+85=7+5+0=12;``: the choice to work the problem is made for the model, the
    rest is its own. If a level lacks only the choice, this matches the worked prompt's accuracy; if it
    lacks the procedure too (the outside level), forcing one step does not help.
    """
    cache = None if cache_dir is None else Path(cache_dir) / f"first-step-{per_level}x{n}-seed{seed}.csv"
    return evaluate(model, tokenizer, make_problems(levels, per_level, seed=seed), n, seed=seed, cache=cache,
                    progress=False, prompt_form="first-step")


def first_step_probability(token_p: pd.DataFrame) -> pd.Series:
    """Per ``(level, problem)`` of :func:`trace_token_probs`: the probability of the expert's whole first step
    under the task prompt, the product over its tokens up to and including its separator."""
    first = token_p.groupby(["level", "problem"])["token"].transform(
        lambda t: (t == STEP_SEP).cumsum().shift(fill_value=0) == 0)
    return token_p[first].groupby(["level", "problem"])["p"].prod()


def choice_against_knowledge(
    task: pd.DataFrame, worked: pd.DataFrame, forced: pd.DataFrame, first_step_p: pd.Series, *, seed: int = 0,
) -> pd.DataFrame:
    """Per level: pass@1 under the task prompt, the forced first step and the worked prompt, each with its 95%
    interval over problems (:func:`rlnb.stats.pass_at_k_band`); forced minus worked with its paired interval
    (:func:`rlnb.stats.paired_difference`); the first step's probability (:func:`first_step_probability`) as a mean
    and a median over problems; and the samples the base needs to solve alone through its procedure, about
    1 / (p(first step) x forced pass@1) (infinite where the forced pass@1 is 0). The per-problem probability is
    heavy-tailed (a few problems near 1e-3, most far below), so the mean gives the rate averaged over problems
    (comparable with the sampled ``steps chosen``) and the median what a typical problem needs.
    """
    rows = []
    for level in sorted(int(x) for x in task["level"].unique()):
        row: dict[str, float | int] = {"level": level}
        for name, table in (("task", task), ("forced", forced), ("worked", worked)):
            band = pass_at_k_band(table.assign(seed=0), 1, level=level, seed=seed).iloc[0]
            row.update({f"{name} pass@1": band.estimate, f"{name} low": band.low, f"{name} high": band.high})
        diff = paired_difference(forced.assign(seed=0), worked.assign(seed=0), level=level, seed=seed)
        row.update({"forced - worked": diff.estimate, "difference low": diff.low, "difference high": diff.high})
        for stat in ("mean", "median"):
            row[f"p(first step), {stat}"] = float(first_step_p.loc[level].agg(stat))
            rate = row[f"p(first step), {stat}"] * row["forced pass@1"]
            row[f"samples to solve alone, {stat}"] = 1.0 / rate if rate > 0 else float("inf")
        rows.append(row)
    return pd.DataFrame(rows).set_index("level")


def trace_token_probs(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, problems: Sequence[Problem]
) -> pd.DataFrame:
    """The base's probability of each expert-trace token under the task prompt, teacher-forced.

    One row per (problem, position): ``level, problem, position, token, p``.
    This is the number LUFFY's shaping acts on: a trace token the policy gives
    p ~ 1e-7 gets a shaped weight of about p / 0.1, so nothing moves it.
    """
    logp, enc = text_logprobs(model, tokenizer, [p.prompt + expert_trace(p.a, p.b) for p in problems])  # (B, T - 1)
    rows = []
    for i, p in enumerate(problems):
        ids = enc["input_ids"][i][enc["attention_mask"][i].bool()].tolist()
        offset = int((~enc["attention_mask"][i].bool()).sum())  # left padding
        start = len(tokenizer(p.prompt)["input_ids"])
        for pos in range(start, len(ids)):
            rows.append({"level": p.level, "problem": i, "position": pos - start,
                         "token": tokenizer.decode([ids[pos]]),
                         "p": float(logp[i, offset + pos - 1].exp())})
    return pd.DataFrame(rows)


PROFILE_FILE = "profile.json"


def _json_value(value):
    """Floats rounded for reading; NaN (no completion wrote steps) as JSON's null."""
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else round(float(value), 4)
    return value


def write_profile(model_dir: str | Path, per_level: int = 200, n: int = 64, seed: int = EVAL_SEED) -> dict:
    """Measure a model's profile and store it beside the weights (``profile.json``).

    The shipped base carries this file so a test can check that the checkpoint
    still reproduces the profile it was shipped with.
    """
    from rlnb.models import load_model

    model, tokenizer = load_model(str(model_dir), device="cpu")
    summary, task, _ = measure_profile(model, tokenizer, LEVELS, per_level, n, seed)
    sem = (task["correct"] / task["n"]).groupby(task["level"]).sem()
    profile = {
        "problems_per_level": per_level, "samples": n, "seed": seed,
        "levels": {str(level): {k: _json_value(v) for k, v in row.items()} for level, row in summary.iterrows()},
        "pass@1_stderr": {str(k): round(float(v), 4) for k, v in sem.items()},
    }
    (Path(model_dir) / PROFILE_FILE).write_text(json.dumps(profile, indent=2))
    return profile
