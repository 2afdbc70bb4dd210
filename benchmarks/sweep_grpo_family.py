"""Notebook 06's two experiments that do not fit its ``ci`` budget (issue #28).

* ``long``: after notebook 06's 16 steps nothing moves the latent level (4 digits), so the claims of
  NSR, W-REINFORCE (Zhu et al.) and pass@k training (Chen et al.) about pass@k at large k cannot be tested
  there. This trains GRPO, NSR, W-REINFORCE and pass@4 for ``--steps`` (60) steps, each with notebook 06's
  settings otherwise (:func:`rlnb.experiments.grpo_family_config`), over ``--seeds``, and samples the base
  and every run ``--samples`` (64) times on each of ``--problems`` held-out problems per level, so that
  pass@k up to 64 can be read on the inside and the latent level.
* ``gspo-clip``: notebook 06 names GSPO's clip range (3e-4 / 4e-4 on the sequence ratio, the paper's) as
  the cause of its lower score. This trains GSPO at notebook 06's 16 steps with the range scaled by 1, 10
  and 100 (the high end stays 4/3 of the low), over ``--seeds``, and evaluates it as notebook 06 does
  (32 problems x 8 samples), with the share of tokens the clip cut from the run's logs.

Both write per-problem tables (``method, seed, level, a, b, n, correct`` and the experiment's own columns),
so that the notebook computes pass@k and its paired intervals with :mod:`rlnb.stats` itself.

    OMP_NUM_THREADS=1 python benchmarks/sweep_grpo_family.py long        # 12 runs of 60 steps, 2 at a time
    OMP_NUM_THREADS=1 python benchmarks/sweep_grpo_family.py gspo-clip   # 9 runs of 16 steps

Writes ``data/sweeps/grpo_family_long.csv`` and ``data/sweeps/gspo_clip.csv``. Runs are cached under
``$RLNB_RUNS`` (default ``runs/``) in ``sweep_grpo_family/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
SWEEPS = HERE.parent / "data" / "sweeps"
NOTEBOOK = "sweep_grpo_family"
LONG_METHODS = ("GRPO", "NSR", "W-REINFORCE", "pass@4")
GSPO_SCALES = (1.0, 10.0, 100.0)


def long_jobs(methods: list[str], seeds: list[int], steps: int) -> list[tuple[dict, object]]:
    """``(labels, RunJob)`` per (method, seed), trained ``steps`` steps and saved at the end only."""
    from rlnb.experiments import grpo_family_config
    from rlnb.seeds import RunJob

    return [({"method": m, "seed": s, "steps": steps},
             RunJob(grpo_family_config("ci", m, s, max_steps=steps, save_steps=steps), NOTEBOOK, f"long-{m.lower()}"))
            for m in methods for s in seeds]


def gspo_clip_jobs(scales: list[float], seeds: list[int], steps: int | None = None) -> list[tuple[dict, object]]:
    """``(labels, RunJob)`` per (clip scale, seed): GSPO's sequence-ratio clip range times ``scale``, trained
    notebook 06's steps unless ``steps`` is given."""
    from rlnb.experiments import GRPO_FAMILY_METHODS, grpo_family_config
    from rlnb.seeds import RunJob

    paper = GRPO_FAMILY_METHODS["GSPO"]["grpo"]
    out = []
    for scale in scales:
        grpo = {"epsilon": paper["epsilon"] * scale, "epsilon_high": paper["epsilon_high"] * scale}
        length = {} if steps is None else {"max_steps": steps, "save_steps": steps}
        for s in seeds:
            cfg = grpo_family_config("ci", "GSPO", s, grpo=grpo, **length)
            out.append(({"method": "GSPO", "seed": s, "clip_scale": scale, **grpo, "steps": cfg.max_steps},
                        RunJob(cfg, NOTEBOOK, f"gspo-clip-x{scale:g}")))
    return out


def main(argv: list[str] | None = None) -> None:
    from rlnb.evaluate import HeldOut, labelled_evaluations
    from rlnb.experiments import grpo_family_config
    from rlnb.models import load_model
    from rlnb.paths import runs_dir
    from rlnb.seeds import train_runs
    from rlnb.world import EVAL_SEED

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", choices=["long", "gspo-clip"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="training steps (60 long, notebook 06's gspo-clip)")
    parser.add_argument("--methods", nargs="+", default=list(LONG_METHODS), help="methods of the long runs")
    parser.add_argument("--scales", type=float, nargs="+", default=list(GSPO_SCALES), help="GSPO clip-range scales")
    parser.add_argument("--problems", type=int, default=32, help="held-out problems per level")
    parser.add_argument("--samples", type=int, default=None, help="samples per problem (64 long, 8 gspo-clip)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", default=None)
    ns = parser.parse_args(argv)
    long = ns.experiment == "long"
    samples = ns.samples or (64 if long else 8)
    keyed = long_jobs(ns.methods, ns.seeds, ns.steps or 60) if long else gspo_clip_jobs(ns.scales, ns.seeds, ns.steps)
    runs = train_runs([job for _, job in keyed], ns.workers)

    cfg = grpo_family_config("ci", "GRPO", 0)
    held = HeldOut.for_preset("ci", cfg.levels, ns.problems, EVAL_SEED, max_new_tokens=cfg.max_completion_length)
    tag = f"{ns.problems}x{samples}-eval{EVAL_SEED}"
    base_model, tokenizer = load_model(cfg.model)
    models = [({"method": "base", "seed": 0}, base_model, runs_dir() / NOTEBOOK / "eval" / f"base-{tag}.csv")]
    for (labels, _), run in zip(keyed, runs):
        if not long:
            clipped = run.metrics[run.metrics.metric == "clip_ratio/region_mean"]["value"]
            labels = {**labels, "clip_share": float(clipped.mean())}
        models.append((labels, run.model, run.run_dir / f"eval-{tag}.csv"))
    table = labelled_evaluations(held, tokenizer, models, samples)
    out = Path(ns.out or SWEEPS / ("grpo_family_long.csv" if long else "gspo_clip.csv"))
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    group = ["method", "clip_scale"] if not long else ["method"]
    table["pass@1"] = table["correct"] / table["n"]
    print(table.groupby(group + ["level"], dropna=False)["pass@1"].mean().unstack("level").round(3).to_string())
    print(f"wrote {out} ({len(table)} rows)")


if __name__ == "__main__":
    main()
