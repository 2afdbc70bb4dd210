"""Learning rate against LoRA rank, under two conventions for lora_alpha: the sweep behind notebook 05's rates.

Notebook 05 compares LoRA ranks with full fine-tuning. With one learning rate for every rank and Tina's
``alpha = 4 r`` (update scale alpha / r fixed), a first notebook-05 run saw rank 32 collapse where ranks 2
and 8 learned: the comparison measured a learning-rate effect, not a capacity effect. This sweep measures
the best rate per rank under

* ``alpha = 4 r`` (Tina's convention: scale alpha / r = 4 for every rank), and
* ``alpha = 32`` for every rank (the convention of Thinking Machines' "LoRA Without Regret" guide and of
  TRL's LoRA documentation based on it, scale 32 / r), under which the guide reports an optimal rate
  nearly independent of rank,

plus full fine-tuning, each on notebook 05's task (:func:`rlnb.experiments.lora_rl_config`) for
``--steps`` steps. The score is the training accuracy on the easiest level (3 digits) over the last 10
steps (mean over seeds), read from the runs' own logs: no extra sampling. (The mean over both trained
levels is also written, but it jumps with whether 4 digits has started to transfer, which in 30 steps is
a threshold event, not a measure of the rate.)

    OMP_NUM_THREADS=1 python benchmarks/sweep_lora_lr.py            # 82 runs of 30 steps, 2 at a time (~21 min)

Writes ``data/sweeps/lora_lr_sweep.csv`` (notebook 05 plots it) and prints the best rate per (convention, rank).
Runs are cached under ``$RLNB_RUNS`` (default ``runs/``) in ``sweep_lora_lr/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
NOTEBOOK = "sweep_lora_lr"


def jobs(ranks: list[int], lora_rates: list[float], full_rates: list[float], seeds: list[int], steps: int):
    """One :class:`rlnb.seeds.RunJob` per (convention, rank, rate, seed), and full fine-tuning's."""
    from rlnb.experiments import LORA_DROPOUT, lora_rl_config
    from rlnb.lora import lora_options
    from rlnb.seeds import RunJob

    out = []
    for seed in seeds:
        for lr in full_rates:
            out.append((("full", None, None, lr, seed), RunJob(lora_rl_config("ci", seed, None, lr, max_steps=steps),
                                                         NOTEBOOK, "full")))
        for convention, alpha_of in (("alpha=4r", lambda r: 4.0 * r), ("alpha=32", lambda r: 32.0)):
            for rank in ranks:
                for lr in lora_rates:
                    cfg = lora_rl_config("ci", seed, rank, lr, max_steps=steps,
                                         lora=lora_options(rank, alpha_of(rank), LORA_DROPOUT))
                    out.append(((convention, rank, alpha_of(rank), lr, seed), RunJob(cfg, NOTEBOOK, f"r{rank}-{convention}")))
    return out


def main(argv: list[str] | None = None) -> None:
    from rlnb.seeds import train_runs

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 4, 32])
    parser.add_argument("--lora-rates", type=float, nargs="+", default=[3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2])
    parser.add_argument("--full-rates", type=float, nargs="+", default=[5e-5, 1e-4, 2e-4, 5e-4, 1e-3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", default=str(HERE.parent / "data" / "sweeps" / "lora_lr_sweep.csv"))
    ns = parser.parse_args(argv)
    keyed = jobs(ns.ranks, ns.lora_rates, ns.full_rates, ns.seeds, ns.steps)
    runs = train_runs([job for _, job in keyed], ns.workers)
    rows = []
    for (convention, rank, alpha, lr, seed), run in zip((key for key, _ in keyed), runs):
        m = run.metrics
        steps = m["step"].max()
        acc = m[m.metric == "rewards/accuracy_reward/mean"].sort_values("step")["value"]
        per_level = m[m.metric == "accuracy"].assign(level=lambda d: pd.to_numeric(d["level"]))
        easy = per_level[(per_level.level == per_level.level.min()) & (per_level.step > steps - 10)]["value"]
        rows.append({"convention": convention, "rank": rank, "learning_rate": lr, "seed": seed, "alpha": alpha,
                     "accuracy_last10": acc.iloc[-10:].mean(), "easy_level_accuracy_last10": easy.mean(),
                     "s_per_step": run.info["seconds_per_step"]})
    table = pd.DataFrame(rows)
    Path(ns.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(ns.out, index=False)
    score = table.groupby(["convention", "rank", "learning_rate"], dropna=False)["easy_level_accuracy_last10"].mean()
    print(score.unstack("learning_rate").round(3).to_string())
    best = score.groupby(["convention", "rank"], dropna=False).idxmax().map(lambda key: key[2])
    print("\nbest rate per (convention, rank):\n" + best.to_string())


if __name__ == "__main__":
    main()
