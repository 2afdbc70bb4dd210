"""TRL ``GRPOTrainer`` subclasses that record what the notebooks plot.

:class:`RecordingGRPOTrainer` is TRL's trainer unchanged in what it optimises;
it adds, every step, per-level accuracy, step-writing, completion length split
by correctness (the Dr. GRPO length bias shows there), the token-entropy
distribution and the covariance between token log-probability and advantage
(Cui et al. 2025). :class:`TidyMetricsCallback` appends every logged value to a
tidy ``metrics.csv`` (``step, metric, level, value``) as it is logged, so an
interrupted run loses nothing it had logged.

One option changes what is trained on: ``dynamic_sampling`` (DAPO, Yu et al. 2025), which TRL 1.16
lacks. Groups whose rewards are all equal are dropped from the generation batch and replaced by
groups of new training prompts (:meth:`RecordingGRPOTrainer.dynamic_sampling_batch`).
"""

from __future__ import annotations

import csv
import json
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import nanstd

from rlnb.advantages import grpo_advantages
from rlnb.evaluate import level_number
from rlnb.metrics import centered_logp_adv_cov, masked_mean
from rlnb.tasks import WORLD, Task

METRICS_FILE = "metrics.csv"
SAMPLES_FILE = "completions.jsonl"
METRICS_HEADER = ["step", "metric", "level", "value"]
_LEVEL_KEY = re.compile(r"^(?P<metric>.+)/level_(?P<level>\d+)$")


def reduce_like_trl(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str,
    *,
    max_completion_length: int,
    accumulation: float = 1.0,
    items_normalizer: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Reduce a (B, T) per-token loss term to a scalar exactly as TRL 1.16's GRPO loss does for ``loss_type``.

    ``grpo``: mean over each sequence, then over sequences; ``bnpo``: mean over
    tokens; ``dr_grpo``: token sum / (B * max_completion_length); each divided by
    the ``accumulation`` steps. ``dapo``: token sum / ``items_normalizer`` (TRL's
    ``num_items_in_batch`` rescaled to one accumulation window). The reduction is
    linear, so a trainer may split its loss into terms, reduce each here and add
    them (LUFFY), or add a reduced term to TRL's loss (KL-Cov).
    """
    masked = per_token * mask
    if loss_type == "grpo":
        return (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / accumulation
    if loss_type == "bnpo":
        return masked.sum() / mask.sum().clamp(min=1.0) / accumulation
    if loss_type == "dr_grpo":
        return masked.sum() / (per_token.size(0) * max_completion_length) / accumulation
    if loss_type == "dapo":
        if items_normalizer is None:
            raise ValueError("loss_type 'dapo' normalises by the tokens of the whole generation batch: "
                             "pass items_normalizer")
        return masked.sum() / items_normalizer
    raise ValueError(f"loss_type {loss_type!r} is not supported here: use grpo, bnpo, dr_grpo or dapo")


def accumulation_weights(mask: torch.Tensor, loss_type: str, accumulation: int, max_completion_length: int) -> torch.Tensor:
    """Each token's weight in the gradient of one optimiser step, when the (B, T) batch ``mask`` is split into
    ``accumulation`` equal micro-batches of consecutive rows, each reduced as TRL 1.16 does (:func:`reduce_like_trl`).

    The weight of token (i, t) is d(loss) / d(per-token loss at i, t), summed over the micro-batches, with
    TRL's defaults: ``gradient_accumulation_steps = steps_per_generation = accumulation``, so ``dapo``'s
    ``num_items_in_batch`` counts the tokens of the whole batch. A loss type whose weights change with
    ``accumulation`` trains differently on the same data: the gradient-accumulation trap.
    """
    rows = mask.size(0)
    if accumulation < 1 or rows % accumulation:
        raise ValueError(f"{rows} rows do not split into {accumulation} equal micro-batches")
    per_token = torch.zeros(mask.shape, dtype=torch.float64, requires_grad=True)
    mask = mask.to(torch.float64)
    size = rows // accumulation
    total = sum(
        reduce_like_trl(per_token[i:i + size], mask[i:i + size], loss_type, max_completion_length=max_completion_length,
                        accumulation=accumulation, items_normalizer=mask.sum().clamp(min=1.0))
        for i in range(0, rows, size))
    (weights,) = torch.autograd.grad(total, per_token)
    return weights * mask  # (B, T); padding carries no weight


@dataclass
class RecordingGRPOConfig(GRPOConfig):
    """TRL's ``GRPOConfig`` plus what the recording trainer needs; each method's config subclasses it.

    As in TRL's experimental trainers, a method's options are typed fields with a
    help string (``RunConfig.method_options`` fills them), so a misspelt option is
    an error that lists the known ones rather than a silently ignored keyword.
    """

    sample_every: int = field(default=10, metadata={
        "help": "write one prompt's whole group to completions.jsonl every this many optimizer steps"})
    measure_entropy_change: bool = field(default=False, metadata={
        "help": "log entropy_change: the mean token entropy on each step's own batch after its update minus "
                "before it (one extra forward pass per step; the quantity of Cui et al.'s first-order law)"})
    dynamic_sampling: bool = field(default=False, metadata={
        "help": "DAPO's dynamic sampling (Yu et al. 2025): drop every group whose summed rewards are all equal "
                "(zero advantage under a group baseline, so no gradient) and refill the generation batch with "
                "groups of new training prompts, one generation round of as many prompts as the batch holds at a "
                "time; logs dynamic_sampling/* (see RecordingGRPOTrainer.dynamic_sampling_batch). Training only, "
                "one process. Estimators without a group baseline (psr, nsr, w_reinforce) do get a gradient from "
                "such groups, which this drops all the same"})
    dynamic_sampling_max_rounds: int = field(default=4, metadata={
        "help": "at most this many generation rounds per generation batch, the first included (1: no refill), "
                "each of as many prompts as the batch holds. DAPO's recipe generates 3 times the batch per round "
                "(gen_prompt_bsz) for up to max_num_gen_batches=10 rounds; here a round is 1 times the batch, "
                "so 4 rounds cost at most 4 batches' sampling on two CPU cores. When the last round still leaves "
                "the batch short, zero-spread groups (the earliest generated) fill it and are counted in "
                "dynamic_sampling/filled_groups, where DAPO's code raises an error"})
    overlong_buffer: int = field(default=0, metadata={
        "help": "DAPO's soft overlong punishment (Yu et al. 2025, eq. 13; TRL's "
                "trl.rewards.get_soft_overlong_punishment) as a third reward: 0 up to max_completion_length - "
                "overlong_buffer tokens, then falling linearly to -1 at max_completion_length. 0 is off; DAPO's "
                "recipe buffers 4096 of 20480 tokens (20%)"})
    overlong_penalty_factor: float = field(default=1.0, metadata={
        "help": "the overlong punishment's weight in the reward sum (DAPO's overlong_penalty_factor, 1.0)"})

    def __post_init__(self) -> None:
        from rlnb.train import check_scalar_fields  # late import: rlnb.train imports this module

        check_scalar_fields(self)  # every subclass's fields too: each subclass calls this method first
        super().__post_init__()
        if self.sample_every < 1:
            raise ValueError(f"sample_every must be at least 1, got {self.sample_every}")
        if not 0 <= self.overlong_buffer < self.max_completion_length:
            raise ValueError(f"overlong_buffer must be in [0, max_completion_length={self.max_completion_length}), "
                             f"got {self.overlong_buffer}")
        if self.dynamic_sampling_max_rounds < 1:
            raise ValueError("dynamic_sampling_max_rounds must be at least 1 (the first generation round), "
                             f"got {self.dynamic_sampling_max_rounds}")
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError("the recording trainers compute advantages from the weighted sum of the rewards "
                             "(RecordingGRPOTrainer.compute_advantages): multi_objective_aggregation must be "
                             f"'sum_then_normalize', got {self.multi_objective_aggregation!r}")


class RecordingGRPOTrainer(GRPOTrainer):
    """GRPO exactly as TRL computes it, plus the diagnostics of notebooks 01 and 03.

    Datasets carry an ``answer`` column, and a ``level`` column where the task
    has levels (per-level metrics are recorded only then). ``task`` judges a
    completion (the tiny world by default). Every ``args.sample_every`` steps, one
    prompt's whole group is written to ``completions.jsonl``.
    """

    config_class: type[RecordingGRPOConfig] = RecordingGRPOConfig
    """The ``GRPOConfig`` subclass :func:`rlnb.train.build_trainer` builds ``args`` as."""

    def __init__(self, *args: Any, task: Task = WORLD, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, self.config_class):
            raise TypeError(f"{type(self).__name__} needs args of type {self.config_class.__name__}, "
                            f"got {type(self.args).__name__}")
        self.task = task
        self._last_logps_entropies: tuple[torch.Tensor, torch.Tensor] | None = None
        self._entropy_probe: _EntropyProbe | None = None
        self._rewards_per_func: torch.Tensor | None = None
        self._refill_prompt_keys: list[str] | None = None  # the training prompts as text, read on first refill

    # ------------------------------------------------------------------ loss reduction
    def reduce_per_token(self, per_token: torch.Tensor, mask: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
        """:func:`reduce_like_trl` with this trainer's loss type, accumulation and (``dapo``) token count."""
        train = self.model.training
        accumulation = self.current_gradient_accumulation_steps if train else 1.0
        items = None
        if self.loss_type == "dapo":
            items = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
            if train:
                items = items * self.current_gradient_accumulation_steps / self.args.steps_per_generation
        return reduce_like_trl(per_token, mask, self.loss_type, max_completion_length=self.max_completion_length,
                               accumulation=accumulation, items_normalizer=items)

    # ------------------------------------------------------------------ the policy on a training batch
    @staticmethod
    def loss_mask(inputs: dict[str, Any]) -> torch.Tensor:
        """The completion tokens a loss counts (float): the completion mask, times TRL's tool mask when present."""
        mask = inputs["completion_mask"]
        return (mask if "tool_mask" not in inputs else mask * inputs["tool_mask"]).float()

    @staticmethod
    def _model_inputs(inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Prompt and completion joined, as TRL's ``_get_per_token_logps_and_entropies`` takes them."""
        return (torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1),
                torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1), inputs["completion_ids"].size(1))

    def policy_forward(self, model: Any, inputs: dict[str, Any]) -> "PolicyForward":
        """The current policy's per-token log-probs and entropies on a batch, with the sampling policy's log-probs.

        For the subclasses that compute their own loss (LUFFY, Clip-Cov/KL-Cov): fully on-policy
        TRL keeps no ``old_per_token_logps``, and the old policy is the current one, detached.
        """
        logps, entropies = self._get_per_token_logps_and_entropies(model, *self._model_inputs(inputs),
                                                                   compute_entropy=True)[:2]
        old = inputs.get("old_per_token_logps")
        return PolicyForward(logps, entropies, logps.detach() if old is None else old, self.loss_mask(inputs))

    # ------------------------------------------------------------------ entropy change of one update
    def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> torch.Tensor:
        if self._entropy_probe is not None:  # the previous step's optimizer update has been applied by now
            self._record_entropy_change(model, self._entropy_probe)
            self._entropy_probe = None
        return super().training_step(model, inputs, num_items_in_batch)

    def _record_entropy_change(self, model: Any, probe: "_EntropyProbe") -> None:
        """``entropy_change`` (logged with the next step): the last update's effect on its own batch's entropy."""
        with torch.no_grad():
            _, entropies = GRPOTrainer._get_per_token_logps_and_entropies(
                self, model, probe.input_ids, probe.attention_mask, probe.logits_to_keep, compute_entropy=True)[:2]
        after = float(masked_mean(entropies, probe.completion_mask))
        self._metrics["train"]["entropy_change"].append(after - probe.entropy_before)

    # ------------------------------------------------------------------ advantages
    def compute_advantages(self, rewards: torch.Tensor, group_size: int) -> torch.Tensor:
        """The advantage of every completion of the generation batch: the one override point for estimators.

        ``rewards`` (N,) is the weighted sum of the reward functions, gathered over all processes, each
        prompt's ``group_size`` completions contiguous and NaN where no reward function scored the
        completion: exactly what TRL 1.16 normalises in ``_generate_and_score_completions``
        (``multi_objective_aggregation="sum_then_normalize"``). That is the signature because group
        estimators (a baseline, a std, a pass@k count) need the whole group and TRL holds whole groups
        only there, before it slices out this process's rows. Return (N,) advantages; NaN ones are set to
        0 afterwards, as TRL does. The default, :func:`rlnb.advantages.grpo_advantages` with
        ``scale_rewards``, is TRL's own computation op for op, so a trainer that does not override
        this trains exactly as TRL.
        """
        return grpo_advantages(rewards, group_size, self.scale_rewards)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list) -> torch.Tensor:
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._rewards_per_func = rewards_per_func  # (N_all, n_funcs), gathered: compute_advantages' input
        return rewards_per_func

    def _hooked_advantages(self, local_rows: int) -> torch.Tensor:
        """:meth:`compute_advantages` on the rewards TRL just computed, then TRL's NaN-to-0 and process slice.

        TRL's log of the completions' advantages (``_logs["advantages"]``, its completions table) is
        rewritten with these, so it shows what the loss used; its reward metrics do not depend on them.
        """
        group_size = self.num_generations if self.model.training else self.num_generations_eval
        all_advantages = torch.nan_to_num(self.compute_advantages(self._summed_rewards(), group_size), nan=0.0)
        self._relog_advantages(all_advantages)
        start = self.accelerator.process_index * local_rows
        return all_advantages[start:start + local_rows]

    def _summed_rewards(self) -> torch.Tensor:
        """(N_all,) the weighted sum of the reward functions TRL just computed (NaN where none scored), consumed."""
        if self._rewards_per_func is None:
            raise RuntimeError("TRL scored the completions without _calculate_rewards: the advantage hook "
                               "needs TRL 1.16's data flow (see RecordingGRPOTrainer.compute_advantages)")
        rewards_per_func, self._rewards_per_func = self._rewards_per_func, None
        weights = self.reward_weights.to(rewards_per_func.device).unsqueeze(0)
        rewards = (rewards_per_func * weights).nansum(dim=1)  # (N_all,)
        rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
        return rewards

    def _relog_advantages(self, advantages: torch.Tensor) -> None:
        """Replace the newest entries of TRL's completions log (``_logs["advantages"]``) with ``advantages``."""
        logged = self._logs["advantages"]
        for _ in range(min(len(advantages), len(logged))):
            logged.pop()
        logged.extend(advantages.tolist())  # a deque of the last generation batch's length: older entries fall out

    # ------------------------------------------------------------------ rollouts
    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        if self.args.dynamic_sampling and self.model.training:
            return self.dynamic_sampling_batch(inputs)
        output = super()._generate_and_score_completions(inputs)
        output["advantages"] = self._hooked_advantages(len(inputs))
        if self.model.training:
            self._record_rollouts(inputs, output)
        return output

    # ------------------------------------------------------------------ DAPO's dynamic sampling
    def dynamic_sampling_batch(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """A generation batch of ``len(inputs)`` rows whose groups all have reward spread, when the cap allows.

        DAPO (Yu et al. 2025; its objective's constraint ``0 < |{correct o_i}| < G``): TRL generates and
        scores the batch (round 1); each group whose summed rewards are all equal (:func:`zero_spread_groups`,
        TRL's ``frac_reward_zero_std`` test) is dropped, and further rounds, each of as many new training
        prompts as the batch has groups (:meth:`refill_prompts`), are generated until the groups with spread
        fill the batch or ``dynamic_sampling_max_rounds`` rounds are spent. Two departures from verl's DAPO
        recipe: it filters on accuracy (``filter_groups.metric=acc``), here on the summed reward, the
        quantity whose spread decides whether a group has a gradient (a format term can give an all-wrong
        group spread); and its generation batch is 3 times the training batch, here equal to it. Groups with spread are kept in the
        order generated (later ones beyond the batch are discarded, as DAPO's over-sampling does); if the
        cap leaves the batch short, the earliest zero-spread groups fill it (:func:`dynamic_sampling_plan`),
        so TRL always gets its batch shape. The kept rounds' tensors are padded to a common width
        (:func:`concat_padded`), ``num_items_in_batch`` is recounted on the kept tokens, and
        :meth:`compute_advantages` runs once on the kept batch's rewards.

        What the metrics describe: TRL's reward and completion metrics (``reward``, ``rewards/*``,
        ``frac_reward_zero_std``, ``completions/*``) are logged per round and averaged by TRL's ``log``,
        and the per-level accuracy, steps and lengths are recorded once on every round together: all
        describe *every generation* (what the policy samples, comparable with a run without dynamic
        sampling), not the filtered batch, whose accuracy is biased towards 1/2 by construction. The
        loss-side metrics (loss, entropy, clip ratios, covariance) describe the kept batch, which is what
        is trained on; ``dynamic_sampling/entropy`` is the mean token entropy of every generation under the
        sampling policy (one no-grad forward per round), the population whose entropy a run without dynamic
        sampling logs on its first step on a batch. Per generation batch it logs ``dynamic_sampling/generations`` (completions
        generated, all rounds), ``/rounds``, ``/zero_spread_groups`` (generated groups without spread),
        ``/filled_groups`` (of those, kept because the cap was hit; 0 when refills sufficed) and
        ``/unused_groups`` (groups with spread generated beyond the batch). TRL's completions log and
        ``completions.jsonl`` show each generation's advantage as trained, 0 for one not trained on.
        """
        if self.accelerator.num_processes > 1:
            raise NotImplementedError("dynamic sampling keeps whole groups, which TRL may split across processes: "
                                      "run it on one process")
        g = self.num_generations
        if len(inputs) % g:
            raise ValueError(f"a generation batch of {len(inputs)} rows is not whole groups of {g}")
        wanted = len(inputs) // g
        rounds: list[tuple[list[dict[str, Any]], dict[str, Any], torch.Tensor]] = []
        used = {_prompt_key(x) for x in inputs}
        batch = inputs
        entropy_sum, tokens = torch.zeros(()), torch.zeros(())
        for r in range(self.args.dynamic_sampling_max_rounds):
            if r:
                batch = self.refill_prompts(wanted, used, r)
                used |= {_prompt_key(x) for x in batch}
            output = super()._generate_and_score_completions(batch)  # TRL's: rewards, metrics, old log-probs
            rewards = self._summed_rewards()
            rounds.append((batch, output, rewards))
            entropy_sum, tokens = entropy_sum + self._entropy_total(output), tokens + self.loss_mask(output).sum()
            if sum(int((~zero_spread_groups(rw, g)).sum()) for *_, rw in rounds) >= wanted:
                break
        zero = [zero_spread_groups(rw, g) for *_, rw in rounds]
        chosen, filled = dynamic_sampling_plan(zero, wanted)
        rows = {r: torch.cat([torch.arange(j * g, (j + 1) * g) for rr, j in chosen if rr == r])
                for r in {rr for rr, _ in chosen}}
        kept = sorted(rows)
        out = concat_padded([rounds[r][1] for r in kept], [rows[r] for r in kept], self._tokenizer.pad_token_id)
        rewards = torch.cat([rounds[r][2][rows[r].to(rounds[r][2].device)] for r in kept])  # (N,)
        out["advantages"] = torch.nan_to_num(self.compute_advantages(rewards, g), nan=0.0)
        loss_mask = out["completion_mask"] if "tool_mask" not in out else out["completion_mask"] * out["tool_mask"]
        out["num_items_in_batch"] = loss_mask.sum()
        # Every generation, with the advantage it was trained with (0 when it was not): logs and recording.
        trained = [torch.zeros(len(b)) for b, _, _ in rounds]
        offset = 0
        for r in kept:
            trained[r][rows[r]] = out["advantages"][offset:offset + len(rows[r])].detach().float().cpu()
            offset += len(rows[r])
        self._relog_advantages(torch.cat(trained))
        every = concat_padded([o for _, o, _ in rounds], None, self._tokenizer.pad_token_id,
                              keys=("completion_ids", "completion_mask"))
        every["advantages"] = torch.cat(trained)
        self._record_rollouts([x for b, _, _ in rounds for x in b], every)
        generated_groups = sum(len(z) for z in zero)
        spread_groups = generated_groups - sum(int(z.sum()) for z in zero)
        metrics = self._metrics["train"]
        metrics["dynamic_sampling/generations"].append(float(generated_groups * g))
        metrics["dynamic_sampling/entropy"].append(float(entropy_sum / tokens.clamp(min=1.0)))
        metrics["dynamic_sampling/rounds"].append(float(len(rounds)))
        metrics["dynamic_sampling/zero_spread_groups"].append(float(generated_groups - spread_groups))
        metrics["dynamic_sampling/filled_groups"].append(float(filled))
        metrics["dynamic_sampling/unused_groups"].append(float(spread_groups - (wanted - filled)))
        return out

    def _entropy_total(self, output: dict[str, Any]) -> torch.Tensor:
        """The summed token entropy of one generation round's completions under the current (sampling) policy.

        TRL's own forward, called past this class's override so that the loss's recorded entropies are
        not replaced by a batch that may not be trained on.
        """
        with torch.no_grad():
            entropies = GRPOTrainer._get_per_token_logps_and_entropies(
                self, self.model, *self._model_inputs(output), compute_entropy=True)[1]  # (B, T)
        return (entropies.float() * self.loss_mask(output)).sum().cpu()

    def refill_prompts(self, groups: int, used: set[str], round_index: int) -> list[dict[str, Any]]:
        """``groups`` training prompts for a refill round, each repeated ``num_generations`` times (TRL's layout).

        Drawn without replacement from the training dataset's rows whose prompt is not yet in this
        generation batch (``used``; all rows once too few are left), by a generator seeded from
        ``args.seed``, the optimiser step and the round: a run draws the same refills every time,
        resumed from a checkpoint or not.
        """
        dataset = self.train_dataset
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError("dynamic sampling draws refill prompts by index: give the trainer a map-style dataset")
        if self._refill_prompt_keys is None:
            self._refill_prompt_keys = [_prompt_key({"prompt": p}) for p in dataset["prompt"]]
        fresh = [i for i, key in enumerate(self._refill_prompt_keys) if key not in used]
        pool = fresh if len(fresh) >= groups else list(range(len(dataset)))
        rng = random.Random(f"dynamic-sampling-{self.args.seed}-{self.state.global_step}-{round_index}")
        picks = rng.sample(pool, groups) if len(pool) >= groups else rng.choices(pool, k=groups)
        return [dict(dataset[i]) for i in picks for _ in range(self.num_generations)]

    def _record_rollouts(self, inputs: list[dict[str, Any]], output: dict[str, Any]) -> None:
        ids, mask = output["completion_ids"], output["completion_mask"]
        texts = self.processing_class.batch_decode(ids * mask, skip_special_tokens=True)
        lengths = mask.sum(-1).tolist()
        correct = [self.task.is_correct(t, x["answer"]) for t, x in zip(texts, inputs)]
        steps = [self.task.wrote_steps(t, x["prompt"]) for t, x in zip(texts, inputs)]
        by_level: dict[int, list[int]] = {}
        for i, x in enumerate(inputs):
            level = _level_of(x)
            if level is not None:
                by_level.setdefault(level, []).append(i)
        metrics = self._metrics["train"]
        for level, rows in sorted(by_level.items()):
            metrics[f"accuracy/level_{level}"].append(sum(correct[i] for i in rows) / len(rows))
            metrics[f"steps_used/level_{level}"].append(sum(steps[i] for i in rows) / len(rows))
            metrics[f"length/level_{level}"].append(sum(lengths[i] for i in rows) / len(rows))
        for name, keep in (("length_correct", True), ("length_incorrect", False)):
            sel = [lengths[i] for i in range(len(texts)) if correct[i] == keep]
            if sel:
                metrics[name].append(sum(sel) / len(sel))
        step = self.state.global_step
        if step % self.args.sample_every == 0:
            self._write_samples(step, inputs, texts, correct, output["advantages"].tolist())

    def _write_samples(
        self, step: int, inputs: list[dict[str, Any]], texts: list[str], correct: list[bool], adv: list[float]
    ) -> None:
        group = self.num_generations
        path = Path(self.args.output_dir) / SAMPLES_FILE
        with path.open("a") as f:
            for i in range(min(group, len(texts))):
                row = {"step": step, "level": _level_of(inputs[i]), "prompt": inputs[i]["prompt"],
                       "completion": texts[i], "correct": bool(correct[i]), "advantage": round(adv[i], 4)}
                f.write(json.dumps(row) + "\n")

    # ------------------------------------------------------------------ loss diagnostics
    def _get_per_token_logps_and_entropies(self, *args: Any, **kwargs: Any):
        logps, entropies, *rest = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if kwargs.get("compute_entropy") and entropies is not None:
            self._last_logps_entropies = (logps.detach(), entropies.detach())
        return (logps, entropies, *rest)

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        loss = super()._compute_loss(model, inputs)
        if self.model.training and self._last_logps_entropies is not None:
            self._record_token_diagnostics(inputs)
        return loss

    def _record_token_diagnostics(self, inputs: dict[str, Any]) -> None:
        logps, entropies = self._last_logps_entropies
        mask = inputs["completion_mask"].float()
        adv = inputs["advantages"]
        metrics = self._metrics["train"]
        metrics["cov_logp_adv"].append(float(masked_mean(centered_logp_adv_cov(logps, adv, mask), mask)))
        valid = entropies[mask.bool()]
        if valid.numel():
            for q in (0.1, 0.5, 0.9):
                metrics[f"entropy_q{int(q * 100)}"].append(float(torch.quantile(valid.float(), q)))
        metrics["logp_mean"].append(float(masked_mean(logps, mask)))
        if self.args.measure_entropy_change and self.model.training:
            input_ids, attention_mask, logits_to_keep = self._model_inputs(inputs)
            self._entropy_probe = _EntropyProbe(
                input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=logits_to_keep,
                completion_mask=mask, entropy_before=float(masked_mean(entropies, mask)))
        self._last_logps_entropies = None


class PolicyForward(NamedTuple):
    """:meth:`RecordingGRPOTrainer.policy_forward`'s result: (B, T) tensors of one training batch."""

    logps: torch.Tensor
    entropies: torch.Tensor
    old_logps: torch.Tensor
    mask: torch.Tensor


@dataclass
class _EntropyProbe:
    """One step's batch and its entropy before the step's update, kept until the update is applied."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    logits_to_keep: int
    completion_mask: torch.Tensor
    entropy_before: float


def zero_spread_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(N,) summed rewards, groups contiguous -> (N / group_size,) bool: the group's rewards are all equal.

    TRL's test for ``frac_reward_zero_std`` (the group's unbiased std is 0 within ``torch.isclose``'s
    tolerance), with NaN rewards ignored; a group with fewer than two scored completions has no spread.
    """
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be a flat batch of whole groups of {group_size}, got {tuple(rewards.shape)}")
    std = nanstd(rewards.view(-1, group_size), dim=1)  # (N / G,)
    return torch.isclose(std, torch.zeros_like(std)) | std.isnan()


def dynamic_sampling_plan(zero_spread: Sequence[torch.Tensor], wanted: int) -> tuple[list[tuple[int, int]], int]:
    """Which generated groups fill a batch of ``wanted`` groups, as ``(round, group)`` pairs in generation order.

    ``zero_spread[r]`` marks round ``r``'s groups without reward spread. The groups with spread come
    first, in generation order, up to ``wanted``; if there are fewer, the earliest zero-spread groups
    fill the rest. Returns the pairs and how many zero-spread groups were needed to fill.
    """
    spread = [(r, j) for r, z in enumerate(zero_spread) for j in range(len(z)) if not bool(z[j])][:wanted]
    flat = [(r, j) for r, z in enumerate(zero_spread) for j in range(len(z)) if bool(z[j])][:wanted - len(spread)]
    if len(spread) + len(flat) < wanted:
        raise ValueError(f"{len(spread) + len(flat)} generated groups cannot fill a batch of {wanted}")
    return sorted(spread + flat), len(flat)


DS_PADDING: dict[str, tuple[str, float | None]] = {
    # key of TRL 1.16's _generate_and_score_completions output -> (side, value) to pad it to a common width;
    # None: the tokenizer's pad id, as TRL pads. Each value is the one TRL itself pads with.
    "prompt_ids": ("left", None), "prompt_mask": ("left", 0),
    "completion_ids": ("right", None), "completion_mask": ("right", 0), "tool_mask": ("right", 1),
    "old_per_token_logps": ("right", 0.0), "ref_per_token_logps": ("right", 0.0),
    "sampling_per_token_logps": ("right", 0.0), "importance_sampling_ratio": ("right", 1.0),
}
"""The (B, T) tensors dynamic sampling concatenates across rounds; ``advantages`` and ``num_items_in_batch`` are
recomputed on the kept batch, and any other key (images) is refused."""


def concat_padded(
    outputs: Sequence[dict[str, Any]], rows: Sequence[torch.Tensor] | None, pad_token_id: int,
    keys: Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """The rows ``rows[k]`` of each TRL output ``outputs[k]``, concatenated, each (B, T) tensor padded to the widest.

    Prompts are padded on the left and completions on the right with TRL's own values (:data:`DS_PADDING`),
    so the result has exactly the layout of one batch TRL would have generated. ``rows=None`` takes every
    row; ``keys`` (default: every key of the outputs but the recomputed scalars) picks what to concatenate.
    """
    names = [k for k in outputs[0] if k not in ("advantages", "num_items_in_batch")] if keys is None else list(keys)
    for out in outputs:
        unknown = [k for k in names if k not in DS_PADDING]
        if unknown or (keys is None and set(out) != set(outputs[0])):
            raise NotImplementedError(f"dynamic sampling cannot concatenate {unknown or sorted(set(out) ^ set(outputs[0]))}"
                                      " across generation rounds (text-only TRL 1.16 outputs are supported)")
    merged = {}
    for name in names:
        side, value = DS_PADDING[name]
        value = pad_token_id if value is None else value
        parts = [out[name] if rows is None else out[name][rows[k].to(out[name].device)] for k, out in enumerate(outputs)]
        width = max(p.size(1) for p in parts)
        merged[name] = torch.cat([torch.nn.functional.pad(
            p, (width - p.size(1), 0) if side == "left" else (0, width - p.size(1)), value=value) for p in parts])
    return merged


def _prompt_key(row: dict[str, Any]) -> str:
    """A row's prompt as text (conversational prompts are lists of messages), to tell prompts apart."""
    prompt = row["prompt"]
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, default=str)


def _level_of(row: dict[str, Any]) -> int | None:
    """The row's level as an integer (the world's ``3``, MATH's ``"Level 3"``), ``None`` without one."""
    return level_number(row.get("level")) or None


class TidyMetricsCallback(TrainerCallback):
    """Append every logged scalar to ``<run>/metrics.csv`` as ``step, metric, level, value``.

    Metric names ending in ``/level_N`` are split into the metric and its level,
    so a notebook can plot per-level curves with one seaborn call.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / METRICS_FILE

    def on_log(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
        logs: dict[str, Any] | None = None, **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or not logs:
            return
        new = not self.path.exists() or self.path.stat().st_size == 0
        with self.path.open("a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(METRICS_HEADER)
            for key, value in logs.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    continue
                match = _LEVEL_KEY.match(key)
                metric, level = (match["metric"], match["level"]) if match else (key, "")
                writer.writerow([state.global_step, metric, level, value])


def truncate_metrics(run_dir: str | Path, last_step: int) -> None:
    """Keep the rows logged up to ``last_step``: a run resumed from that step's checkpoint re-logs the rest.

    A crash can leave the file empty (it is removed) or its last row torn (it is
    dropped); a file that does not start with the header is not one to cut, so
    the error names it.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        path.unlink()
        return
    if rows[0] != METRICS_HEADER:
        raise ValueError(f"{path} does not start with the header {','.join(METRICS_HEADER)}: repair or delete it")
    whole = [r for r in rows[1:] if len(r) == len(METRICS_HEADER) and r[0].isdigit()]
    kept = [rows[0]] + [r for r in whole if int(r[0]) <= last_step]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(kept)


def truncate_samples(run_dir: str | Path, resume_step: int) -> None:
    """Keep the sample groups written before ``resume_step``, so a resumed run writes none twice.

    A group labelled N is written while step N + 1 generates, after
    ``checkpoint-N`` was saved: a run resumed from it writes the groups from N
    on again. A torn last line (a crash while writing) is dropped too.
    """
    path = Path(run_dir) / SAMPLES_FILE
    if not path.exists():
        return
    steps = [(line, _sample_step(line)) for line in path.read_text().splitlines()]
    kept = [line for line, step in steps if step is not None and step < resume_step]
    path.write_text("".join(line + "\n" for line in kept))


def _sample_step(line: str) -> int | None:
    """The step of one ``completions.jsonl`` line; ``None`` for a line that is not a whole sample."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    step = row.get("step") if isinstance(row, dict) else None
    return step if isinstance(step, int) else None
