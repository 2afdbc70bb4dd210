"""Several training seeds of one configuration, in one call.

A result that appears on one seed is not a result, so every comparison in the
series trains each configuration over several seeds. On a CPU the tiny model
gains almost nothing from a second thread (``benchmarks/bench_seeds.py``
measures it), so missing runs are trained in parallel processes of one thread
each: two seeds on two cores take about the time of one. Finished runs are
loaded from ``runs/`` as always; an interrupted batch resumes each run from its
last checkpoint.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import pandas as pd

from rlnb.runs import TrainedRun, is_current, load_or_train, run_path
from rlnb.train import RunConfig


@dataclass(frozen=True)
class RunJob:
    """One run to train: its configuration and where it lives (``runs/<notebook>/<name>-<hash>``)."""

    config: RunConfig
    notebook: str
    name: str


def _train_in_worker(job: RunJob) -> str:
    """Train one run in a fresh one-thread process and return its folder (the model stays on disk)."""
    import torch

    torch.set_num_threads(1)
    run = load_or_train(job.config, job.notebook, job.name)
    return str(run.run_dir)


@contextmanager
def _one_thread_children() -> Iterator[None]:
    """Spawned workers read ``OMP_NUM_THREADS`` at start-up: one thread each, however many the parent uses."""
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = old


def default_workers(jobs: Sequence[RunJob]) -> int:
    """One process per core on a CPU; one at a time for GPU runs (they share the device)."""
    if any(job.config.preset == "gpu" for job in jobs):
        return 1
    return max(1, min(len(jobs), os.cpu_count() or 1))


def train_runs(jobs: Sequence[RunJob], workers: int | None = None) -> list[TrainedRun]:
    """Train every missing run of ``jobs`` (``workers`` processes at a time), then load them all, in order.

    Each finished run prints one line, so a long batch shows its progress
    without progress bars in the notebook's output.
    """
    missing = [job for job in jobs if not is_current(job.config, run_path(job.config, job.notebook, job.name))]
    workers = workers or default_workers(missing)
    if len(missing) > 1 and workers > 1:
        with _one_thread_children(), cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(_train_in_worker, job): job for job in missing}
            for done in cf.as_completed(futures):
                job = futures[done]
                done.result()  # re-raise a worker's error here, naming the run below if it fails
                print(f"trained {job.notebook}/{job.name} (seed {job.config.seed})", flush=True)
    return [load_or_train(job.config, job.notebook, job.name) for job in jobs]


def train_seeds(
    make_config: Callable[[int], RunConfig], seeds: Sequence[int], notebook: str, name: str,
    workers: int | None = None,
) -> dict[int, TrainedRun]:
    """``{seed: run}`` for the configuration ``make_config(seed)`` at every seed, trained where missing."""
    if not seeds:
        raise ValueError(f"train_seeds({name!r}) needs at least one seed")
    jobs = [RunJob(make_config(seed), notebook, name) for seed in seeds]
    return dict(zip(seeds, train_runs(jobs, workers)))


def seed_metrics(runs: dict[int, TrainedRun], name: str) -> pd.DataFrame:
    """The runs' tidy metrics stacked, with ``run`` and ``seed`` columns for :func:`rlnb.plots.seed_band`."""
    frames = [run.metrics.assign(run=name, seed=seed) for seed, run in runs.items()]
    return pd.concat(frames, ignore_index=True)
