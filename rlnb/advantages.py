r"""The GRPO family's advantages side by side: one pure function each, one switch to choose between them.

Every function maps the rewards of a whole generation batch, shape (N,) with each prompt's
``group_size`` completions contiguous (TRL's layout), to one advantage per completion, shape (N,).
A reward of NaN marks a completion no reward function scored (TRL's "unscorable" rows); it stays NaN
here, and the trainer zeroes it afterwards as TRL does, so no estimator has to guess its sign.

* ``grpo``: TRL 1.16's own advantage for ``scale_rewards`` group / batch / none (:func:`grpo_advantages`).
* ``psr``, ``nsr``, ``w_reinforce``: Zhu et al. 2025, "The Surprising Effectiveness of Negative
  Reinforcement in LLM Reasoning": REINFORCE on the positive samples only, on the negative ones only, or
  both with the positive ones down-weighted by lambda (:func:`psr_advantages`, :func:`nsr_advantages`,
  :func:`w_reinforce_advantages`). No group baseline and no std.
* ``pass_at_k``: Chen et al. 2025, "Pass@k Training for Adaptively Balancing Exploration and
  Exploitation of Large Reasoning Models": the analytic advantage of the pass@k reward
  (:func:`pass_at_k_advantages`).

On top of any of them, :func:`entropy_shaped_advantages` (Cheng et al. 2025, "Reasoning with
Exploration: An Entropy Perspective") turns a completion's advantage into per-token ones; it needs the
policy's token entropies, so the trainer applies it where the loss is computed.

The binary estimators need a notion of "correct": a completion is a positive sample when its (summed)
reward is at least ``correct_reward`` (1.0: the accuracy reward, which a format reward below 1 never
reaches on its own). :class:`rlnb.grpo_family.AdvantageGRPOTrainer` is the recording trainer with the
choice as one config field, ``advantage``; every trainer's default is :func:`grpo_advantages`
(:meth:`rlnb.trainers.RecordingGRPOTrainer.compute_advantages`).
"""

from __future__ import annotations

import math

import torch
from trl.trainer.utils import nanstd

SCALE_REWARDS = ("group", "batch", "none")
"""TRL's ``scale_rewards`` values: the std that divides ``r - mean(group)``."""
TRL_STD_EPSILON = 1e-4
"""TRL 1.16 divides by ``std + 1e-4`` (not ``max(std, eps)``): a zero-spread group gets advantage 0."""
PASS_AT_K_EPSILON = 1e-6
"""The official pass@k code divides by ``sigma + 1e-6``."""


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(N,) -> (N / group_size, group_size), refusing a batch that is not whole groups."""
    if rewards.dim() != 1 or group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be a flat batch of whole groups of {group_size}, got shape "
                         f"{tuple(rewards.shape)}")
    return rewards.view(-1, group_size)


def grpo_advantages(rewards: torch.Tensor, group_size: int, scale_rewards: str = "group") -> torch.Tensor:
    r"""TRL 1.16's GRPO advantage, op for op (so a trainer using it reproduces TRL bit for bit).

    .. math:: \hat A_i = \frac{r_i - \operatorname{mean}(r_{\text{group}(i)})}{\sigma + 10^{-4}}

    (Shao et al. 2024, DeepSeekMath, outcome supervision, with TRL's epsilon). ``scale_rewards`` picks sigma:
    ``"group"`` the group's std, ``"batch"`` the std of the whole batch (the centre stays the *group*
    mean), ``"none"`` no division (Dr. GRPO, Liu et al. 2025). Both stds are Bessel-corrected (unbiased)
    and ignore NaN rewards, as TRL's ``nanstd``; a group of one has std 0 there, as in TRL.
    """
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"unknown scale_rewards {scale_rewards!r}: choose one of {SCALE_REWARDS}")
    grouped = _grouped(rewards, group_size)  # (G_n, G)
    centred = rewards - torch.nanmean(grouped, dim=1).repeat_interleave(group_size)  # (N,)
    if scale_rewards == "none":
        return centred
    if scale_rewards == "group":
        std = nanstd(grouped, dim=1).repeat_interleave(group_size) if group_size > 1 else torch.zeros_like(rewards)
    else:
        std = nanstd(rewards).expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
    return centred / (std + TRL_STD_EPSILON)


def outcomes(rewards: torch.Tensor, correct_reward: float = 1.0) -> torch.Tensor:
    """1.0 for a positive sample (reward >= ``correct_reward``), 0.0 for a negative one, NaN where unscored."""
    return torch.where(rewards.isnan(), rewards, (rewards >= correct_reward).to(rewards.dtype))


def psr_advantages(rewards: torch.Tensor, group_size: int, correct_reward: float = 1.0) -> torch.Tensor:
    r"""Positive-sample reinforcement (Zhu et al. 2025): :math:`\hat A_i = 1` if correct, else 0.

    The PSR half of their decomposition of RLVR with rewards :math:`\pm 1`,
    :math:`\mathcal L_{\text{PSR}} = -\mathbb E_x\big[\sum_{y:\,r(x,y)=1}\pi_\theta(y\mid x)\big]`: raise
    the correct answers only (it sharpens; the paper finds pass@k at large k falls). No baseline, so
    ``group_size`` only checks the layout.
    """
    _grouped(rewards, group_size)
    return outcomes(rewards, correct_reward)


def nsr_advantages(rewards: torch.Tensor, group_size: int, correct_reward: float = 1.0) -> torch.Tensor:
    r"""Negative-sample reinforcement (Zhu et al. 2025): :math:`\hat A_i = -1` if incorrect, else 0.

    :math:`\mathcal L_{\text{NSR}} = -\mathbb E_x\big[\sum_{y:\,r(x,y)=-1} -\pi_\theta(y\mid x)\big]`: only
    push the wrong answers down, which redistributes their mass to what the model already
    finds likely; the paper finds it keeps pass@k at large k while matching GRPO's pass@1.
    """
    _grouped(rewards, group_size)
    return outcomes(rewards, correct_reward) - 1.0


def w_reinforce_advantages(
    rewards: torch.Tensor, group_size: int, positive_weight: float = 0.1, correct_reward: float = 1.0
) -> torch.Tensor:
    r"""Weighted REINFORCE (Zhu et al. 2025): :math:`\hat A_i = \lambda` if correct, :math:`-1` if incorrect.

    :math:`\mathcal L_{\text{W-REINFORCE}} = \lambda\,\mathcal L_{\text{PSR}} + \mathcal L_{\text{NSR}}`,
    the paper's default :math:`\lambda = 0.1`: mostly negative reinforcement, with a little of the
    positive kept for pass@1.
    """
    _grouped(rewards, group_size)
    correct = outcomes(rewards, correct_reward)
    return positive_weight * correct - (1.0 - correct)


def pass_at_k_group(n: int, correct: int, k: int) -> tuple[float, float]:
    r"""Pass@k training's analytic advantages of one group: (correct responses', incorrect responses').

    Chen et al. 2025, Pass@k Training, the analytic derivation. Of a group of :math:`N` with :math:`c` correct,
    a uniformly drawn k-subset passes with probability
    :math:`\bar R = 1 - \binom{N-c}{k}/\binom{N}{k}`; its reward is binary, so its std is
    :math:`\sigma = \sqrt{\bar R(1-\bar R)}`. A response's advantage is the mean normalised advantage
    :math:`(R_{\text{subset}} - \bar R)/\sigma` of the k-subsets that contain it:

    .. math::
        \hat A_{\text{pos}} = \frac{1 - \bar R}{\sigma}, \qquad
        \hat A_{\text{neg}} = \frac{1 - \bar R - \binom{N-c-1}{k-1}/\binom{N-1}{k-1}}{\sigma}

    (an incorrect response's subsets fail exactly when its k - 1 companions are all incorrect).
    As in the official code the division is by :math:`\sigma + 10^{-6}`; when every subset passes or
    every one fails (:math:`N - c < k`, or :math:`c = 0`), :math:`\sigma = 0` and both advantages are 0.
    """
    if not 1 <= k <= n or not 0 <= correct <= n:
        raise ValueError(f"pass@k advantages need 1 <= k <= n and 0 <= correct <= n, got n={n}, correct={correct}, k={k}")
    mean = 1.0 - _all_incorrect(n, n - correct, k)
    sigma = math.sqrt(mean * (1.0 - mean))
    if sigma == 0.0:  # every k-subset passes, or every one fails: no signal (the official code's are 0 too)
        return 0.0, 0.0
    positive = (1.0 - mean) / (sigma + PASS_AT_K_EPSILON)
    negative = (1.0 - mean - _all_incorrect(n - 1, n - correct - 1, k - 1)) / (sigma + PASS_AT_K_EPSILON)
    return positive, negative


def _all_incorrect(pool: int, incorrect: int, draws: int) -> float:
    """Probability that ``draws`` responses drawn without replacement from ``pool`` are all incorrect."""
    return math.comb(incorrect, draws) / math.comb(pool, draws)


def pass_at_k_advantages(
    rewards: torch.Tensor, group_size: int, k: int, correct_reward: float = 1.0
) -> torch.Tensor:
    """:func:`pass_at_k_group` applied to every group; an unscored completion is left out of its group's N.

    A group with fewer than ``k`` scored completions has no k-subset to reward: its advantages are 0.
    """
    grouped = outcomes(_grouped(rewards, group_size), correct_reward)  # (G_n, G)
    advantages = torch.full_like(grouped, float("nan"))
    for row, group in zip(advantages, grouped):
        scored = ~group.isnan()
        if int(scored.sum()) < k:
            row[scored] = 0.0
            continue
        positive, negative = pass_at_k_group(int(scored.sum()), int(group[scored].sum()), k)
        row[scored] = torch.where(group[scored] == 1.0, positive, negative).to(row.dtype)
    return advantages.view(-1)


def entropy_shaped_advantages(
    advantages: torch.Tensor, entropies: torch.Tensor, alpha: float, kappa: float
) -> torch.Tensor:
    r"""Cheng et al. 2025's entropy-based advantage, per token:

    .. math:: \hat A^{\text{shaped}}_{i,t} = \hat A_i + \min\!\Big(\alpha\,\mathcal H_{i,t}^{\text{detach}},\;
              \frac{|\hat A_i|}{\kappa}\Big)

    The term is positive and largest where the policy is unsure (in the paper: forking tokens,
    reflection, rare behaviours), so uncertain tokens of a rewarded answer are pushed up more and those
    of a punished one less. The entropy is detached: it weights the policy gradient and is not itself
    optimised, unlike an entropy bonus. The clip :math:`|\hat A|/\kappa` with :math:`\kappa \ge 1` keeps
    the term from flipping a negative advantage's sign or outgrowing the advantage, and gives a
    zero-advantage completion (a group with no spread) no gradient. Shapes: ``advantages`` (B,) or (B, T),
    ``entropies`` (B, T); returns (B, T).
    """
    adv = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages  # (B, 1) or (B, T)
    return adv + torch.minimum(alpha * entropies.detach(), adv.abs() / kappa)  # (B, T)
