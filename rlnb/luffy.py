"""LUFFY: off-policy expert traces mixed into the GRPO group (Yan et al. 2025), as a TRL trainer.

Each prompt's group holds ``k`` expert traces and ``G - k`` of the policy's own
rollouts. The traces are scored by the same verifier, so the group baseline
sees them: ``A_i = r_i - mean(r over the mixed group)`` (no std; TRL's
``scale_rewards="none"``). The loss then treats the two kinds of token
differently (:func:`mixed_token_loss`):

* on-policy tokens: ``-A * rho`` with ``rho = pi_theta / pi_old``, the PPO clip optional
  (the official script switches it off);
* off-policy tokens: the behaviour policy is taken as ``pi_phi = 1``, so the
  weight is ``pi_theta`` itself, passed through the *policy shaping*
  ``f(p) = p / (p + gamma)``, with the gradient through ``p`` and no clip.
  ``d f(p) / d log p = gamma p / (p + gamma)^2`` is largest near ``p = gamma``:
  low-probability expert tokens are learned faster than with the raw ratio
  ``p`` (whose weight ``p`` vanishes for them), while tokens the policy already
  knows are pushed gently, which is why shaping keeps exploration alive.

Aggregation (:func:`luffy_loss`) is either the official code's (``loss_normalization="official"``):
the policy terms a token *sum* over the micro-batch divided by the padded response length ``T_max``,
the RL + SFT baseline's NLL a token *mean* over trace tokens, and the entropy bonus a token mean over the
micro-batch (``mix_actor.py``: ``masked_mean(entropy, response_mask)``); or TRL's (``"trl"``): the policy
terms reduced like ``loss_type`` (:func:`rlnb.trainers.reduce_like_trl`), the entropy bonus the same token
mean (TRL's own ``entropy_coef`` convention). Against the official sum / ``T_max``, TRL's ``dr_grpo``
divides the policy terms by the rows ``B`` too. No KL term.

Importance sampling: like the official code, none is applied to the trace tokens (their behaviour
policy is taken as 1) and no vLLM sampling correction is applied to the on-policy tokens either:
the loss below replaces TRL's, and only TRL's loss reads the sampling log-probabilities.

The same trainer gives the paper's baselines by switching one option each:
``policy_shaping=False`` (raw ``p``), ``off_policy_loss="sft"`` (traces outside
the group's baseline, trained by negative log-likelihood: "RL + SFT loss"), and
``on_policy_scale=0`` with ``"sft"`` (plain SFT on the traces; the rollouts are
then generated only to measure the policy's own accuracy and entropy).

Generation: only the ``G - k`` on-policy slots of each group are sampled and the
traces fill the other ``k``. TRL's vLLM path samples ``num_generations`` per unique
prompt, so there the full group is sampled and ``k`` rollouts are replaced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch

from rlnb.metrics import masked_mean
from rlnb.tasks import WORLD, Task
from rlnb.trainers import RecordingGRPOConfig, RecordingGRPOTrainer

OFF_POLICY_LOSSES = ("mixed", "sft")
"""``mixed``: LUFFY (traces in the group's advantage); ``sft``: negative log-likelihood on the traces."""
LOSS_NORMALIZATIONS = ("official", "trl")
"""How :func:`luffy_loss` aggregates token terms: the official LUFFY code's, or TRL's ``loss_type``."""


def shaping_weight(p: torch.Tensor, gamma: float) -> torch.Tensor:
    """``d f(p) / d log p`` for ``f(p) = p / (p + gamma)``: the per-token weight a shaped trace token gets."""
    return gamma * p / (p + gamma) ** 2


def mixed_token_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    off_policy: torch.Tensor,
    *,
    off_policy_loss: str = "mixed",
    policy_shaping: bool = True,
    shaping_gamma: float = 0.1,
    clip: tuple[float, float] | None = None,
    on_policy_scale: float = 1.0,
    off_policy_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token loss of a mixed batch, before masking and aggregation.

    Shapes: ``logps``/``old_logps`` (B, T), ``advantages`` (B,), ``off_policy``
    (B,) bool (rows that are expert traces). Returns ``(on, off)``, each (B, T)
    and zero on the other kind's rows, so callers can aggregate and log them apart.
    """
    if off_policy_loss not in OFF_POLICY_LOSSES:
        raise ValueError(f"unknown off_policy_loss {off_policy_loss!r}: choose one of {OFF_POLICY_LOSSES}")
    adv = advantages.unsqueeze(1)
    off_rows = off_policy.unsqueeze(1).to(logps.dtype)
    ratio = torch.exp(logps - old_logps)
    on = -ratio * adv
    if clip is not None:
        on = torch.maximum(on, -torch.clamp(ratio, 1 - clip[0], 1 + clip[1]) * adv)
    if off_policy_loss == "sft":
        off = -logps
    else:
        p = torch.exp(logps)
        off = -(p / (p + shaping_gamma) if policy_shaping else p) * adv
    return on_policy_scale * on * (1 - off_rows), off_policy_scale * off * off_rows


class LuffyLoss(NamedTuple):
    """The three terms of :func:`luffy_loss`, each already aggregated; ``total`` is what is optimised."""

    on_policy: torch.Tensor
    off_policy: torch.Tensor
    entropy_bonus: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.on_policy + self.off_policy - self.entropy_bonus


def luffy_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    off_policy: torch.Tensor,
    mask: torch.Tensor,
    entropies: torch.Tensor,
    *,
    normalization: str = "official",
    max_completion_length: int,
    entropy_coef: float = 0.001,
    accumulation: float = 1.0,
    trl_reduce: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    **token_options: Any,
) -> LuffyLoss:
    r"""LUFFY's loss on one micro-batch (Yan et al. 2025, eq. 6 with policy shaping, plus the entropy bonus).

    .. math::

        \mathcal L(\theta) = -\frac{1}{Z}\Big[\sum_{i\in\text{on}}\sum_t \rho_{i,t}\hat A_i
        + \sum_{j\in\text{off}}\sum_t f\big(\pi_\theta(\tau_{j,t})\big)\hat A_j\Big]
        - \beta_H\,\frac{\sum_i\sum_t \mathcal H_{i,t}}{\sum_i |o_i|},
        \qquad f(p) = \frac{p}{p+\gamma},\quad \rho_{i,t} = \frac{\pi_\theta}{\pi_{\theta_\text{old}}}

    with :math:`\hat A_i = r_i - \operatorname{mean}(r)` over the mixed group (no std). The per-token
    terms are :func:`mixed_token_loss`'s (``token_options`` are its keywords).

    ``normalization="official"`` is the official code's: :math:`Z = T_\text{max}` (the padded response
    length, ``max_completion_length``) for the policy terms, with no division by the rows, and the
    entropy as a token mean over the micro-batch (``mix_actor.py``: ``masked_mean(entropy, response_mask)``,
    whatever the policy terms' normalisation); with ``off_policy_loss="sft"`` (RL + SFT) the trace term is the token *mean* of the NLL
    over trace tokens, times ``off_policy_scale``. ``normalization="trl"`` reduces the policy terms with
    ``trl_reduce`` (the trainer's ``loss_type`` reduction); the entropy is the same token mean. Every term is divided by the gradient-accumulation steps
    (``trl_reduce`` does that itself).
    """
    if normalization not in LOSS_NORMALIZATIONS:
        raise ValueError(f"unknown loss_normalization {normalization!r}: choose one of {LOSS_NORMALIZATIONS}")
    on, off = mixed_token_loss(logps, old_logps, advantages, off_policy, **token_options)
    bonus = entropy_coef * (entropies * mask).sum() / mask.sum().clamp(min=1.0) / accumulation
    if normalization == "trl":
        if trl_reduce is None:
            raise ValueError("loss_normalization 'trl' needs trl_reduce, the trainer's loss_type reduction")
        return LuffyLoss(trl_reduce(on, mask), trl_reduce(off, mask), bonus)
    on_part = (on * mask).sum() / max_completion_length / accumulation
    if token_options.get("off_policy_loss", "mixed") == "sft":
        trace_mask = mask * off_policy.unsqueeze(1).to(mask.dtype)
        off_part = (off * trace_mask).sum() / trace_mask.sum().clamp(min=1.0) / accumulation
    else:
        off_part = (off * mask).sum() / max_completion_length / accumulation
    return LuffyLoss(on_part, off_part, bonus)


def group_gradient_mass(
    own_lengths: Sequence[int],
    own_rewards: Sequence[float],
    trace_probs: Sequence[np.ndarray],
    trace_rewards: Sequence[float],
    *,
    shaping_gamma: float = 0.1,
    policy_shaping: bool = True,
) -> dict[str, float]:
    """Where one mixed group's policy gradient goes: summed ``|dL / d log p|`` over its tokens, by kind.

    Why it matters: with the group baseline over the mixed group, every failed
    own rollout gets ``A = -mean(r)`` on each of its tokens (ratio 1 when the
    rollout was just sampled), while a trace token is pulled up with only
    ``A * f'(p) p <= A / 4``. When the two disagree on shared tokens, the push
    away from the policy's own attempts (LUFFY's exploration) can outweigh the
    imitation. Returns ``own_pushed`` (A < 0), ``own_pulled`` (A > 0) and
    ``traces_pulled``; ``trace_probs`` are the policy's probabilities of each
    trace's tokens.
    """
    rewards = np.asarray(list(own_rewards) + list(trace_rewards), dtype=float)
    adv = rewards - rewards.mean()
    own_adv, trace_adv = adv[: len(own_rewards)], adv[len(own_rewards):]
    lengths = np.asarray(own_lengths, dtype=float)
    pull = 0.0
    for a, probs in zip(trace_adv, trace_probs):
        p = torch.as_tensor(np.asarray(probs, dtype=float))
        weights = shaping_weight(p, shaping_gamma) if policy_shaping else p
        pull += abs(float(a)) * float(weights.sum())
    return {
        "own_pushed": float((-own_adv[own_adv < 0] * lengths[own_adv < 0]).sum()),
        "own_pulled": float((own_adv[own_adv > 0] * lengths[own_adv > 0]).sum()),
        "traces_pulled": pull,
    }


def measure_gradient_mass(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    traces: Sequence[str],
    answers: Sequence[Any],
    *,
    num_generations: int,
    expert_traces: int,
    task: Task = WORLD,
    shaping_gamma: float = 0.1,
    policy_shaping: bool = True,
    max_new_tokens: int = 72,
    seed: int = 0,
) -> pd.DataFrame:
    """:func:`group_gradient_mass` for ``model`` on each prompt's mixed group (accuracy reward only).

    The policy samples its ``num_generations - expert_traces`` rollouts; each of
    the ``expert_traces`` copies of the prompt's trace is scored by a forward
    pass. One row per prompt.
    """
    from rlnb.rollout import sample, token_logprobs

    own_n = num_generations - expert_traces
    roll = sample(model, tokenizer, list(prompts), n=own_n, max_new_tokens=max_new_tokens, seed=seed, progress=False)
    rows = []
    model.eval()
    for i, (prompt, trace, answer) in enumerate(zip(prompts, traces, answers)):
        sel = np.flatnonzero(roll.prompt_index == i)
        prompt_ids = tokenizer(prompt)["input_ids"]
        trace_ids = tokenizer(trace, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = torch.tensor([prompt_ids + trace_ids], device=model.device)
        probs = token_logprobs(model, ids)[0, -len(trace_ids):].exp().cpu().numpy()
        own_rewards = [float(task.is_correct(roll.texts[j], answer)) for j in sel]
        mass = group_gradient_mass(
            [len(roll.completion_ids[j]) for j in sel], own_rewards,
            [probs] * expert_traces, [float(task.is_correct(trace, answer))] * expert_traces,
            shaping_gamma=shaping_gamma, policy_shaping=policy_shaping,
        )
        rows.append({"prompt": prompt, "own_solved": float(np.mean(own_rewards)),
                     "trace_min_prob": float(probs.min()), **mass})
    return pd.DataFrame(rows)


def logit_gradient_share(grad_logps: torch.Tensor, logps: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor) -> float:
    """The share of ``rows``' tokens in a loss's gradient on the logits (L1 over the vocabulary), 0 when none flows.

    For a token with probability p, ``d log p / d z = onehot - softmax(z)``, whose L1 norm is
    ``2 (1 - p)``: the logits of a token the policy already predicts (p near 1) barely move, however
    large ``dL / d log p`` is. Summing ``|dL / d log p|`` instead would count such tokens fully and
    overstate the traces' share exactly where the policy has learnt them.
    """
    mass = grad_logps.abs() * (1.0 - logps.exp()) * mask
    total = float(mass.sum())
    return float(mass[rows].sum()) / total if total > 0 else 0.0


@dataclass
class LuffyConfig(RecordingGRPOConfig):
    """``GRPOConfig`` plus LUFFY's options; the defaults are the official run's (``RunConfig.method_options``)."""

    expert_traces: int = field(default=1, metadata={
        "help": "k: of each group's num_generations slots, how many hold the prompt's expert trace "
                "(dataset column `expert`); 0 is plain on-policy GRPO"})
    policy_shaping: bool = field(default=True, metadata={
        "help": "weight trace tokens by f(p) = p / (p + shaping_gamma) instead of p itself"})
    shaping_gamma: float = field(default=0.1, metadata={"help": "gamma of the policy shaping f(p) = p / (p + gamma)"})
    on_policy_clip: bool = field(default=False, metadata={
        "help": "PPO-clip the on-policy ratio with epsilon / epsilon_high (the official run has no clip)"})
    off_policy_loss: str = field(default="mixed", metadata={
        "help": f"one of {OFF_POLICY_LOSSES}: traces inside the group's advantage (LUFFY), or outside it "
                "and trained by negative log-likelihood (the RL + SFT and SFT baselines)"})
    on_policy_scale: float = field(default=1.0, metadata={
        "help": "multiplier of the on-policy term (0 with off_policy_loss='sft' is plain SFT on the traces)"})
    off_policy_scale: float = field(default=1.0, metadata={
        "help": "multiplier of the off-policy term (the SFT coefficient of RL + SFT)"})
    loss_normalization: str = field(default="official", metadata={
        "help": f"one of {LOSS_NORMALIZATIONS}: the official code's policy sums over T_max (and token-mean NLL), "
                "or TRL's loss_type reduction; the entropy bonus is a token mean in both (see rlnb.luffy.luffy_loss)"})
    entropy_coef: float = field(default=0.001, metadata={
        "help": "beta_H, the entropy bonus's coefficient (official 0.001), on the token-mean entropy"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.expert_traces < 0 or self.expert_traces >= self.num_generations:
            raise ValueError(f"expert_traces={self.expert_traces} must leave at least one on-policy rollout in a "
                             f"group of num_generations={self.num_generations}")
        if self.off_policy_loss not in OFF_POLICY_LOSSES:
            raise ValueError(f"unknown off_policy_loss {self.off_policy_loss!r}: choose one of {OFF_POLICY_LOSSES}")
        if self.loss_normalization not in LOSS_NORMALIZATIONS:
            raise ValueError(f"unknown loss_normalization {self.loss_normalization!r}: "
                             f"choose one of {LOSS_NORMALIZATIONS}")
        if self.expert_traces and self.scale_rewards != "none":
            raise ValueError(f"LUFFY's advantage is r - mean(group) without the std: set scale_rewards='none' "
                             f"(got {self.scale_rewards!r})")
        if self.shaping_gamma <= 0:
            raise ValueError(f"shaping_gamma must be positive, got {self.shaping_gamma}")
        if self.dynamic_sampling:
            raise ValueError("dynamic_sampling is not supported with LUFFY: its refill rounds would splice the "
                             "first round's expert traces into groups of other prompts")


GENERATE_FIELDS = ("prompt_ids", "completion_ids", "tool_mask", "completions", "logprobs", "extra_fields",
                   "images", "tool_images")
"""What TRL 1.16's private ``GRPOTrainer._generate`` returns, in order. The trainer splices traces into
this tuple, so a TRL whose tuple differs is refused with an error naming the version (and
``tests/test_luffy.py`` checks it against the installed TRL)."""


class LuffyGRPOTrainer(RecordingGRPOTrainer):
    """GRPO whose groups mix ``args.expert_traces`` expert traces (dataset column ``expert``) with on-policy rollouts.

    ``args`` is a :class:`LuffyConfig`; the loss is :func:`luffy_loss`. Per-level accuracy, steps
    used and entropy are recorded on the on-policy rollouts only.
    """

    config_class = LuffyConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batch_experts: list[str] | None = None

    # ------------------------------------------------------------------ the mixed group
    def _is_trace_slot(self, index: int) -> bool:
        """TRL lays groups out contiguously; the first ``k`` slots of each group hold the traces."""
        return self.model.training and index % self.num_generations < self.args.expert_traces

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        if self.args.expert_traces and self.model.training:
            if "expert" not in inputs[0]:
                raise ValueError("LUFFY needs an 'expert' column in the training dataset (the expert traces)")
            self._batch_experts = [str(x["expert"]) for x in inputs]
        try:
            output = super()._generate_and_score_completions(inputs)
        finally:
            self._batch_experts = None
        off = torch.tensor([self._is_trace_slot(i) for i in range(len(inputs))],
                           device=output["completion_ids"].device)
        output["off_policy_mask"] = off
        if self.args.off_policy_loss == "sft" and off.any():
            output["advantages"] = self._on_policy_baseline(output["advantages"], off)
        return output

    def _on_policy_baseline(self, advantages: torch.Tensor, off: torch.Tensor) -> torch.Tensor:
        """Re-centre each group on its on-policy rows only; traces get advantage 0 (they are trained by NLL).

        With ``scale_rewards="none"``, ``A_i = r_i - mean(mixed group)``, so
        subtracting the on-policy rows' mean of ``A`` gives ``r_i - mean(on-policy rows)``.
        """
        g = self.num_generations
        adv, on = advantages.view(-1, g), (~off).view(-1, g).to(advantages.dtype)
        centre = (adv * on).sum(1, keepdim=True) / on.sum(1, keepdim=True)
        return ((adv - centre) * on).view(-1)

    def _generate(self, prompts: list) -> tuple:
        if self._batch_experts is None:
            return super()._generate(prompts)
        own = [i for i in range(len(prompts)) if not self._is_trace_slot(i)]
        if self.use_vllm:  # vLLM samples num_generations per unique prompt: sample the full group, replace k
            out = list(super()._generate(prompts))
        else:  # generate only the G - k on-policy slots, then widen every per-row list back to the full batch
            sub = super()._generate([prompts[i] for i in own])
            source = self._row_sources(len(prompts), own)
            out = [[part[j] for j in source] if isinstance(part, list) and len(part) == len(own) else part
                   for part in sub]
            if out[5]:  # extra fields of a rollout_func: per-row lists
                out[5] = {k: [v[j] for j in source] if isinstance(v, list) and len(v) == len(own) else v
                          for k, v in out[5].items()}
        if len(out) != len(GENERATE_FIELDS):
            import trl

            raise RuntimeError(f"LUFFY splices traces into TRL's GRPOTrainer._generate output, which TRL 1.16 returns "
                               f"as {GENERATE_FIELDS}; TRL {trl.__version__} returned {len(out)} values: "
                               "install the trl version pinned in pyproject.toml")
        prompt_ids, completion_ids, tool_mask, completions, logprobs, extra, images, tool_images = out
        tok = self._tokenizer
        for i, text in enumerate(self._batch_experts):
            if not self._is_trace_slot(i):
                continue
            ids = (tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])[: self.max_completion_length]
            completion_ids[i] = ids
            completions[i] = [{"role": "assistant", "content": text}] if isinstance(completions[i], list) else text
            if logprobs is not None:  # vLLM: a trace has no sampling log-prob; luffy_loss never reads these
                logprobs[i] = [float("nan")] * len(ids)
            if tool_mask is not None:
                tool_mask[i] = [1] * len(ids)
        return prompt_ids, completion_ids, tool_mask, completions, logprobs, extra, images, tool_images

    def _row_sources(self, n: int, own: list[int]) -> list[int]:
        """For each of ``n`` rows, the index among the generated rows ``own`` whose prompt it shares.

        A trace slot borrows its group's first on-policy row (same prompt), whose
        completion is then overwritten by the trace.
        """
        index = {row: j for j, row in enumerate(own)}
        g = self.num_generations
        return [index[i] if i in index else index[(i // g) * g + self.args.expert_traces] for i in range(n)]

    def _record_rollouts(self, inputs: list[dict[str, Any]], output: dict[str, Any]) -> None:
        """Per-level accuracy and step-writing of the policy's own rollouts (the traces would read 100%)."""
        keep = [i for i in range(len(inputs)) if not self._is_trace_slot(i)]
        rows = torch.tensor(keep, device=output["completion_ids"].device)
        own = {key: output[key][rows] for key in ("completion_ids", "completion_mask", "advantages")}
        super()._record_rollouts([inputs[i] for i in keep], own)

    # ------------------------------------------------------------------ the mixed loss
    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        logps, entropies, old, mask = self.policy_forward(model, inputs)
        off = inputs.get("off_policy_mask")
        off = torch.zeros(logps.size(0), dtype=torch.bool, device=logps.device) if off is None else off
        terms = self._luffy_terms(logps, old, off, mask, entropies, inputs)
        if self.model.training:
            self._record_mixed_diagnostics(logps.detach(), entropies.detach(), mask, off, terms, inputs)
            self._record_gradient_share(logps.detach(), old, off, mask, entropies.detach(), inputs)
        return terms.total

    def _luffy_terms(
        self, logps: torch.Tensor, old: torch.Tensor, off: torch.Tensor, mask: torch.Tensor,
        entropies: torch.Tensor, inputs: dict[str, Any],
    ) -> LuffyLoss:
        """:func:`luffy_loss` with this trainer's options."""
        a = self.args
        return luffy_loss(
            logps, old, inputs["advantages"], off, mask, entropies,
            normalization=a.loss_normalization, max_completion_length=self.max_completion_length,
            entropy_coef=a.entropy_coef,
            accumulation=self.current_gradient_accumulation_steps if self.model.training else 1.0,
            trl_reduce=lambda per_token, m: self.reduce_per_token(per_token, m, inputs),
            off_policy_loss=a.off_policy_loss, policy_shaping=a.policy_shaping, shaping_gamma=a.shaping_gamma,
            clip=(self.epsilon_low, self.epsilon_high) if a.on_policy_clip else None,
            on_policy_scale=a.on_policy_scale, off_policy_scale=a.off_policy_scale,
        )

    def _record_gradient_share(
        self, logps: torch.Tensor, old: torch.Tensor, off: torch.Tensor, mask: torch.Tensor,
        entropies: torch.Tensor, inputs: dict[str, Any],
    ) -> None:
        """``off_policy/grad_share``: the trace tokens' share of the policy terms' gradient on the logits.

        Above 0.5 the update is mostly imitation; below, mostly the policy's own rollouts
        (pushed down when they fail, pulled up when they succeed). ``dL / d log p`` comes exactly
        from autograd through the loss alone (the model's graph is not touched); :func:`logit_gradient_share`
        carries it to the logits.
        """
        leaf = logps.clone().requires_grad_(True)
        with torch.enable_grad():
            terms = self._luffy_terms(leaf, old, off, mask, entropies, inputs)
            (grad,) = torch.autograd.grad(terms.on_policy + terms.off_policy, leaf)
        self._metrics["train"]["off_policy/grad_share"].append(logit_gradient_share(grad, logps, mask, off))

    def _record_mixed_diagnostics(
        self, logps: torch.Tensor, entropies: torch.Tensor, mask: torch.Tensor, off: torch.Tensor,
        terms: LuffyLoss, inputs: dict[str, Any],
    ) -> None:
        """Log on- and off-policy tokens apart; ``entropy`` and the recording diagnostics use on-policy tokens."""
        metrics = self._metrics["train"]
        on_part, off_part = terms.on_policy, terms.off_policy
        rows = off.unsqueeze(1).to(mask.dtype)
        on_mask, off_mask = mask * (1 - rows), mask * rows
        probs = torch.exp(logps)
        metrics["on_policy/prob"].append(float(masked_mean(probs, on_mask)))
        metrics["on_policy/entropy"].append(float(masked_mean(entropies, on_mask)))
        metrics["entropy"].append(float(masked_mean(entropies, on_mask)))
        metrics["on_policy/loss"].append(float(on_part.detach()))
        metrics["off_policy/loss"].append(float(off_part.detach()))
        total = abs(float(on_part.detach())) + abs(float(off_part.detach()))
        metrics["off_policy/loss_share"].append(abs(float(off_part.detach())) / total if total > 0 else 0.0)
        if off_mask.sum() > 0:
            if self.args.off_policy_loss == "sft":
                weights = torch.ones_like(probs)  # d(log p)/d(log p): every trace token weighs 1
            else:
                weights = shaping_weight(probs, self.args.shaping_gamma) if self.args.policy_shaping else probs
            valid = weights[off_mask.bool()]
            metrics["off_policy/prob"].append(float(masked_mean(probs, off_mask)))
            metrics["off_policy/entropy"].append(float(masked_mean(entropies, off_mask)))
            metrics["off_policy/weight_mean"].append(float(valid.mean()))
            metrics["off_policy/weight_min"].append(float(valid.min()))
            metrics["off_policy/weight_max"].append(float(valid.max()))
            least_likely = torch.where(off_mask.bool(), probs, torch.ones_like(probs)).amin(dim=1)[off]
            metrics["off_policy/min_prob"].append(float(least_likely.mean()))  # a trace's least likely token
        if on_mask.sum() > 0:
            self._last_logps_entropies = (logps, entropies)
            self._record_token_diagnostics({**inputs, "completion_mask": on_mask})
        self._last_logps_entropies = None


# ------------------------------------------------------------------ what sets LUFFY's speed (the sweep's table)
def speed_settings(speed: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``benchmarks/sweep_luffy_speed.py``'s table with a ``setting`` label per run ("γ 0.1, 1 trace", "no
    shaping"), and the settings in reading order: shaped first, by traces per group, then by gamma."""
    labels = [("no shaping" if not row.policy_shaping else f"γ {row.shaping_gamma:g}, {row.expert_traces} trace"
               + ("s" if row.expert_traces > 1 else "")) for row in speed.itertuples()]
    labelled = speed.assign(setting=labels)
    order = list(dict.fromkeys(labelled.sort_values(["policy_shaping", "expert_traces", "shaping_gamma"],
                                                    ascending=[False, True, True])["setting"]))
    return labelled, order


def speed_summary(speed: pd.DataFrame, settings: Sequence[str], reference: str,
                  thresholds: Sequence[str] = ("0.1", "0.5")) -> pd.DataFrame:
    """Per setting of a :func:`speed_settings` table: how many seeds reached each own-accuracy threshold (a
    Wilson rate), the steps they took, their last-10-step accuracy, and Welch's differences from ``reference``
    (steps to the first threshold only where every seed of both reached it: a never is no step count)."""
    from rlnb.stats import event_rate, seed_difference

    first = f"first_step_own_acc_{thresholds[0]}"
    ref = speed[speed["setting"] == reference]
    rows = []
    for setting in settings:
        grp = speed[speed["setting"] == setting]
        row = {"setting": setting, "seeds": len(grp)}
        for t in thresholds:
            hit = grp[f"first_step_own_acc_{t}"].notna()
            row[f"reached {t}"] = str(event_rate(int(hit.sum()), len(grp)))
            row[f"steps to {t} (seeds that did)"] = ", ".join(f"{v:.0f}" for v in grp.loc[hit, f"first_step_own_acc_{t}"])
        row["own acc, last 10"] = ", ".join(f"{v:.2f}" for v in grp["own_acc_last10"])
        if setting != reference:
            row[f"last-10 acc minus {reference}"] = seed_difference(grp["own_acc_last10"], ref["own_acc_last10"]).format(2)
            both = grp[first].notna().all() and ref[first].notna().all()
            row[f"steps to {thresholds[0]} minus {reference}"] = (seed_difference(grp[first], ref[first]).format(1)
                                                                  if both else "a seed never reached it")
        rows.append(row)
    return pd.DataFrame(rows).set_index("setting").fillna("")
