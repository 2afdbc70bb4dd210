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
import functools
import importlib
import math
import numbers
import random
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml
from datasets import Dataset
from transformers import PrinterCallback
from trl import GRPOConfig
from trl.rewards import get_soft_overlong_punishment

from rlnb.models import TINY, load_model
from rlnb.presets import device_settings
from rlnb.progress import progress_enabled
from rlnb.trainers import RecordingGRPOTrainer, TidyMetricsCallback
from rlnb.tasks import TASKS, get_task, math_training_dataset
from rlnb.verify import worked_format_reward
from rlnb.world import STEP_SEP, Problem, expert_trace, sample_problem

FORMAT_REWARDS: dict[str, Callable[..., list[float]] | None] = {
    "answer": None,  # the task's own format reward (world: rlnb.verify.format_reward)
    "worked": worked_format_reward,  # digit steps, then the answer: starts low on the shipped base
}
"""``RunConfig.format_reward``: the reward function that takes the task's format slot."""

METHODS: dict[str, str] = {
    # method -> "module:TrainerClass"; each class takes TRL GRPOTrainer's arguments, its ``args`` an
    # instance of the class's ``config_class`` (a GRPOConfig subclass whose fields are the method's options).
    "grpo": "rlnb.trainers:RecordingGRPOTrainer",
    "cov": "rlnb.entropy_control:CovGRPOTrainer",  # Clip-Cov / KL-Cov (notebook 03)
    "luffy": "rlnb.luffy:LuffyGRPOTrainer",  # mixed-policy GRPO (notebook 02)
    "guidance": "rlnb.guidance:GuidanceGRPOTrainer",  # hints in the prompt, prefixes in the completion (notebook 07)
    "advantage": "rlnb.grpo_family:AdvantageGRPOTrainer",  # GRPO with a chosen advantage estimator
    "gmpo": "rlnb.grpo_family:RecordingGMPOTrainer",  # TRL's experimental GMPO loss, recorded
}
"""Trainers are imported only when a run asks for them."""


def _help(text: str) -> dict[str, str]:
    """Field metadata carrying the help text that ``python -m rlnb.train --help`` prints."""
    return {"help": text}


@dataclass
class RunConfig:
    """Everything that determines a run. Its hash names the run folder.

    Fields mirror TRL's ``GRPOConfig`` names where one exists; ``grpo`` passes
    any other ``GRPOConfig`` option through unchanged (for example
    ``{"epsilon_high": 0.28}`` for DAPO's clip-higher). Every field is checked
    against its type when the configuration is built (YAML reads ``1e-3`` as a
    string, so numeric strings are converted), and each field's ``help`` says what
    it means.
    """

    method: str = field(default="grpo", metadata=_help(
        f"trainer: one of {sorted(METHODS)} (GRPO, GRPO with Clip-Cov/KL-Cov, LUFFY mixed-policy GRPO, "
        "GRPO with the advantage estimator of rlnb.advantages chosen by method_options['advantage'], "
        "TRL's GMPO)"))
    model: str = field(default=TINY, metadata=_help(
        f"base model: a hub id, a local save_pretrained folder, or {TINY!r} for the shipped tiny model"))
    preset: str = field(default="ci", metadata=_help(
        "hardware preset (ci, full or gpu): CPU or GPU, bf16 and activation checkpointing in GRPOConfig "
        "(use_cpu, bf16, activation_checkpointing)"))
    seed: int = field(default=0, metadata=_help(
        "random seed (GRPOConfig.seed), also for drawing the tiny world's training problems"))
    levels: tuple[int, ...] = field(default=(3, 4), metadata=_help(
        "task world: digit counts of the training problems, drawn uniformly (ignored by task math)"))
    max_steps: int = field(default=300, metadata=_help(
        "number of optimizer steps (GRPOConfig.max_steps); each step uses prompts_per_step prompts"))
    learning_rate: float = field(default=5e-5, metadata=_help(
        "peak learning rate (GRPOConfig.learning_rate), constant unless grpo sets lr_scheduler_type"))
    prompts_per_step: int = field(default=4, metadata=_help(
        "distinct prompts per optimizer step; GRPOConfig.per_device_train_batch_size is "
        "prompts_per_step * num_generations completions"))
    num_generations: int = field(default=16, metadata=_help(
        "completions sampled per prompt, the GRPO group size (GRPOConfig.num_generations)"))
    max_completion_length: int = field(default=48, metadata=_help(
        "longest completion in tokens (GRPOConfig.max_completion_length)"))
    temperature: float = field(default=1.0, metadata=_help(
        "sampling temperature of the rollouts (GRPOConfig.temperature)"))
    loss_type: str = field(default="dapo", metadata=_help(
        "how token losses are aggregated (GRPOConfig.loss_type), e.g. grpo, dr_grpo, dapo, bnpo"))
    scale_rewards: str = field(default="group", metadata=_help(
        "advantage scaling (GRPOConfig.scale_rewards): group, batch or none (Dr. GRPO)"))
    format_reward_weight: float = field(default=0.0, metadata=_help(
        "weight of the format reward next to the accuracy reward's 1.0 (GRPOConfig.reward_weights)"))
    format_reward: str = field(default="answer", metadata=_help(
        f"task world: what the format reward asks for: one of {list(FORMAT_REWARDS)} (a well-formed answer, "
        "steps optional; or digit steps, then the answer: the world's think-then-answer format)"))
    save_steps: int = field(default=50, metadata=_help(
        "optimizer steps between checkpoints (GRPOConfig.save_steps); an interrupted run resumes "
        "from the last one"))
    grpo: dict[str, Any] = field(default_factory=dict, metadata=_help(
        "any other GRPOConfig options, applied last, e.g. {epsilon_high: 0.28} or {use_vllm: true}"))
    method_options: dict[str, Any] = field(default_factory=dict, metadata=_help(
        "fields of the method's config class (a GRPOConfig subclass: rlnb.luffy.LuffyConfig, "
        "rlnb.entropy_control.CovConfig, rlnb.grpo_family.AdvantageConfig, rlnb.grpo_family.RecordingGMPOConfig, "
        "rlnb.trainers.RecordingGRPOConfig), e.g. LUFFY's {expert_traces: 1} or DAPO's {dynamic_sampling: true}"))
    lora: dict[str, Any] | None = field(default=None, metadata=_help(
        "PEFT LoraConfig options (r, lora_alpha, lora_dropout, target_modules) to train a LoRA "
        "adapter; null trains all weights"))
    task: str = field(default="world", metadata=_help(
        f"what the run trains on and how it is rewarded: one of {TASKS} (tiny world, or a MATH-style data set)"))
    dataset: str | None = field(default=None, metadata=_help(
        "task math: hub id or local .jsonl/.json/.parquet/.csv file or save_to_disk folder"))
    dataset_split: str = field(default="train", metadata=_help("task math: the split of dataset to train on"))
    trace_column: str | None = field(default=None, metadata=_help(
        "task math: column holding expert traces (LUFFY's off-policy guidance); null for none"))
    dataset_limit: int | None = field(default=None, metadata=_help(
        "task math: train on the first dataset_limit rows only (at least 1); null for all"))

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            setattr(self, spec.name, _checked(f"RunConfig.{spec.name}", getattr(self, spec.name),
                                              _field_types(RunConfig)[spec.name]))
        self._check_values()

    def _check_values(self) -> None:
        """Checks that need the value, not just its type: a run must train on something."""
        for name in _AT_LEAST_ONE:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"RunConfig.{name} must be at least 1, got {value!r}")
        for name in ("learning_rate", "temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"RunConfig.{name} must be positive, got {getattr(self, name)!r}")
        if self.seed < 0:
            raise ValueError(f"RunConfig.seed must not be negative, got {self.seed!r}")
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}: choose one of {sorted(METHODS)}")
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}: choose one of {TASKS}")
        if self.task == "world" and not self.levels:
            raise ValueError("RunConfig.levels is empty: task 'world' needs at least one level to draw problems from")
        if self.format_reward not in FORMAT_REWARDS:
            raise ValueError(f"unknown format_reward {self.format_reward!r}: choose one of {list(FORMAT_REWARDS)}")
        if self.format_reward != "answer" and self.task != "world":
            raise ValueError(f"format_reward {self.format_reward!r} is a tiny-world reward; task {self.task!r} "
                             "has its own format reward")
        if self.task == "math" and not self.dataset:
            raise ValueError("task 'math' needs `dataset`: a hub id or a local .jsonl/.parquet file or folder")
        unknown = set(self.grpo) - {f.name for f in dataclasses.fields(GRPOConfig)}
        if unknown:
            raise ValueError(f"not GRPOConfig options: {sorted(unknown)}")
        for options in ("grpo", "method_options"):
            for key in sorted(set(getattr(self, options)) & set(RUN_CONFIG_OWNS)):
                raise ValueError(f"RunConfig.{options} may not set {key!r}: RunConfig sets it from its own "
                                 f"{RUN_CONFIG_OWNS[key]} (its checks would be bypassed); set that instead")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["levels"] = list(self.levels)
        return d

    @classmethod
    def from_yaml(cls, path: str | Path) -> "RunConfig":
        """The configuration in a YAML file of RunConfig fields; errors name the file.

        An empty file is an error rather than the default run: it is more likely a
        wrong or truncated file than a request for the defaults.
        """
        try:
            data = yaml.load(Path(path).read_text(), Loader=_StrictLoader)
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: {err}") from None
        if data is None:
            raise ValueError(f"{path}: the file is empty; name at least one RunConfig field (e.g. `max_steps: 10`)")
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of RunConfig fields, got a {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        not_names = [key for key in data if not isinstance(key, str)]
        if not_names:
            raise ValueError(f"{path}: keys must be RunConfig field names, got {not_names}")
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"{path}: unknown RunConfig fields {sorted(unknown)}; known: {sorted(names)}")
        try:
            return cls(**data)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases and with unique keys.

    An alias (``*name``) can expand a file of a few hundred bytes into billions of nodes (a
    "billion laughs" file hangs the CLI while it holds the run lock), and a repeated key would
    silently take its last value: both are refused with the line they are on.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not allowed in a run "
                                              "configuration: write the value out", self.peek_event().start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice in one mapping",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_AT_LEAST_ONE = ("max_steps", "prompts_per_step", "num_generations", "max_completion_length", "save_steps",
                 "dataset_limit")
"""Counts that must be positive: zero steps or an empty data set would train nothing and
still save the base model as the run's result."""


RUN_CONFIG_OWNS: dict[str, str] = {
    "output_dir": "run folder (load_or_train's run_dir, the CLI's RUN_DIR)", "seed": "field `seed`",
    "max_steps": "field `max_steps`", "num_train_epochs": "field `max_steps`",
    "learning_rate": "field `learning_rate`",
    "per_device_train_batch_size": "fields `prompts_per_step` x `num_generations`",
    "num_generations": "field `num_generations`", "max_completion_length": "field `max_completion_length`",
    "temperature": "field `temperature`", "loss_type": "field `loss_type`", "scale_rewards": "field `scale_rewards`",
    "save_steps": "field `save_steps`",
}
"""GRPOConfig options that :func:`grpo_args` takes from RunConfig's own checked fields, with the field to use.
``reward_weights`` is not among them: Tina's recipe weighs its rewards through ``grpo``."""


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    """A dataclass's field types as objects (annotations under ``from __future__`` are strings)."""
    return typing.get_type_hints(cls)


def check_scalar_fields(config: Any) -> None:
    """Check (and convert, as :func:`_checked` does) every field of the dataclass ``config`` typed bool, int,
    float or str, or one of those or None; fields of other types are left alone.

    For the method config classes (``RunConfig.method_options`` and ``grpo`` fill them from YAML), where
    ``"false"`` would otherwise switch an option on, ``1e-3`` stay a string and ``nan`` pass.
    """
    hints = _field_types(type(config))
    for spec in dataclasses.fields(config):
        expected = hints[spec.name]
        origin = typing.get_origin(expected)
        if origin is None:
            options = [expected]
        elif origin in (typing.Union, types.UnionType):
            options = [arg for arg in typing.get_args(expected) if arg is not type(None)]
        else:
            options = []
        if len(options) == 1 and options[0] in _SCALAR_CHECKS:
            name = f"{type(config).__name__}.{spec.name}"
            setattr(config, spec.name, _checked(name, getattr(config, spec.name), expected))


def _checked(name: str, value: Any, expected: Any) -> Any:
    """``value`` as the type ``expected`` of field ``name``, or a ValueError naming both.

    Numeric strings become numbers (PyYAML reads ``1e-3`` as a string), whole floats
    become integers and lists tuples. Nothing else is converted: a fraction where an
    integer belongs (``max_steps: 2.5``) or a scalar where a list belongs (``levels: 3``)
    is a mistake to report, not to guess at.
    """
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _checked(name, value, inner)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _type_error(name, value, "a list")
        return tuple(_checked(f"{name}[{i}]", item, args[0]) for i, item in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(name, value, "a mapping")
        return value
    return _SCALAR_CHECKS[expected](name, value)


def _type_error(name: str, value: Any, wanted: str) -> ValueError:
    return ValueError(f"{name} must be {wanted}, got {value!r} ({type(value).__name__})")


def _number(text: str) -> int | float | None:
    """The number a string spells (``"300"``, ``"1e-3"``), or None."""
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return None


def _as_float(name: str, value: Any) -> int | float:
    """A finite number. Python ints stay ints, so configurations valid before these checks
    keep their hashes; numpy scalars become Python numbers, which YAML can write."""
    number = _number(value) if isinstance(value, str) else value
    if isinstance(number, bool) or not isinstance(number, numbers.Real) or not math.isfinite(number):
        raise _type_error(name, value, "a finite number")
    return int(number) if isinstance(number, numbers.Integral) else float(number)


def _as_int(name: str, value: Any) -> int:
    """An integer, also from ``"300"``, ``"1e3"`` or 300.0, but never from 2.5."""
    number = _number(value) if isinstance(value, str) else value
    if isinstance(number, float) and number.is_integer():
        number = int(number)
    if isinstance(number, bool) or not isinstance(number, numbers.Integral):
        raise _type_error(name, value, "an integer")
    return int(number)


def _as_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _type_error(name, value, "a string")
    return value


def _as_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _type_error(name, value, "true or false")
    return value


_SCALAR_CHECKS: dict[type, Callable[[str, Any], Any]] = {int: _as_int, float: _as_float, str: _as_str, bool: _as_bool}


WORLD_ROWS_MAX = 1_000_000
"""The most training prompts a world run draws (a few seconds' work); a longer run cycles through them
again. ``max_steps: 1e8`` would otherwise spend hours drawing prompts before its first step."""


def world_dataset(levels: Sequence[int], size: int, seed: int) -> Dataset:
    """Training prompts of the tiny world with the columns rewards and trainers use.

    ``answer`` and ``level`` feed the reward and the recording; ``expert`` is
    the expert solver's trace, the off-policy guidance a LUFFY trainer splices in; ``mismatched`` is the
    trace of another problem of the same level (notebook 07's form-without-content control), drawn from a
    generator of its own so that the training problems are the same with or without it.
    """
    rng = random.Random(f"train-{seed}")
    rows = [sample_problem(rng.choice(levels), rng, "train") for _ in range(size)]
    other = random.Random(f"mismatched-{seed}")
    return Dataset.from_dict(
        {
            "prompt": [p.prompt for p in rows],
            "answer": [p.answer for p in rows],
            "level": [p.level for p in rows],
            "expert": [expert_trace(p.a, p.b) for p in rows],
            "mismatched": [_other_trace(p, other) for p in rows],
        }
    )


def _other_trace(problem: Problem, rng: random.Random) -> str:
    """The expert trace of a training problem of ``problem``'s level whose first step differs from its own."""
    own = expert_trace(problem.a, problem.b).split(STEP_SEP)[0]
    while True:
        q = sample_problem(problem.level, rng, "train")
        trace = expert_trace(q.a, q.b)
        if trace.split(STEP_SEP)[0] != own:
            return trace


def grpo_args(cfg: RunConfig, output_dir: str | Path, config_class: type[GRPOConfig] = GRPOConfig) -> GRPOConfig:
    """The run's ``config_class`` (TRL's ``GRPOConfig`` or a method's subclass): preset hardware settings,
    the run's own options, then ``cfg.grpo`` and ``cfg.method_options``.

    ``cfg.grpo`` overrides any default set here (for example Tina's cosine schedule or reward weights);
    ``cfg.method_options`` fills the method's own fields, and one the class does not have is an
    error that lists those it has.
    """
    fields = {f.name for f in dataclasses.fields(config_class)}
    unknown = set(cfg.method_options) - fields
    if unknown:
        own = fields - {f.name for f in dataclasses.fields(GRPOConfig)}
        raise ValueError(f"method {cfg.method!r} has no options {sorted(unknown)}; "
                         f"{config_class.__name__} has {sorted(own)}")
    batch = cfg.prompts_per_step * cfg.num_generations
    return config_class(**{**dict(
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
        disable_tqdm=not progress_enabled(),
    ), **device_settings(cfg.preset), **cfg.grpo, **cfg.method_options})


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
    trainer_cls = trainer_class(cfg.method)
    args = grpo_args(cfg, run_dir, trainer_cls.config_class)
    task = get_task(cfg.task)
    if cfg.task == "world":
        dataset = world_dataset(cfg.levels, min(cfg.max_steps * cfg.prompts_per_step, WORLD_ROWS_MAX), cfg.seed)
    else:
        dataset = math_training_dataset(cfg.dataset, cfg.dataset_split, cfg.trace_column, cfg.dataset_limit)
    reward_funcs = [task.reward_funcs[0], FORMAT_REWARDS[cfg.format_reward] or task.reward_funcs[1]]
    if args.overlong_buffer:
        reward_funcs.append(get_soft_overlong_punishment(cfg.max_completion_length, args.overlong_buffer))
        args.reward_weights = [*args.reward_weights, args.overlong_penalty_factor]
    trainer = trainer_cls(
        model=model,
        processing_class=tokenizer,
        reward_funcs=reward_funcs,
        task=task,
        args=args,
        train_dataset=dataset,
        callbacks=[TidyMetricsCallback(run_dir)],
        peft_config=lora_config(cfg.lora) if cfg.lora else None,
    )
    if args.disable_tqdm:  # without its bar the Trainer prints every log dict instead: keep outputs quiet
        trainer.remove_callback(PrinterCallback)
    return trainer


def _cli_parser() -> argparse.ArgumentParser:
    """The command line; ``--help`` lists every RunConfig field a YAML file may set, with its help."""
    parser = argparse.ArgumentParser(
        prog="python -m rlnb.train",
        description="Train one rlnb run from a RunConfig YAML file.",
        epilog=_fields_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", help="YAML file with RunConfig fields")
    parser.add_argument("run_dir", nargs="?", help="run folder (default: runs/cli/<config name>-<hash>)")
    return parser


def _fields_help() -> str:
    """Each RunConfig field with its type, default and help, in declaration order."""
    lines = ["RunConfig fields (the keys of CONFIG):"]
    for spec in dataclasses.fields(RunConfig):
        default = spec.default_factory() if spec.default is dataclasses.MISSING else spec.default
        lines.append(f"  {spec.name}: {spec.type} = {default!r}")
        lines += textwrap.wrap(spec.metadata["help"], width=96, initial_indent=" " * 6, subsequent_indent=" " * 6,
                               break_on_hyphens=False)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    ns = _cli_parser().parse_args(argv)
    from rlnb.runs import RunFolderError, load_or_train  # late import: runs imports this module

    cfg = RunConfig.from_yaml(ns.config)
    try:
        run = load_or_train(cfg, notebook="cli", name=Path(ns.config).stem, run_dir=ns.run_dir)
    except RunFolderError as err:  # a folder of another config, or one in use: the message says what to do
        raise SystemExit(f"{ns.config}: {err}") from None
    except (NotADirectoryError, PermissionError) as err:  # a RUN_DIR that cannot hold a run (rlnb.paths.make_folder)
        raise SystemExit(f"RUN_DIR {ns.run_dir}: {err}") from None
    print(f"run folder: {run.run_dir}")


if __name__ == "__main__":
    main()
