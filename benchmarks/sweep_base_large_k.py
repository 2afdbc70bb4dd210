"""The base model's pass@k far beyond notebook 04's n = 128 on the latent levels (issue #27).

On the latent levels the base chooses its procedure a few times in ten thousand tries and is then
almost always right, so its pass@k can only catch up with an RL model's at k in the thousands: where
Yue et al.'s crossover would live, if it exists here. This script samples the shipped base ``--n``
times (4096 by default) on each of notebook 04's held-out problems of the latent levels (the same
problems: :class:`rlnb.evaluate.HeldOut` on every level at ``EVAL_SEED``, the latent ones kept) under
the task prompt, and writes the per-problem counts. The base's direct guesses are a few tokens long,
so its 393,216 completions took about 20 minutes on one core (363-436 s per level).

    OMP_NUM_THREADS=1 python benchmarks/sweep_base_large_k.py          # 3 levels x 32 problems x 4096

Writes ``data/sweeps/base_large_k.csv`` (notebook 04 reads it): one row per problem, the columns of
``HeldOut.evaluate``'s table. The sampling is cached under ``$RLNB_RUNS`` (default ``runs/``) in
``sweep_base_large_k/``, so an interrupted run resumes level by level.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> None:
    from rlnb.evaluate import HeldOut
    from rlnb.models import load_model
    from rlnb.paths import runs_dir
    from rlnb.world import EVAL_SEED, LEVELS, levels_in

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4096, help="completions per problem")
    parser.add_argument("--problems", type=int, default=32, help="held-out problems per level (notebook 04's eval_problems)")
    parser.add_argument("--levels", type=int, nargs="+", default=list(levels_in("latent")))
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--out", default=str(HERE.parent / "data" / "sweeps" / "base_large_k.csv"))
    ns = parser.parse_args(argv)
    model, tokenizer = load_model("tiny", device="cpu")
    every = HeldOut.for_preset("ci", LEVELS, ns.problems, EVAL_SEED).problems  # notebook 04's problems, every level
    tables = []
    for level in ns.levels:
        start = time.perf_counter()
        held = HeldOut(problems=[p for p in every if p.level == level])
        cache = runs_dir() / "sweep_base_large_k" / f"base-{level}x{ns.n}-p{ns.problems}-eval{EVAL_SEED}-seed{ns.seed}.csv"
        table = held.evaluate(model, tokenizer, ns.n, seed=ns.seed, cache=cache, progress=True)
        tables.append(table)
        print(f"{level} digits: {int(table['correct'].sum())} correct of {int(table['n'].sum())} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    table = pd.concat(tables, ignore_index=True)
    Path(ns.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(ns.out, index=False)
    print(table.groupby("level")[["n", "correct"]].sum().to_string())


if __name__ == "__main__":
    main()
