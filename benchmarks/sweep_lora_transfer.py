"""Notebook 05's LoRA ranks against full fine-tuning over six seeds: along training, the 4-digit transfer, and
full fine-tuning's update cut to each rank (issues #25, #27).

Notebook 05 trains each rank on two seeds. Whether 4 digits has started to move by LoRA's last step is a
threshold event whose timing varies from seed to seed (notebook 01), so two seeds cannot say whether a rank
transfers more often than another, nor how the ranks compare before they saturate. This trains full
fine-tuning (notebook 01's GRPO run, compared at its checkpoints up to LoRA's last step, as notebook 05 does)
and every rank of ``--ranks`` at notebook 05's rate (:func:`rlnb.experiments.lora_rl_config`) over ``--seeds``,
and samples every checkpoint up to that step on notebook 05's held-out problems (32 per level x 8
completions). It also evaluates, per seed, full fine-tuning's update at that step cut to each rank
(:func:`rlnb.lora.truncate_update`, run ``full cut to r<r>``) and kept whole on LoRA's matrices only (run
``full, LoRA's matrices``): does the update full fine-tuning found fit in low rank?

    OMP_NUM_THREADS=1 python benchmarks/sweep_lora_transfer.py      # 24 runs (6 of 60 steps, 18 of 45), 2 at a time: 12 min on 2 cores

Writes ``data/sweeps/lora_transfer.csv`` (per problem: ``run, seed, step, level, a, b, n, correct``; the base as
``run = base``) and, beside it, ``lora_transfer_training.csv`` (each run's training accuracy per step and
level, from its log: ``run, seed, step, level, accuracy``), which notebook 05 reads. Runs are cached under
``$RLNB_RUNS`` (default ``runs/``): full fine-tuning in notebook 01's folder, the LoRA runs in
``sweep_lora_transfer/``.
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
    from rlnb.evaluate import HeldOut, labelled_evaluations, pooled_pass1
    from rlnb.experiments import LORA_STEPS, lora_rl_config
    from rlnb.lora import truncate_update
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
        for at in sorted(s for s in checkpoints if s <= step):
            models.append(({**labels, "step": at}, checkpoints[at], run.run_dir / f"checkpoint-{at}" / f"eval05-{tag}.csv"))
        if labels["run"] == "full":
            folder = run.run_dir / f"checkpoint-{step}"
            for rank in [*ns.ranks, None]:
                name = "full, LoRA's matrices" if rank is None else f"full cut to r{rank}"
                models.append(({**labels, "run": name, "step": step}, truncate_update(base_model, checkpoints[step], rank),
                               folder / f"eval05-{'whole' if rank is None else f'r{rank}'}-cut-{tag}.csv"))
    table = labelled_evaluations(HeldOut(problems=problems), tokenizer, models, ns.samples)
    out = Path(ns.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    training = pd.concat([run.metrics[run.metrics.metric == "accuracy"].assign(**labels) for (labels, _), run in zip(keyed, runs)],
                         ignore_index=True)
    training = training.assign(level=training["level"].astype(int)).rename(columns={"value": "accuracy"})
    training_out = out.with_name(f"{out.stem}_training.csv")
    training[["run", "seed", "step", "level", "accuracy"]].to_csv(training_out, index=False)
    last = table[table.step == table.groupby("run")["step"].transform("max")]
    print(pooled_pass1(last, ["run", "seed", "level"]).unstack("level").round(3).to_string())
    print(f"wrote {out} ({len(table)} rows) and {training_out} ({len(training)} rows)")


if __name__ == "__main__":
    main()
