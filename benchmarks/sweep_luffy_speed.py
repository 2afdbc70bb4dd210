"""What sets LUFFY's speed: the shaping gamma and the traces per group, over seeds (issue #28).

Notebook 02 trains LUFFY with the paper's gamma = 0.1 and one trace per group of 8. This sweep
varies one knob at a time around that point and measures how fast the policy's *own* rollouts
learn the latent levels:

* ``shaping_gamma`` in 0.001, 0.01, 0.1, 1 at one trace per group (0.001 added once 0.01, the edge
  of the first grid, was the fastest);
* ``expert_traces`` in 1, 2, 4 at gamma = 0.1 (the group stays 8: 7, 6 or 4 own rollouts);
* LUFFY without policy shaping (the raw weight p), at one trace per group;

each over ``--seeds`` (three by default), with every other setting notebook 02's
(:func:`rlnb.experiments.luffy_config`). The score is read from the runs' own logs, no extra
sampling: the first step at which the own rollouts' accuracy on the latent levels (mean over the
levels, 5-step rolling mean) reaches 0.1 and 0.5 (empty when a run never does within its steps),
and that accuracy over the last 10 steps. These are *training* accuracies of the policy's own
samples on the training distribution, not held-out pass@1.

    OMP_NUM_THREADS=1 python benchmarks/sweep_luffy_speed.py        # 21 runs of 50 steps, 2 at a time (~10 min)

Writes ``data/sweeps/luffy_speed.csv`` (notebook 02 reads it). Runs are cached under ``$RLNB_RUNS``
(default ``runs/``) in ``sweep_luffy_speed/``; the gamma = 0.1, one-trace point is notebook 02's own
``luffy`` configuration, trained here under this sweep's folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
NOTEBOOK = "sweep_luffy_speed"
PAPER_GAMMA, PAPER_TRACES = 0.1, 1


def points(gammas: list[float], traces: list[int]) -> list[dict]:
    """The sweep's settings: each gamma at the paper's traces, each trace count at the paper's gamma, no shaping."""
    out = [{"knob": "gamma", "shaping_gamma": g, "expert_traces": PAPER_TRACES, "policy_shaping": True} for g in gammas]
    out += [{"knob": "traces", "shaping_gamma": PAPER_GAMMA, "expert_traces": t, "policy_shaping": True}
            for t in traces if t != PAPER_TRACES]
    out.append({"knob": "no shaping", "shaping_gamma": PAPER_GAMMA, "expert_traces": PAPER_TRACES, "policy_shaping": False})
    return out


def score(metrics: pd.DataFrame, latent: tuple[int, ...]) -> dict:
    """Steps to 0.1 and 0.5 own accuracy on the latent levels (5-step rolling mean) and the last-10-step mean."""
    from rlnb.logs import first_at_least

    acc = metrics[metrics.metric == "accuracy"].assign(level=lambda d: pd.to_numeric(d["level"]))
    own = acc[acc.level.isin(latent)].groupby("step")["value"].mean().sort_index()
    smooth = own.rolling(5, min_periods=1).mean()
    return {"steps": int(own.index.max()), "first_step_own_acc_0.1": first_at_least(smooth, 0.1),
            "first_step_own_acc_0.5": first_at_least(smooth, 0.5), "own_acc_last10": own.iloc[-10:].mean()}


def main(argv: list[str] | None = None) -> None:
    from rlnb.experiments import luffy_config
    from rlnb.seeds import RunJob, train_runs
    from rlnb.world import levels_in

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gammas", type=float, nargs="+", default=[0.001, 0.01, 0.1, 1.0])
    parser.add_argument("--traces", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: notebook 02's)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", default=str(HERE.parent / "data" / "sweeps" / "luffy_speed.csv"))
    ns = parser.parse_args(argv)
    settings = points(ns.gammas, ns.traces)
    keyed = []
    for point in settings:
        options = {k: point[k] for k in ("shaping_gamma", "expert_traces", "policy_shaping")}
        for seed in ns.seeds:
            overrides = {} if ns.steps is None else {"max_steps": ns.steps}
            cfg = luffy_config("ci", "luffy", seed, method_options=options, **overrides)
            name = f"{point['knob'].replace(' ', '-')}-g{point['shaping_gamma']}-t{point['expert_traces']}"
            keyed.append(({**point, "seed": seed}, RunJob(cfg, NOTEBOOK, name)))
    runs = train_runs([job for _, job in keyed], ns.workers)
    latent = levels_in("latent")
    table = pd.DataFrame([{**key, **score(run.metrics, latent)} for (key, _), run in zip(keyed, runs)])
    Path(ns.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(ns.out, index=False)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
