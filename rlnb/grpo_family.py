"""The GRPO family as one trainer: the advantage estimator is a config switch (:mod:`rlnb.advantages`).

Everything but the advantage is the recording trainer's, that is TRL's: the same rollouts, loss type,
clip and reduction. Only ``output["advantages"]`` differs, through
:meth:`rlnb.trainers.RecordingGRPOTrainer.compute_advantages`; with ``advantage="grpo"`` the run is
TRL's GRPO bit for bit.

A note for reading the official recipes beside this: the PSR/NSR/W-REINFORCE code averages the policy
loss over all tokens of the batch (TRL's ``loss_type="bnpo"`` or ``"dapo"``), and the pass@k code feeds
its advantage to an unchanged GRPO/PPO loss; both choose the loss independently of the advantage,
as here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from rlnb.advantages import (
    grpo_advantages,
    nsr_advantages,
    pass_at_k_advantages,
    psr_advantages,
    w_reinforce_advantages,
)
from rlnb.trainers import RecordingGRPOConfig, RecordingGRPOTrainer

ESTIMATORS: dict[str, Callable[[torch.Tensor, int, "AdvantageConfig"], torch.Tensor]] = {
    "grpo": lambda r, g, c: grpo_advantages(r, g, c.scale_rewards),
    "psr": lambda r, g, c: psr_advantages(r, g, c.correct_reward),
    "nsr": lambda r, g, c: nsr_advantages(r, g, c.correct_reward),
    "w_reinforce": lambda r, g, c: w_reinforce_advantages(r, g, c.positive_weight, c.correct_reward),
    "pass_at_k": lambda r, g, c: pass_at_k_advantages(r, g, c.pass_k, c.correct_reward),
}
"""``advantage`` name -> ``fn(rewards, group_size, config)``, the :mod:`rlnb.advantages` function with the
config's options."""
ADVANTAGES = tuple(ESTIMATORS)


@dataclass
class AdvantageConfig(RecordingGRPOConfig):
    """``GRPOConfig`` plus the advantage estimator as one switch (``RunConfig.method_options``)."""

    advantage: str = field(default="grpo", metadata={
        "help": f"one of {ADVANTAGES}: TRL's GRPO (scaled as scale_rewards says), positive-only, negative-only "
                "or weighted REINFORCE (Zhu et al. 2025), or pass@k training's analytic advantage (Chen et al. "
                "2025); scale_rewards applies to 'grpo' only"})
    correct_reward: float = field(default=1.0, metadata={
        "help": "psr, nsr, w_reinforce, pass_at_k: a completion is a positive sample when its summed reward is at "
                "least this (the accuracy reward is 1.0)"})
    positive_weight: float = field(default=0.1, metadata={
        "help": "w_reinforce: lambda, the weight of the positive samples (paper: 0.1)"})
    pass_k: int = field(default=4, metadata={
        "help": "pass_at_k: k, the size of the subsets whose best reward is the pass@k reward (1 <= k <= "
                "num_generations; k = 1 is GRPO with the population std)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.advantage not in ESTIMATORS:
            raise ValueError(f"unknown advantage {self.advantage!r}: choose one of {ADVANTAGES}")
        if self.advantage == "pass_at_k" and not 1 <= self.pass_k <= self.num_generations:
            raise ValueError(f"pass_k={self.pass_k} must lie in [1, num_generations={self.num_generations}]")
        if self.positive_weight < 0:
            raise ValueError(f"positive_weight must be non-negative, got {self.positive_weight}")


class AdvantageGRPOTrainer(RecordingGRPOTrainer):
    """The recording GRPO trainer whose advantage is ``args.advantage`` (an :class:`AdvantageConfig`)."""

    config_class = AdvantageConfig

    def compute_advantages(self, rewards: torch.Tensor, group_size: int) -> torch.Tensor:
        return ESTIMATORS[self.args.advantage](rewards, group_size, self.args)
