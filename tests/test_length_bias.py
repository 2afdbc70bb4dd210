"""Dr. GRPO's length bias on sampled groups: GRPO's penalty per token falls as 1/length, Dr. GRPO's does not."""

import numpy as np
import pytest

from rlnb.length_bias import group_penalties, length_bias_summary, within_group_ratios
from rlnb.rollout import Rollouts
from rlnb.world import make_problems


def one_group(lengths, right):
    """A group of completions of one problem: ``right[i]`` says whether completion i answers correctly."""
    problem = make_problems((3,), 1, seed=0)[0]
    texts = [f"A{problem.answer}" if ok else f"A{problem.answer + 1}" for ok in right]
    return Rollouts(prompts=[problem.prompt], prompt_index=np.zeros(len(texts), dtype=int), texts=texts,
                    completion_ids=[[1] * n for n in lengths], logprobs=[np.zeros(n) for n in lengths]), [problem]


@pytest.mark.parametrize("loss, scale, expected", [("grpo", "group", 4.0), ("dr_grpo", "none", 1.0)])
def test_the_shortest_wrong_completion_pays_the_length_ratio_under_grpo_and_the_same_under_dr_grpo(loss, scale, expected):
    rollouts, problems = one_group([5, 20, 5, 5], [False, False, True, True])
    penalties = group_penalties(rollouts, problems, group_size=4, loss_type=loss, scale_rewards=scale,
                                max_completion_length=48, format_weight=0.0)
    assert list(penalties["correct"]) == [False, False, True, True] and penalties["spread"].all()
    assert (penalties.loc[~penalties.correct, "penalty per token"] > 0).all()
    assert (penalties.loc[penalties.correct, "penalty per token"] < 0).all()  # right answers are pushed up
    ratios = within_group_ratios(penalties)
    assert ratios["length ratio"].item() == 4.0 and ratios["penalty ratio"].item() == pytest.approx(expected)
    summary = length_bias_summary(penalties.assign(loss=loss), ["loss"])
    assert summary.loc[loss, "penalised wrong completions"] == 2 and summary.loc[loss, "groups, longest >= 2x shortest"] == 1.0
    assert summary.loc[loss, "median there: penalty ratio"] == pytest.approx(expected)


def test_a_group_without_spread_penalises_nothing():
    rollouts, problems = one_group([5, 20, 7, 9], [False] * 4)
    penalties = group_penalties(rollouts, problems, group_size=4, loss_type="grpo", scale_rewards="group",
                                max_completion_length=48, format_weight=0.0)
    assert not penalties["spread"].any() and within_group_ratios(penalties).empty
