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

TRL 1.16 has neither. Rather than re-deriving TRL's whole loss, the subclass
changes it at its two seams: the per-token log-probabilities TRL receives
(a Clip-Cov token gets a detached log-prob, so its ratio term carries no
gradient, which is what zeroing its loss does) and a KL-Cov penalty added to
the returned loss through the same aggregation TRL uses for the run's
``loss_type``. With both ratios 0 the loss and gradient are TRL's own.

One property worth knowing: in a fully on-policy step (TRL's default,
``steps_per_generation=1``, ``num_iterations=1``) log pi_old is the current
log pi, so |log pi - log pi_old| is 0 with zero gradient and KL-Cov does
nothing; PPO's clip (and clip-higher) does nothing either, since every ratio
is exactly 1. Both act only from the second optimiser step on one generation
batch, so notebook 03 trains with ``steps_per_generation=2``.
"""

from __future__ import annotations

from typing import Any

import torch

from rlnb.metrics import centered_logp_adv_cov
from rlnb.trainers import RecordingGRPOTrainer

AGGREGATED_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
"""TRL loss types whose per-token loss is the clipped ratio surrogate this variant modifies."""


def _count(ratio: float, mask: torch.Tensor) -> int:
    """Tokens a ratio of the batch's valid tokens amounts to (rounded down, like the paper's int())."""
    return int(ratio * int(mask.sum()))


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
    ``min(int(ratio * valid tokens), eligible tokens)`` of them are drawn
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
    """Bool [B, T]: the ``int(ratio * valid tokens)`` valid tokens with the largest covariance."""
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


class CovGRPOTrainer(RecordingGRPOTrainer):
    """Recording GRPO trainer with Clip-Cov and/or KL-Cov; ratios 0 give TRL's loss unchanged.

    The paper's 7B values (Clip-Cov 2e-4 of tokens in the band [1, 5];
    KL-Cov the top 2e-3, coefficient 1) select less than one token of a
    batch of ~1000, so the defaults here are scaled for the tiny world (see
    :func:`rlnb.experiments.entropy_interventions`). Logs
    ``clip_cov/fraction``, ``kl_cov/fraction`` and ``kl_cov/penalty`` every step.
    """

    def __init__(
        self,
        *args: Any,
        clip_cov_ratio: float = 0.0,
        clip_cov_lb: float = 1.0,
        clip_cov_ub: float = 5.0,
        kl_cov_ratio: float = 0.0,
        kl_coef: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if self.loss_type not in AGGREGATED_LOSS_TYPES:
            raise ValueError(f"Clip-Cov/KL-Cov support loss_type in {AGGREGATED_LOSS_TYPES}, got {self.loss_type!r}")
        if self.importance_sampling_level != "token":
            raise ValueError("Clip-Cov/KL-Cov act per token: use importance_sampling_level='token'")
        for name, value in (("clip_cov_ratio", clip_cov_ratio), ("kl_cov_ratio", kl_cov_ratio)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        if not clip_cov_lb < clip_cov_ub:
            raise ValueError(f"Clip-Cov band needs clip_cov_lb < clip_cov_ub, got ({clip_cov_lb}, {clip_cov_ub})")
        if kl_coef < 0:
            raise ValueError(f"kl_coef must be non-negative, got {kl_coef}")
        self.clip_cov_ratio, self.clip_cov_lb, self.clip_cov_ub = clip_cov_ratio, clip_cov_lb, clip_cov_ub
        self.kl_cov_ratio, self.kl_coef = kl_cov_ratio, kl_coef
        self._cov_inputs: dict[str, Any] | None = None
        self._kl_terms: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    # ------------------------------------------------------------------ seams of TRL's loss
    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        self._cov_inputs = inputs
        try:
            loss = super()._compute_loss(model, inputs)
        finally:
            self._cov_inputs = None
        if self._kl_terms is not None:
            logps, old_logps, selected = self._kl_terms
            self._kl_terms = None
            penalty = kl_cov_penalty(logps, old_logps, selected, self.kl_coef)
            loss = loss + self.reduce_per_token(penalty, self._loss_mask(inputs), inputs)
            if self.model.training:
                self._metrics["train"]["kl_cov/penalty"].append(float(penalty.detach().sum() / selected.sum().clamp(min=1)))
        return loss

    def _get_per_token_logps_and_entropies(self, *args: Any, **kwargs: Any):
        logps, entropies, *rest = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if self._cov_inputs is not None and kwargs.get("compute_entropy"):
            logps = self._apply_cov_controls(logps, self._cov_inputs)
        return (logps, entropies, *rest)

    def _apply_cov_controls(self, logps: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
        """Select tokens by covariance; detach the Clip-Cov ones, remember the KL-Cov ones."""
        mask = self._loss_mask(inputs)
        advantages = inputs["advantages"]
        old = inputs.get("old_per_token_logps")
        old = logps.detach() if old is None else old
        cov = centered_logp_adv_cov(logps.detach(), advantages, mask)
        training = self.model.training
        if self.clip_cov_ratio > 0:
            adv = advantages if advantages.dim() == 2 else advantages.unsqueeze(1)
            ratio = torch.exp(logps.detach() - old)
            clipped = ((ratio < 1 - self.epsilon_low) & (adv < 0)) | ((ratio > 1 + self.epsilon_high) & (adv > 0))
            generator = torch.Generator().manual_seed(self.args.seed * 1_000_003 + self.state.global_step)
            chosen = clip_cov_selection(cov, mask, self.clip_cov_ratio, self.clip_cov_lb, self.clip_cov_ub,
                                        clipped, generator)
            logps = torch.where(chosen, logps.detach(), logps)
            if training:
                self._metrics["train"]["clip_cov/fraction"].append(float(chosen.sum() / mask.sum().clamp(min=1)))
        if self.kl_cov_ratio > 0:
            selected = kl_cov_selection(cov, mask, self.kl_cov_ratio)
            self._kl_terms = (logps, old, selected)
            if training:
                self._metrics["train"]["kl_cov/fraction"].append(float(selected.sum() / mask.sum().clamp(min=1)))
        return logps

    @staticmethod
    def _loss_mask(inputs: dict[str, Any]) -> torch.Tensor:
        mask = inputs["completion_mask"]
        return mask if "tool_mask" not in inputs else mask * inputs["tool_mask"]
