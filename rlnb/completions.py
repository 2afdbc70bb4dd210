"""The one helper every reward function needs, kept free of heavy imports.

The math verifier's worker process imports the module that uses this, so it
must not pull in torch or transformers.
"""

from __future__ import annotations

from typing import Any


def completion_text(completion: Any) -> str:
    """The text of a completion given as a string or as TRL's conversational list.

    Anything else (``None``, numbers, malformed messages) becomes ``""`` so that
    it scores 0 instead of raising inside a training step.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content")
        return content if isinstance(content, str) else ""
    return ""
