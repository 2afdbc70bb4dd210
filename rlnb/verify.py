"""Answer extraction and rewards for the tiny world, safe on any string a model emits.

Nothing here evaluates model output: a completion is matched against a fixed,
linear-time pattern and its answer digits are compared as a bounded-length
integer. A 100 kB completion, unicode digits or a stray bracket cost
microseconds and score 0, never an exception.

The reward functions follow TRL's calling convention: ``fn(prompts=...,
completions=..., completion_ids=..., **columns)``, where every dataset column
(here ``answer``) arrives repeated once per completion, and they return one
float per completion.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from rlnb.completions import completion_text
from rlnb.world import FORMAT_RE, operands, uses_steps, works_the_problem

MAX_ANSWER_DIGITS = 8
"""Longer answers cannot be right in this world (6-digit addends): never parsed."""

_ANSWER_RE = re.compile(r"A([0-9]{1,%d})(?![0-9])" % MAX_ANSWER_DIGITS)
_SCAN_LIMIT = 4096
"""Only the head of a completion is scanned: well-formed ones are under 100 characters."""


@dataclass(frozen=True)
class ParsedCompletion:
    """What a completion says: its answer (``None`` if it gives none) and its shape."""

    answer: int | None
    well_formed: bool
    wrote_steps: bool


def parse_completion(completion: Any) -> ParsedCompletion:
    """Extract the first stated answer (``A`` then ASCII digits) and the format verdict."""
    text = completion_text(completion)[:_SCAN_LIMIT]
    match = _ANSWER_RE.search(text)
    answer = int(match.group(1)) if match else None
    return ParsedCompletion(answer, FORMAT_RE.fullmatch(text) is not None, uses_steps(text))


def is_correct(completion: Any, answer: int | str) -> bool:
    """Whether the completion's first answer equals the gold ``answer``."""
    return parse_completion(completion).answer == int(answer)


def accuracy_reward(completions: Sequence[Any], answer: Sequence[int | str], **kwargs: Any) -> list[float]:
    """1.0 for a correct first answer, else 0.0 (TRL reward-function convention)."""
    if len(completions) != len(answer):
        raise ValueError(
            f"accuracy_reward got {len(completions)} completions but {len(answer)} answers"
        )
    return [float(is_correct(c, a)) for c, a in zip(completions, answer)]


def format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 when the completion is well formed (steps, then ``A`` and digits, nothing else)."""
    return [float(parse_completion(c).well_formed) for c in completions]


def worked_format_reward(completions: Sequence[Any], prompts: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 when the completion works its own problem out in digit steps, then states the answer, nothing else.

    The tiny world's counterpart of R1's and Tina's ``<think> ... </think>`` format reward: a format
    the base rarely writes under the task prompt (it answers directly), so, unlike
    :func:`format_reward`, it starts low and has room to rise. The steps must be the problem's own
    digit columns (:func:`rlnb.world.works_the_problem`, reading ``a`` and ``b`` from the prompt),
    so steps of made-up digits such as ``0+0+0=0;A5`` earn nothing.
    """
    if len(completions) != len(prompts):
        raise ValueError(f"worked_format_reward got {len(completions)} completions but {len(prompts)} prompts")
    rewards = []
    for completion, prompt in zip(completions, prompts):
        text = completion_text(completion)[:_SCAN_LIMIT]
        worked = FORMAT_RE.fullmatch(text) is not None and works_the_problem(text, *operands(completion_text(prompt)))
        rewards.append(float(worked))
    return rewards
