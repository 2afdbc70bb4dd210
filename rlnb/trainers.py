"""TRL ``GRPOTrainer`` subclasses that record what the notebooks plot.

:class:`RecordingGRPOTrainer` is TRL's trainer unchanged in what it optimises;
it adds, every step, per-level accuracy, step-writing, completion length split
by correctness (the Dr. GRPO length bias shows there), the token-entropy
distribution and the covariance between token log-probability and advantage
(Cui et al. 2025). :class:`TidyMetricsCallback` appends every logged value to a
tidy ``metrics.csv`` (``step, metric, level, value``) as it is logged, so an
interrupted run loses nothing it had logged.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from trl import GRPOConfig, GRPOTrainer

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

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sample_every < 1:
            raise ValueError(f"sample_every must be at least 1, got {self.sample_every}")
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
        if self._rewards_per_func is None:
            raise RuntimeError("TRL scored the completions without _calculate_rewards: the advantage hook "
                               "needs TRL 1.16's data flow (see RecordingGRPOTrainer.compute_advantages)")
        rewards_per_func, self._rewards_per_func = self._rewards_per_func, None
        weights = self.reward_weights.to(rewards_per_func.device).unsqueeze(0)
        rewards = (rewards_per_func * weights).nansum(dim=1)  # (N_all,)
        rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
        group_size = self.num_generations if self.model.training else self.num_generations_eval
        all_advantages = torch.nan_to_num(self.compute_advantages(rewards, group_size), nan=0.0)
        logged = self._logs["advantages"]
        for _ in range(min(len(all_advantages), len(logged))):
            logged.pop()
        logged.extend(all_advantages.tolist())
        start = self.accelerator.process_index * local_rows
        return all_advantages[start:start + local_rows]

    # ------------------------------------------------------------------ rollouts
    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        output["advantages"] = self._hooked_advantages(len(inputs))
        if self.model.training:
            self._record_rollouts(inputs, output)
        return output

    def _record_rollouts(self, inputs: list[dict[str, Any]], output: dict[str, Any]) -> None:
        ids, mask = output["completion_ids"], output["completion_mask"]
        texts = self.processing_class.batch_decode(ids * mask, skip_special_tokens=True)
        lengths = mask.sum(-1).tolist()
        correct = [self.task.is_correct(t, x["answer"]) for t, x in zip(texts, inputs)]
        steps = [self.task.wrote_steps(t) for t in texts]
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
