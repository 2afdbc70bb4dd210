"""Notebook 05's 4-digit transfer per LoRA rank, over enough seeds to state it as an event rate (issues #25, #27).

Notebook 05 trains each rank on two seeds. Whether 4 digits has started to move by LoRA's last step is a
threshold event whose timing varies from seed to seed (notebook 01), so two seeds cannot say whether a rank
transfers more often than another. This trains full fine-tuning (notebook 01's GRPO run, compared at its
checkpoint of LoRA's last step, as notebook 05 does) and every rank of ``--ranks`` at notebook 05's rate
(:func:`rlnb.experiments.lora_rl_config`) over ``--seeds``, and samples each at that step on notebook 05's
held-out problems (32 per level x 8 completions).

    OMP_NUM_THREADS=1 python benchmarks/sweep_lora_transfer.py      # 24 runs (6 of 60 steps, 18 of 45), 2 at a time

Writes ``data/sweeps/lora_transfer.csv`` (per problem: ``run, seed, step, level, a, b, n, correct``; the base as
``run = base``), which notebook 05 reads. Runs are cached under ``$RLNB_RUNS`` (default ``runs/``): full
fine-tuning in notebook 01's folder, the LoRA runs in ``sweep_lora_transfer/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
NOTEBOOK = "sweep_lora_transfer"


def jobs(ranks: list[int], seeds: list[int], steps: int | None = None) -> list[tuple[dict, object]]:
    """``(labels, RunJob)`` per (configuration, seed); full fine-tuning is notebook 01's run unless ``steps``
    shortens every run (to ``steps`` steps, saved at the last)."""
    from rlnb.experiments import lora_job, lora_rl_config
    from rlnb.seeds import RunJob

    length = {} if steps is None else {"max_steps": steps, "save_steps": steps}
    out = []
    for s in seeds:
        out.append(({"run": "full", "seed": s}, lora_job("ci", s, None, **length)))
        out += [({"run": f"r{r}", "seed": s}, RunJob(lora_rl_config("ci", s, r, **length), NOTEBOOK, f"lora-r{r}"))
                for r in ranks]
    return out


def main(argv: list[str] | None = None) -> None:
    from rlnb.evaluate import HeldOut, labelled_evaluations
    from rlnb.experiments import LORA_STEPS, lora_rl_config
    from rlnb.models import load_model
    from rlnb.paths import runs_dir
    from rlnb.runs import checkpoint_models
    from rlnb.seeds import train_runs
    from rlnb.world import EVAL_SEED, make_problems

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 4, 32])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--steps", type=int, default=None, help="shorten every run (a test); default notebook 05's")
    parser.add_argument("--problems", type=int, default=32)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", default=str(HERE.parent / "data" / "sweeps" / "lora_transfer.csv"))
    ns = parser.parse_args(argv)
    keyed = jobs(ns.ranks, ns.seeds, ns.steps)
    runs = train_runs([job for _, job in keyed], ns.workers)

    cfg = lora_rl_config("ci", 0, None)
    step = ns.steps or LORA_STEPS["ci"]
    problems = make_problems(cfg.levels, ns.problems, seed=EVAL_SEED)
    tag = f"{ns.problems}x{ns.samples}-eval{EVAL_SEED}"
    base_model, tokenizer = load_model(cfg.model)
    models = [({"run": "base", "seed": 0, "step": 0}, base_model, runs_dir() / NOTEBOOK / "eval" / f"base-{tag}.csv")]
    for (labels, _), run in zip(keyed, runs):
        checkpoints = checkpoint_models(run.run_dir, cfg.model)
        if step not in checkpoints:
            raise RuntimeError(f"{run.run_dir} has no checkpoint at step {step} (it has {sorted(checkpoints)})")
        models.append(({**labels, "step": step}, checkpoints[step], run.run_dir / f"checkpoint-{step}" / f"eval05-{tag}.csv"))
    table = labelled_evaluations(HeldOut(problems=problems), tokenizer, models, ns.samples)
    Path(ns.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(ns.out, index=False)
    table["pass@1"] = table["correct"] / table["n"]
    per_seed = table.groupby(["run", "seed", "level"])["pass@1"].mean().unstack("level")
    print(per_seed.round(3).to_string())
    print(f"wrote {ns.out} ({len(table)} rows)")


if __name__ == "__main__":
    main()
