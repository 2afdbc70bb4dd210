"""Sample-and-verify evaluation of a model on held-out problems.

The result is a per-problem table of correct counts (and how often the model
wrote steps), so pass@k curves, bootstrap bands and coverage tables are all
recomputed from it without sampling again. :class:`HeldOut` gives the tiny
world's problems and a MATH-style evaluation set (the ``gpu`` preset) the same
table, so a notebook's analysis cells run unchanged under every preset.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlnb.metrics import pass_at_k, reward_spread
from rlnb.models import load_model, model_fingerprint
from rlnb.paths import PROJECT_ROOT, display_path, write_atomic
from rlnb.rollout import Rollouts, sample
from rlnb.verify import parse_completion
from rlnb.world import STEP_SEP, Problem, expert_trace, trace_prefix, worked_prompt, works_the_problem

MAX_NEW_TOKENS = 80
"""Room for a 7-digit expert trace (7 steps of up to 9 characters, the answer, EOS)."""
HINT_FORMS = {"hint-25": 0.25, "hint-50": 0.5}
"""Hinted evaluation forms (notebook 07): the task prompt with that share of the expert trace's steps after it
(:func:`rlnb.world.trace_prefix`), the hint a guided run trained with, here given at test time."""
PROMPT_FORMS = ("task", "worked", "first-step", *HINT_FORMS)
"""``task``: what the model chooses to do (:attr:`Problem.prompt`); ``worked``: what it knows
(:func:`rlnb.world.worked_prompt`, the form under which the base learned its procedure); ``first-step``:
the task prompt with the expert's first step forced after it (:func:`forced_start`), so that the choice
to work the problem is made for the model and the rest is its own; ``hint-25`` and ``hint-50``: the same with
that share of the trace's steps (:data:`HINT_FORMS`)."""
WORLD_TABLE_COLUMNS = ("level", "a", "b", "n", "correct", "steps", "steps_correct", "mean_length")
"""The columns of :func:`evaluate`'s per-problem table (see :func:`score_rollouts`)."""
DATASET_TABLE_COLUMNS = ("problem", "level", "n", "correct", "steps", "mean_length", "answer")
"""The columns of :func:`evaluate_dataset`'s per-problem table."""
_COUNT_COLUMNS = ("n", "correct", "steps")
"""Columns of whole counts in both tables: a cache with anything else there was cut short or is not ours."""


def prompt_text(problem: Problem, form: str = "task") -> str:
    """The problem's prompt in ``form`` (one of :data:`PROMPT_FORMS`)."""
    if form == "task":
        return problem.prompt
    if form == "worked":
        return worked_prompt(problem)
    if form == "first-step" or form in HINT_FORMS:
        return problem.prompt + forced_start(problem, form)
    raise ValueError(f"unknown prompt form {form!r}: choose one of {PROMPT_FORMS}")


def forced_start(problem: Problem, form: str) -> str:
    """The text a prompt ``form`` writes into the completion for the model: the expert's first step and its
    separator (``7+5+0=12;``) for ``first-step``, nothing for the others. A completion is judged with it."""
    trace = expert_trace(problem.a, problem.b)
    if form in HINT_FORMS:
        return trace_prefix(trace, HINT_FORMS[form])
    if form != "first-step":
        return ""
    return trace.split(STEP_SEP)[0] + STEP_SEP


def score_rollouts(problems: Sequence[Problem], rollouts: Rollouts, forced: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-problem table: ``level, a, b, n, correct, steps, steps_correct, mean_length`` from a flat rollout list.

    ``forced[i]``: text the prompt wrote at the start of problem i's completions (:func:`forced_start`); each
    completion is judged with it in front, its length counts the model's own tokens only.

    ``steps`` counts the completions that work the problem's own digit columns before answering
    (:func:`rlnb.world.works_the_problem`), and ``steps_correct`` those that did *and* were right:
    with ``steps`` it says how reliable the procedure is where the model uses it.
    """
    idx = rollouts.prompt_index
    texts = [t if forced is None else forced[i] + t for t, i in zip(rollouts.texts, idx)]
    parsed = [parse_completion(t) for t in texts]
    correct = np.array([p.answer == problems[i].answer for p, i in zip(parsed, idx)])
    steps = np.array([works_the_problem(t, problems[i].a, problems[i].b) for t, i in zip(texts, idx)])
    lengths = rollouts.lengths
    rows = []
    for i, prob in enumerate(problems):
        sel = idx == i
        rows.append(
            {
                "level": prob.level,
                "a": prob.a,
                "b": prob.b,
                "n": int(sel.sum()),
                "correct": int(correct[sel].sum()),
                "steps": int(steps[sel].sum()),
                "steps_correct": int((steps & correct)[sel].sum()),
                "mean_length": float(lengths[sel].mean()),
            }
        )
    return pd.DataFrame(rows)


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[Problem],
    n: int,
    *,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 1024,
    cache: str | Path | None = None,
    progress: bool = True,
    prompt_form: str = "task",
) -> pd.DataFrame:
    """Sample ``n`` completions per problem and count the correct ones.

    ``prompt_form="worked"`` samples under the worked-solution prompt instead
    of the task prompt (see :data:`PROMPT_FORMS`). With ``cache`` (a CSV path)
    an existing table is returned (see :func:`cached_table`) and a new one is
    written there, so re-running a notebook does not sample again.

    Raises:
        ValueError: if ``problems`` is empty (there would be no table to analyse).
    """
    if len(problems) == 0:
        raise ValueError("evaluate got no problems: an empty table has no per-problem rows to compute pass@k from")
    prompts = [prompt_text(p, prompt_form) for p in problems]
    rows = [(p.level, p.a, p.b) for p in problems]

    def run() -> pd.DataFrame:
        rollouts = sample(model, tokenizer, prompts, n, max_new_tokens=MAX_NEW_TOKENS,
                          temperature=temperature, batch_size=batch_size, seed=seed, progress=progress)
        return score_rollouts(problems, rollouts, [forced_start(p, prompt_form) for p in problems])

    def matches(table: pd.DataFrame) -> str:
        found = list(table[["level", "a", "b"]].itertuples(index=False, name=None))
        if found != rows:
            return f"holds other problems ({_levels_of(found)}, {len(found)} rows) than asked ({_levels_of(rows)}, {len(rows)})"
        return _sample_count_problem(table, n)

    key = None
    if cache is not None:
        key = {"model": model_fingerprint(model), "problems": _digest(prompts), "levels": sorted({r[0] for r in rows}),
               "n": n, "seed": seed, "temperature": temperature, "prompt_form": prompt_form,
               "max_new_tokens": MAX_NEW_TOKENS}
    return cached_table(cache, run, WORLD_TABLE_COLUMNS, key=key, matches=matches)


def _digest(items: Sequence[Any]) -> str:
    """Short hash of a list of JSON-able items: what a cache key stores in place of the problems themselves."""
    return hashlib.sha256(json.dumps(list(items), default=str).encode()).hexdigest()[:16]


def _levels_of(rows: Sequence[tuple]) -> str:
    return f"levels {sorted({int(r[0]) for r in rows})}"


def _sample_count_problem(table: pd.DataFrame, n: int) -> str:
    """What is wrong with ``table``'s sample counts for a request of ``n`` samples per problem ('' if nothing)."""
    counts = sorted(int(x) for x in table["n"].unique())
    return "" if counts == [n] else f"has {counts} samples per problem, not the {n} asked"


CACHE_KEY_SUFFIX = ".key.json"
"""A cache ``table.csv`` keeps what determines it in ``table.csv.key.json`` beside it."""


def cache_key_path(cache: str | Path) -> Path:
    """The file beside ``cache`` that records its key (see :func:`cached_table`)."""
    return Path(f"{cache}{CACHE_KEY_SUFFIX}")


def cached_table(
    cache: str | Path | None, compute: Callable[[], pd.DataFrame], columns: Sequence[str], *,
    key: Mapping[str, Any] | None = None, matches: Callable[[pd.DataFrame], str] | None = None,
) -> pd.DataFrame:
    """``compute()``, or the table cached at ``cache`` when it is one for this request (written after a compute).

    Evaluation tables are the expensive part of re-running a notebook, but a
    path does not say what made a table: the same ``eval/base.csv`` may be asked
    for with another model, problems or sample count. So ``key`` (what determines
    the table: model fingerprint, problems, ``n``, seed, prompt form ...) is kept
    in :func:`cache_key_path` beside it, and ``matches(table)`` checks the rows
    against the request ('' when they fit); a cache without that key, with another
    key or rows that do not fit is recomputed and overwritten, with one printed line.
    A file that is no such table at all (unreadable, other ``columns``, no rows,
    counts that are not whole numbers or impossible, as after an interrupted or
    foreign write) is recomputed too, with a warning. Both files are written
    atomically, the key last, so an interrupted write never leaves a table that
    passes for another request.
    """
    path = None if cache is None else Path(cache)
    if path is not None and path.exists():
        cached, problem = _read_table(path, columns)
        if cached is None:
            warnings.warn(f"evaluation cache {path} {problem}: recomputing and overwriting it", stacklevel=3)
        else:
            problem = _key_problem(path, key) or (matches(cached) if matches is not None else "")
            if not problem:
                return cached
            print(f"evaluation cache {display_path(path)} {problem}: recomputing it")
    table = compute()
    if path is not None:
        _write_cache(path, table, key)
    return table


def _key_problem(path: Path, key: Mapping[str, Any] | None) -> str:
    """How the key recorded beside ``path`` differs from ``key`` ('' when it is the same, or none is asked)."""
    if key is None:
        return ""
    try:
        recorded = json.loads(cache_key_path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "has no readable key (made by older code, or its write was interrupted)"
    wanted = json.loads(json.dumps(dict(key), default=str))  # what the file would hold: tuples as lists
    if not isinstance(recorded, dict):
        recorded = {}
    differing = [f"{name} {recorded.get(name)} -> {value}" for name, value in wanted.items()
                 if recorded.get(name) != value]
    return f"was made for another request ({'; '.join(differing)})" if differing else ""


def _write_cache(path: Path, table: pd.DataFrame, key: Mapping[str, Any] | None) -> None:
    """Write ``table`` and its key, each whole or not at all: the old key goes first, the new one last."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key_path = cache_key_path(path)
    key_path.unlink(missing_ok=True)
    write_atomic(path, table.to_csv(index=False))
    if key is not None:
        write_atomic(key_path, json.dumps(dict(key), indent=1, sort_keys=True, default=str))


def _read_table(path: Path, columns: Sequence[str]) -> tuple[pd.DataFrame | None, str]:
    """The per-problem table in the CSV at ``path``, or None and what is wrong with the file."""
    try:
        # answers stay text: "1.50" and "579" must read back as written, to compare with the data set's
        table = pd.read_csv(path, converters={"answer": str} if "answer" in columns else None)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        return None, f"cannot be read as CSV ({type(err).__name__}: {err})"
    if list(table.columns) != list(columns):
        return None, f"has the columns {list(table.columns)}, not {list(columns)}"
    if table.empty:
        return None, "has no rows"
    not_counts = [column for column in _COUNT_COLUMNS if not pd.api.types.is_integer_dtype(table[column])]
    if not_counts:
        return None, f"has values that are not whole counts in {not_counts}"
    impossible = _impossible_counts(table)
    if impossible:
        return None, f"has impossible counts ({impossible})"
    return table, ""


def _impossible_counts(table: pd.DataFrame) -> str:
    """Rows whose counts cannot come from sampling (no samples, or more correct than sampled), described."""
    n = table["n"]
    bad = {"n < 1": n < 1, "correct < 0": table["correct"] < 0, "correct > n": table["correct"] > n,
           "steps < 0": table["steps"] < 0, "steps > n": table["steps"] > n}
    if "steps_correct" in table:
        bad["steps_correct outside [0, min(correct, steps)]"] = (
            (table["steps_correct"] < 0) | (table["steps_correct"] > table[["correct", "steps"]].min(axis=1)))
    return "; ".join(f"{what} in {int(rows.sum())} rows" for what, rows in bad.items() if rows.any())


def summarize(table: pd.DataFrame, ks: Sequence[int] = (1,)) -> pd.DataFrame:
    """Per-level pass@k (unbiased, mean over problems) and the fraction of completions with steps."""
    out = []
    for level, grp in table.groupby("level"):
        row = {"level": level, "problems": len(grp), "steps_used": grp["steps"].sum() / grp["n"].sum()}
        for k in ks:
            row[f"pass@{k}"] = float(np.mean(pass_at_k(grp["n"].to_numpy(), grp["correct"].to_numpy(), k)))
        out.append(row)
    return pd.DataFrame(out)


SWEEP_COLUMNS = ("level", "a", "b", "n", "correct")
"""The per-problem columns a sweep table keeps of :meth:`HeldOut.evaluate`'s (with its models' labels beside them)."""


def labelled_evaluations(
    held: "HeldOut", tokenizer: PreTrainedTokenizerBase, models: Sequence[tuple[Mapping[str, Any], PreTrainedModel, Path]],
    n: int,
) -> pd.DataFrame:
    """One per-problem table of every ``(labels, model, cache)`` evaluated on ``held`` with ``n`` samples each, its
    rows carrying the model's labels as columns: the table a ``benchmarks/sweep_*.py`` script writes to
    ``data/sweeps/``, so that its notebook computes pass@k and paired intervals from the counts itself."""
    return pd.concat([held.evaluate(model, tokenizer, n, seed=0, cache=cache)[list(SWEEP_COLUMNS)].assign(**labels)
                      for labels, model, cache in models], ignore_index=True)


def per_seed_levels(tables: dict[tuple[str, int], pd.DataFrame], ks: Sequence[int] = ()) -> pd.DataFrame:
    """Held-out pass@1, steps written and length per ``(run, seed)`` and level, from per-problem tables.

    ``tables`` maps ``(run name, training seed)`` to an :func:`evaluate` table. One row per
    run, seed and level: ``pass@1`` (correct over samples), ``steps_used``, ``mean_length``, and
    ``pass@k`` (unbiased, mean over problems) for each k of ``ks``;
    :func:`rlnb.plots.seed_bars` draws it with a range across seeds.
    """
    rows = []
    for (run, seed), table in tables.items():
        for level, grp in table.groupby("level"):
            samples = grp["n"].sum()
            row = {"run": run, "seed": seed, "level": level, "pass@1": grp["correct"].sum() / samples,
                   "steps_used": grp["steps"].sum() / samples, "mean_length": float(grp["mean_length"].mean())}
            for k in ks:
                row[f"pass@{k}"] = float(np.mean(pass_at_k(grp["n"].to_numpy(), grp["correct"].to_numpy(), k)))
            rows.append(row)
    return pd.DataFrame(rows)


def pooled_pass1(table: pd.DataFrame, by: Sequence[str]) -> pd.Series:
    """pass@1 as correct completions over samples, per group of ``by`` (e.g. run, seed, level of a sweep table)."""
    sums = table.groupby(list(by))[["correct", "n"]].sum()
    return (sums["correct"] / sums["n"]).rename("pass@1")


def zero_spread(table: pd.DataFrame, group_sizes: Sequence[int]) -> pd.DataFrame:
    """``level x group size``: the expected fraction of GRPO groups whose rewards are all equal (no gradient).

    From a per-problem :func:`evaluate` table (c correct of n samples per problem), the mean over
    problems of 1 - :func:`rlnb.metrics.reward_spread`; every group size must be at most the problems' n.
    """
    too_big = [g for g in group_sizes if g > int(table["n"].min())]
    if too_big:
        raise ValueError(f"group sizes {too_big} exceed the {int(table['n'].min())} samples per problem: "
                         "evaluate with at least as many samples as the largest group")
    out = {g: {level: float(np.mean(1.0 - reward_spread(grp["n"].to_numpy(), grp["correct"].to_numpy(), g)))
               for level, grp in table.groupby("level")} for g in group_sizes}
    return pd.DataFrame(out).rename_axis(index="level", columns="group size")


def seed_band_table(values: Mapping[str, pd.DataFrame], digits: int | Mapping[str, int] = 3) -> pd.DataFrame:
    """One ``run x column`` table of "mean [lowest, highest seed]" strings from ``run x seed`` tables.

    ``values`` maps a column name to a table with one row per run and one column per seed (for
    example :func:`rlnb.logs.tail_means`, or :func:`seed_values` stacked); ``digits`` rounds each column.
    """
    out = {}
    for column, table in values.items():
        d = digits if isinstance(digits, int) else digits[column]
        out[column] = table.apply(lambda row: f"{row.mean():.{d}f} [{row.min():.{d}f}, {row.max():.{d}f}]", axis=1)
    return pd.DataFrame(out)


def seed_values(table: pd.DataFrame, run: str, levels: int | Sequence[int], column: str = "pass@1") -> pd.Series:
    """One value per training seed of ``run`` from a :func:`per_seed_levels` table, averaged over ``levels``.

    The unit a notebook plots across seeds; comparisons of per-problem tables go through
    :func:`rlnb.stats.paired_difference`, of per-run values through :func:`rlnb.stats.seed_difference`.
    Raises KeyError naming the run and levels when the table has no such rows.
    """
    wanted = [levels] if isinstance(levels, (int, np.integer)) else list(levels)
    rows = table[(table["run"] == run) & table["level"].isin(wanted)]
    if rows.empty:
        raise KeyError(f"no rows for run {run!r} at levels {wanted}; runs present: {sorted(table['run'].unique())}")
    return rows.groupby("seed")[column].mean()


def render_prompt(prompt: Any, tokenizer: PreTrainedTokenizerBase) -> str:
    """A prompt as text: conversational prompts go through the tokenizer's chat template."""
    if isinstance(prompt, str):
        return prompt
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(
            f"tokenizer {tokenizer.name_or_path!r} has no chat template, but the prompts are conversations: "
            "use the model's instruct/chat tokenizer or plain-text prompts"
        )
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def evaluate_dataset(
    model: PreTrainedModel | str,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Any,
    n: int,
    *,
    task: str = "math",
    max_new_tokens: int = 1024,
    temperature: float = 0.6,
    top_p: float = 0.95,
    seed: int = 0,
    batch_size: int = 64,
    backend: str = "hf",
    cache: str | Path | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Per-problem correct counts on a data set with ``prompt`` and ``answer`` columns (any task).

    The defaults are the evaluation settings of Yue et al. and Tina (temperature
    0.6, top-p 0.95). ``model`` may be a folder or hub id for the vLLM backend.
    ``cache`` works as in :func:`evaluate`.
    """
    from rlnb.tasks import get_task

    if len(dataset) == 0:
        raise ValueError("evaluate_dataset got an empty data set: there are no problems to sample and grade")
    judge = get_task(task)
    raw_prompts = list(dataset["prompt"])
    prompts = [render_prompt(p, tokenizer) for p in raw_prompts]
    answers = list(dataset["answer"])
    levels = dataset_levels(dataset)

    def run() -> pd.DataFrame:
        rollouts = sample(model, tokenizer, prompts, n, max_new_tokens=max_new_tokens, temperature=temperature,
                          top_p=top_p, batch_size=batch_size, seed=seed, backend=backend, progress=progress)
        idx = rollouts.prompt_index
        correct = np.array([judge.is_correct(t, answers[i]) for t, i in zip(rollouts.texts, idx)])
        steps = np.array([judge.wrote_steps(t, raw_prompts[i]) for t, i in zip(rollouts.texts, idx)])
        size = len(prompts)
        return pd.DataFrame({
            "problem": range(size),
            "level": levels,
            "n": n,
            "correct": np.bincount(idx, weights=correct, minlength=size).astype(int),
            "steps": np.bincount(idx, weights=steps, minlength=size).astype(int),
            "mean_length": np.bincount(idx, weights=rollouts.lengths, minlength=size) / n,
            "answer": answers,
        })

    def matches(table: pd.DataFrame) -> str:
        if list(table["answer"]) != [str(a) for a in answers] or list(table["level"]) != levels:
            rows = list(zip(table["level"]))
            return (f"holds other problems ({_levels_of(rows)}, {len(table)} rows) than asked "
                    f"({_levels_of(list(zip(levels)))}, {len(answers)})")
        return _sample_count_problem(table, n)

    key = None
    if cache is not None:
        key = {"model": model_fingerprint(model), "problems": _digest(prompts), "answers": _digest(answers),
               "levels": sorted(set(levels)), "n": n, "seed": seed, "temperature": temperature, "top_p": top_p,
               "task": task, "backend": backend}
    return cached_table(cache, run, DATASET_TABLE_COLUMNS, key=key, matches=matches)


def dataset_levels(dataset: Any) -> list[int]:
    """Each row's level as an integer (:func:`level_number`); 0 for every row of a data set without a level column."""
    if "level" not in getattr(dataset, "column_names", []):
        return [0] * len(dataset)
    return [level_number(x) for x in dataset["level"]]


def level_number(value: Any) -> int:
    """A difficulty level as an integer: the world's ``3``, MATH's ``"Level 3"``; 0 when there is none."""
    if isinstance(value, (int, np.integer)):
        return int(value)
    digits = re.findall(r"\d+", str(value)) if value is not None else []
    return int(digits[0]) if digits else 0


def pass_at_k_bands(
    tables: dict[str, pd.DataFrame], ks: Sequence[int] | None = None, seed: int = 0, n_boot: int = 1000
) -> pd.DataFrame:
    """Bootstrap pass@k curves for several models' per-problem tables, per level.

    Returns one row per (model, level, k) with ``pass_at_k, lo, hi``. Each level
    of a table must have been sampled with one ``n`` (levels may differ, see
    :meth:`HeldOut.evaluate`); with ``ks=None`` a level's curve runs up to its own ``n``.
    """
    from rlnb.metrics import bootstrap_pass_at_k

    frames = []
    for name, table in tables.items():
        for level, grp in table.groupby("level"):
            n = int(grp["n"].iloc[0])
            if (grp["n"] != n).any():
                raise ValueError(f"table {name!r} mixes sample counts {sorted(grp['n'].unique())} at level {level}")
            band = bootstrap_pass_at_k(n, grp["correct"].to_numpy(), ks=ks, n_boot=n_boot, seed=seed)
            frames.append(band.assign(model=name, level=level))
    return pd.concat(frames, ignore_index=True)


@dataclass
class HeldOut:
    """The held-out problems a notebook evaluates every model on.

    Either the tiny world's ``problems`` (levels = digit counts) or a MATH-style
    ``dataset`` (levels = MATH's 1-5, R1 prompts, math-verify; the ``gpu``
    preset). :meth:`evaluate` returns the same per-problem table for both.
    """

    problems: list[Problem] | None = None
    dataset: Any = None
    max_new_tokens: int = MAX_NEW_TOKENS
    backend: str = "hf"

    @classmethod
    def for_preset(
        cls, preset: str, levels: Sequence[int], size: int, seed: int, *, eval_dataset: str = "",
        max_new_tokens: int = 2048, backend: str = "hf",
    ) -> "HeldOut":
        """World problems (``size`` per level) on the CPU presets; ``size`` problems of ``eval_dataset`` on ``gpu``."""
        if preset != "gpu":
            from rlnb.world import make_problems

            return cls(problems=make_problems(levels, size, seed=seed))
        if not eval_dataset:
            raise ValueError("the gpu preset evaluates on a MATH-style set: pass eval_dataset "
                             "(e.g. HuggingFaceH4/MATH-500, from notebooks/params/gpu/)")
        from rlnb.math_task import load_math_dataset

        return cls(dataset=load_math_dataset(eval_dataset, split="test", limit=size),
                   max_new_tokens=max_new_tokens, backend=backend)

    def only_level(self, level: int) -> "HeldOut":
        """The same held-out set cut to one level."""
        if self.problems is not None:
            return replace(self, problems=[p for p in self.problems if p.level == level])
        keep = [i for i, lvl in enumerate(dataset_levels(self.dataset)) if lvl == level]
        return replace(self, dataset=self.dataset.select(keep))

    @property
    def levels(self) -> list[int]:
        """The levels present, in order (MATH problems without a level count as level 0)."""
        if self.problems is not None:
            return sorted({p.level for p in self.problems})
        return sorted(set(dataset_levels(self.dataset)))

    def evaluate(
        self, model: PreTrainedModel | str, tokenizer: PreTrainedTokenizerBase, n: int | Mapping[int, int], *,
        seed: int = 0, cache: str | Path | None = None, progress: bool = False,
    ) -> pd.DataFrame:
        """Per-problem table ``level, n, correct, steps, mean_length`` (cached at ``cache`` when given).

        ``n`` may be a mapping ``{level: samples}``: pass@k is only informative up to the k where a
        curve saturates, so an easy level needs few samples and a level the base rarely solves many.
        Each level is then sampled (and cached, as ``<cache stem>-L<level>.csv``) on its own.
        """
        if isinstance(n, Mapping):
            missing = sorted(set(self.levels) - set(n))
            if missing:
                raise ValueError(f"no sample count for levels {missing}: n gives {dict(n)}")
            tables = []
            for level in self.levels:
                part = self.only_level(level)
                part_cache = None if cache is None else Path(cache).with_name(f"{Path(cache).stem}-L{level}.csv")
                tables.append(part.evaluate(model, tokenizer, int(n[level]), seed=seed, cache=part_cache,
                                            progress=progress))
            return pd.concat(tables, ignore_index=True)
        if self.problems is not None:
            if isinstance(model, str):
                raise ValueError("world problems are sampled with the transformers backend: pass a loaded model")
            return evaluate(model, tokenizer, self.problems, n, seed=seed, cache=cache, progress=progress)
        return evaluate_dataset(model, tokenizer, self.dataset, n, max_new_tokens=self.max_new_tokens, seed=seed,
                                backend=self.backend, cache=cache, progress=progress)


def along_training(
    held: HeldOut, run_dir: str | Path, base: str, tokenizer: PreTrainedTokenizerBase, n: int, *, tag: str,
    seed: int = 0,
) -> pd.DataFrame:
    """``held``'s per-problem table for every checkpoint a run kept, stacked with a ``step`` column.

    Each checkpoint's table is cached in its folder (``checkpoint-N/<tag>.csv``), so following a run
    along training samples once. ``base`` is the run's ``RunConfig.model`` (a LoRA checkpoint is
    merged onto it, :func:`rlnb.runs.checkpoint_models`).
    """
    from rlnb.runs import checkpoint_models  # late import: rlnb.runs loads the trainers, which evaluation needs not

    frames = []
    for step, model in checkpoint_models(Path(run_dir), base).items():
        cache = Path(run_dir) / f"checkpoint-{step}" / f"{tag}.csv"
        frames.append(held.evaluate(model, tokenizer, n, seed=seed, cache=cache).assign(step=step))
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------- the series' one base evaluation
BASE_REFERENCE = PROJECT_ROOT / "data" / "base_reference.csv"
"""Per-problem table of the shipped base on every level, written by ``benchmarks/base_reference.py``."""
BASE_REFERENCE_COMMAND = "python benchmarks/base_reference.py"


def _reference_key_path(path: Path) -> Path:
    return path.with_suffix(".json")


def write_base_reference(table: pd.DataFrame, model: PreTrainedModel, path: str | Path = BASE_REFERENCE,
                         **facts: Any) -> Path:
    """Write the base's per-problem table and its key (the weights' fingerprint, plus ``facts``), read by
    :func:`base_reference_table`; the key is what lets a reader refuse a table of other weights."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    key = {"model_name": "tiny", "model": model_fingerprint(model), **facts, "command": BASE_REFERENCE_COMMAND}
    _reference_key_path(path).write_text(json.dumps(key, indent=1) + "\n")
    return path


def base_reference_table(path: str | Path = BASE_REFERENCE) -> tuple[pd.DataFrame, dict]:
    """The series' one evaluation of the shipped base (per-problem table) and its key, checked against the base.

    Every notebook samples its own held-out set, so each prints its own estimate of the base; this is the one
    number per level they all quote beside it. The key records the base's :func:`rlnb.models.model_fingerprint`:
    a table made from other weights (a rebuilt world) is refused, with the command that remakes it.
    """
    path = Path(path)
    key_path = _reference_key_path(path)
    if not path.exists() or not key_path.exists():
        raise FileNotFoundError(f"no base reference at {display_path(path)} (and its key {key_path.name}): "
                                f"make it with `{BASE_REFERENCE_COMMAND}`")
    key = json.loads(key_path.read_text())
    model, _ = load_model(key.get("model_name", "tiny"))
    if key.get("model") != model_fingerprint(model):
        raise ValueError(f"{display_path(path)} was made from other weights than the shipped base (fingerprint "
                         f"{key.get('model')} vs {model_fingerprint(model)}): remake it with `{BASE_REFERENCE_COMMAND}`")
    return pd.read_csv(path), key


def base_reference(path: str | Path = BASE_REFERENCE) -> pd.DataFrame:
    """Per level: the base's pass@1 with a 95% bootstrap interval over problems, and the sample it rests on."""
    from rlnb.stats import pass_at_k_band

    table, _ = base_reference_table(path)
    rows = []
    for level, part in table.groupby("level"):
        band = pass_at_k_band(part.assign(seed=0), 1).iloc[0]
        rows.append({"level": int(level), "pass@1": band["estimate"], "low": band["low"], "high": band["high"],
                     "problems": len(part), "samples": int(part["n"].iloc[0])})
    return pd.DataFrame(rows).set_index("level")


def base_reference_line(path: str | Path = BASE_REFERENCE) -> str:
    """One sentence a notebook prints beside its own base estimate: the series' base pass@1 per level."""
    ref = base_reference(path)
    size = f"{ref['problems'].iloc[0]} problems x {ref['samples'].iloc[0]} samples per level"
    return (f"The base, one evaluation for the whole series ({display_path(Path(path))}, {size}): held-out pass@1 "
            + ", ".join(f"{lvl} digits {r['pass@1']:.3f} [{r['low']:.3f}, {r['high']:.3f}]" for lvl, r in ref.iterrows()) + ".")
