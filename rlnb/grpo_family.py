"""The GRPO family as one trainer: the advantage estimator is a config switch (:mod:`rlnb.advantages`).

Everything but the advantage is the recording trainer's, that is TRL's: the same rollouts, loss type,
clip and reduction. Only ``output["advantages"]`` differs, through
:meth:`rlnb.trainers.RecordingGRPOTrainer.compute_advantages`; with ``advantage="grpo"`` (and no
entropy shaping) the run is TRL's GRPO bit for bit. ``entropy_alpha > 0`` adds Cheng et al.'s
entropy-shaped advantage on top of the chosen one (:func:`rlnb.advantages.entropy_shaped_advantages`):
TRL's loss accepts (B, T) advantages, so the trainer passes it the shaped ones, computed from the
current policy's token entropies on the same micro-batch.

GMPO (Zhao et al. 2025, Geometric-Mean Policy Optimization) changes the loss, not the advantage: it is TRL's
own ``trl.experimental.gmpo.GMPOTrainer._compute_loss`` under the recording trainer
(:class:`RecordingGMPOTrainer`, ``RunConfig.method="gmpo"``).

A note for reading the official code beside this: the PSR/NSR/W-REINFORCE code (verl) averages its
clipped policy loss over the tokens of the micro-batch (TRL's ``loss_type="bnpo"``), and the pass@k code
replaces only the advantage computation; here too the loss is the run's ``loss_type``, whatever the
advantage.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import torch
from trl.import_utils import TRLExperimentalWarning

from rlnb.advantages import (
    entropy_shaped_advantages,
    grpo_advantages,
    nsr_advantages,
    pass_at_k_advantages,
    psr_advantages,
    w_reinforce_advantages,
)
from rlnb.trainers import RecordingGRPOConfig, RecordingGRPOTrainer

with warnings.catch_warnings():  # TRL's notice that experimental APIs may change: the version is pinned, and
    warnings.simplefilter("ignore", TRLExperimentalWarning)  # tests/test_grpo_family_methods.py checks the class
    from trl.experimental.gmpo import GMPOConfig, GMPOTrainer

if TYPE_CHECKING:
    import pandas as pd

    from rlnb.train import RunConfig

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
    entropy_alpha: float = field(default=0.0, metadata={
        "help": "alpha of the entropy-shaped advantage A + min(alpha * H_detached, |A| / kappa) per token (Cheng et "
                "al. 2025), on top of `advantage`; 0 switches it off, otherwise each micro-batch costs one extra "
                "forward pass without gradient"})
    entropy_kappa: float = field(default=2.0, metadata={
        "help": "kappa of the entropy-shaped advantage: the term is at most |A| / kappa (kappa >= 1, so it never "
                "flips a negative advantage's sign)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.advantage not in ESTIMATORS:
            raise ValueError(f"unknown advantage {self.advantage!r}: choose one of {ADVANTAGES}")
        if self.advantage == "pass_at_k" and not 1 <= self.pass_k <= self.num_generations:
            raise ValueError(f"pass_k={self.pass_k} must lie in [1, num_generations={self.num_generations}]")
        if self.positive_weight < 0:
            raise ValueError(f"positive_weight must be non-negative, got {self.positive_weight}")
        if self.entropy_alpha < 0:
            raise ValueError(f"entropy_alpha must be non-negative, got {self.entropy_alpha}")
        if self.entropy_kappa < 1:
            raise ValueError(f"entropy_kappa must be at least 1 (below 1 the entropy term can flip a negative "
                             f"advantage's sign), got {self.entropy_kappa}")


class AdvantageGRPOTrainer(RecordingGRPOTrainer):
    """The recording GRPO trainer whose advantage is ``args.advantage`` (an :class:`AdvantageConfig`)."""

    config_class = AdvantageConfig

    def compute_advantages(self, rewards: torch.Tensor, group_size: int) -> torch.Tensor:
        return ESTIMATORS[self.args.advantage](rewards, group_size, self.args)

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        """TRL's loss; with ``entropy_alpha > 0``, on the entropy-shaped (B, T) advantages of this micro-batch.

        The entropies come from a no-grad forward of the current policy on the micro-batch (TRL's own
        ``_get_per_token_logps_and_entropies``, so at the sampling temperature), equal to those of the
        loss's forward when the model has no dropout. Text only: images are not passed to it.
        """
        if self.args.entropy_alpha == 0:
            return super()._compute_loss(model, inputs)
        with torch.no_grad():
            entropies = self._get_per_token_logps_and_entropies(model, *self._model_inputs(inputs),
                                                                compute_entropy=True)[1]  # (B, T)
        shaped = entropy_shaped_advantages(inputs["advantages"], entropies, self.args.entropy_alpha,
                                           self.args.entropy_kappa)
        if self.model.training:
            mask = self.loss_mask(inputs)
            bonus = (shaped - inputs["advantages"].unsqueeze(1)) * mask  # (B, T)
            self._metrics["train"]["entropy_shaping/mean"].append(float(bonus.sum() / mask.sum().clamp(min=1.0)))
        return super()._compute_loss(model, {**inputs, "advantages": shaped})


# ---------------------------------------------------------------- GMPO: TRL's loss, recorded
@dataclass
class RecordingGMPOConfig(RecordingGRPOConfig, GMPOConfig):
    """TRL's ``GMPOConfig`` with the recording trainer's fields.

    ``epsilon`` is declared again because the dataclass fields of the first base (``RecordingGRPOConfig``,
    whose ``epsilon`` is GRPOConfig's 0.2) would otherwise override GMPOConfig's 0.4.
    """

    epsilon: float = field(default=0.4, metadata={
        "help": "GMPO: lower clip of the per-token log-ratio, so the ratio's lower bound is exp(-epsilon); "
                "epsilon_high (default: epsilon) the upper, exp(epsilon_high). The paper's range is "
                "(exp(-0.4), exp(0.4)), TRL's GMPOConfig default"})


class RecordingGMPOTrainer(RecordingGRPOTrainer, GMPOTrainer):
    r"""GMPO as TRL 1.16 implements it (``trl.experimental.gmpo``), with the recording trainer's metrics.

    GMPO maximises the geometric mean of the token ratios instead of their arithmetic mean:
    :math:`\mathcal J = \frac1G\sum_i \hat A_i \exp\big(\frac{1}{|o_i|}\sum_t
    \operatorname{clip}_\pm(\log\rho_{i,t})\big)`, each log-ratio clipped sign-aware to
    :math:`[-\epsilon_\text{low}, \epsilon_\text{high}]` in log space, then a plain mean over sequences
    (``loss_type`` is not used). The MRO is this class, ``RecordingGRPOTrainer``, ``GMPOTrainer``,
    ``GRPOTrainer``: the recording trainer's ``_compute_loss`` calls ``super()``, which is GMPO's, and
    GMPO's forward goes through the recorder's ``_get_per_token_logps_and_entropies``, so the token
    diagnostics are recorded on GMPO's own forward. Rollouts, advantages (the hook) and dynamic
    sampling are the recording trainer's.
    """

    config_class = RecordingGMPOConfig


# ---------------------------------------------------------------- ratio-based methods on one batch
CLIP_METRICS = ("clip_ratio/region_mean", "cispo_clip_ratio")
"""What TRL logs as the share of tokens (or, sequence-level, sequences) its clip or truncation changed."""
UNCLIPPED = {"epsilon": 1e9, "epsilon_high": 1e9}
"""GRPOConfig options that switch every ratio clip and CISPO's truncation off: a method's unclipped twin."""


def batch_loss_and_gradient(trainer: RecordingGRPOTrainer, inputs: dict[str, Any]) -> tuple[float, torch.Tensor, float]:
    """TRL's loss of ``trainer`` on one training batch (as ``_generate_and_score_completions`` returns it),
    its flat gradient over the model's parameters, and the clip share TRL logged for it (NaN when none)."""
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(); the loss divides by it
    trainer.model.zero_grad()
    loss = trainer._compute_loss(trainer.model, dict(inputs))
    loss.backward()
    grad = torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel())
                      for p in trainer.model.parameters()])  # (P,)
    trainer.model.zero_grad()
    logged = [trainer._metrics["train"][m][-1] for m in CLIP_METRICS if trainer._metrics["train"].get(m)]
    return float(loss.detach()), grad, float(logged[-1]) if logged else float("nan")


class RatioEffect(NamedTuple):
    """:func:`ratio_effect`'s result."""

    table: pd.DataFrame
    """One row per method and state: clip share, gradient change against the unclipped twin, |ratio - 1|."""
    tokens: pd.DataFrame
    """One row per completion token and state: its token ratio and its completion's advantage."""


def ratio_effect(configs: dict[str, Any], work_dir: str, prompts: int = 4, seed: int = 0) -> RatioEffect:
    """What each ratio-based method changes on one generation batch, on-policy and after one optimiser step.

    ``configs`` maps a method name to its :class:`rlnb.train.RunConfig`; each is compared with its own twin
    with :data:`UNCLIPPED` options (same loss, no clip or truncation). One batch of ``prompts`` prompts is
    sampled by the base policy of the first config. *On-policy* the policy is the sampling one, so every
    ratio is 1 (up to float noise between two forward passes); *off-policy* is after one AdamW step at the
    run's learning rate on the first config's loss, as the second optimiser step of a generation batch
    sees it. Its ``table`` has one row per method and state: the clip share TRL logs, the relative change
    of the gradient against the unclipped twin's, ``|g - g_unclipped| / |g_unclipped|``, and the batch's
    mean and largest token |ratio - 1|; its ``tokens`` are the batch's token ratios with their
    advantages, from which :func:`clip_bands` says which tokens each clip range cuts.
    """
    from pathlib import Path

    import pandas as pd

    from rlnb.train import RunConfig, build_trainer

    names = list(configs)
    pairs = {name: tuple(build_trainer(cfg, Path(work_dir) / f"{i}-{suffix}") for suffix, cfg in (
        ("clipped", cfg), ("unclipped", RunConfig(**{**cfg.to_dict(), "grpo": {**cfg.grpo, **UNCLIPPED}}))))
        for i, (name, cfg) in enumerate(configs.items())}
    first = pairs[names[0]][0]
    torch.manual_seed(seed)
    rows_in = [first.train_dataset[i] for i in range(prompts) for _ in range(first.num_generations)]
    first.model.train()  # TRL samples num_generations per prompt in training mode
    inputs = first._generate_and_score_completions(rows_in)
    if inputs.get("old_per_token_logps") is None:
        raise ValueError("the batch has no old log-probs: give the configs steps_per_generation > 1, as TRL computes "
                         "them only when a generation batch serves several optimiser steps")
    mask = inputs["completion_mask"].bool()
    advantages = inputs["advantages"].unsqueeze(1).expand_as(mask)[mask]  # (N,) one per completion token
    rows, tokens = [], []
    for state in ("on-policy (first step)", "off-policy (after one step)"):
        if state.startswith("off"):
            optimizer = torch.optim.AdamW(first.model.parameters(), lr=first.args.learning_rate)
            first.model.train()
            first.current_gradient_accumulation_steps = 1
            first._compute_loss(first.model, dict(inputs)).backward()
            optimizer.step()
            first.model.zero_grad()
            for pair in pairs.values():
                for trainer in pair:
                    if trainer is not first:
                        trainer.model.load_state_dict(first.model.state_dict())
        with torch.no_grad():
            logps = first._get_per_token_logps_and_entropies(first.model, *first._model_inputs(inputs))[0]  # (B, T)
        ratio = torch.exp(logps - inputs["old_per_token_logps"])[mask]  # (N,)
        gap = (ratio - 1).abs()
        tokens.append(pd.DataFrame({"state": state, "ratio": ratio.double().cpu().numpy(),
                                    "advantage": advantages.double().cpu().numpy()}))
        for name, (clipped, unclipped) in pairs.items():
            _, grad, share = batch_loss_and_gradient(clipped, inputs)
            _, free, _ = batch_loss_and_gradient(unclipped, inputs)
            rows.append({"method": name, "state": state, "clip share": share,
                         "gradient change vs unclipped": float((grad - free).norm() / free.norm().clamp(min=1e-30)),
                         "mean |ratio - 1|": float(gap.mean()), "max |ratio - 1|": float(gap.max())})
    return RatioEffect(pd.DataFrame(rows), pd.concat(tokens, ignore_index=True))


def token_clip_range(cfg: RunConfig) -> tuple[float, float]:
    """The token ratios ``(low, high)`` outside which a token-level ratio method's clip can bind.

    PPO's clip (GRPO, DAPO): ``(1 - epsilon, 1 + epsilon_high)``, ``epsilon_high`` defaulting to
    ``epsilon`` as in TRL; GMPO clips the log-ratio, so ``(exp(-epsilon), exp(epsilon_high))``. GSPO's
    clip acts on a sequence ratio and CISPO truncates a weight instead of clipping, so neither has one.
    """
    grpo = cfg.grpo
    if grpo.get("importance_sampling_level", "token") != "token" or cfg.loss_type == "cispo":
        raise ValueError("token_clip_range is for token-level clipped ratios: GSPO clips a sequence ratio and CISPO "
                         "truncates its weight")
    config_class = RecordingGMPOConfig if cfg.method == "gmpo" else RecordingGRPOConfig
    low = float(grpo.get("epsilon", config_class.__dataclass_fields__["epsilon"].default))
    high = grpo.get("epsilon_high")
    high = low if high is None else float(high)
    return (math.exp(-low), math.exp(high)) if cfg.method == "gmpo" else (1 - low, 1 + high)


def clip_bands(tokens: pd.DataFrame, ranges: Mapping[str, tuple[float, float]]) -> pd.DataFrame:
    """Which tokens each clip range cuts, and which it cuts that the first range does not.

    A sign-aware clip binds on a token whose ratio lies below ``low`` with a negative advantage or above
    ``high`` with a positive one (TRL's ``clip_ratio/region_mean``; GMPO's in log space, the same test).
    Two ranges clip the same tokens exactly when no token's ratio falls between their bounds, which the
    last column counts whatever the advantage: why differently wide ranges can log the same share.
    """
    import numpy as np
    import pandas as pd

    if not ranges:
        raise ValueError("clip_bands needs at least one clip range")
    for name, (low, high) in ranges.items():
        if not 0 <= low < 1 < high:
            raise ValueError(f"clip range {name!r} must satisfy 0 <= low < 1 < high, got ({low}, {high})")
    ratio, adv = tokens["ratio"].to_numpy(), tokens["advantage"].to_numpy()

    def binds(low: float, high: float):
        return ((ratio < low) & (adv < 0)) | ((ratio > high) & (adv > 0))

    first_name, (first_low, first_high) = next(iter(ranges.items()))
    reference = binds(first_low, first_high)
    rows = []
    for name, (low, high) in ranges.items():
        cut = binds(low, high)
        between = ((ratio >= min(low, first_low)) & (ratio < max(low, first_low))) | \
                  ((ratio > min(high, first_high)) & (ratio <= max(high, first_high)))
        rows.append({"range": name, "low": low, "high": high, "clip share": float(cut.mean()),
                     "tokens clipped": int(cut.sum()),
                     "smallest |log ratio| clipped": float(np.abs(np.log(ratio[cut])).min()) if cut.any() else float("nan"),
                     f"clipped, not by {first_name}": int((cut & ~reference).sum()),
                     f"clipped by {first_name}, not here": int((reference & ~cut).sum()),
                     f"tokens between these bounds and {first_name}'s": int(between.sum())})
    return pd.DataFrame(rows).set_index("range")
