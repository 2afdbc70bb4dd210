"""Clip-Cov and KL-Cov (Cui et al. 2025) as a loss variant of the recording GRPO trainer.

Cui et al. show that under policy gradient the entropy changes by about
-eta * Cov(log pi, A): tokens that are both likely and rewarded (or unlikely
and punished) have a large positive covariance term and are the ones that
drain entropy. Both of their remedies act only on a small set of such tokens:

* **Clip-Cov** picks, at random, ``clip_cov_ratio * N`` of the N valid tokens
  among those whose centred covariance lies strictly inside
  ``(clip_cov_lb, clip_cov_ub)`` and is not already cut by PPO's ratio clip,
  and stops their gradient;
* **KL-Cov** adds ``kl_coef * |log pi - log pi_old|`` to the per-token loss of
  the top ``kl_cov_ratio * N`` tokens by covariance.

TRL 1.16 has neither. With both ratios 0 the trainer is TRL's, loss and gradient. With either on, it
computes the loss the official code computes (``compute_policy_loss_clip_cov`` and
``compute_policy_loss_kl_cov`` of the Entropy-Mechanism repository), aggregated like the run's
``loss_type`` (:func:`cov_token_loss`): Clip-Cov keeps PPO's clipped surrogate and zeroes the chosen
tokens' loss; KL-Cov has **no** ratio clip, only the penalty on the top tokens. Both take at least one
token (``max(1, int(r * N))``), and the official Clip-Cov recipes set the clip range to
``clip_ratio_low = clip_ratio_high = 1`` (``epsilon = epsilon_high = 1`` here), which
:data:`rlnb.experiments.ENTROPY_INTERVENTIONS` follows.

One property worth knowing: in a fully on-policy step (TRL's default,
``steps_per_generation=1``, ``num_iterations=1``) log pi_old is the current
log pi, so |log pi - log pi_old| is 0 with zero gradient and KL-Cov does
nothing; PPO's clip (and clip-higher) does nothing either, since every ratio
is exactly 1. Both act only from the second optimiser step on one generation
batch, so notebook 03 trains with ``steps_per_generation=2``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from rlnb.metrics import centered_logp_adv_cov, masked_mean
from rlnb.trainers import RecordingGRPOConfig, RecordingGRPOTrainer

AGGREGATED_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
"""TRL loss types whose per-token loss is the clipped ratio surrogate this variant modifies."""


def _count(ratio: float, mask: torch.Tensor) -> int:
    """Tokens a positive ratio of the batch's valid tokens amounts to: ``max(1, int(ratio * N))`` as in the
    official code, so a small batch still gets one; a ratio of 0 selects none."""
    return max(1, int(ratio * int(mask.sum()))) if ratio > 0 else 0


def clip_cov_selection(
    cov: torch.Tensor,
    mask: torch.Tensor,
    ratio: float,
    lower: float,
    upper: float,
    already_clipped: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Bool [B, T]: the tokens whose gradient Clip-Cov stops.

    Eligible tokens are valid, have ``lower < cov < upper`` and are not already
    clipped by the ratio clip (their gradient is zero anyway). Exactly
    ``min(max(1, int(ratio * valid tokens)), eligible tokens)`` of them are drawn
    uniformly without replacement.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"clip_cov_ratio must lie in [0, 1], got {ratio}")
    if not lower < upper:
        raise ValueError(f"Clip-Cov band needs lower < upper, got ({lower}, {upper})")
    valid = mask.bool()
    eligible = valid & (cov > lower) & (cov < upper)
    if already_clipped is not None:
        eligible &= ~already_clipped
    candidates = eligible.flatten().nonzero().squeeze(1)
    take = min(_count(ratio, valid), candidates.numel())
    chosen = torch.zeros(cov.numel(), dtype=torch.bool, device=cov.device)
    if take:
        order = torch.randperm(candidates.numel(), generator=generator, device="cpu").to(cov.device)
        chosen[candidates[order[:take]]] = True
    return chosen.view_as(valid)


def kl_cov_selection(cov: torch.Tensor, mask: torch.Tensor, ratio: float) -> torch.Tensor:
    """Bool [B, T]: the ``max(1, int(ratio * valid tokens))`` valid tokens with the largest covariance."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"kl_cov_ratio must lie in [0, 1], got {ratio}")
    valid = mask.bool()
    take = _count(ratio, valid)
    chosen = torch.zeros(cov.numel(), dtype=torch.bool, device=cov.device)
    if take:
        ranked = torch.where(valid, cov, float("-inf")).flatten()
        chosen[ranked.topk(take).indices] = True
    return chosen.view_as(valid)


def kl_cov_penalty(
    logps: torch.Tensor, old_logps: torch.Tensor, selected: torch.Tensor, coef: float
) -> torch.Tensor:
    """Per-token ``coef * |log pi - log pi_old|`` on the selected tokens, 0 elsewhere (keeps the graph)."""
    return torch.where(selected, coef * (logps - old_logps).abs(), torch.zeros_like(logps))


def cov_token_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip: tuple[float, float],
    clip_cov: tuple[float, float, float] | None = None,
    kl_cov: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The official per-token Clip-Cov or KL-Cov loss, before aggregation, and the tokens it acted on.

    ``clip_cov = (ratio, lower, upper)``: PPO's clipped surrogate ``max(-A r, -A clip(r))`` with the
    ``clip = (eps_low, eps_high)`` range, zeroed on the tokens :func:`clip_cov_selection` draws (tokens
    the clip already cut are not eligible). ``kl_cov = (ratio, coef)``: ``-A r`` with no clip, plus
    :func:`kl_cov_penalty` on the :func:`kl_cov_selection` tokens. Exactly one of the two is given.
    Shapes: (B, T) tensors, ``advantages`` (B,). Returns ``(per_token_loss, selected)``.
    """
    if (clip_cov is None) == (kl_cov is None):
        raise ValueError("give exactly one of clip_cov and kl_cov (the official code has one loss mode per run)")
    adv = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
    ratio = torch.exp(logps - old_logps)
    surrogate = -adv * ratio
    cov = centered_logp_adv_cov(logps.detach(), advantages, mask)
    if kl_cov is not None:
        selected = kl_cov_selection(cov, mask, kl_cov[0])
        return surrogate + kl_cov_penalty(logps, old_logps, selected, kl_cov[1]), selected
    clipped_surrogate = -adv * torch.clamp(ratio, 1 - clip[0], 1 + clip[1])
    cut_by_clip = (clipped_surrogate > surrogate) & mask.bool()
    selected = clip_cov_selection(cov, mask, clip_cov[0], clip_cov[1], clip_cov[2], cut_by_clip, generator)
    return torch.maximum(surrogate, clipped_surrogate) * (~selected).to(surrogate.dtype), selected


@dataclass
class CovConfig(RecordingGRPOConfig):
    """``GRPOConfig`` plus Clip-Cov's and KL-Cov's options (``RunConfig.method_options``); ratios 0 switch each off."""

    clip_cov_ratio: float = field(default=0.0, metadata={
        "help": "Clip-Cov: fraction of the valid tokens (at least one when positive) whose gradient is stopped, "
                "drawn among those with covariance in (clip_cov_lb, clip_cov_ub) (paper: 2e-4 for 7B)"})
    clip_cov_lb: float = field(default=1.0, metadata={"help": "Clip-Cov: lower end of the covariance band"})
    clip_cov_ub: float = field(default=5.0, metadata={"help": "Clip-Cov: upper end of the covariance band"})
    kl_cov_ratio: float = field(default=0.0, metadata={
        "help": "KL-Cov: fraction of the valid tokens (at least one when positive), the top by covariance, "
                "that get the penalty kl_coef * |log pi - log pi_old| (paper: 2e-3 for 7B)"})
    kl_coef: float = field(default=1.0, metadata={"help": "KL-Cov: coefficient of the penalty (paper: 1)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("clip_cov_ratio", "kl_cov_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if not self.clip_cov_lb < self.clip_cov_ub:
            raise ValueError(f"Clip-Cov band needs clip_cov_lb < clip_cov_ub, got ({self.clip_cov_lb}, {self.clip_cov_ub})")
        if self.kl_coef < 0:
            raise ValueError(f"kl_coef must be non-negative, got {self.kl_coef}")
        if self.clip_cov_ratio > 0 and self.kl_cov_ratio > 0:
            raise ValueError("choose Clip-Cov (clip_cov_ratio) or KL-Cov (kl_cov_ratio), not both: "
                             "the official code has one loss mode per run")
        if self.loss_type not in AGGREGATED_LOSS_TYPES:
            raise ValueError(f"Clip-Cov/KL-Cov support loss_type in {AGGREGATED_LOSS_TYPES}, got {self.loss_type!r}")
        if self.importance_sampling_level != "token":
            raise ValueError("Clip-Cov/KL-Cov act per token: use importance_sampling_level='token'")


class CovGRPOTrainer(RecordingGRPOTrainer):
    """Recording GRPO trainer with Clip-Cov and/or KL-Cov (``args`` a :class:`CovConfig`); ratios 0 give TRL's loss.

    The paper's 7B values (Clip-Cov 2e-4 of tokens in the band [1, 5];
    KL-Cov the top 2e-3, coefficient 1) select less than one token of a
    batch of ~1000, so the notebook's values are scaled for the tiny world (see
    :data:`rlnb.experiments.ENTROPY_INTERVENTIONS`). Logs
    ``clip_cov/fraction``, ``kl_cov/fraction`` and ``kl_cov/penalty`` every step.
    """

    config_class = CovConfig

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        a = self.args
        if a.clip_cov_ratio == 0 and a.kl_cov_ratio == 0:
            return super()._compute_loss(model, inputs)
        logps, entropies, old, mask = self.policy_forward(model, inputs)
        generator = torch.Generator().manual_seed(a.seed * 1_000_003 + self.state.global_step)
        per_token, selected = cov_token_loss(
            logps, old, inputs["advantages"], mask, clip=(self.epsilon_low, self.epsilon_high),
            clip_cov=(a.clip_cov_ratio, a.clip_cov_lb, a.clip_cov_ub) if a.clip_cov_ratio > 0 else None,
            kl_cov=(a.kl_cov_ratio, a.kl_coef) if a.kl_cov_ratio > 0 else None, generator=generator)
        loss = self.reduce_per_token(per_token, mask, inputs)
        if self.model.training:
            metrics = self._metrics["train"]
            metrics["entropy"].append(float(masked_mean(entropies.detach(), mask)))  # as TRL's own loss logs it
            share = float(selected.sum() / mask.sum().clamp(min=1))
            if a.clip_cov_ratio > 0:
                metrics["clip_cov/fraction"].append(share)
            else:
                metrics["kl_cov/fraction"].append(share)
                gap = (logps.detach() - old).abs()
                metrics["kl_cov/penalty"].append(float(a.kl_coef * gap[selected].mean()) if selected.any() else 0.0)
            self._record_token_diagnostics(inputs)
        return loss


def rollout_covariances(rollouts: Any, rewards: Any) -> torch.Tensor:
    """Every completion token's centred covariance term ``(log pi - mean)(A - mean)`` in a sampled batch.

    ``rollouts`` is a :class:`rlnb.rollout.Rollouts` (its ``logprobs`` are the policy's own at
    temperature 1) and ``rewards`` one reward per completion; advantages are GRPO's,
    ``(r - mean) / std`` within each prompt's group (0 where a group has no spread). The terms are
    what Clip-Cov and KL-Cov rank; their distribution shows how few tokens the methods' bands catch.
    """
    import numpy as np

    rewards = np.asarray(rewards, dtype=float)
    if len(rewards) != len(rollouts):
        raise ValueError(f"got {len(rewards)} rewards for {len(rollouts)} completions")
    advantages = np.zeros_like(rewards)
    for group in np.unique(rollouts.prompt_index):
        rows = rollouts.prompt_index == group
        spread = rewards[rows].std(ddof=1) if rows.sum() > 1 else 0.0
        advantages[rows] = (rewards[rows] - rewards[rows].mean()) / spread if spread > 0 else 0.0
    width = max(len(lp) for lp in rollouts.logprobs)
    logps, mask = torch.zeros(len(rollouts), width), torch.zeros(len(rollouts), width)
    for i, lp in enumerate(rollouts.logprobs):
        logps[i, :len(lp)] = torch.as_tensor(np.asarray(lp, dtype=np.float32))
        mask[i, :len(lp)] = 1
    cov = centered_logp_adv_cov(logps, torch.as_tensor(advantages, dtype=torch.float32), mask)
    return cov[mask.bool()]
