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
        # cuDNN's SDPA backward returns NaN on the LUFFY trainer's bf16 batches within 4-8 steps (issue #24,
        # first NaN in ScaledDotProductCudnnAttentionBackward0); with it off, PyTorch picks the flash or
        # memory-efficient kernel and 50 steps reproduce the CPU run. Process-wide, as the flag is.
        torch.backends.cuda.enable_cudnn_sdp(False)
        return {"use_cpu": False, "bf16": True, "activation_checkpointing": True}
    return {"use_cpu": True, "bf16": False, "activation_checkpointing": False, "dataloader_num_workers": 0}
