"""The canonical run configurations of each notebook, per preset.

Later notebooks reuse earlier notebooks' runs by asking for the same
configuration here (notebook 04 loads notebook 01's zero-RL checkpoint through
:func:`zero_rl`), so a run is trained once and cached in ``runs/``.
"""

from __future__ import annotations

from rlnb.presets import check_preset
from rlnb.runs import TrainedRun, load_or_train
from rlnb.train import RunConfig

ZERO_RL_NOTEBOOK = "01_zero_rl"
LOSS_TYPES = {
    # TRL loss_type -> the reward scaling its paper uses
    "grpo": "group",  # DeepSeekMath GRPO: per-sequence mean, advantage divided by the group std
    "dr_grpo": "none",  # Dr. GRPO: constant normaliser, no std division
}


def zero_rl_config(preset: str = "ci", loss_type: str = "grpo", seed: int = 0, **overrides) -> RunConfig:
    """Zero-RL on the shipped base: levels 2-4 mixed, accuracy reward only, no SFT."""
    check_preset(preset)
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss type {loss_type!r} for zero-RL: choose one of {sorted(LOSS_TYPES)}")
    steps = {"ci": 300, "full": 1000, "gpu": 500}[preset]
    params = dict(preset=preset, seed=seed, loss_type=loss_type, scale_rewards=LOSS_TYPES[loss_type],
                  levels=(2, 3, 4), max_steps=steps, learning_rate=5e-5, prompts_per_step=4,
                  num_generations=16, max_completion_length=48)
    params.update(overrides)
    return RunConfig(**params)


def zero_rl(preset: str = "ci", loss_type: str = "grpo", seed: int = 0, **overrides) -> TrainedRun:
    """Notebook 01's run, trained on first use and loaded from ``runs/`` afterwards."""
    cfg = zero_rl_config(preset, loss_type, seed, **overrides)
    return load_or_train(cfg, ZERO_RL_NOTEBOOK, loss_type)
