"""Sample-and-verify evaluation of a model on held-out problems of the tiny world.

The result is a per-problem table of correct counts (and how often the model
wrote steps), so pass@k curves, bootstrap bands and coverage tables are all
recomputed from it without sampling again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlnb.metrics import pass_at_k
from rlnb.rollout import Rollouts, sample
from rlnb.verify import parse_completion
from rlnb.world import Problem

MAX_NEW_TOKENS = 72
"""Room for a 6-digit expert trace (6 steps of 9 characters, the answer, EOS)."""


def score_rollouts(problems: Sequence[Problem], rollouts: Rollouts) -> pd.DataFrame:
    """Per-problem table: ``level, a, b, n, correct, steps, mean_length`` from a flat rollout list."""
    parsed = [parse_completion(t) for t in rollouts.texts]
    idx = rollouts.prompt_index
    correct = np.array([p.answer == problems[i].answer for p, i in zip(parsed, idx)])
    steps = np.array([p.wrote_steps for p in parsed])
    lengths = rollouts.lengths
    rows = []
    for i, prob in enumerate(problems):
        sel = idx == i
        rows.append(
            {
                "level": prob.level,
                "a": prob.a,
                "b": prob.b,
                "n": int(sel.sum()),
                "correct": int(correct[sel].sum()),
                "steps": int(steps[sel].sum()),
                "mean_length": float(lengths[sel].mean()),
            }
        )
    return pd.DataFrame(rows)


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[Problem],
    n: int,
    *,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 1024,
    cache: str | Path | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Sample ``n`` completions per problem and count the correct ones.

    With ``cache`` (a CSV path) an existing table is returned as is and a new
    one is written there, so re-running a notebook does not sample again.
    """
    if cache is not None and Path(cache).exists():
        return pd.read_csv(cache)
    rollouts = sample(
        model,
        tokenizer,
        [p.prompt for p in problems],
        n,
        max_new_tokens=MAX_NEW_TOKENS,
        temperature=temperature,
        batch_size=batch_size,
        seed=seed,
        progress=progress,
    )
    table = score_rollouts(problems, rollouts)
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(cache, index=False)
    return table


def summarize(table: pd.DataFrame, ks: Sequence[int] = (1,)) -> pd.DataFrame:
    """Per-level pass@k (unbiased, mean over problems) and the fraction of completions with steps."""
    out = []
    for level, grp in table.groupby("level"):
        row = {"level": level, "problems": len(grp), "steps_used": grp["steps"].sum() / grp["n"].sum()}
        for k in ks:
            row[f"pass@{k}"] = float(np.mean(pass_at_k(grp["n"].to_numpy(), grp["correct"].to_numpy(), k)))
        out.append(row)
    return pd.DataFrame(out)
