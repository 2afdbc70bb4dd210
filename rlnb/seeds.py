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
import functools
import multiprocessing as mp
import os
import sys
from collections import Counter
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence, TypeVar

import pandas as pd

from rlnb.paths import display_path
from rlnb.runs import IMPORTED_SOURCES, TrainedRun, check_sources, is_current, load_or_train, run_path
from rlnb.train import RunConfig

Job = TypeVar("Job")


@dataclass(frozen=True)
class RunJob:
    """One run to train: its configuration and where it lives (``runs/<notebook>/<name>-<hash>``)."""

    config: RunConfig
    notebook: str
    name: str


def _train_in_worker(job: RunJob, parent_sources: str) -> str:
    """Train one run in a fresh one-thread process and return its folder (the model stays on disk).

    The worker imports ``rlnb`` from disk afresh: ``parent_sources`` (the parent's import-time hash)
    makes it refuse to train when the files changed since the parent imported them, so every run of
    a batch comes from the code the parent runs.
    """
    import torch

    check_sources(parent_sources)
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
    check_sources()  # before any worker starts: they would all refuse, each with a longer story
    missing = [job for job in jobs if not is_current(job.config, run_path(job.config, job.notebook, job.name))]
    workers = workers or default_workers(missing)
    if len(missing) > 1 and workers > 1:
        with _one_thread_children():
            run_in_processes(functools.partial(_train_in_worker, parent_sources=IMPORTED_SOURCES), missing, workers,
                             _label, _folder)
    return [load_or_train(job.config, job.notebook, job.name) for job in jobs]


def _label(job: RunJob) -> str:
    """How progress lines and errors name a run."""
    return f"{job.notebook}/{job.name} (seed {job.config.seed})"


def _folder(job: RunJob) -> str:
    """How errors name a run's folder: relative to the runs folder, as every message about runs does."""
    return display_path(run_path(job.config, job.notebook, job.name))


def run_in_processes(work: Callable[[Job], object], jobs: Sequence[Job], workers: int,
                     label: Callable[[Job], str], folder: Callable[[Job], str]) -> None:
    """Call ``work(job)`` for every job in ``workers`` spawned processes; print each finished job's ``label``.

    A job's exception is re-raised here with a note naming the job and its folder. A worker that
    dies (the OOM killer, a signal) breaks the whole pool and stops its siblings too: the error
    lists every unfinished job, which a rerun resumes from its last checkpoint. An interrupt
    (Ctrl-C, Jupyter's Interrupt) or any other error cancels the queued jobs and terminates the
    running workers before it propagates, rather than waiting for the whole queue to train.
    """
    pool = cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))
    futures: dict[cf.Future, Job] = {}
    try:
        for job in jobs:  # inside the try: a worker can die while later jobs are still being submitted
            futures[pool.submit(work, job)] = job
        for done in cf.as_completed(futures):
            job = futures[done]
            try:
                done.result()
            except BrokenProcessPool:
                raise
            except Exception as err:
                err.add_note(f"while training {label(job)} in {folder(job)}")
                raise
            print(f"trained {label(job)}", flush=True)
    except BaseException as err:
        _stop(pool)
        if not isinstance(err, BrokenProcessPool):
            raise
        finished = [job for future, job in futures.items() if _succeeded(future)]
        lost = "; ".join(f"{label(job)} in {folder(job)}" for job in jobs if not any(job is done for done in finished))
        hint = _SCRIPT_HINT if _called_from_script() else ""
        raise BrokenProcessPool(
            "a worker process died (killed by the OOM killer or a signal?) and the pool stopped the others; "
            f"unfinished: {lost}. Rerun the same call: each run resumes from its last checkpoint{hint}") from err
    pool.shutdown(wait=True)


_SCRIPT_HINT = (". In a script, the call must be under `if __name__ == \"__main__\":` (each spawned worker "
                "imports the script again, and an unguarded call there starts workers of its own)")


def _succeeded(future: cf.Future) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


def _called_from_script() -> bool:
    """Whether ``__main__`` is a Python file (not a notebook or a REPL): a missing main guard is a likely cause."""
    return str(getattr(sys.modules["__main__"], "__file__", "")).endswith(".py")


def _stop(pool: cf.ProcessPoolExecutor) -> None:
    """Cancel the queued jobs and terminate the running workers (their runs resume from checkpoints)."""
    workers = list((pool._processes or {}).values())  # no public handle on the workers before Python 3.14
    manager = pool._executor_manager_thread
    pool.shutdown(wait=False, cancel_futures=True)
    for process in workers:
        process.terminate()
    for process in workers:
        process.join()
    if manager is not None:  # it reaps the same workers: once it is done, none of them reads as alive
        manager.join(timeout=30)


def train_seeds(
    make_config: Callable[[int], RunConfig], seeds: Sequence[int], notebook: str, name: str,
    workers: int | None = None,
) -> dict[int, TrainedRun]:
    """``{seed: run}`` for the configuration ``make_config(seed)`` at every seed, trained where missing.

    Repeated seeds and a ``make_config`` that ignores its seed are refused before anything trains:
    either would train (or lock) one run folder for several seeds.
    """
    if isinstance(seeds, str):  # papermill's -p passes text: `-p seeds "[0, 1]"` arrives as a string
        raise ValueError(f"train_seeds({name!r}) got seeds as the text {seeds!r}, not a list of integers: "
                         "with papermill pass lists as YAML, `-y 'seeds: [0, 1, 2]'`")
    if not seeds:
        raise ValueError(f"train_seeds({name!r}) needs at least one seed")
    repeated = sorted(seed for seed, count in Counter(seeds).items() if count > 1)
    if repeated:
        raise ValueError(f"train_seeds({name!r}) got seeds {repeated} more than once: list each seed once")
    jobs = [RunJob(make_config(seed), notebook, name) for seed in seeds]
    wrong = {seed: job.config.seed for seed, job in zip(seeds, jobs) if job.config.seed != seed}
    if wrong:
        raise ValueError(f"train_seeds({name!r}): make_config(seed) must return a RunConfig with that seed, but "
                         f"gave {{seed: config.seed}} = {wrong}; pass it on, e.g. `lambda s: RunConfig(seed=s, ...)`")
    return dict(zip(seeds, train_runs(jobs, workers)))


def seed_metrics(runs: dict[int, TrainedRun], name: str) -> pd.DataFrame:
    """The runs' tidy metrics stacked, with ``run`` and ``seed`` columns for :func:`rlnb.plots.seed_band`."""
    frames = [run.metrics.assign(run=name, seed=seed) for seed, run in runs.items()]
    return pd.concat(frames, ignore_index=True)
