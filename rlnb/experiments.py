"""The canonical run configurations of each notebook, per preset.

Later notebooks reuse earlier notebooks' runs by asking for the same
configuration here (notebook 04 loads notebook 01's zero-RL checkpoint through
:func:`zero_rl`), so a run is trained once and cached in ``runs/``.
"""

from __future__ import annotations

from dataclasses import replace

from rlnb.paths import PROJECT_ROOT
from rlnb.presets import check_preset
from rlnb.runs import TrainedRun, load_or_train, run_path
from rlnb.seeds import RunJob
from rlnb.train import RunConfig
from rlnb.world import levels_in

ZERO_RL_NOTEBOOK = "01_zero_rl"
GPU_ZERO_RL_YAML = PROJECT_ROOT / "configs" / "zero_rl_math_1.5b.yaml"
"""The `gpu` preset of zero-RL: a real math base model on MATH, also runnable with ``python -m rlnb.train``."""
LOSS_TYPES = {
    # TRL loss_type -> the reward scaling its paper uses
    "grpo": "group",  # DeepSeekMath GRPO: per-sequence mean, advantage divided by the group std
    "dr_grpo": "none",  # Dr. GRPO: constant normaliser, no std division
}


CHECKPOINTS_KEPT = {"save_total_limit": None}
"""GRPOConfig options that keep every checkpoint (TRL keeps only the newest by default here), for the runs
whose pass@k notebook 04 follows along training: zero-RL and LUFFY, four or five checkpoints each."""


def zero_rl_config(preset: str = "ci", loss_type: str = "grpo", seed: int = 0, **overrides) -> RunConfig:
    """Zero-RL on the shipped base: the inside level and the easiest latent level mixed, no SFT; the accuracy
    reward alone unless ``format_reward_weight`` is overridden (notebook 01 adds a format term of weight 0.1)."""
    check_preset(preset)
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss type {loss_type!r} for zero-RL: choose one of {sorted(LOSS_TYPES)}")
    if preset == "gpu":
        params = RunConfig.from_yaml(GPU_ZERO_RL_YAML).to_dict()
        params.update(seed=seed, loss_type=loss_type, scale_rewards=LOSS_TYPES[loss_type], **overrides)
        return RunConfig(**params)
    # ci: 60 steps at 1e-4 (probe, one seed: 80 steps gave held-out pass@1 0.98 / 0.92 / 0.59 / 0.21 on
    # 3-6 digits, like 300 steps at 5e-5), so three seeds of both losses fit notebook 01's six minutes.
    # Every checkpoint is kept (CHECKPOINTS_KEPT): notebook 04 follows pass@k along training.
    steps, lr = {"ci": (60, 1e-4), "full": (1000, 5e-5)}[preset]
    params = dict(preset=preset, seed=seed, loss_type=loss_type, scale_rewards=LOSS_TYPES[loss_type],
                  levels=(3, 4), max_steps=steps, learning_rate=lr, prompts_per_step=4,
                  num_generations=16, max_completion_length=48, grpo=dict(CHECKPOINTS_KEPT))
    params.update(overrides)
    params.setdefault("save_steps", max(1, params["max_steps"] // 4))  # four checkpoints of the run's own length
    return RunConfig(**params)


def two_step_zero_rl_config(preset: str, seed: int, tiny: dict, **overrides) -> RunConfig:
    """Zero-RL with two optimiser steps per generation batch (``steps_per_generation=2``, verl/DAPO's
    mini-batch layout): the second step of each batch is off-policy, so the ratio-based methods and
    KL-Cov have ratios to act on (fully on-policy every PPO ratio is exactly 1).

    ``tiny`` holds the tiny world's settings (ignored by the ``gpu`` preset, which keeps zero-RL's
    real-model settings); ``overrides`` come last, ``grpo`` options merged and ``loss_type`` switched
    without touching the reward scaling of zero-RL's ``grpo`` (DAPO's and CISPO's losses).
    """
    check_preset(preset)
    params = {} if preset == "gpu" else dict(tiny)
    grpo = {"steps_per_generation": 2, **overrides.pop("grpo", {})}
    loss_type = overrides.pop("loss_type", "grpo")
    params.update(overrides)
    return replace(zero_rl_config(preset, "grpo", seed, **params, grpo=grpo), loss_type=loss_type)


def zero_rl(preset: str = "ci", loss_type: str = "grpo", seed: int = 0, **overrides) -> TrainedRun:
    """Notebook 01's run, trained on first use and loaded from ``runs/`` afterwards."""
    cfg = zero_rl_config(preset, loss_type, seed, **overrides)
    return load_or_train(cfg, ZERO_RL_NOTEBOOK, loss_type)


# ---------------------------------------------------------------- notebook 05: LoRA-GRPO, Tina-style
LORA_NOTEBOOK = "05_lora_grpo_tina"
LORA_ALPHA = 32.0
"""lora_alpha of every rank in notebook 05: the scale alpha / r falls as 1 / r, the convention of the
"LoRA Without Regret" guide. With Tina's alpha = 4 r (scale fixed) Adam's step on W grows with r, and the
best rate falls with the rank: ``benchmarks/sweep_lora_lr.py`` measures both (data/sweeps/lora_lr_sweep.csv)."""
LORA_RATES: dict[int, float] = {1: 3e-4, 4: 3e-4, 32: 3e-4}
"""Each rank's learning rate under :data:`LORA_ALPHA` (and :data:`LORA_DROPOUT`). The sweep
(benchmarks/sweep_lora_lr.py, data/sweeps/lora_lr_sweep.csv: 3e-5 to 1e-2, two seeds, 3-digit training
accuracy over steps 21-30) brackets every optimum: 3e-4 scores best at r1 (0.86, against 0.36 at 1e-4 and 0.73
at 1e-3), 1e-3 at r4 and r32 (0.95 and 0.94), but there 3e-4 is within the seeds' spread (0.89 and 0.93; seed 0
gives 0.955 / 0.954 and 0.959 / 0.958 at the two rates). 3e-4 is kept for every rank, so that the rank is the
only switch between runs; it is three times full fine-tuning's best rate (1e-4, of 5e-5 to 1e-3). Under
alpha = 4 r the best rate falls with the rank instead: 3e-3, 1e-3 and 1e-4 for r1, r4, r32."""
LORA_DROPOUT = 0.0
"""lora_dropout of notebook 05's tiny-world runs (Tina's recipe, kept for the gpu preset, uses 0.05). Dropout
active while TRL samples makes the sampling policy a noisy copy of the one the loss scores, so even the
on-policy ratio is not 1 (TRL's ``disable_dropout`` exists for this); it also took 18% of a LoRA step here
(profile of 8 steps at rank 4, one thread: 3.4 of 18.9 s)."""
LORA_STEPS = {"ci": 45, "full": 1000}
"""Steps of a LoRA run; ``ci`` stops at full fine-tuning's third checkpoint (step 45 of 60), where the
notebook compares the two, so that two seeds of three ranks fit its eight minutes."""
FORMAT_TRANSITION = {"rank": 4, "format_reward": "worked", "format_reward_weight": 0.5}
"""Notebook 05's format-transition run: the format reward asks for worked steps, which the base rarely
writes (Tina's think-then-answer format starts low the same way), at half the accuracy reward's weight
(Tina: 1 to 2)."""
TINA_PARAMS = "notebooks/params/gpu/05_lora_grpo_tina.yaml"


def lora_rl_config(
    preset: str = "ci", seed: int = 0, rank: int | None = None, learning_rate: float | None = None, **overrides
) -> RunConfig:
    """Notebook 05's tiny-world run: notebook 01's zero-RL (grpo, format weight 0.1) with LoRA at ``rank``.

    ``rank=None`` is full fine-tuning, which is notebook 01's GRPO run itself (its rate, steps and
    checkpoints). LoRA gets ``lora_alpha`` :data:`LORA_ALPHA` and its rank's rate from
    :data:`LORA_RATES` unless ``learning_rate`` is given; everything else is shared.
    """
    from rlnb.lora import lora_options

    if preset == "gpu":
        raise ValueError("the tiny-world LoRA comparison runs on the CPU presets ('ci', 'full'); "
                         "the gpu preset's run is tina_config(tina_params())")
    check_preset(preset)
    params: dict = {"format_reward_weight": 0.1}
    if rank is not None:
        if learning_rate is None and rank not in LORA_RATES:
            raise ValueError(f"no measured learning rate for LoRA rank {rank}: pass learning_rate, or add the rank "
                             f"to LORA_RATES (measured: {sorted(LORA_RATES)}) with benchmarks/sweep_lora_lr.py")
        params.update(lora=lora_options(rank, LORA_ALPHA, LORA_DROPOUT), learning_rate=learning_rate or LORA_RATES[rank],
                      max_steps=LORA_STEPS[preset], save_steps=zero_rl_config(preset).save_steps)  # full FT's checkpoints
    elif learning_rate is not None:
        params["learning_rate"] = learning_rate
    params.update(overrides)
    return zero_rl_config(preset, "grpo", seed, **params)


def lora_job(preset: str = "ci", seed: int = 0, rank: int | None = None, name: str | None = None,
             **overrides) -> RunJob:
    """The :class:`rlnb.seeds.RunJob` of a notebook-05 run; full fine-tuning without overrides is notebook 01's."""
    cfg = lora_rl_config(preset, seed, rank, **overrides)
    if rank is None and not overrides:
        return RunJob(cfg, ZERO_RL_NOTEBOOK, "grpo")
    return RunJob(cfg, LORA_NOTEBOOK, name or ("full" if rank is None else f"lora-r{rank}"))


def format_transition_job(preset: str = "ci", seed: int = 0) -> RunJob:
    """Notebook 05's format-transition run: its rank's run (steps, rate) with :data:`FORMAT_TRANSITION`'s reward."""
    check_preset(preset)
    options = {k: v for k, v in FORMAT_TRANSITION.items() if k != "rank"}
    return lora_job(preset, seed, FORMAT_TRANSITION["rank"], name=f"lora-r{FORMAT_TRANSITION['rank']}-worked-format",
                    **options)


def lora_rl(preset: str = "ci", seed: int = 0, rank: int | None = None, **overrides) -> TrainedRun:
    """Notebook 05's run for ``rank`` (None: full fine-tuning), trained once and cached."""
    job = lora_job(preset, seed, rank, **overrides)
    return load_or_train(job.config, job.notebook, job.name)


_TINA_KEYS = frozenset({
    "model", "dataset", "dataset_limit", "lora_rank", "lora_alpha", "lora_dropout", "target_modules",
    "learning_rate", "lr_scheduler_type", "min_lr_rate", "warmup_ratio", "num_generations",
    "max_completion_length", "temperature", "beta", "accuracy_reward_weight", "format_reward_weight",
    "use_vllm", "vllm_gpu_memory_utilization", "loss_type", "prompts_per_step", "max_steps", "save_steps",
    "eval_benchmarks", "eval_samples", "eval_temperature", "eval_top_p", "eval_max_tokens",
})


def tina_params(path: str | None = None) -> dict:
    """The ``tina`` mapping of the gpu preset's papermill file (Tina's recipe, trimmed for one GPU)."""
    from pathlib import Path

    import yaml

    from rlnb.paths import PROJECT_ROOT

    file = Path(path) if path is not None else PROJECT_ROOT / TINA_PARAMS
    data = yaml.safe_load(file.read_text()) or {}
    if not isinstance(data.get("tina"), dict):
        raise ValueError(f"{file}: expected a `tina:` mapping of the gpu preset's values")
    return data["tina"]


def tina_config(params: dict, seed: int = 0) -> RunConfig:
    """Tina's LoRA-GRPO run on a real model and math data (``task="math"``) from :func:`tina_params`' mapping.

    Raises ValueError naming any missing or unknown key, so a typo in the YAML
    fails here on a CPU rather than an hour into a GPU job.
    """
    from rlnb.lora import lora_options

    missing, unknown = _TINA_KEYS - set(params), set(params) - _TINA_KEYS
    if missing or unknown:
        raise ValueError(f"Tina parameters: missing {sorted(missing)}, unknown {sorted(unknown)}")
    p = params
    grpo = {
        "beta": float(p["beta"]),
        "lr_scheduler_type": p["lr_scheduler_type"],
        "lr_scheduler_kwargs": {"min_lr_rate": float(p["min_lr_rate"])},
        "warmup_steps": float(p["warmup_ratio"]),  # a float below 1 is a ratio of the run's steps
        "reward_weights": [float(p["accuracy_reward_weight"]), float(p["format_reward_weight"])],
        "use_vllm": bool(p["use_vllm"]),
    }
    if p["use_vllm"]:
        grpo.update(vllm_mode="colocate", vllm_gpu_memory_utilization=float(p["vllm_gpu_memory_utilization"]))
    return RunConfig(
        method="grpo", model=p["model"], preset="gpu", seed=seed, task="math", dataset=p["dataset"],
        dataset_limit=p["dataset_limit"], max_steps=int(p["max_steps"]), learning_rate=float(p["learning_rate"]),
        prompts_per_step=int(p["prompts_per_step"]), num_generations=int(p["num_generations"]),
        max_completion_length=int(p["max_completion_length"]), temperature=float(p["temperature"]),
        loss_type=p["loss_type"], scale_rewards="group", format_reward_weight=float(p["format_reward_weight"]),
        save_steps=int(p["save_steps"]), grpo=grpo,
        lora=lora_options(int(p["lora_rank"]), float(p["lora_alpha"]), float(p["lora_dropout"]), p["target_modules"]),
    )


ENTROPY_NOTEBOOK = "03_entropy_collapse"
ENTROPY_INTERVENTIONS: dict[str, dict] = {
    # name -> the one switch it flips on the notebook-03 baseline (RunConfig fields; `grpo` is merged)
    "baseline": {},
    "clip-higher": {"grpo": {"epsilon_high": 0.28}},  # DAPO: epsilon_low 0.2 (TRL default), epsilon_high 0.28
    # loss - 2 * mean token entropy. Probes (40 steps, seed 0): 0.1 and 0.5 ended at the baseline's entropy
    # (0.011 against 0.008-0.009); 2 holds it ten times higher, and costs accuracy: the trade-off to show.
    "entropy bonus": {"grpo": {"entropy_coef": 2.0}},
    "80/20 mask": {"grpo": {"top_entropy_quantile": 0.2}},  # gradient only on the top-20% entropy tokens
    # Cui et al. use 2e-4 (Clip-Cov) and 2e-3 (KL-Cov) of the tokens for 7B models: under one token of a
    # ~600-1300-token batch here. About 2% of this world's tokens have a covariance term above 1, so
    # Clip-Cov zeroes the loss of 2% of the valid tokens, drawn from the paper's band (1, 5), with the official
    # recipes' ratio clip (clip_ratio_low = clip_ratio_high = 1); probes at 5% and 20% of the tokens, and at
    # 20% with the band from 0.1, ended at the baseline's entropy too (3 seeds each, 40 steps). KL-Cov (no
    # ratio clip, as in the official loss) acts only on the second (off-policy) optimiser step of each
    # generation batch; at the top 2% with coefficient 1 it left the entropy at the baseline's, so it takes
    # the top 5% with coefficient 5.
    "Clip-Cov": {"method": "cov", "method_options": {"clip_cov_ratio": 0.02, "clip_cov_lb": 1.0, "clip_cov_ub": 5.0},
                 "grpo": {"epsilon": 1.0, "epsilon_high": 1.0}},
    "KL-Cov": {"method": "cov", "method_options": {"kl_cov_ratio": 0.05, "kl_coef": 5.0}},
}
"""Notebook 03's interventions against entropy collapse, each a single switch on :func:`entropy_baseline_config`."""


def entropy_baseline_config(preset: str = "ci", seed: int = 0, **overrides) -> RunConfig:
    """Notebook 03's baseline: zero-RL GRPO made to collapse its entropy within the ``ci`` budget.

    Against notebook 01's run it trains on the inside level only (the latent
    levels are almost never solved under the task prompt, so their groups carry
    no advantage and only dilute the entropy trend), at twice the learning rate (1e-4), and with two optimiser steps
    per generation batch (``steps_per_generation=2``, the mini-batch layout
    of verl/DAPO): fully on-policy, every PPO ratio is exactly 1, and
    clip-higher and KL-Cov would have nothing to act on. Every run logs each update's entropy change
    on its own batch (``measure_entropy_change``), the left side of Cui et al.'s first-order law.
    """
    check_preset(preset)
    tiny = {} if preset == "gpu" else dict(levels=levels_in("inside"), max_steps={"ci": 40, "full": 600}[preset],
                                            learning_rate=1e-4, save_steps=50, format_reward_weight=0.1)
    options = {"measure_entropy_change": True, **overrides.pop("method_options", {})}
    return two_step_zero_rl_config(preset, seed, tiny, method_options=options, **overrides)


def entropy_intervention_config(preset: str = "ci", name: str = "baseline", seed: int = 0) -> RunConfig:
    """The baseline with one intervention of :data:`ENTROPY_INTERVENTIONS` switched on."""
    if name not in ENTROPY_INTERVENTIONS:
        raise ValueError(f"unknown intervention {name!r}: choose one of {list(ENTROPY_INTERVENTIONS)}")
    return entropy_baseline_config(preset, seed, **ENTROPY_INTERVENTIONS[name])


def entropy_job(preset: str = "ci", name: str = "baseline", seed: int = 0) -> RunJob:
    """The :class:`rlnb.seeds.RunJob` of a notebook-03 run, for :func:`rlnb.seeds.train_runs`."""
    folder = name.lower().replace(" ", "-").replace("/", "")
    return RunJob(entropy_intervention_config(preset, name, seed), ENTROPY_NOTEBOOK, folder)


def entropy_run(preset: str = "ci", name: str = "baseline", seed: int = 0) -> TrainedRun:
    """One of notebook 03's runs, trained on first use and cached in ``runs/03_entropy_collapse/``."""
    job = entropy_job(preset, name, seed)
    return load_or_train(job.config, job.notebook, job.name)


LUFFY_NOTEBOOK = "02_luffy_off_policy"
LUFFY_METHODS: dict[str, dict] = {
    # run name -> LuffyConfig options on top of luffy_config's shared settings (one switch each)
    "luffy": {},
    "luffy-no-shaping": {"policy_shaping": False},  # off-policy weight p itself (pi_phi = 1), no f
    "rl+sft": {"off_policy_loss": "sft"},  # traces outside the group's baseline, trained by token-mean NLL
    "sft": {"off_policy_loss": "sft", "on_policy_scale": 0.0, "entropy_coef": 0.0},  # rollouts only measured
    "on-policy": {"expert_traces": 0},  # the same trainer and settings with no traces: plain GRPO
    "on-policy-no-bonus": {"expert_traces": 0, "entropy_coef": 0.0},  # ... and without the entropy bonus
}
"""Notebook 02's runs, all from the shipped base; ``sft-grpo`` (GRPO from ``sft``) is built on top."""
LUFFY_BASE_OPTIONS = {"expert_traces": 1}
"""LUFFY's options shared by every notebook-02 run on the tiny world: the official 1 trace per group of 8,
and otherwise :class:`rlnb.luffy.LuffyConfig`'s defaults (the official loss and its normalisation)."""
GPU_LUFFY_YAML = PROJECT_ROOT / "configs" / "luffy_math_1.5b.yaml"
"""The `gpu` preset of notebook 02: LUFFY's official settings on a real math model, traces from a data-set column."""


def luffy_config(preset: str = "ci", name: str = "luffy", seed: int = 0, **overrides) -> RunConfig:
    """One of notebook 02's runs: LUFFY, or one of its baselines in :data:`LUFFY_METHODS`.

    On the tiny world the runs train on the latent levels only (:func:`rlnb.world.levels_in`), where
    the base almost never chooses its procedure under the task prompt and on-policy groups have no
    reward spread; the inside level is held out to measure forgetting. Accuracy reward only, as in
    the paper (a format reward would let on-policy GRPO bootstrap, notebook 01's story), groups of 8
    with 1 trace, learning rate 3e-4 (probes: 1 trace per group lifts LUFFY's own accuracy on these
    levels from 0 to above 0.5 by step 25-35 in each of 3 seeds), up to 64 completion tokens (a 6-digit trace is 63 with
    its EOS).
    """
    check_preset(preset)
    if name not in LUFFY_METHODS:
        raise ValueError(f"unknown notebook-02 run {name!r}: choose one of {list(LUFFY_METHODS)} or 'sft-grpo'")
    if preset == "gpu":  # the official run's settings and options (1 trace of 8, no extra scale) from the YAML
        params = RunConfig.from_yaml(GPU_LUFFY_YAML).to_dict()
        shared = params.pop("method_options")
    else:
        params = dict(method="luffy", preset=preset, levels=levels_in("latent"),
                      max_steps={"ci": 50, "full": 300}[preset], learning_rate=3e-4, prompts_per_step=4,
                      num_generations=8, max_completion_length=64, loss_type="dr_grpo", scale_rewards="none",
                      format_reward_weight=0.0, save_steps=10, grpo=dict(CHECKPOINTS_KEPT))
        shared = LUFFY_BASE_OPTIONS
    options = {**shared, **LUFFY_METHODS[name], **overrides.pop("method_options", {})}
    params.update(seed=seed, method_options=options, **overrides)
    return RunConfig(**params)


def luffy_job(preset: str = "ci", name: str = "luffy", seed: int = 0) -> RunJob:
    """The :class:`rlnb.seeds.RunJob` of a notebook-02 run (``sft-grpo`` too), for :func:`rlnb.seeds.train_runs`.

    ``sft-grpo`` continues the ``sft`` run's final model (of the same seed) with on-policy GRPO (the
    ``on-policy`` settings) for half as many steps: the paper's SFT + RL. Train ``sft`` first.
    """
    if name == "sft-grpo":
        start = run_path(luffy_config(preset, "sft", seed), LUFFY_NOTEBOOK, "sft")
        base = luffy_config(preset, "on-policy", seed)
        cfg = luffy_config(preset, "on-policy", seed, model=str(start / "final"), max_steps=base.max_steps // 2)
        return RunJob(cfg, LUFFY_NOTEBOOK, name)
    return RunJob(luffy_config(preset, name, seed), LUFFY_NOTEBOOK, name)


def luffy_run(preset: str = "ci", name: str = "luffy", seed: int = 0) -> TrainedRun:
    """A notebook-02 run, trained on first use and cached in ``runs/02_luffy_off_policy/``."""
    if name == "sft-grpo":
        sft(preset, seed)
    job = luffy_job(preset, name, seed)
    return load_or_train(job.config, job.notebook, job.name)


def luffy(preset: str = "ci", seed: int = 0) -> TrainedRun:
    """Notebook 02's LUFFY run (notebook 04 loads it for pass@k)."""
    return luffy_run(preset, "luffy", seed)


def sft(preset: str = "ci", seed: int = 0) -> TrainedRun:
    """Notebook 02's SFT-on-expert-traces run (notebook 04 loads it for pass@k)."""
    return luffy_run(preset, "sft", seed)


# ---------------------------------------------------------------- notebook 06: the GRPO family side by side
GRPO_FAMILY_NOTEBOOK = "06_grpo_family"
GRPO_FAMILY_METHODS: dict[str, dict] = {
    # name -> the one switch it flips on grpo_family_base_config (RunConfig fields; `grpo` and `method_options` merge)
    "GRPO": {},
    "DAPO": {"loss_type": "dapo", "grpo": {"epsilon_high": 0.28}},  # clip-higher 0.2 / 0.28 and the token-level loss
    # GSPO as TRL's paper index runs it: one length-normalised ratio per sequence, the per-sequence loss
    # (loss_type grpo, the run's own), and the paper's clip range 3e-4 / 4e-4 on that sequence ratio
    "GSPO": {"grpo": {"importance_sampling_level": "sequence", "epsilon": 3e-4, "epsilon_high": 4e-4}},
    # CISPO (MiniMax-M1): the importance weight, truncated above at epsilon_high (TRL's recommended 5.0) and
    # detached, multiplies A * log pi; TRL's cispo normalises by the tokens of the generation batch
    "CISPO": {"loss_type": "cispo", "grpo": {"epsilon_high": 5.0}},
    "NSR": {"method": "advantage", "method_options": {"advantage": "nsr"}},
    "W-REINFORCE": {"method": "advantage", "method_options": {"advantage": "w_reinforce", "positive_weight": 0.1}},
    "pass@4": {"method": "advantage", "method_options": {"advantage": "pass_at_k", "pass_k": 4}},
    "entropy-shaped": {"method": "advantage", "method_options": {"entropy_alpha": 0.4, "entropy_kappa": 2.0}},
    # DAPO with its dynamic sampling: zero-spread groups dropped and refilled with new prompts, at most 4 generation
    # rounds of one batch each (DAPO's recipe: rounds of 3 batches, at most 10; rlnb.trainers.RecordingGRPOConfig
    # says why), logs dynamic_sampling/generations. DAPO's soft overlong punishment is off (method option
    # overlong_buffer): completions reached the 48-token cap in 0.1% and 0.0% of DAPO's rollouts (seeds 0, 1; probe)
    "DAPO-DS": {"loss_type": "dapo", "grpo": {"epsilon_high": 0.28},
                "method_options": {"dynamic_sampling": True, "dynamic_sampling_max_rounds": 4}},
    # GMPO through TRL's experimental GMPOTrainer: the geometric mean of the token ratios, each log-ratio clipped to
    # the paper's (and TRL's default) range [-0.4, 0.4]; its loss is a plain mean over sequences (loss_type unused)
    "GMPO": {"method": "gmpo", "grpo": {"epsilon": 0.4, "epsilon_high": 0.4}},
}
"""Notebook 06's methods, each a single switch on :func:`grpo_family_base_config`: TRL's own options
(DAPO, GSPO, CISPO, GMPO), an advantage of :mod:`rlnb.advantages` through the trainer's hook, or the recording
trainer's dynamic sampling (DAPO-DS)."""
RATIO_METHODS = ("DAPO", "GSPO", "CISPO", "GMPO")
"""The methods that act through the importance ratio pi_theta / pi_old, and so only off-policy."""


def grpo_family_base_config(preset: str = "ci", seed: int = 0, **overrides) -> RunConfig:
    """Notebook 06's shared settings: notebook 01's zero-RL (levels 3 and 4, groups of 16, loss ``grpo``,
    format weight 0.1, lr 1e-4), shorter, with two optimiser steps per generation batch
    (``steps_per_generation=2``) so that the second step is off-policy and the ratio-based methods have
    ratios to act on.

    ``ci``: 16 steps (8 generation batches), so that ten methods x three seeds fit the notebook's ten
    minutes on two cores (probe, seed 0: held-out pass@1 on 3 digits 0.83-0.91 after 16 steps for GRPO,
    DAPO, GSPO, CISPO and NSR, from the base's 0.2). A run trains in 14-23 s on one thread, DAPO-DS in
    29-34 s (2.5 times the completions); the notebook executed in 386 s from empty runs.
    """
    check_preset(preset)
    tiny = {} if preset == "gpu" else dict(max_steps={"ci": 16, "full": 200}[preset],
                                            save_steps={"ci": 16, "full": 50}[preset], format_reward_weight=0.1)
    return two_step_zero_rl_config(preset, seed, tiny, **overrides)


def grpo_family_config(preset: str = "ci", method: str = "GRPO", seed: int = 0, **overrides) -> RunConfig:
    """The shared settings with the one switch of ``method`` (a key of :data:`GRPO_FAMILY_METHODS`)."""
    if method not in GRPO_FAMILY_METHODS:
        raise ValueError(f"unknown GRPO-family method {method!r}: choose one of {list(GRPO_FAMILY_METHODS)}")
    switch = {k: dict(v) if isinstance(v, dict) else v for k, v in GRPO_FAMILY_METHODS[method].items()}
    grpo = {**switch.pop("grpo", {}), **overrides.pop("grpo", {})}
    options = {**switch.pop("method_options", {}), **overrides.pop("method_options", {})}
    return grpo_family_base_config(preset, seed, **{**switch, **overrides}, grpo=grpo, method_options=options)


def grpo_family_job(preset: str = "ci", method: str = "GRPO", seed: int = 0, **overrides) -> RunJob:
    """The :class:`rlnb.seeds.RunJob` of a notebook-06 run, for :func:`rlnb.seeds.train_runs`."""
    folder = method.lower().replace("@", "-at-").replace(" ", "-")
    return RunJob(grpo_family_config(preset, method, seed, **overrides), GRPO_FAMILY_NOTEBOOK, folder)


# ---------------------------------------------------------------- notebook 07: guidance
GUIDANCE_NOTEBOOK = "07_guidance"
GUIDANCE_METHODS: dict[str, dict] = {
    # run name -> rlnb.guidance.GuidanceConfig options on top of guidance_config's shared settings
    # QuestA: the first 50% of the trace's steps end the prompt of every rollout, annealed to 25%; no gradient on them
    "hint": {"place": "hint", "share_start": 0.5, "share_end": 0.25, "schedule": "linear"},
    # Prefix-RFT: one rollout per group continues an expert prefix whose share decays by a cosine from 95% to 5%;
    # the prefix learns through LUFFY's shaped term on its top-20% entropy tokens
    "prefix": {"place": "prefix", "share_start": 0.95, "share_end": 0.05, "schedule": "cosine"},
    # the same prefix with no gradient on it: it only conditions the rollout, as a hint would
    "prefix-no-grad": {"place": "prefix", "share_start": 0.95, "share_end": 0.05, "schedule": "cosine",
                       "prefix_loss": "none"},
    # BREAD-style: a one-quarter prefix, only in groups whose 8 own rollouts were all wrong
    "adaptive": {"place": "prefix", "when": "failed_groups", "share_start": 0.25, "share_end": 0.25},
    # UFT: every rollout of the group starts with a hint of Binomial(steps, p(t)) steps, p(t) cosine 0.95 -> 0.05
    # over the first 60% of training and 0 after; the hint learns through UFT's log-likelihood term (official 0.001)
    "uft": {"place": "prefix", "guided_rows": 8, "share_start": 0.95, "share_end": 0.05, "schedule": "cosine",
            "share_sampling": "binomial", "guidance_until": 0.6, "prefix_loss": "nll", "nll_coef": 0.001},
    # the prefix run with another problem's trace of the same level: a worked start's form without its content
    "mismatched": {"place": "prefix", "share_start": 0.95, "share_end": 0.05, "schedule": "cosine",
                   "source": "mismatched"},
}
"""Notebook 07's guided runs, each :class:`rlnb.guidance.GuidanceConfig` options on :func:`guidance_config`."""
GUIDANCE_REUSED = {"grpo": "on-policy-no-bonus", "luffy": "luffy", "sft": "sft"}
"""Notebook 07's names for notebook 02's runs on the latent levels: GRPO is on-policy GRPO without the entropy
bonus, because no guided run has one (so that a guided run's gain is the guidance's, not the bonus's lottery)."""
GUIDANCE_LEVEL_SETS = ("latent", "outside")
GUIDANCE_OUTSIDE_LENGTH = 80
"""Completion tokens of notebook 07's outside-level runs: room for a 7-digit trace and its EOS. A hinted run
keeps notebook 02's 64, since its hint (at least 2 of the 7 steps) sits in the prompt: the tiny base has 128
positions, and prompt, hint and 80 tokens would pass them."""


def guidance_config(preset: str = "ci", name: str = "hint", seed: int = 0, regime: str = "latent") -> RunConfig:
    """A notebook-07 run: notebook 02's settings (groups of 8, accuracy reward only, lr 3e-4, 50 steps) with no
    full traces and no entropy bonus, trained on the levels of ``regime`` ("latent" or "outside").

    ``name`` is a key of :data:`GUIDANCE_METHODS`, or, on the outside level, ``grpo``, ``luffy`` or ``sft``
    (notebook 02's switches trained there; on the latent levels those are notebook 02's own runs,
    :func:`guidance_run`).
    """
    check_preset(preset)
    if preset == "gpu":
        raise ValueError("notebook 07 runs on the tiny world (its guidance cuts the world's trace steps): "
                         "use preset 'ci' or 'full'")
    if regime not in GUIDANCE_LEVEL_SETS:
        raise ValueError(f"unknown regime {regime!r} for notebook 07: choose one of {GUIDANCE_LEVEL_SETS}")
    shared = {"levels": levels_in(regime)}
    if regime == "outside":  # a 7-digit trace is 72 tokens with its EOS: notebook 02's 64 would cut its answer off
        hinted = GUIDANCE_METHODS.get(name, {}).get("place") == "hint"  # its first steps are in the prompt instead
        shared["max_completion_length"] = 64 if hinted else GUIDANCE_OUTSIDE_LENGTH
    if name in GUIDANCE_METHODS:
        options = {"expert_traces": 0, "entropy_coef": 0.0, **GUIDANCE_METHODS[name]}
        return luffy_config(preset, "luffy", seed, method="guidance", method_options=options, **shared)
    if name in GUIDANCE_REUSED and regime == "outside":
        return luffy_config(preset, GUIDANCE_REUSED[name], seed, method_options={"entropy_coef": 0.0}, **shared)
    raise ValueError(f"unknown notebook-07 run {name!r} on the {regime} levels: choose one of "
                     f"{list(GUIDANCE_METHODS) + list(GUIDANCE_REUSED)}")


def guidance_job(preset: str = "ci", name: str = "hint", seed: int = 0, regime: str = "latent") -> RunJob:
    """The :class:`rlnb.seeds.RunJob` of a notebook-07 run; on the latent levels ``grpo``, ``luffy`` and ``sft``
    are notebook 02's runs (:data:`GUIDANCE_REUSED`)."""
    if regime == "latent" and name in GUIDANCE_REUSED:
        return luffy_job(preset, GUIDANCE_REUSED[name], seed)
    folder = name if regime == "latent" else f"{regime}-{name}"
    return RunJob(guidance_config(preset, name, seed, regime), GUIDANCE_NOTEBOOK, folder)


def guidance_run(preset: str = "ci", name: str = "hint", seed: int = 0, regime: str = "latent") -> TrainedRun:
    """A finished notebook-07 run (trained on first use, cached); ``run_dir / "final"`` loads with
    ``from_pretrained``. Names on the latent levels: ``grpo``, ``luffy``, ``sft`` and :data:`GUIDANCE_METHODS`."""
    job = guidance_job(preset, name, seed, regime)
    return load_or_train(job.config, job.notebook, job.name)
