"""Tasks: what a run trains on, how it is rewarded, and how a completion is judged.

``world`` is the tiny reasoning world (the CPU default); ``math`` is a
MATH-style data set with R1 prompts and the math-verify verifier (the ``gpu``
preset). Trainers and evaluation ask the task, so the same code path serves both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from datasets import Dataset

from rlnb.completions import completion_text
from rlnb.verify import accuracy_reward, format_reward, parse_completion
from rlnb.world import operands, works_the_problem


@dataclass(frozen=True)
class Task:
    """A task's rewards (accuracy first, format second) and its judgement of one completion."""

    name: str
    reward_funcs: tuple[Callable[..., list[float]], Callable[..., list[float]]]
    is_correct: Callable[[str, Any], bool]
    wrote_steps: Callable[[str, Any], bool]
    """``wrote_steps(completion, prompt)``: whether the completion works this prompt's problem before answering."""


def _world_correct(text: str, answer: Any) -> bool:
    return parse_completion(text).answer == int(answer)


def _world_steps(text: str, prompt: Any) -> bool:
    """Steps of the prompt's own digit columns: dummy steps such as ``0+0+0=0;`` do not count."""
    return works_the_problem(text, *operands(completion_text(prompt)))


def _math_task() -> Task:
    from rlnb.math_task import math_accuracy_reward, math_format_reward, verify_answer

    return Task(
        name="math",
        reward_funcs=(math_accuracy_reward, math_format_reward),
        is_correct=lambda text, answer: verify_answer(text, str(answer)),
        wrote_steps=lambda text, prompt: "</think>" in text,
    )


WORLD = Task("world", (accuracy_reward, format_reward), _world_correct, _world_steps)
TASKS = ("world", "math")


def get_task(name: str) -> Task:
    """The task called ``name``; ``math`` is imported on demand (its verifier starts a worker)."""
    if name == "world":
        return WORLD
    if name == "math":
        return _math_task()
    raise ValueError(f"unknown task {name!r}: choose one of {TASKS}")


def math_training_dataset(
    dataset: str, split: str = "train", trace_column: str | None = None, limit: int | None = None
) -> Dataset:
    """A MATH-style training set: ``prompt`` (R1 conversation), ``answer``, and ``expert`` traces if named."""
    from rlnb.math_task import load_math_dataset

    return load_math_dataset(dataset, split=split, trace_column=trace_column, limit=limit)
