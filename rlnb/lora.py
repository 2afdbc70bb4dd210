"""LoRA for GRPO: adapter options, parameter counts, saving/loading adapters, merging, step cost.

Tina (Wang et al. 2025) trains only low-rank updates ``W + (alpha / r) B A`` on
every attention and MLP projection, with ``alpha = 4 r``. A run asks for LoRA
through ``RunConfig.lora`` (a plain dict, so it hashes and saves as YAML);
:func:`lora_options` builds that dict with Tina's conventions, and
:func:`rlnb.train.build_trainer` hands it to TRL as a PEFT ``LoraConfig``.
Finished LoRA runs keep their adapter in ``<run>/adapter/`` and a merged model
in ``<run>/final/`` (:mod:`rlnb.runs`); :func:`load_adapter` and
:func:`merge_for_eval` are the two ways back to a model.
"""

from __future__ import annotations

import copy
import ctypes
import gc
import re
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch
from transformers import PretrainedConfig, PreTrainedModel, TrainerCallback

TINA_TARGET_MODULES: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Every linear projection of a Qwen2/Llama block: attention and MLP, as in Tina's recipes."""

TINA_ALPHA_PER_RANK = 4
"""Tina's ``lora_alpha = 4 r``: the update is scaled by alpha / r = 4 at every rank."""

TINA_DROPOUT = 0.05


def lora_options(
    rank: int,
    alpha: float | None = None,
    dropout: float = TINA_DROPOUT,
    target_modules: Sequence[str] = TINA_TARGET_MODULES,
) -> dict[str, Any]:
    """``RunConfig.lora`` for a rank: PEFT ``LoraConfig`` keyword arguments as plain values.

    ``alpha`` defaults to Tina's ``4 * rank``, so ranks can be compared at the
    same update scale; plain types keep the run's config hash stable.
    """
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ValueError(f"LoRA rank must be a positive integer, got {rank!r}")
    if alpha is not None and alpha <= 0:
        raise ValueError(f"lora_alpha must be positive, got {alpha!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"lora_dropout must be in [0, 1), got {dropout!r}")
    modules = [target_modules] if isinstance(target_modules, str) else list(target_modules)
    if not modules:
        raise ValueError("target_modules is empty: name the projections LoRA should adapt, e.g. ['q_proj', 'v_proj']")
    return {
        "r": rank,
        "lora_alpha": float(TINA_ALPHA_PER_RANK * rank if alpha is None else alpha),
        "lora_dropout": float(dropout),
        "target_modules": modules,
    }


def lora_config(options: dict[str, Any]):
    """PEFT ``LoraConfig`` for causal-LM training from :func:`lora_options`' dict (what TRL receives)."""
    from rlnb.train import lora_config as build

    return build(options)


@dataclass(frozen=True)
class ParamCount:
    """Trainable and total parameters, counted the way PEFT's ``get_nb_trainable_parameters`` does.

    ``total`` includes the adapter's own parameters (PEFT's convention), so
    ``fraction`` is "trainable share of the model being trained".
    """

    trainable: int
    total: int

    @property
    def fraction(self) -> float:
        return self.trainable / self.total if self.total else 0.0


def _numel(param: torch.nn.Parameter) -> int:
    """Elements a parameter stands for, including the two cases where ``numel()`` undercounts.

    DeepSpeed ZeRO-3 leaves an empty placeholder and records the real size in
    ``ds_numel``; bitsandbytes 4-bit weights pack two values per byte of their
    storage type, so they hold ``2 * itemsize`` weights per stored element.
    """
    n = param.numel()
    if n == 0 and hasattr(param, "ds_numel"):
        n = param.ds_numel
    if type(param).__name__ == "Params4bit":
        if hasattr(param, "element_size"):
            itemsize = param.element_size()
        else:
            itemsize = getattr(getattr(param, "quant_storage", None), "itemsize", 1)
        n *= 2 * itemsize
    return n


def count_parameters(model: torch.nn.Module) -> ParamCount:
    """Trainable and total parameters of any module (tied weights counted once)."""
    trainable = total = 0
    for _, param in model.named_parameters():
        n = _numel(param)
        total += n
        trainable += n if param.requires_grad else 0
    return ParamCount(trainable, total)


def attach_lora(model: PreTrainedModel, options: dict[str, Any]):
    """Wrap ``model`` in a PEFT LoRA model (base weights frozen), as TRL does for ``peft_config``."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(options))


def lora_parameter_count(config: PretrainedConfig, options: dict[str, Any]) -> tuple[ParamCount, int]:
    """(LoRA model's count, base model's parameters) for an architecture, without allocating weights.

    The model is built on the ``meta`` device, so this sizes Tina's r = 32
    adapter on a 1.5B-parameter config in a second on any CPU.
    """
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    base = count_parameters(model).total
    return count_parameters(attach_lora(model, options)), base


def load_adapter(adapter_dir: str | Path, base: str | PreTrainedModel = "tiny", device: str = "cpu"):
    """A saved adapter (``<run>/adapter/``) on top of its base, ready for evaluation.

    ``base`` is a model or a name for :func:`rlnb.models.load_model`; a model
    passed in is wrapped in place (PEFT injects the adapter layers into it).
    """
    from peft import PeftModel

    from rlnb.models import load_model

    folder = Path(adapter_dir)
    if not (folder / "adapter_config.json").exists():
        raise FileNotFoundError(
            f"no LoRA adapter at {folder} (expected adapter_config.json, as written by a LoRA run's adapter/ folder)"
        )
    model = load_model(base, device=device)[0] if isinstance(base, str) else base
    return PeftModel.from_pretrained(model, str(folder)).eval()


def merge_for_eval(peft_model) -> PreTrainedModel:
    """A plain model with ``W + (alpha / r) B A`` folded in; the adapter model passed in is left intact.

    Merged weights cost no extra matmuls at generation time and load in any
    tool (vLLM, pass@k evaluation) that knows nothing of PEFT.
    """
    return copy.deepcopy(peft_model).merge_and_unload().eval()


# ------------------------------------------------------------------ does the update fit in low rank?


def _adapted_updates(base: torch.nn.Module, tuned: torch.nn.Module,
                     target_modules: Sequence[str]) -> dict[str, torch.Tensor]:
    """``tuned - base`` for every 2-D weight of a module LoRA would adapt (``<...>.<target>.weight``), by name."""
    base_params = dict(base.named_parameters())
    tuned_params = dict(tuned.named_parameters())
    if base_params.keys() != tuned_params.keys():
        missing = sorted(base_params.keys() ^ tuned_params.keys())[:3]
        raise ValueError(f"base and tuned models have different parameters (e.g. {missing}): compare a fine-tuned "
                         "model with the base it was trained from")
    updates = {}
    for name, weight in base_params.items():
        parts = name.split(".")
        if weight.dim() == 2 and len(parts) >= 2 and parts[-1] == "weight" and parts[-2] in target_modules:
            updates[name] = (tuned_params[name].detach().double() - weight.detach().double()).cpu()
    if not updates:
        raise ValueError(f"no 2-D weight of a module named {list(target_modules)} in the model: nothing LoRA would "
                         "adapt (name the projections with target_modules)")
    return updates


def update_spectrum(base: torch.nn.Module, tuned: torch.nn.Module, ranks: Sequence[int] = (1, 4, 32),
                    target_modules: Sequence[str] = TINA_TARGET_MODULES) -> pd.DataFrame:
    """How much of full fine-tuning's update of each adapted matrix lies in its top singular directions.

    Tina's premise is that the RL update is low-rank; this measures it on a
    full fine-tuning run instead of assuming it. Per matrix: its shape, the
    update's Frobenius norm relative to the base weight's, and for each rank
    ``r`` the share of the update's energy (sum of squared singular values)
    in the top ``r`` directions, which is what a rank-``r`` truncation keeps
    (Eckart-Young). A rank at or above a matrix's smaller side keeps all of it.
    """
    base_params = dict(base.named_parameters())
    rows = []
    for name, delta in _adapted_updates(base, tuned, target_modules).items():
        energy = torch.linalg.svdvals(delta).pow(2)
        total = float(energy.sum())
        row = {"matrix": name.removesuffix(".weight"), "module": name.split(".")[-2], "shape": tuple(delta.shape),
               "relative norm": float(delta.norm() / base_params[name].detach().double().norm())}
        for r in ranks:
            row[f"energy in top {r}"] = float(energy[:r].sum() / total) if total > 0 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def truncate_update(base: PreTrainedModel, tuned: PreTrainedModel, rank: int | None,
                    target_modules: Sequence[str] = TINA_TARGET_MODULES) -> PreTrainedModel:
    """The base plus full fine-tuning's update of LoRA's matrices, each cut to its best rank-``rank`` approximation.

    Everything LoRA does not adapt (embeddings, norms, biases) stays the
    base's, as in a LoRA run, so the model tests whether *the update full
    fine-tuning found* survives LoRA's constraint. ``rank=None`` keeps each
    matrix's whole update: the reference that separates the rank limit from
    the frozen parameters. ``base`` and ``tuned`` are left unchanged.
    """
    if rank is not None and (not isinstance(rank, int) or isinstance(rank, bool) or rank < 1):
        raise ValueError(f"rank must be a positive integer or None (the whole update), got {rank!r}")
    model = copy.deepcopy(base).eval()
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, delta in _adapted_updates(base, tuned, target_modules).items():
            if rank is not None and rank < min(delta.shape):
                u, s, vh = torch.linalg.svd(delta, full_matrices=False)
                delta = (u[:, :rank] * s[:rank]) @ vh[:rank]
            params[name].add_(delta.to(params[name].dtype))
    return model


# ------------------------------------------------------------------ step cost


@dataclass(frozen=True)
class StepCost:
    """What one GRPO step costs, averaged over the measured steps.

    ``generated_tokens_per_s`` divides the completion tokens of a step by the
    time spent inside generation only. ``peak_memory_mb`` is
    ``torch.cuda.max_memory_allocated`` on a GPU; on a CPU it is the process's
    peak resident set size (Linux ``VmHWM``, reset before the measured steps)
    minus its size when they started: what the steps added, not the
    interpreter, libraries and model already loaded.
    """

    seconds_per_step: float
    generation_seconds_per_step: float
    generated_tokens_per_step: float
    generated_tokens_per_s: float
    peak_memory_mb: float
    memory_kind: str
    params: ParamCount


class _StepClock(TrainerCallback):
    """Wall time of each step and the completion tokens it generated (from TRL's logged mean length)."""

    def __init__(self) -> None:
        self.step_seconds: list[float] = []
        self.tokens: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.step_seconds.append(time.perf_counter() - self._start)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "completions/mean_length" in logs:
            self.tokens.append(logs["completions/mean_length"] * args.per_device_train_batch_size)


def _rss_kb(field: str) -> int | None:
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", status.read_text(), re.MULTILINE)
    return int(match.group(1)) if match else None


def _reset_cpu_peak() -> int | None:
    """Return freed heap to the OS, reset the peak-RSS mark, and return the RSS (kB) it starts from."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")  # "5" resets VmHWM to the current RSS
        except OSError:
            return None
    return _rss_kb("VmRSS")


def grpo_step_cost(cfg, steps: int = 5, warmup: int = 1) -> StepCost:
    """Measure ``steps`` GRPO steps of ``cfg`` after ``warmup`` unmeasured ones, in a scratch folder.

    Uses the same trainer as a real run (:func:`rlnb.train.build_trainer`), so
    LoRA and full fine-tuning are timed on identical code paths. Nothing is
    saved; the run cache is not touched.
    """
    from rlnb.train import build_trainer

    if steps < 1 or warmup < 0:
        raise ValueError(f"need steps >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")
    cfg = replace(cfg, max_steps=warmup + steps, save_steps=10**9)
    with tempfile.TemporaryDirectory(prefix="rlnb-cost-") as scratch:
        trainer = build_trainer(cfg, scratch)
        clock = _StepClock()
        gen_seconds: list[float] = []
        generate = trainer._generate

        def timed_generate(*args, **kwargs):
            start = time.perf_counter()
            out = generate(*args, **kwargs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            gen_seconds.append(time.perf_counter() - start)
            return out

        trainer._generate = timed_generate
        on_gpu = next(trainer.model.parameters()).is_cuda
        baseline = None

        class _ResetPeak(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                nonlocal baseline
                if state.global_step == warmup and baseline is None:
                    if on_gpu:
                        torch.cuda.reset_peak_memory_stats()
                        baseline = 0
                    else:
                        baseline = _reset_cpu_peak() or 0

        trainer.add_callback(_ResetPeak())  # before the clock, so resetting is not timed
        trainer.add_callback(clock)
        params = count_parameters(trainer.model)
        trainer.train()
        if on_gpu:
            peak_mb, kind = torch.cuda.max_memory_allocated() / 2**20, "cuda max_memory_allocated"
        else:
            hwm = _rss_kb("VmHWM")
            peak_mb = (hwm - baseline) / 1024 if hwm is not None else float("nan")
            kind = "peak RSS above start (VmHWM)"
        del trainer
    secs = clock.step_seconds[warmup:]
    gen = gen_seconds[warmup : warmup + steps]
    tokens = clock.tokens[warmup : warmup + steps]
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    return StepCost(
        seconds_per_step=mean(secs),
        generation_seconds_per_step=mean(gen),
        generated_tokens_per_step=mean(tokens),
        generated_tokens_per_s=sum(tokens) / sum(gen) if gen and sum(gen) > 0 else float("nan"),
        peak_memory_mb=peak_mb,
        memory_kind=kind,
        params=params,
    )


def r1_distill_qwen_1p5b_config(**overrides: Any) -> PretrainedConfig:
    """The shape of DeepSeek-R1-Distill-Qwen-1.5B (Tina's base) as a local ``Qwen2Config``, no download.

    Only the shape: for sizing adapters (:func:`lora_parameter_count`) and for
    benchmarking steps with random weights on a machine that has no hub.
    ``overrides`` replace fields (e.g. fewer layers for a smoke test).
    """
    from transformers import Qwen2Config

    shape = dict(
        vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
        num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=131072,
        rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
        bos_token_id=151646, eos_token_id=151643,
    )
    return Qwen2Config(**{**shape, **overrides})
