"""Dr. GRPO's length bias, measured on a run's own groups: each loss's penalty per token on a wrong completion.

Liu et al. (2025) argue that GRPO's per-sequence normaliser ``1 / |o_i|`` penalises a long wrong completion
less per token than a short one, so wrong answers drift longer; Dr. GRPO's constant normaliser does not. A
null on lengths means something only where the bias was there to act, and that part is exact: the weight a
loss puts on each token's log-probability gradient is the completion's advantage times TRL's reduction
weight (:func:`rlnb.trainers.accumulation_weights`). Notebook 01 computes it on groups its runs sample.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from rlnb.advantages import grpo_advantages
from rlnb.rollout import Rollouts
from rlnb.trainers import accumulation_weights
from rlnb.verify import accuracy_reward, format_reward
from rlnb.world import Problem


def group_penalties(rollouts: Rollouts, problems: Sequence[Problem], *, group_size: int, loss_type: str,
                    scale_rewards: str, max_completion_length: int, format_weight: float) -> pd.DataFrame:
    """Per completion: ``group, length, correct, spread, penalty per token``, for one generation batch.

    ``rollouts`` holds ``group_size`` completions of each of ``problems``, contiguous (as
    :func:`rlnb.rollout.sample` and TRL lay them out). Rewards are the training ones, accuracy plus
    ``format_weight`` times the format reward; ``penalty per token`` is minus (advantage x the loss's
    weight on one of the completion's tokens), times the batch size, so a positive value pushes the
    completion's tokens down. ``spread`` marks groups whose rewards differ, the only ones with a gradient.
    """
    answers = [problems[i].answer for i in rollouts.prompt_index]
    correct = torch.tensor(accuracy_reward(rollouts.texts, answers))
    rewards = correct + format_weight * torch.tensor(format_reward(rollouts.texts))
    advantage = grpo_advantages(rewards, group_size, scale_rewards)
    lengths = torch.from_numpy(rollouts.lengths)
    mask = (torch.arange(int(lengths.max()))[None, :] < lengths[:, None]).float()
    per_token = accumulation_weights(mask, loss_type, 1, max_completion_length)[:, 0] * len(rewards)
    spread = rewards.view(-1, group_size).std(dim=1).repeat_interleave(group_size) > 0
    return pd.DataFrame({"group": rollouts.prompt_index, "length": rollouts.lengths, "correct": correct.bool().numpy(),
                         "spread": spread.numpy(), "penalty per token": -(advantage * per_token).numpy()})


def penalised_wrong(penalties: pd.DataFrame) -> pd.DataFrame:
    """The wrong completions the loss pushes down: in groups with a reward spread, with a positive penalty."""
    return penalties[~penalties["correct"] & penalties["spread"] & (penalties["penalty per token"] > 0)]


def within_group_ratios(penalties: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """Per group (and ``by``): the longest penalised wrong completion's length over the shortest's, and the
    shortest's penalty per token over the longest's. GRPO puts the second on the first; Dr. GRPO at 1."""
    def ratios(group: pd.DataFrame) -> pd.Series:
        longest, shortest = group.loc[group["length"].idxmax()], group.loc[group["length"].idxmin()]
        return pd.Series({"length ratio": longest["length"] / shortest["length"],
                          "penalty ratio": shortest["penalty per token"] / longest["penalty per token"]})

    return penalised_wrong(penalties).groupby([*by, "group"]).apply(ratios, include_groups=False).reset_index()


def length_bias_summary(penalties: pd.DataFrame, by: Sequence[str], apart: float = 2.0) -> pd.DataFrame:
    """Per ``by``: how many wrong completions are penalised, their length's 10th and 90th percentiles, how many
    groups hold them, the share whose longest is at least ``apart`` times the shortest, and the median length
    and penalty ratios in those groups: where the bias has lengths to act on, and how strongly it acts there."""
    wrong = penalised_wrong(penalties)
    ratios = within_group_ratios(penalties, by).assign(apart=lambda d: d["length ratio"] >= apart)
    by = list(by)
    return (wrong.groupby(by).agg(**{"penalised wrong completions": ("length", "size"),
                                     "length, 10th pct": ("length", lambda v: v.quantile(0.1)),
                                     "length, 90th pct": ("length", lambda v: v.quantile(0.9))})
            .join(ratios.groupby(by).agg(**{"groups": ("apart", "size"),
                                            f"groups, longest >= {apart:g}x shortest": ("apart", "mean")}))
            .join(ratios[ratios["apart"]].groupby(by)[["length ratio", "penalty ratio"]].median().add_prefix("median there: ")))
