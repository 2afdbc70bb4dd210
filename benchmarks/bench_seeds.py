"""Wall time of training several seeds: one after another with all threads, or in parallel one-thread processes.

Every comparison in the series trains ≥ 3 seeds, so how seeds share the cores
decides whether the ``ci`` preset fits its budget. The tiny model is too small
for intra-op parallelism to pay, so one process per core should win; this
measures it on notebook 01's zero-RL configuration shortened to ``--steps``.

    python benchmarks/bench_seeds.py --seeds 2 --steps 30

Each mode trains into its own temporary ``RLNB_RUNS``, so nothing is reused.
Prints one markdown row per mode.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import torch

SERIAL = """
import torch
from rlnb.experiments import zero_rl_config
from rlnb.runs import load_or_train
torch.set_num_threads({threads})
for seed in range({seeds}):
    load_or_train(zero_rl_config("ci", seed=seed, max_steps={steps}, save_steps={steps}), "bench", "seed")
"""

PARALLEL = """
from rlnb.experiments import zero_rl_config
from rlnb.seeds import train_seeds
train_seeds(lambda s: zero_rl_config("ci", seed=s, max_steps={steps}, save_steps={steps}), range({seeds}),
            "bench", "seed", workers={workers})
"""


def timed(code: str, threads: int) -> float:
    """Seconds to run ``code`` in a fresh interpreter with ``threads`` OpenMP threads and fresh run folders."""
    with tempfile.TemporaryDirectory() as runs:
        env = {**os.environ, "RLNB_RUNS": runs, "OMP_NUM_THREADS": str(threads)}
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    ns = parser.parse_args()
    cores = os.cpu_count() or 1
    args = dict(seeds=ns.seeds, steps=ns.steps)
    rows = [
        (f"serial, {cores} threads", timed(SERIAL.format(threads=cores, **args), cores)),
        ("serial, 1 thread", timed(SERIAL.format(threads=1, **args), 1)),
        (f"parallel, {min(cores, ns.seeds)} processes x 1 thread",
         timed(PARALLEL.format(workers=min(cores, ns.seeds), **args), cores)),
    ]
    print(f"{ns.seeds} seeds x {ns.steps} GRPO steps (zero-RL ci configuration), {cores} cores, "
          f"torch {torch.__version__}")
    print("| mode | wall s | s per seed-step |\n|---|---|---|")
    for mode, seconds in rows:
        print(f"| {mode} | {seconds:.1f} | {seconds / (ns.seeds * ns.steps):.3f} |")


if __name__ == "__main__":
    main()
