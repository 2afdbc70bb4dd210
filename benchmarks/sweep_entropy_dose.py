"""Dose-response of notebook 03's three entropy interventions that hold entropy up (issue #27).

Notebook 03's strengths were set after probes: the entropy bonus's weight 2, Clip-Cov's 2% of the tokens
(100 times the paper's rate for 7B models, since a batch here holds about a thousand tokens) and KL-Cov's
coefficient 5 on the top 5% (the comments of :data:`rlnb.experiments.ENTROPY_INTERVENTIONS` say why).
This shows what each strength does instead of asserting it: each intervention at its notebook strength
divided and multiplied by 4,

* entropy bonus: ``entropy_coef`` 0.5, 2, 8;
* Clip-Cov: ``clip_cov_ratio`` 0.005, 0.02, 0.08 (band and ratio clip as in the notebook);
* KL-Cov: ``kl_coef`` 1.25, 5, 20 on the top 5% (``kl_cov_ratio`` 0.05);

plus the baseline, each over ``--seeds`` with every other setting notebook 03's
(:func:`rlnb.experiments.entropy_baseline_config`). Per run it records the end entropy (mean token entropy
over the last 20% of steps, from the run's logs) and samples ``--samples`` completions of each of
``--problems`` held-out problems of the trained level, as notebook 03 does (32 x 16).

    OMP_NUM_THREADS=1 python benchmarks/sweep_entropy_dose.py       # 30 runs of 40 steps, 2 at a time

Writes ``data/sweeps/entropy_dose.csv`` (per problem: ``intervention, knob, strength, seed, level, a, b, n,
correct, end_entropy``; the base as ``intervention = base``), which notebook 03 reads. Runs are cached under
``$RLNB_RUNS`` (default ``runs/``) in ``sweep_entropy_dose/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
NOTEBOOK = "sweep_entropy_dose"
FACTORS = (0.25, 1.0, 4.0)
KNOBS = {"entropy bonus": ("grpo", "entropy_coef"), "Clip-Cov": ("method_options", "clip_cov_ratio"),
         "KL-Cov": ("method_options", "kl_coef")}
"""Each intervention's knob: the ``RunConfig`` field it lives in and its name there."""


def dose(name: str, factor: float) -> tuple[float, dict]:
    """The knob's value at ``factor`` times notebook 03's, and the intervention's switch with it."""
    from rlnb.experiments import ENTROPY_INTERVENTIONS

    field, knob = KNOBS[name]
    switch = {k: dict(v) if isinstance(v, dict) else v for k, v in ENTROPY_INTERVENTIONS[name].items()}
    value = switch[field][knob] * factor
    switch[field][knob] = value
    return value, switch


def jobs(names: list[str], factors: list[float], seeds: list[int], steps: int | None) -> list[tuple[dict, object]]:
    """``(labels, RunJob)`` per (intervention, strength, seed), and the baseline's per seed."""
    from rlnb.experiments import entropy_baseline_config
    from rlnb.seeds import RunJob

    length = {} if steps is None else {"max_steps": steps}
    settings = [("baseline", "", None, {})]
    for name in names:
        for factor in factors:
            value, switch = dose(name, factor)
            settings.append((name, KNOBS[name][1], value, switch))
    out = []
    for name, knob, value, switch in settings:
        folder = name.lower().replace(" ", "-") + ("" if value is None else f"-{value:g}")
        for s in seeds:
            out.append(({"intervention": name, "knob": knob, "strength": value, "seed": s},
                        RunJob(entropy_baseline_config("ci", s, **switch, **length), NOTEBOOK, folder)))
    return out


def main(argv: list[str] | None = None) -> None:
    from rlnb.evaluate import HeldOut, labelled_evaluations
    from rlnb.experiments import entropy_baseline_config
    from rlnb.logs import tail_means
    from rlnb.models import load_model
    from rlnb.paths import runs_dir
    from rlnb.seeds import train_runs
    from rlnb.world import EVAL_SEED

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interventions", nargs="+", default=list(KNOBS), choices=list(KNOBS))
    parser.add_argument("--factors", type=float, nargs="+", default=list(FACTORS),
                        help="multiples of notebook 03's strength")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="training steps (notebook 03's by default)")
    parser.add_argument("--problems", type=int, default=32)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", default=str(HERE.parent / "data" / "sweeps" / "entropy_dose.csv"))
    ns = parser.parse_args(argv)
    keyed = jobs(ns.interventions, ns.factors, ns.seeds, ns.steps)
    runs = train_runs([job for _, job in keyed], ns.workers)

    cfg = entropy_baseline_config("ci", 0)
    held = HeldOut.for_preset("ci", cfg.levels, ns.problems, EVAL_SEED, max_new_tokens=cfg.max_completion_length)
    tag = f"{ns.problems}x{ns.samples}-eval{EVAL_SEED}"
    base_model, tokenizer = load_model(cfg.model)
    models = [({"intervention": "base", "knob": "", "strength": None, "seed": 0, "end_entropy": None}, base_model,
               runs_dir() / NOTEBOOK / "eval" / f"base-{tag}.csv")]
    for (labels, _), run in zip(keyed, runs):
        end = float(tail_means(run.metrics.assign(run=labels["intervention"], seed=labels["seed"]), "entropy").iloc[0, 0])
        models.append(({**labels, "end_entropy": end}, run.model, run.run_dir / f"eval-{tag}.csv"))
    table = labelled_evaluations(held, tokenizer, models, ns.samples)
    Path(ns.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(ns.out, index=False)
    table["pass@1"] = table["correct"] / table["n"]
    summary = table.groupby(["intervention", "strength", "seed"], dropna=False).agg(
        end_entropy=("end_entropy", "first"), pass_at_1=("pass@1", "mean"))
    print(summary.groupby(["intervention", "strength"], dropna=False).mean().round(4).to_string())
    print(f"wrote {ns.out} ({len(table)} rows)")


if __name__ == "__main__":
    main()
