"""Several seeds of one configuration in one call, and their band in one figure."""

import functools
import multiprocessing as mp
import operator
import os
import signal
import threading
import time
from concurrent.futures.process import BrokenProcessPool

import matplotlib

matplotlib.use("Agg")

import pandas as pd
import pytest
import numpy as np

from rlnb import plots
from rlnb.seeds import seed_metrics, train_seeds
from rlnb.train import RunConfig
from rlnb.world import LEVELS

TINY_RUN = dict(max_steps=2, prompts_per_step=2, num_generations=4, max_completion_length=16,
                learning_rate=1e-3, save_steps=2, levels=list(LEVELS[:1]))


def test_seeds_train_in_parallel_processes_and_are_reused():
    runs = train_seeds(lambda s: RunConfig(seed=s, **TINY_RUN), [0, 1], "test", "tiny", workers=2)
    assert list(runs) == [0, 1]
    assert all(run.info["steps"] == 2 for run in runs.values())
    assert runs[0].run_dir != runs[1].run_dir
    entropy = [r.metrics.loc[r.metrics["metric"] == "entropy", "value"].to_numpy() for r in runs.values()]
    assert len(entropy[0]) == 2 and not np.allclose(*entropy), "different seeds must sample differently"
    again = train_seeds(lambda s: RunConfig(seed=s, **TINY_RUN), [0, 1], "test", "tiny")
    assert not any(run.trained for run in again.values())
    table = seed_metrics(runs, "grpo")
    assert set(table["seed"]) == {0, 1} and set(table["run"]) == {"grpo"}


def test_train_seeds_needs_a_seed():
    with pytest.raises(ValueError, match="at least one seed"):
        train_seeds(lambda s: RunConfig(seed=s, **TINY_RUN), [], "test", "tiny")


def test_seed_band_draws_the_mean_and_the_range_across_seeds():
    table = pd.DataFrame({"step": [1, 2, 1, 2, 1, 2], "value": [0.0, 1.0, 2.0, 3.0, 1.0, 2.0],
                          "seed": [0, 0, 1, 1, 2, 2], "run": "luffy"})
    ax = plots.seed_band(table, x="step", y="value")
    line = ax.get_lines()[0]
    assert list(line.get_ydata()) == [1.0, 2.0]
    assert line.get_label() == "luffy (3 seeds)"
    assert line.get_color() == plots.RUN_COLORS["luffy"]
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == 0.0 and band.max() == 3.0


def test_every_run_gets_one_stable_colour():
    assert plots.run_color("luffy") == plots.RUN_COLORS["luffy"]
    assert plots.run_color("lora-r7") == plots.run_color("lora-r7")
    assert plots.run_palette(["sft", "grpo"]) == {"sft": plots.RUN_COLORS["sft"], "grpo": plots.RUN_COLORS["grpo"]}
    levels = plots.level_palette(LEVELS)
    assert set(levels) == set(LEVELS) and len(set(levels.values())) == len(LEVELS)
    import itertools

    from matplotlib.colors import to_rgb

    closest = min(np.linalg.norm(np.subtract(to_rgb(levels[a]), to_rgb(levels[b])))
                  for a, b in itertools.combinations(LEVELS, 2))
    assert closest > 0.35  # the three latent oranges were 0.25 apart in RGB, and read as one


def test_per_seed_levels_and_seed_bars_show_the_mean_and_the_range_across_seeds():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rlnb.evaluate import per_seed_levels
    from rlnb.plots import seed_bars

    def table(correct_l3, correct_l4):
        return pd.DataFrame({"level": [3, 3, 4], "n": [4, 4, 4], "correct": [correct_l3, 0, correct_l4],
                             "steps": [4, 0, 2], "mean_length": [10.0, 2.0, 6.0]})

    rows = per_seed_levels({("grpo", 0): table(4, 1), ("grpo", 1): table(2, 3), ("base", 0): table(0, 0)})
    first = rows[(rows.run == "grpo") & (rows.seed == 0) & (rows.level == 3)].iloc[0]
    assert first["pass@1"] == 0.5 and first["steps_used"] == 0.5 and first["mean_length"] == 6.0
    fig, ax = plt.subplots()
    means = seed_bars(rows, "pass@1", ["base", "grpo"], ax=ax)
    assert means.loc["grpo", 3] == pytest.approx((0.5 + 0.25) / 2) and means.loc["base", 4] == 0
    lines = ax.collections[1].get_segments()  # grpo's range lines, one per level: lowest to highest seed
    assert [tuple(seg[:, 1]) for seg in lines] == [(0.25, 0.5), (0.25, 0.75)]
    plt.close(fig)


def test_seed_values_average_the_asked_levels_per_seed_and_name_a_missing_run():
    from rlnb.evaluate import seed_values

    rows = pd.DataFrame({"run": ["a"] * 4 + ["b"], "seed": [0, 0, 1, 1, 0], "level": [4, 5, 4, 5, 4],
                         "pass@1": [0.2, 0.4, 0.6, 1.0, 0.9]})
    latent = seed_values(rows, "a", [4, 5])
    assert latent.to_dict() == pytest.approx({0: 0.3, 1: 0.8})
    assert seed_values(rows, "a", 5).to_dict() == pytest.approx({0: 0.4, 1: 1.0})
    with pytest.raises(KeyError, match="runs present"):
        seed_values(rows, "c", 4)


def test_held_out_samples_each_level_with_its_own_n_and_caches_each_level(tmp_path):
    from rlnb.evaluate import HeldOut, pass_at_k_bands
    from rlnb.models import load_model

    model, tokenizer = load_model("tiny", device="cpu")
    held = HeldOut.for_preset("ci", levels=(3, 7), size=2, seed=0)
    table = held.evaluate(model, tokenizer, {3: 4, 7: 2}, cache=tmp_path / "base.csv")
    assert table.groupby("level")["n"].unique().map(list).to_dict() == {3: [4], 7: [2]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base-L3.csv", "base-L3.csv.key.json", "base-L7.csv",
                                                          "base-L7.csv.key.json"]
    curves = pass_at_k_bands({"base": table}, n_boot=10)
    assert curves.groupby("level")["k"].max().to_dict() == {3: 4, 7: 2}  # each level's curve up to its own n
    with pytest.raises(ValueError, match=r"no sample count for levels \[7\]"):
        held.evaluate(model, tokenizer, {3: 4})


# ------------------------------------------------------------------ the process pool (issue #30 items 4-6)
# The jobs are builtins wrapped in partials, so the spawned workers import nothing of rlnb and start fast.


def _run(jobs: list, workers: int = 2) -> None:
    from rlnb.seeds import run_in_processes

    run_in_processes(operator.call, jobs, workers, label=lambda job: f"grpo (seed {jobs.index(job)})",
                     folder=lambda job: f"runs/test/grpo-{jobs.index(job)}")


@pytest.mark.usefixtures("ctrl_c_raises")
def test_an_interrupt_cancels_the_queue_and_terminates_the_running_workers():
    jobs = [functools.partial(time.sleep, 60 + i) for i in range(4)]  # two running, two queued: 2 minutes
    timer = threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGINT))  # what Jupyter's Interrupt sends
    start = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        _run(jobs)
    assert time.monotonic() - start < 30, "the interrupt waited for the running or queued jobs"
    assert not mp.active_children(), "a worker outlived the interrupt"


def test_a_failed_job_is_named_with_its_seed_and_folder():
    with pytest.raises(ValueError, match="invalid literal") as info:
        _run([functools.partial(int, "x")], workers=1)
    assert "grpo (seed 0) in runs/test/grpo-0" in " ".join(info.value.__notes__)


def test_a_killed_worker_names_the_lost_runs_and_says_a_rerun_resumes():
    # A third, queued job: Python 3.11's pool spawns a worker only after waking its manager thread for the job, so
    # with two jobs the second worker can start after the manager last listed the workers to watch, and if that
    # worker takes the fatal job its death goes unseen until the other job ends (seen once in CI, under load).
    # The third submission wakes the manager once both workers exist.
    jobs = [functools.partial(os._exit, 1), functools.partial(time.sleep, 60), functools.partial(time.sleep, 0)]
    start = time.monotonic()
    with pytest.raises(BrokenProcessPool, match=r"unfinished: .*runs/test/grpo-0.*grpo \(seed 1\) in runs/test/grpo-1"
                       r".*resumes from its last checkpoint"):
        _run(jobs)
    assert time.monotonic() - start < 30 and not mp.active_children()


def test_repeated_seeds_are_refused_before_anything_trains():
    with pytest.raises(ValueError, match=r"seeds \[1\] more than once"):
        train_seeds(lambda s: RunConfig(seed=s, **TINY_RUN), [0, 1, 1], "test", "tiny")


def test_a_make_config_that_ignores_its_seed_is_refused_before_anything_trains():
    with pytest.raises(ValueError, match=r"make_config\(seed\) must return a RunConfig with that seed.*\{1: 0\}"):
        train_seeds(lambda s: RunConfig(**TINY_RUN), [0, 1], "test", "tiny")


def test_a_worker_that_dies_while_jobs_are_submitted_still_names_every_lost_run(monkeypatch):
    """Under load the first worker can die before the last job is submitted: submit() itself raises then."""
    import concurrent.futures as cf

    real, calls = cf.ProcessPoolExecutor.submit, []

    def submit(self, fn, *args, **kwargs):
        calls.append(fn)
        if len(calls) == 2:
            raise BrokenProcessPool("A child process terminated abruptly, the process pool is not usable anymore")
        return real(self, fn, *args, **kwargs)

    monkeypatch.setattr(cf.ProcessPoolExecutor, "submit", submit)
    with pytest.raises(BrokenProcessPool, match=r"unfinished: grpo \(seed 0\).*grpo \(seed 1\) in runs/test/grpo-1"):
        _run([functools.partial(time.sleep, 60), functools.partial(time.sleep, 61)])
    assert not mp.active_children()
