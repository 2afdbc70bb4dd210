"""Guidance for problems the policy cannot solve alone: hints in the prompt, prefixes in the completion.

2025's answers to all-wrong GRPO groups differ on two questions (notebook 07):

1. **Where the guidance tokens sit.** In the *prompt*, conditioning the rollouts and receiving no
   gradient (QuestA, Li et al. 2025: a partial solution after the problem, its share annealed from 50% to
   25%), or in the *completion*, as off-policy tokens the policy continues and may be trained on
   (Prefix-RFT, Huang et al. 2025: an expert prefix whose share decays by a cosine schedule, gradient on
   its highest-entropy tokens; UFT, Liu et al. 2025: a log-likelihood term on the hint; LUFFY: the whole
   trace, :mod:`rlnb.luffy`).
2. **When.** Always, on a schedule, or only for groups whose own rollouts all failed (BREAD, Zhang et
   al. 2025; NuRL, Chen et al. 2025), so that every group that gets guidance needed it.

On the tiny world a guidance text is the first column steps of a trace (:func:`rlnb.world.trace_prefix`):
``47+85=`` with the hint ``7+5+0=12;`` asks the policy to continue from the second step. The
``mismatched`` source takes the trace of another problem of the same level (dataset column
``mismatched``): the form of a worked start without its content, the control that separates the two.

The trainer (:class:`GuidanceGRPOTrainer`) is LUFFY's with the full traces replaced by guidance;
its loss is :func:`guidance_loss`, LUFFY's official aggregation with the prefix tokens' term chosen by
``prefix_loss``. UFT's hint term and hint-length sampling are checked against transcriptions of its official
code (liumy2010/UFT) in ``tests/test_guidance.py``; QuestA's official code (foreverlasting1202/QuestA,
``datasets/add_prefix.py``) changes only the data (a prompt ending in "## Hint." and the first p% of the
solution's *characters*), which :func:`rlnb.world.trace_prefix` cuts at whole steps instead, so that a hint
never ends inside a step; for Prefix-RFT and BREAD no official code was available here, and their terms follow
the papers' descriptions, checked against the equations below.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers.utils import logging as transformers_logging

from rlnb.luffy import LuffyConfig, LuffyGRPOTrainer, LuffyLoss
from rlnb.world import STEP_SEP, trace_prefix

PLACES = ("hint", "prefix")
"""``hint``: the guidance ends the prompt (no gradient); ``prefix``: it starts the completion (off-policy tokens)."""
WHEN = ("always", "failed_groups")
"""``always``: every group is guided; ``failed_groups``: only groups whose own rollouts were all wrong (BREAD, NuRL)."""
SOURCES = ("expert", "mismatched")
"""Dataset column the guidance is cut from: the prompt's own expert trace, or another problem's of the same level."""
PREFIX_LOSSES = ("none", "nll", "top_entropy")
"""The prefix tokens' term: no gradient; UFT's log-likelihood; Prefix-RFT's shaped advantage on top-entropy tokens."""
SCHEDULES = ("linear", "cosine")
SAMPLINGS = ("fixed", "binomial")
"""``fixed``: every guided row gets the scheduled share; ``binomial``: each group draws its number of steps
from Binomial(steps, share) (UFT)."""


def guidance_share(
    step: int, max_steps: int, start: float, end: float, schedule: str = "linear", until: float = 1.0
) -> float:
    """The share of a trace's steps given as guidance at optimiser step ``step`` of ``max_steps``.

    ``linear`` goes from ``start`` to ``end`` in a straight line (QuestA anneals 50% -> 25% in stages);
    ``cosine`` is ``end + (start - end) (1 + cos(pi t)) / 2`` (Prefix-RFT's decay, 95% -> 5%; UFT's p(t)),
    with ``t = step / (until * max_steps)``; after ``until * max_steps`` steps no guidance is given
    (UFT's ``total_training_steps_hint``, 300 of 500 steps in its ``run.py``).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown guidance schedule {schedule!r}: choose one of {SCHEDULES}")
    horizon = until * max(max_steps, 1)
    if step > horizon:
        return 0.0
    t = min(max(step / horizon, 0.0), 1.0)
    if schedule == "linear":
        return start + (end - start) * t
    return end + (start - end) * (1 + math.cos(math.pi * t)) / 2


def sampled_share(share: float, steps: int, rng: np.random.Generator) -> float:
    """UFT's hint length as a share: ``Binomial(steps, share) / steps`` (``rl_dataset.py`` draws, for each of
    a hint's parts, whether it is given with probability p(t), and keeps that many parts)."""
    return float(rng.binomial(steps, share)) / steps if steps else 0.0


def prefix_token_mask(guide_lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(B, T) bool: the first ``guide_lengths[i]`` completion tokens of row ``i`` are guidance."""
    positions = torch.arange(width, device=guide_lengths.device)  # (T,)
    return positions.unsqueeze(0) < guide_lengths.unsqueeze(1)  # (B, T)


def top_entropy_mask(entropies: torch.Tensor, tokens: torch.Tensor, quantile: float) -> torch.Tensor:
    """(B, T) bool: the ``quantile`` share of ``tokens`` (at least one) with the highest entropy."""
    count = int(tokens.sum())
    if count == 0:
        return tokens
    keep = max(1, math.ceil(quantile * count))
    values = entropies[tokens]  # (count,)
    threshold = torch.topk(values, keep).values.min()
    return tokens & (entropies >= threshold)


def guidance_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    prefix: torch.Tensor,
    mask: torch.Tensor,
    entropies: torch.Tensor,
    *,
    prefix_loss: str = "top_entropy",
    top_quantile: float = 0.2,
    shaping_gamma: float = 0.1,
    nll_coef: float = 1.0,
    max_completion_length: int,
    entropy_coef: float = 0.001,
    accumulation: float = 1.0,
) -> LuffyLoss:
    r"""The loss of a batch whose completions may start with guidance tokens, one micro-batch.

    .. math::

        \mathcal L = -\frac{1}{T_\text{max}}\sum_i\sum_{t \notin P_i} \rho_{i,t}\hat A_i
        \;+\; \mathcal L_P \;-\; \beta_H\,\frac{\sum_{i,t}\mathcal H_{i,t}}{\sum_i|o_i|},
        \qquad \hat A_i = r_i - \operatorname{mean}(r_\text{group})

    where :math:`P_i` are row i's guidance tokens (``prefix``, (B, T) bool). The policy's own tokens are
    LUFFY's on-policy term (no clip) and the entropy bonus is LUFFY's token mean, both aggregated as the
    official LUFFY code does (:func:`rlnb.luffy.luffy_loss`). The guidance term :math:`\mathcal L_P`:

    * ``none``: 0. The prefix conditions the rest of the row and learns nothing itself (a hint that sits
      in the completion; with ``place="hint"`` there are no prefix tokens at all).
    * ``nll``: :math:`-\beta\,\operatorname{mean}_{t\in P}\log\pi_\theta(\tau_t)`, UFT's log-likelihood term on
      the hint (``nll_coef`` is :math:`\beta`), a token mean over the batch's guidance tokens.
    * ``top_entropy``: :math:`-\frac{1}{T_\text{max}}\sum_{t\in P^{H}} f(\pi_\theta(\tau_t))\hat A_i`, LUFFY's
      shaped off-policy term with :math:`f(p) = p / (p + \gamma)`, restricted as in Prefix-RFT to the
      ``top_quantile`` of guidance tokens with the highest entropy :math:`P^{H}` (the forks; the rest of an
      expert prefix the policy already predicts).

    Shapes: ``logps``, ``old_logps``, ``entropies``, ``mask``, ``prefix`` (B, T); ``advantages`` (B,).
    """
    if prefix_loss not in PREFIX_LOSSES:
        raise ValueError(f"unknown prefix_loss {prefix_loss!r}: choose one of {PREFIX_LOSSES}")
    valid = mask.bool()  # (B, T)
    guide = prefix & valid  # (B, T)
    own = valid & ~guide  # (B, T)
    adv = advantages.unsqueeze(1)  # (B, 1)
    ratio = torch.exp(logps - old_logps)  # (B, T)
    on_part = (-ratio * adv * own).sum() / max_completion_length / accumulation
    if prefix_loss == "nll":
        off_part = nll_coef * (-logps * guide).sum() / guide.sum().clamp(min=1) / accumulation
    elif prefix_loss == "top_entropy":
        chosen = top_entropy_mask(entropies.detach(), guide, top_quantile)  # (B, T)
        p = torch.exp(logps)  # (B, T)
        off_part = (-(p / (p + shaping_gamma)) * adv * chosen).sum() / max_completion_length / accumulation
    else:
        off_part = logps.sum() * 0.0
    bonus = entropy_coef * (entropies * mask).sum() / mask.sum().clamp(min=1.0) / accumulation
    return LuffyLoss(on_part, off_part, bonus)


@dataclass
class GuidanceConfig(LuffyConfig):
    """``GRPOConfig`` plus the guidance options (``RunConfig.method_options``); LUFFY's loss options apply.

    ``expert_traces`` is not used: guidance replaces the full traces (set it to 0).
    """

    place: str = field(default="prefix", metadata={
        "help": f"one of {PLACES}: the guidance ends the prompt of every rollout of a guided group (QuestA), or "
                "starts the completion of guided_rows rollouts of it, which the policy continues (Prefix-RFT, BREAD)"})
    when: str = field(default="always", metadata={
        "help": f"one of {WHEN}: guide every group, or only groups whose unguided rollouts were all wrong "
                "(BREAD, NuRL; the group is sampled once without guidance first)"})
    source: str = field(default="expert", metadata={
        "help": f"one of {SOURCES}: cut the guidance from the prompt's own expert trace (dataset column `expert`), "
                "or from another problem's of the same level (column `mismatched`): the form-without-content control"})
    share_start: float = field(default=0.5, metadata={
        "help": "share of the trace's steps given at step 0 (at least one step whenever the share is above 0)"})
    share_end: float = field(default=0.25, metadata={"help": "share of the trace's steps given at the last step"})
    schedule: str = field(default="linear", metadata={"help": f"one of {SCHEDULES}: how the share moves"})
    share_sampling: str = field(default="fixed", metadata={
        "help": f"one of {SAMPLINGS}: give each guided group the scheduled share, or draw its number of steps "
                "from Binomial(steps, share) (UFT)"})
    guidance_until: float = field(default=1.0, metadata={
        "help": "share of the run's steps after which no guidance is given (UFT: 0.6, its T_hint of 300 of 500)"})
    guided_rows: int = field(default=1, metadata={
        "help": "place='prefix': rollouts per guided group that start with the guidance (the rest are the "
                "policy's own; num_generations guides them all, as UFT does); place='hint' guides every rollout"})
    prefix_loss: str = field(default="top_entropy", metadata={
        "help": f"one of {PREFIX_LOSSES}: the guidance tokens' term of rlnb.guidance.guidance_loss"})
    top_quantile: float = field(default=0.2, metadata={
        "help": "prefix_loss='top_entropy': the share of guidance tokens (highest entropy) that get a gradient"})
    nll_coef: float = field(default=1.0, metadata={"help": "prefix_loss='nll': the log-likelihood term's weight"})

    def __post_init__(self) -> None:
        if self.expert_traces != 0:
            raise ValueError("guidance replaces LUFFY's full traces: set expert_traces=0 "
                             f"(got {self.expert_traces}); guided_rows sets how many rollouts get a prefix")
        super().__post_init__()
        for name, allowed in (("place", PLACES), ("when", WHEN), ("source", SOURCES), ("schedule", SCHEDULES),
                              ("prefix_loss", PREFIX_LOSSES), ("share_sampling", SAMPLINGS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown guidance {name} {getattr(self, name)!r}: choose one of {allowed}")
        for name in ("share_start", "share_end", "guidance_until"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a share in [0, 1], got {getattr(self, name)}")
        if not 1 <= self.guided_rows <= self.num_generations:
            raise ValueError(f"guided_rows={self.guided_rows} must be between 1 and the group's "
                             f"num_generations={self.num_generations}")
        if self.when == "failed_groups" and self.guided_rows == self.num_generations and self.place == "prefix":
            raise ValueError("when='failed_groups' replaces guided_rows of a failed group: keep at least one own "
                             f"rollout (guided_rows < num_generations={self.num_generations})")
        if not 0.0 < self.top_quantile <= 1.0:
            raise ValueError(f"top_quantile must be in (0, 1], got {self.top_quantile}")
        if self.scale_rewards != "none":
            raise ValueError(f"guidance uses LUFFY's advantage r - mean(group): set scale_rewards='none' "
                             f"(got {self.scale_rewards!r})")


def completions_generated(metrics: pd.DataFrame, rows_per_step: int) -> pd.Series:
    """Completions a run had generated by the end of each step (index: step), guidance and traces counted.

    A guided run logs ``guidance/generated`` (its own rollouts plus, with ``when="failed_groups"``, the
    guided ones sampled again); every other run generates ``rows_per_step`` per step (an expert trace
    counts as one: it takes a rollout's slot), so runs compare at equal sampling cost.
    """
    steps = metrics.loc[metrics["metric"] == "loss", "step"].drop_duplicates().sort_values()
    logged = metrics[metrics["metric"] == "guidance/generated"].groupby("step")["value"].sum()
    per_step = logged.reindex(steps, fill_value=float(rows_per_step)) if len(logged) else \
        pd.Series(float(rows_per_step), index=steps)
    return per_step.cumsum().rename("completions")


@contextmanager
def _quiet_length_reminder():
    """Silence transformers' "exceeded the model's predefined maximum length" reminder while guided rows generate.

    It compares the *padded* batch width with ``max_position_embeddings``: a long prefixed prompt left-pads
    every other row, so the width passes the tiny base's 128 positions although no row does (each row's
    positions count from its first real token, from the attention mask) unless its own continuation runs long.
    """
    logger = transformers_logging.get_logger("transformers.generation.stopping_criteria")
    level = logger.level
    logger.setLevel(transformers_logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class GuidanceGRPOTrainer(LuffyGRPOTrainer):
    """GRPO whose guided groups see part of a trace, as a hint ending the prompt or a prefix starting rollouts.

    The guidance text of a row is :func:`rlnb.world.trace_prefix` of its ``source`` column at the
    current share (:func:`guidance_share`). A prefix is tokenised with the prompt, then moved from
    the prompt's ids to the completion's, so the loss sees it as completion tokens (``guide_lengths``
    in the batch); the verifier judges prefix and continuation together. Per-level accuracy is
    recorded on unguided rollouts only; ``guidance/*`` logs the share given, the guided rows and their
    accuracy.
    """

    config_class = GuidanceConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batch_guides: list[str] | None = None
        self._batch_answers: list[Any] | None = None
        self._guided: list[int] = []  # rows of the current generation batch that were guided
        self._guide_lengths: list[int] = []  # per row: guidance tokens at the start of its completion
        self._hints: dict[int, str] = {}  # hinted rows' hints (in their prompts), to judge them with it
        self._samples_from_parent = True  # False while the parent records the unguided rows only

    def _is_trace_slot(self, index: int) -> bool:
        return False  # no full traces: guided rows are generated, not spliced in

    def current_share(self) -> float:
        a = self.args
        return guidance_share(self.state.global_step, a.max_steps, a.share_start, a.share_end, a.schedule,
                              a.guidance_until)

    def _guides(self, traces: list[str], share: float) -> list[str]:
        """Each row's guidance text at ``share``; with binomial sampling one draw per group, seeded by the run's
        seed and step so that a resumed run draws the same."""
        if self.args.share_sampling == "fixed":
            return [trace_prefix(t, share) for t in traces]
        rng = np.random.default_rng([self.args.seed, self.state.global_step])
        g, out = self.num_generations, []
        for start in range(0, len(traces), g):
            steps = traces[start].count(STEP_SEP)
            drawn = sampled_share(share, steps, rng)
            out += [trace_prefix(t, drawn) for t in traces[start:start + g]]
        return out

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        column = self.args.source
        if column not in inputs[0]:
            raise ValueError(f"guidance source {column!r} needs a {column!r} column in the training dataset "
                             "(the tiny world's datasets have `expert` and `mismatched`)")
        if not isinstance(inputs[0]["prompt"], str):
            raise ValueError("guidance cuts trace steps into text prompts: the tiny world's task; conversational "
                             "prompts are not supported")
        share = self.current_share()
        self._batch_guides = self._guides([str(x[column]) for x in inputs], share)
        self._batch_answers = [x["answer"] for x in inputs]
        try:
            output = super()._generate_and_score_completions(inputs)
        finally:
            self._batch_guides = self._batch_answers = None
        device = output["completion_ids"].device
        output["guide_lengths"] = torch.tensor(self._guide_lengths, device=device)
        metrics = self._metrics["train"]
        metrics["guidance/share"].append(share)
        metrics["guidance/guided_rows"].append(len(self._guided) / len(inputs))
        if self._guided:
            ids, mask = output["completion_ids"][self._guided], output["completion_mask"][self._guided]
            texts = self.processing_class.batch_decode(ids * mask, skip_special_tokens=True)
            solved = [self.task.is_correct(self._hints.get(i, "") + t, inputs[i]["answer"])
                      for t, i in zip(texts, self._guided)]
            metrics["guidance/guided_accuracy"].append(sum(solved) / len(solved))
        return output

    def _generate(self, prompts: list) -> tuple:
        if self._batch_guides is None:
            return super()._generate(prompts)
        n, g = len(prompts), self.num_generations
        groups = list(range(n // g))
        self._hints = {}
        out = None
        if self.args.when == "failed_groups":
            out = list(super()._generate(prompts))
            groups = [j for j in groups if not any(
                self.task.is_correct(out[3][i], self._batch_answers[i]) for i in range(j * g, (j + 1) * g))]
        rows = [i for j in groups for i in range(j * g, j * g + (g if self.args.place == "hint" else
                                                                    self.args.guided_rows))]
        rows = [i for i in rows if self._batch_guides[i]]
        guided = {i: prompts[i] + self._batch_guides[i] for i in rows}
        if out is None:
            with _quiet_length_reminder():
                out = list(super()._generate([guided.get(i, p) for i, p in enumerate(prompts)]))
            self._metrics["train"]["guidance/generated"].append(float(n))
        else:
            self._metrics["train"]["guidance/generated"].append(float(n + len(rows)))
        if rows and self.args.when == "failed_groups":
            with _quiet_length_reminder():
                sub = super()._generate(list(guided.values()))
            for part, new in zip(out, sub):
                if isinstance(part, list) and isinstance(new, list) and len(new) == len(rows):
                    for j, i in enumerate(rows):
                        part[i] = new[j]
        self._guided = rows
        self._guide_lengths = [0] * n
        if self.args.place == "hint":
            self._hints = {i: self._batch_guides[i] for i in rows}
            return tuple(out)
        return tuple(self._move_prefixes(out, rows))

    def _move_prefixes(self, out: list, rows: list[int]) -> list:
        """Move each guided row's prefix ids from the end of its prompt ids to the start of its completion."""
        prompt_ids, completion_ids, completions = out[0], out[1], out[3]
        tok = self._tokenizer
        for i in rows:
            guide = self._batch_guides[i]
            ids = tok(guide, add_special_tokens=False)["input_ids"]
            if list(prompt_ids[i][-len(ids):]) != ids:
                raise RuntimeError(f"the guidance {guide!r} did not tokenise at the end of its prompt: a tokenizer "
                                   "that merges across the prompt's end cannot move it into the completion")
            prompt_ids[i] = list(prompt_ids[i][: -len(ids)])
            completion_ids[i] = (ids + list(completion_ids[i]))[: self.max_completion_length]
            completions[i] = guide + completions[i]
            self._guide_lengths[i] = min(len(ids), self.max_completion_length)
        if out[4] is not None:  # vLLM's sampling log-probs: the prefix was not sampled (guidance_loss never reads them)
            for i in rows:
                out[4][i] = [float("nan")] * self._guide_lengths[i] + list(out[4][i])
        if out[2] is not None:
            for i in rows:
                out[2][i] = [1] * self._guide_lengths[i] + list(out[2][i])
        return out

    def _record_rollouts(self, inputs: list[dict[str, Any]], output: dict[str, Any]) -> None:
        """Per-level accuracy of the unguided rollouts (a guided one is judged under its guidance apart), and
        every ``sample_every`` steps the first group whole, guided rows included, in ``completions.jsonl``."""
        guided = set(self._guided)
        keep = [i for i in range(len(inputs)) if i not in guided]
        if keep:
            rows = torch.tensor(keep, device=output["completion_ids"].device)
            own = {key: output[key][rows] for key in ("completion_ids", "completion_mask", "advantages")}
            self._samples_from_parent = False
            try:
                super(LuffyGRPOTrainer, self)._record_rollouts([inputs[i] for i in keep], own)
            finally:
                self._samples_from_parent = True
        step = self.state.global_step
        if step % self.args.sample_every == 0:
            g = self.num_generations
            ids, mask = output["completion_ids"][:g], output["completion_mask"][:g]
            texts = self.processing_class.batch_decode(ids * mask, skip_special_tokens=True)
            seen = [{**x, "prompt": x["prompt"] + self._hints.get(i, "")} for i, x in enumerate(inputs[:g])]
            correct = [self.task.is_correct(self._hints.get(i, "") + t, x["answer"])
                       for i, (t, x) in enumerate(zip(texts, inputs[:g]))]
            super()._write_samples(step, seen, texts, correct, output["advantages"][:g].tolist())

    def _write_samples(self, *args: Any, **kwargs: Any) -> None:
        """Written by :meth:`_record_rollouts` with the guided rows; the parent's call sees only the unguided ones."""
        if self._samples_from_parent:
            super()._write_samples(*args, **kwargs)

    def _luffy_terms(self, logps, old, off, mask, entropies, inputs) -> LuffyLoss:
        """:func:`guidance_loss` with this trainer's options (the LUFFY trainer's loss hook)."""
        a = self.args
        lengths = inputs.get("guide_lengths")
        if lengths is None:
            lengths = torch.zeros(logps.size(0), dtype=torch.long, device=logps.device)
        return guidance_loss(
            logps, old, inputs["advantages"], prefix_token_mask(lengths, logps.size(1)), mask, entropies,
            prefix_loss=a.prefix_loss, top_quantile=a.top_quantile, shaping_gamma=a.shaping_gamma,
            nll_coef=a.nll_coef, max_completion_length=self.max_completion_length, entropy_coef=a.entropy_coef,
            accumulation=self.current_gradient_accumulation_steps if self.model.training else 1.0,
        )

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        logps, entropies, old, mask = self.policy_forward(model, inputs)
        off = torch.zeros(logps.size(0), dtype=torch.bool, device=logps.device)
        terms = self._luffy_terms(logps, old, off, mask, entropies, inputs)
        if self.model.training:
            metrics = self._metrics["train"]
            metrics["entropy"].append(float((entropies.detach() * mask).sum() / mask.sum().clamp(min=1.0)))
            metrics["on_policy/loss"].append(float(terms.on_policy.detach()))
            metrics["off_policy/loss"].append(float(terms.off_policy.detach()))
        return terms.total

