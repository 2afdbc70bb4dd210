"""Presets: the one place that knows what ``ci``, ``full`` and ``gpu`` mean for hardware.

Notebooks take ``preset`` as a papermill parameter and ask this module for the
device settings; everything else about a preset (steps, sizes) is a plain
parameter of the notebook or of :mod:`rlnb.experiments`.
"""

from __future__ import annotations

from typing import Any

import torch

PRESETS = ("ci", "full", "gpu")


def check_preset(preset: str) -> str:
    """Return ``preset`` if it exists, else raise an error that lists the ones that do."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    if preset == "gpu" and not torch.cuda.is_available():
        raise RuntimeError(
            "the 'gpu' preset needs a CUDA GPU and this machine has none: "
            "run with preset 'ci' (minutes) or 'full' (tens of minutes) on a CPU"
        )
    return preset


def device_settings(preset: str) -> dict[str, Any]:
    """Training-argument overrides for the preset's hardware.

    TRL's configs default to ``bf16=True``, which raises on a CPU-only
    machine, and to activation (gradient) checkpointing, which only costs time
    (about 20% of a step) on a 1M-parameter model.
    """
    check_preset(preset)
    if preset == "gpu":
        # cuDNN's SDPA backward returns NaN in dQ when an attention mask is passed, the sequence length is
        # 64 mod 128 and a query row's logsumexp is below about -88.7 (pytorch/pytorch#196678, H100/H200,
        # torch >= 2.11): a left-padded prompt row is such a row. Notebook 02's batches (prompts of 11-15
        # tokens, completions up to 64, the 5-digit trace 51 tokens) reach length 64 every few steps, so
        # every LUFFY run died within 4-8 steps (issue #24); zero-RL's (at most 11 + 48 tokens) never do.
        # With cuDNN off PyTorch takes the flash or memory-efficient kernel, and 50 LUFFY steps reproduce
        # the CPU run. Process-wide, as the flag is.
        torch.backends.cuda.enable_cudnn_sdp(False)
        return {"use_cpu": False, "bf16": True, "activation_checkpointing": True}
    return {"use_cpu": True, "bf16": False, "activation_checkpointing": False, "dataloader_num_workers": 0}
