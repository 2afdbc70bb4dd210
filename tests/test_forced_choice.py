"""Notebook 00's forced-choice test (issue #28): the expert's first step written for the model, then its own."""

import numpy as np
import pandas as pd
import pytest

from rlnb.evaluate import evaluate, prompt_text, score_rollouts
from rlnb.profile import choice_against_knowledge, first_step_probability, forced_choice_table
from rlnb.rollout import Rollouts
from rlnb.world import Problem, make_problems


def test_the_first_step_form_forces_the_experts_first_step_and_judges_the_completion_with_it():
    problem = Problem(47, 85, 2)
    assert prompt_text(problem, "first-step") == "47+85=7+5+0=12;"
    texts = ["4+8+1=13;A132", "A132", "4+8+1=13;A131", "junk"]
    roll = Rollouts(prompts=[prompt_text(problem, "first-step")], prompt_index=np.zeros(4, dtype=int), texts=texts,
                    completion_ids=[[1] * len(t) for t in texts], logprobs=[np.zeros(len(t)) for t in texts])
    row = score_rollouts([problem], roll, ["7+5+0=12;"]).iloc[0]
    # both answers 132 are right; the steps are the problem's own only when the completion goes on working
    assert (row["correct"], row["steps"], row["steps_correct"]) == (2, 2, 1)
    assert row["mean_length"] == np.mean([len(t) for t in texts])  # the model's own tokens only


def test_the_base_solves_a_latent_level_once_its_first_step_is_forced(base):
    model, tokenizer = base
    forced = forced_choice_table(model, tokenizer, levels=[5], per_level=6, n=4)
    task = evaluate(model, tokenizer, make_problems([5], 6, seed=2026), 4, progress=False)
    assert forced["correct"].sum() / forced["n"].sum() > 0.7 > task["correct"].sum() / task["n"].sum()


def _table(level: int, correct: list[int], n: int = 8) -> pd.DataFrame:
    return pd.DataFrame({"level": level, "a": range(len(correct)), "b": 1, "n": n, "correct": correct, "steps": 0,
                         "steps_correct": 0, "mean_length": 5.0})


def test_choice_against_knowledge_reports_intervals_and_the_samples_a_base_needs_alone():
    task, worked, forced = _table(4, [0, 0, 0, 1]), _table(4, [8, 7, 8, 8]), _table(4, [8, 8, 7, 8])
    token_p = pd.DataFrame({"level": 4, "problem": [0, 0, 0, 1, 1, 1], "token": ["1", ";", "2", "1", ";", "2"],
                            "p": [0.01, 0.5, 0.9, 0.03, 0.5, 0.9]})
    p1 = first_step_probability(token_p)
    assert p1.tolist() == pytest.approx([0.005, 0.015])  # the first step's tokens, its ";" included
    row = choice_against_knowledge(task, worked, forced, p1).loc[4]
    assert row["forced pass@1"] == pytest.approx(31 / 32) and row["forced - worked"] == pytest.approx(0.0)
    assert row["difference low"] <= 0 <= row["difference high"]
    assert row["task low"] <= row["task pass@1"] <= row["task high"]
    assert row["samples to solve alone, mean"] == pytest.approx(1 / (0.01 * 31 / 32))
    assert row["samples to solve alone, median"] == pytest.approx(1 / (0.01 * 31 / 32))  # two problems: equal
    never = choice_against_knowledge(task, worked, _table(4, [0, 0, 0, 0]), p1).loc[4]
    assert never["samples to solve alone, mean"] == float("inf")
