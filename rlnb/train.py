"""One configuration for every training run, and the entry point that executes it.

Notebooks build a :class:`RunConfig` and call :func:`rlnb.runs.load_or_train`;
the same configuration saved as YAML runs from the command line::

    python -m rlnb.train CONFIG.yaml [RUN_DIR]
    accelerate launch --num_processes 8 -m rlnb.train CONFIG.yaml RUN_DIR

Because the trainers are TRL trainers, ``accelerate`` (and DeepSpeed through
its config) parallelises them without any code here.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml
from datasets import Dataset
from trl import GRPOConfig

from rlnb.models import TINY, load_model
from rlnb.presets import device_settings
from rlnb.trainers import RecordingGRPOTrainer, TidyMetricsCallback
from rlnb.tasks import TASKS, get_task, math_training_dataset
from rlnb.world import expert_trace, sample_problem

METHODS: dict[str, str] = {
    # method -> "module:TrainerClass"; each class accepts (model, processing_class, reward_funcs, args,
    # train_dataset, callbacks, peft_config, **cfg.method_options) like TRL's GRPOTrainer.
    "grpo": "rlnb.trainers:RecordingGRPOTrainer",
    "cov": "rlnb.entropy_control:CovGRPOTrainer",  # Clip-Cov / KL-Cov (notebook 03)
    "luffy": "rlnb.luffy:LuffyGRPOTrainer",  # mixed-policy GRPO (notebook 02)
}
"""Trainers are imported only when a run asks for them."""


@dataclass
class RunConfig:
    """Everything that determines a run. Its hash names the run folder.

    Fields mirror TRL's ``GRPOConfig`` names where one exists; ``grpo`` passes
    any other ``GRPOConfig`` option through unchanged (for example
    ``{"epsilon_high": 0.28}`` for DAPO's clip-higher).
    """

    method: str = "grpo"
    model: str = TINY
    preset: str = "ci"
    seed: int = 0
    levels: tuple[int, ...] = (2, 3, 4)
    max_steps: int = 300
    learning_rate: float = 5e-5
    prompts_per_step: int = 4
    num_generations: int = 16
    max_completion_length: int = 48
    temperature: float = 1.0
    loss_type: str = "dapo"
    scale_rewards: str = "group"
    format_reward_weight: float = 0.0
    save_steps: int = 50
    grpo: dict[str, Any] = field(default_factory=dict)
    method_options: dict[str, Any] = field(default_factory=dict)
    lora: dict[str, Any] | None = None
    task: str = "world"
    dataset: str | None = None
    dataset_split: str = "train"
    trace_column: str | None = None
    dataset_limit: int | None = None

    def __post_init__(self) -> None:
        self.levels = tuple(self.levels)
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}: choose one of {sorted(METHODS)}")
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}: choose one of {TASKS}")
        if self.task == "math" and not self.dataset:
            raise ValueError("task 'math' needs `dataset`: a hub id or a local .jsonl/.parquet file or folder")
        unknown = set(self.grpo) - {f.name for f in dataclasses.fields(GRPOConfig)}
        if unknown:
            raise ValueError(f"not GRPOConfig options: {sorted(unknown)}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["levels"] = list(self.levels)
        return d

    @classmethod
    def from_yaml(cls, path: str | Path) -> "RunConfig":
        data = yaml.safe_load(Path(path).read_text()) or {}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"{path}: unknown RunConfig fields {sorted(unknown)}; known: {sorted(names)}")
        return cls(**data)


def world_dataset(levels: Sequence[int], size: int, seed: int) -> Dataset:
    """Training prompts of the tiny world with the columns rewards and trainers use.

    ``answer`` and ``level`` feed the reward and the recording; ``expert`` is
    the expert solver's trace, the off-policy guidance a LUFFY trainer splices in.
    """
    rng = random.Random(f"train-{seed}")
    rows = [sample_problem(rng.choice(levels), rng, "train") for _ in range(size)]
    return Dataset.from_dict(
        {
            "prompt": [p.prompt for p in rows],
            "answer": [p.answer for p in rows],
            "level": [p.level for p in rows],
            "expert": [expert_trace(p.a, p.b) for p in rows],
        }
    )


def grpo_args(cfg: RunConfig, output_dir: str | Path) -> GRPOConfig:
    """TRL ``GRPOConfig`` for a run: preset hardware settings plus the run's own options.

    ``cfg.grpo`` overrides any default set here (for example Tina's cosine schedule or reward weights).
    """
    batch = cfg.prompts_per_step * cfg.num_generations
    return GRPOConfig(**{**dict(
        output_dir=str(output_dir),
        seed=cfg.seed,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant",
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        top_k=0,
        loss_type=cfg.loss_type,
        scale_rewards=cfg.scale_rewards,
        reward_weights=[1.0, cfg.format_reward_weight],
        logging_steps=1,
        save_steps=cfg.save_steps,
        save_total_limit=1,
        save_only_model=False,
        report_to="none",
        disable_tqdm=False,
    ), **device_settings(cfg.preset), **cfg.grpo})


def trainer_class(method: str) -> type[RecordingGRPOTrainer]:
    """The trainer class registered for ``method`` in :data:`METHODS`."""
    module, name = METHODS[method].split(":")
    return getattr(importlib.import_module(module), name)


def lora_config(options: dict[str, Any]):
    """PEFT ``LoraConfig`` from plain options (rank ``r``, ``lora_alpha``, ``lora_dropout``, ``target_modules``)."""
    from peft import LoraConfig

    return LoraConfig(task_type="CAUSAL_LM", **options)


def build_trainer(cfg: RunConfig, run_dir: str | Path) -> RecordingGRPOTrainer:
    """A ready-to-train TRL trainer whose metrics and checkpoints go to ``run_dir``."""
    model, tokenizer = load_model(cfg.model, device="cpu" if cfg.preset != "gpu" else None)
    args = grpo_args(cfg, run_dir)
    task = get_task(cfg.task)
    if cfg.task == "world":
        dataset = world_dataset(cfg.levels, cfg.max_steps * cfg.prompts_per_step, cfg.seed)
    else:
        dataset = math_training_dataset(cfg.dataset, cfg.dataset_split, cfg.trace_column, cfg.dataset_limit)
    return trainer_class(cfg.method)(
        model=model,
        processing_class=tokenizer,
        reward_funcs=list(task.reward_funcs),
        task=task,
        args=args,
        train_dataset=dataset,
        callbacks=[TidyMetricsCallback(run_dir)],
        peft_config=lora_config(cfg.lora) if cfg.lora else None,
        **cfg.method_options,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train one rlnb run from a RunConfig YAML file.")
    parser.add_argument("config", help="YAML file with RunConfig fields")
    parser.add_argument("run_dir", nargs="?", help="run folder (default: runs/cli/<config name>-<hash>)")
    ns = parser.parse_args(argv)
    from rlnb.runs import RunFolderError, load_or_train  # late import: runs imports this module

    cfg = RunConfig.from_yaml(ns.config)
    try:
        run = load_or_train(cfg, notebook="cli", name=Path(ns.config).stem, run_dir=ns.run_dir)
    except RunFolderError as err:  # a folder of another config, or one in use: the message says what to do
        raise SystemExit(f"{ns.config}: {err}") from None
    print(f"run folder: {run.run_dir}")


if __name__ == "__main__":
    main()
