"""The MATH-style task: R1 prompts, answer extraction, a bounded-time verifier, rewards and data.

Everything a GRPO/LUFFY notebook needs to turn a math data set into prompts and to
score completions lives here, so that the training notebooks, the evaluation
notebooks and the tests all grade with exactly the same rules.

The verifier is the delicate part. Model output is adversarial by accident: a policy
under RL pressure will sooner or later emit ``\\boxed{9^{9^{9^9}}}``, a megabyte of
digits or thousands of nested braces, and sympy will happily spend hours (and
gigabytes) on them. ``math_verify`` guards itself with ``signal.alarm``, which only
works in the main thread and cannot interrupt C code. So :func:`verify_answer` first
rejects answers that no grader should ever need to parse (too long, too deeply
nested), then runs ``math_verify`` in a persistent worker subprocess with a deadline
the worker enforces itself; if the worker still overruns, the caller kills it and
switches to a warm spare, so a call never blocks much longer than ``timeout_s``.

The grader is also a reward, so it must not be gamed: math-verify falls back to the
first number it can find when the LaTeX parser gives up (``7+1+1+...`` with a
thousand terms "equals" 7), reads ``1\\,000`` as ``1*000`` and drops ``\\overline``.
The worker therefore never grades a fragment of an answer the LaTeX parser gave up
on, and :func:`verify_answer` rewrites thousands separators and repeating decimals
into plain numbers first.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import math
import multiprocessing
import numbers
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from fractions import Fraction
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlnb.completions import completion_text

if TYPE_CHECKING:  # `datasets` takes a second to import; the worker process never needs it.
    import datasets

__all__ = [
    "MAX_ANSWER_CHARS",
    "MAX_NESTING_DEPTH",
    "R1_SYSTEM_PROMPT",
    "DatasetUnavailableError",
    "extract_boxed",
    "extract_final_answer",
    "format_prompt",
    "load_math_dataset",
    "math_accuracy_reward",
    "math_format_reward",
    "verify_answer",
]

R1_SYSTEM_PROMPT = (
    "A conversation between User and Assistant. The User asks a math question and the "
    "Assistant solves it. The Assistant first reasons step by step inside <think> </think> "
    "tags, then, after the closing </think> tag, states the final answer inside \\boxed{}, "
    "for example: <think> reasoning here </think> The answer is \\boxed{42}."
)

MAX_ANSWER_CHARS = 10_000
"""Extracted answers longer than this are graded wrong without parsing: no MATH-style
answer comes close, and parsing cost grows with length."""

MAX_NESTING_DEPTH = 20
"""Answers whose brackets nest deeper than this are graded wrong without parsing. Real
answers stay in single digits, while math-verify's parse time grows exponentially
with brace depth (12 levels of ``{}`` already take over a second)."""

_SOFT_DEADLINE_FRACTION = 0.8
"""The worker gives up by itself after this fraction of ``timeout_s``, so the common
overrun costs no restart; the caller's hard deadline is the full ``timeout_s``."""

_WORKER_STARTUP_TIMEOUT_S = 120.0
"""Starting Python and importing sympy is not the answer's fault, so it is not charged
to ``timeout_s``; this generous bound only catches a worker that cannot start."""

_MAX_TIMEOUT_S = 24 * 3600.0
"""The longest ``timeout_s`` accepted: the pipe's poll and the worker's timer overflow
past about 24 days, and no comparison is worth waiting a day for."""

_EXIT_GRACE_S = 5.0
"""How long to wait for a worker that closed its pipe during start-up to exit."""

_WORKER_MEMORY_LIMIT_BYTES = 4 * 2**30
"""Address-space cap for a worker, so a runaway sympy expansion fails with MemoryError
(graded wrong) instead of pushing the training process out of memory."""

_WORKER_READY = "ready"
_WORKER_BOOTSTRAP = "import sys; from rlnb.math_task import _serve; _serve(int(sys.argv[1]))"

_BOX_OPENING = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE_OR_ESCAPE = re.compile(r"\\.|[{}]", re.DOTALL)
_OPENING_BRACKETS = frozenset("{[(")
_CLOSING_BRACKETS = frozenset("}])")
_MATH_DELIMITER = re.compile(r"(?<!\\)\$|\\\(|\\\[")  # $, \( or \[, but not an escaped \$
_LATEX_SPACE = r"\\[,;:! ]|\\q?quad(?![a-zA-Z])|~| "
_THOUSANDS_SEPARATOR = re.compile(rf"(?:,\\!|\{{,\}}|{_LATEX_SPACE})+")
"""LaTeX spaces between digit groups: ``\\,`` ``\\;`` ``\\:`` ``\\!`` ``\\ `` ``~`` ``\\quad`` ``\\qquad``, a plain
space, ``{,}`` and MATH's ``,\\!``. Math-verify reads a space between digits as a product or a sum
(``1\\,000`` = 1*000 = 0, ``3\\;4`` = 7)."""
_GROUPED_NUMBER = re.compile(rf"(?<![\d.])[1-9]\d{{0,2}}(?:(?:{_THOUSANDS_SEPARATOR.pattern})\d{{3}})+(?!\d)")
"""A whole number written with those separators; the first group never starts with 0 and
every later group has exactly three digits, so a decimal comma such as ``0{,}5`` is left alone."""
_SPACED_DIGITS = re.compile(rf"(?<![\d.])(\d+)(?:{_LATEX_SPACE})+(?=\d)")
"""Digits, a space, digits, that are not a grouped number (``3\\;4``, ``7\\quad 5``): ambiguous, so
the space becomes :data:`_UNREADABLE` and the answer matches no gold, where math-verify would
grade ``3\\;4`` right against 7."""
_UNREADABLE = "?"
_COMMA_GROUPED_NUMBER = re.compile(r"-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?")
"""An answer that is one number with comma thousands separators (``1,000``); a comma
elsewhere may separate list elements, so only a whole-answer match is rewritten."""
_REPEATING_DECIMAL = re.compile(r"(?<![\d.])(\d*)\.(\d*)\\overline\s*\{(\d+)\}")
"""``0.\\overline{3}``, ``1.2\\overline{45}``: math-verify drops ``\\overline`` and reads 0.3 as 0."""


# --------------------------------------------------------------------------- prompts


def format_prompt(problem: str, tokenizer: Any = None) -> str | list[dict[str, str]]:
    """The R1-style prompt for ``problem``.

    Without a tokenizer this returns the conversational form (system + user messages)
    that TRL's ``GRPOTrainer`` accepts and templates itself. With a tokenizer it returns
    the rendered string, ready for generation, for code that calls the model directly.
    """
    messages = [
        {"role": "system", "content": R1_SYSTEM_PROMPT},
        {"role": "user", "content": problem},
    ]
    if tokenizer is None:
        return messages
    if getattr(tokenizer, "chat_template", None) is None:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ValueError(
            f"Tokenizer {name!r} has no chat template (tokenizer.chat_template is None), so the "
            "R1 system/user messages cannot be rendered. Pass the tokenizer of an instruct/chat "
            "model (or set tokenizer.chat_template yourself), or call format_prompt(problem) "
            "without a tokenizer to get plain conversational messages."
        )
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


# ------------------------------------------------------------------ answer extraction


def extract_boxed(text: str) -> str | None:
    r"""Content of the last ``\boxed{...}`` (or ``\fbox{...}``) in ``text``.

    The closing brace is found by counting braces, since answers such as
    ``\frac{1}{2}`` nest them; escaped braces (``\{``, ``\}``) are literal characters
    and do not count. One left-to-right pass, so the cost is linear in ``len(text)``
    whatever the input. Returns None when there is no box or the last one never closes.
    """
    last_opening = None
    for last_opening in _BOX_OPENING.finditer(text):
        pass
    if last_opening is None:
        return None
    start = last_opening.end()
    depth = 1
    for token in _BRACE_OR_ESCAPE.finditer(text, start):
        if token.group() == "{":
            depth += 1
        elif token.group() == "}":
            depth -= 1
            if depth == 0:
                return text[start : token.start()]
    return None


def extract_final_answer(completion: str) -> str | None:
    r"""The answer a completion commits to: the last ``\boxed{}`` after its reasoning.

    Only the text after the last ``</think>`` counts, so a box the model tried out while
    thinking is not mistaken for its answer. A ``<think>`` that never closes means the
    completion was cut off mid-reasoning, which has no answer (None). Without a box the
    stripped text after the reasoning is the answer, which lets bare answers such as
    ``"3/4"`` be graded too. A final full stop is punctuation, not part of the answer
    (math-verify cannot parse ``\frac{1}{2}.``). Returns None when there is nothing to grade.
    """
    _, think_closed, tail = completion.rpartition("</think>")
    if not think_closed and "<think>" in completion:
        return None
    boxed = extract_boxed(tail)
    answer = (tail if boxed is None else boxed).strip().rstrip(".").rstrip()
    return answer or None


def _nesting_depth(text: str) -> int:
    """Deepest bracket nesting in ``text``; brackets of any kind count alike, since
    intervals such as ``[1,2)`` pair different kinds."""
    depth = deepest = 0
    for char in text:
        if char in _OPENING_BRACKETS:
            depth += 1
            deepest = max(deepest, depth)
        elif char in _CLOSING_BRACKETS:
            depth = max(depth - 1, 0)
    return deepest


def _is_tractable(answer: str) -> bool:
    """Whether an answer is small enough to be worth handing to the parser at all."""
    return len(answer) <= MAX_ANSWER_CHARS and _nesting_depth(answer) <= MAX_NESTING_DEPTH


def _as_latex_math(answer: str) -> str:
    """Wrap a bare answer in ``$...$``: math-verify only reads LaTeX inside math
    delimiters or a box, and reads ``\\frac12`` alone as the number 12."""
    if _MATH_DELIMITER.search(answer):
        return answer
    return f"${answer}$"


def _repeating_decimal_as_fraction(match: re.Match[str]) -> str:
    """``a.b\\overline{c}`` as the exact fraction it denotes (``0.\\overline{3}`` = 1/3)."""
    whole, fixed, repeating = match.groups()
    value = Fraction(int(whole or 0)) + Fraction(int(fixed or 0), 10 ** len(fixed))
    value += Fraction(int(repeating), (10 ** len(repeating) - 1) * 10 ** len(fixed))
    return rf"\frac{{{value.numerator}}}{{{value.denominator}}}"


def _normalise_numbers(answer: str) -> str:
    """Rewrite the number notations math-verify misreads into ones it reads right.

    ``1\\,000`` would be the product 1*000 = 0 and ``0.\\overline{3}`` would be 0.3 = 0
    (math-verify drops ``\\overline``), so a policy could collect rewards for a wrong
    answer, or lose them for a right one, by typesetting alone.
    """
    if _COMMA_GROUPED_NUMBER.fullmatch(answer):
        answer = answer.replace(",", "")
    answer = _GROUPED_NUMBER.sub(lambda number: _THOUSANDS_SEPARATOR.sub("", number.group()), answer)
    answer = _SPACED_DIGITS.sub(lambda spaced: spaced.group(1) + _UNREADABLE, answer)
    return _REPEATING_DECIMAL.sub(_repeating_decimal_as_fraction, answer)


# ---------------------------------------------------------------- verifier: worker side


class _SoftTimeout(BaseException):
    """Raised inside the worker when its own deadline passes.

    A BaseException, so that math-verify's and sympy's ``except Exception`` handlers let
    it through instead of carrying on with the computation.
    """


class _SoftDeadline:
    """A SIGALRM deadline for one comparison inside the worker process.

    The handler only raises while a comparison is running: a signal that arrives just
    as the timer is cancelled must not blow up the request loop.
    """

    def __init__(self) -> None:
        self._armed = False
        signal.signal(signal.SIGALRM, self._on_alarm)

    def _on_alarm(self, signum: int, frame: object) -> None:
        if self._armed:
            raise _SoftTimeout

    @contextmanager
    def limit(self, seconds: float) -> Iterator[None]:
        """Raise _SoftTimeout in the body if it runs longer than ``seconds``."""
        self._armed = True
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            self._armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)


def _parse(answer: str) -> list[Any]:
    """math-verify's parse of ``answer``, but never a number picked out of an unparsed whole.

    When the LaTeX parser gives up on an answer (a sum of a thousand terms exceeds its
    recursion limit), math-verify's expression fallback grades a bare number it finds
    in the text instead, so ``7+1+1+...`` would "equal" 7. Such an answer is left as
    the unparsed string, which only equals the identical string. Answers the LaTeX
    parser does read keep math-verify's full rules (e.g. "The answer is 4" is 4).
    """
    import math_verify  # Here, not at the top: only the worker pays for importing sympy.

    as_latex = math_verify.parse(answer, extraction_config=[math_verify.LatexExtractionConfig()], parsing_timeout=None)
    if as_latex and all(isinstance(item, str) for item in as_latex):
        return as_latex
    return math_verify.parse(answer, parsing_timeout=None)


def _compare(prediction: str, gold: str) -> bool:
    """math-verify's verdict on two LaTeX answers.

    math-verify's own alarm-based timeouts are switched off (None) because the worker's
    :class:`_SoftDeadline` owns SIGALRM; theirs would cancel it. ``gold`` goes first:
    math-verify's comparison is not symmetric (e.g. ``x=3`` is simplified on one side).
    """
    import math_verify

    return bool(math_verify.verify(_parse(gold), _parse(prediction), timeout_seconds=None))


def _limit_worker_memory() -> None:
    """Cap the worker's address space (see ``_WORKER_MEMORY_LIMIT_BYTES``)."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _WORKER_MEMORY_LIMIT_BYTES if hard == resource.RLIM_INFINITY else min(hard, _WORKER_MEMORY_LIMIT_BYTES)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def _serve(fd: int) -> None:
    """Main loop of a verifier worker process: answer requests on ``fd`` until EOF.

    A request is ``(request_id, prediction, gold, soft_timeout_s)``; the reply is
    ``(request_id, verdict)``, so that the caller can tell a late answer to an abandoned
    request from the one it waits for. Anything that goes wrong while comparing,
    running out of time included, is a wrong answer.
    Ctrl-C is ignored because it is meant for the notebook, which owns this process.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _limit_worker_memory()
    # The "timeout is disabled" warning is expected: _SoftDeadline does that job.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    deadline = _SoftDeadline()
    connection = Connection(fd)
    _compare("$1$", "$1$")  # Build the LaTeX parser now, not during the first request.
    connection.send(_WORKER_READY)
    while True:
        try:
            request_id, prediction, gold, soft_timeout_s = connection.recv()
        except (EOFError, OSError):  # The caller closed its end (or exited): we are done.
            return
        try:
            with deadline.limit(soft_timeout_s):
                verdict = _compare(prediction, gold)
        except (_SoftTimeout, Exception):
            verdict = False
        connection.send((request_id, verdict))


# ---------------------------------------------------------------- verifier: caller side


class _Worker:
    """One verifier process (a fresh interpreter running :func:`_serve`) and its pipe.

    A plain subprocess rather than a multiprocessing ``spawn``/``forkserver`` child:
    those re-import the caller's ``__main__``, which for a training script means torch
    and TRL, seconds of start-up and gigabytes per restart.
    """

    def __init__(self) -> None:
        ours, theirs = multiprocessing.Pipe()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, sys.path))}
        self._process = subprocess.Popen(
            [sys.executable, "-c", _WORKER_BOOTSTRAP, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            env=env,
        )
        theirs.close()
        self._connection = ours
        self._ready = False

    @property
    def pid(self) -> int:
        return self._process.pid

    def is_alive(self) -> bool:
        """Whether the process still runs. A Ctrl-C that reaches a worker before it has
        started ignoring SIGINT kills it, and so can running out of memory."""
        return self._process.poll() is None

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the worker has imported math-verify, or kill it and raise RuntimeError."""
        if self._ready:
            return
        try:
            self._ready = self._connection.poll(timeout_s) and self._connection.recv() == _WORKER_READY
        except (EOFError, OSError):  # It closed the pipe, so it is exiting: wait to learn its exit code.
            self._ready = False
            with suppress(subprocess.TimeoutExpired):
                self._process.wait(_EXIT_GRACE_S)
        if not self._ready:
            exit_code = self._process.poll()
            self.kill()
            failure = f"did not start within {timeout_s:.0f} s" if exit_code is None else (
                f"exited with code {exit_code} while starting"
            )
            raise RuntimeError(
                f"The math-verify worker process {failure}; its stderr (above) says why, e.g. "
                f"math_verify or rlnb not importable by {sys.executable}."
            )

    def ask(self, request_id: int, prediction: str, gold: str, soft_timeout_s: float, timeout_s: float) -> bool | None:
        """The worker's verdict on request ``request_id``, or None if it overran ``timeout_s`` or died.

        Replies to other ids are skipped: they answer a request whose caller gave up
        waiting (a Ctrl-C, say), and taking one for this request's would shift every
        later verdict by one question.
        """
        deadline = time.monotonic() + timeout_s
        try:
            self._connection.send((request_id, prediction, gold, soft_timeout_s))
            while self._connection.poll(max(deadline - time.monotonic(), 0.0)):
                reply_id, verdict = self._connection.recv()
                if reply_id == request_id:
                    return bool(verdict)
        except (EOFError, OSError):
            pass
        return None

    def kill(self) -> None:
        """Kill the process (if it still runs), reap it and close the pipe."""
        self._process.kill()
        self._process.wait()
        self._connection.close()


def _alive(worker: _Worker | None) -> _Worker | None:
    """``worker`` if its process still runs; a dead one is cleaned up and forgotten, since
    asking it would fail every call from now on."""
    if worker is not None and not worker.is_alive():
        worker.kill()
        return None
    return worker


class _VerifierPool:
    """The active worker plus a warm spare that replaces it when it has to be killed.

    A worker that overran, or whose caller was interrupted mid-question, is killed
    rather than asked again: it may still be busy with the old question for up to the
    soft deadline. Starting a new one takes about half a second; the spare makes the
    call right after a timeout as fast as any other. Workers that died on their own are
    replaced before use. Calls are serialised by a lock, so threads may share the pool.
    Workers are started lazily and killed at exit.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner_pid = os.getpid()
        self._active: _Worker | None = None
        self._spare: _Worker | None = None
        self._request_ids = itertools.count()

    def verify(self, prediction: str, gold: str, timeout_s: float) -> bool:
        with self._lock:
            worker = self._ready_worker()
            try:
                verdict = worker.ask(
                    next(self._request_ids), prediction, gold, timeout_s * _SOFT_DEADLINE_FRACTION, timeout_s
                )
            except BaseException:  # KeyboardInterrupt mid-question: the worker is still busy with it.
                self._retire_active()
                raise
            if verdict is None:
                self._retire_active()
                return False
            return verdict

    def worker_pids(self) -> tuple[int, ...]:
        """Process ids of the workers, the active one first (for diagnostics)."""
        return tuple(worker.pid for worker in (self._active, self._spare) if worker is not None)

    def close(self) -> None:
        """Kill the workers; the next call starts new ones."""
        with self._lock:
            if self._owner_pid == os.getpid():
                for worker in (self._active, self._spare):
                    if worker is not None:
                        worker.kill()
            self._active = self._spare = None

    def _retire_active(self) -> None:
        if self._active is not None:
            self._active.kill()
            self._active = None

    def _ready_worker(self) -> _Worker:
        if self._owner_pid != os.getpid():  # A forked child: the workers are the parent's.
            self._owner_pid, self._active, self._spare = os.getpid(), None, None
        self._active, self._spare = _alive(self._active), _alive(self._spare)
        if self._active is None:
            self._active, self._spare = self._spare or _Worker(), None
        try:
            self._active.wait_ready(_WORKER_STARTUP_TIMEOUT_S)
        except RuntimeError:
            self._active = None  # wait_ready killed it; the next call starts a new one
            raise
        if self._spare is None:
            self._spare = _Worker()
        return self._active


_POOL = _VerifierPool()
atexit.register(_POOL.close)


def verify_answer(prediction: str, gold: str, timeout_s: float = 2.0) -> bool:
    r"""Whether ``prediction`` states the same mathematical answer as ``gold``.

    Both sides go through :func:`extract_final_answer`, so either may be a bare answer
    (``"0.5"``), a boxed one or a whole R1 completion. Equivalence is math-verify's
    (``\frac{2}{4}`` = ``0.5`` = ``50\%``, units and ``x=`` dropped, sets unordered,
    floats compared after rounding to 6 decimals). Output is only ever parsed, never
    evaluated as Python. Guards against reward hacking: thousands separators
    (``1\,000``, ``1{,}000``) and repeating decimals (``0.\overline{3}``) are read as the
    numbers they denote, and an answer math-verify cannot parse completely (a sum of a
    thousand terms) only matches the identical string, never the first number in it.

    Returns within about ``timeout_s`` whatever the input: oversized or deeply nested
    answers are rejected up front, and a comparison that runs out of time counts as
    wrong. Malformed answers are wrong, never an exception. Typical cost is ~1-3 ms
    (see the tests); the first call also starts the worker (~0.5 s, not charged to
    ``timeout_s``).

    Raises:
        TypeError: if ``prediction`` or ``gold`` is not a str.
        ValueError: if ``timeout_s`` is not a positive, finite number of seconds (at most a day).
        RuntimeError: if the worker process cannot be started at all.
    """
    if not isinstance(prediction, str) or not isinstance(gold, str):
        raise TypeError(
            f"verify_answer expects two str, got {type(prediction).__name__} and {type(gold).__name__}"
        )
    timeout_s = _checked_timeout(timeout_s)
    predicted = _gradable_answer(prediction)
    expected = _gradable_answer(gold)
    if predicted is None or expected is None:
        return False
    return _POOL.verify(_as_latex_math(predicted), _as_latex_math(expected), timeout_s)


def _checked_timeout(timeout_s: Any) -> float:
    """``timeout_s`` as a float, checked before anything is sent to the worker: a timeout
    that fails later (an infinite one overflows the pipe's poll) would strand its reply."""
    is_number = isinstance(timeout_s, numbers.Real) and not isinstance(timeout_s, bool)
    if not (is_number and math.isfinite(timeout_s) and 0 < timeout_s <= _MAX_TIMEOUT_S):
        raise ValueError(
            f"timeout_s must be a positive, finite number of seconds up to {_MAX_TIMEOUT_S:.0f}, got {timeout_s!r}"
        )
    return float(timeout_s)


def _gradable_answer(text: str) -> str | None:
    """The final answer of ``text`` with its numbers normalised, or None when there is
    nothing to grade or it is too large to parse safely (checked before and after
    normalising, which can lengthen a repeating decimal's digits)."""
    answer = extract_final_answer(text)
    if answer is None or not _is_tractable(answer):
        return None
    answer = _normalise_numbers(answer)
    return answer if _is_tractable(answer) else None


# ------------------------------------------------------------------------------ rewards


def _gold_text(gold: Any) -> str:
    """Gold answers may arrive as numbers from a typed column; a missing one is empty."""
    return "" if gold is None else str(gold)


def math_accuracy_reward(completions: Sequence[Any], answer: Sequence[Any], **kwargs: Any) -> list[float]:
    """TRL reward: 1.0 where the completion's final answer verifies against ``answer``.

    Called by ``GRPOTrainer`` as ``fn(prompts=..., completions=..., completion_ids=...,
    answer=..., <other columns>...)``; everything but the completions and the gold column
    is ignored.
    """
    if len(completions) != len(answer):
        raise ValueError(f"got {len(completions)} completions but {len(answer)} gold answers")
    return [
        1.0 if verify_answer(completion_text(completion), _gold_text(gold)) else 0.0
        for completion, gold in zip(completions, answer)
    ]


def _has_r1_format(text: str) -> bool:
    """One ``<think>...</think>`` block at the start, then a non-empty boxed answer."""
    body = text.strip()
    if not body.startswith("<think>") or body.count("<think>") != 1 or body.count("</think>") != 1:
        return False
    answer = extract_boxed(body.partition("</think>")[2])
    return answer is not None and answer.strip() != ""


def math_format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """TRL reward: 1.0 where the completion follows the R1 layout asked for by
    :data:`R1_SYSTEM_PROMPT` (reasoning in ``<think></think>``, then ``\\boxed{}``)."""
    return [1.0 if _has_r1_format(completion_text(completion)) else 0.0 for completion in completions]


# --------------------------------------------------------------------------------- data


class DatasetUnavailableError(RuntimeError):
    """A data set named by hub id could not be fetched (no network, offline mode, unknown id)."""


_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}


def _looks_like_local_path(name_or_path: str) -> bool:
    return name_or_path.startswith(("/", ".", "~")) or Path(name_or_path).suffix in _FILE_BUILDERS


def _load_saved_dataset(folder: Path, split: str) -> datasets.Dataset:
    """A folder written by ``save_to_disk``, which ``load_dataset`` refuses to read."""
    import datasets

    saved = datasets.load_from_disk(str(folder))
    if isinstance(saved, datasets.Dataset):
        return saved
    if split not in saved:
        raise ValueError(f"{folder} has no split {split!r}; it has {sorted(saved)}")
    return saved[split]


def _load_raw(name_or_path: str, split: str) -> datasets.Dataset:
    """Load one split from a local file, a local folder or the Hugging Face Hub."""
    import datasets

    path = Path(name_or_path).expanduser()
    if path.is_file():
        builder = _FILE_BUILDERS.get(path.suffix)
        if builder is None:
            raise ValueError(f"Cannot read {path}: expected one of {sorted(_FILE_BUILDERS)}")
        return datasets.load_dataset(builder, data_files={split: str(path)}, split=split)
    if path.is_dir():
        saved_markers = (datasets.config.DATASET_STATE_JSON_FILENAME, datasets.config.DATASETDICT_JSON_FILENAME)
        if any((path / marker).is_file() for marker in saved_markers):
            return _load_saved_dataset(path, split)
        return datasets.load_dataset(str(path), split=split)
    if _looks_like_local_path(name_or_path):
        raise FileNotFoundError(f"No such data file or folder: {path}")
    try:
        return datasets.load_dataset(name_or_path, split=split)
    except OSError as err:  # Connection, offline-mode, not-found and HTTP errors are all OSError.
        raise DatasetUnavailableError(
            f"Could not fetch the data set {name_or_path!r} (split {split!r}) from the Hugging Face "
            f"Hub: {err}. This machine probably has no network access (or the id is wrong). Point "
            "name_or_path at a local copy instead: a .jsonl/.json/.parquet/.csv file (e.g. written "
            "with Dataset.to_json), or a folder written with Dataset.save_to_disk. Set "
            "HF_HUB_OFFLINE=1 to fail fast instead of retrying the network."
        ) from err


def _require_columns(dataset: datasets.Dataset, columns: Sequence[str], source: str) -> None:
    missing = [column for column in columns if column not in dataset.column_names]
    if missing:
        raise ValueError(f"{source} has no column(s) {missing}; its columns are {dataset.column_names}")


def _gold_column(dataset: datasets.Dataset, answer_column: str, solution_column: str, source: str) -> str:
    """The column the gold answers come from: the answer column, else the solution's."""
    for column in (answer_column, solution_column):
        if column in dataset.column_names:
            return column
    raise ValueError(
        f"{source} has neither an answer column {answer_column!r} nor a solution column "
        f"{solution_column!r} to take gold answers from; its columns are {dataset.column_names}"
    )


def _trace_text(value: Any) -> str:
    """An expert trace from a str column, a list of generations (OpenR1-Math style: the
    first one) or a conversation (the message's content)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return _trace_text(value.get("content"))
    if isinstance(value, Sequence) and value:
        return _trace_text(value[0])
    return ""


def _to_task_row(
    row: dict[str, Any], problem_column: str, gold_column: str, gold_from_solution: bool, trace_column: str | None
) -> dict[str, Any]:
    gold = extract_boxed(row[gold_column] or "") if gold_from_solution else row[gold_column]
    task_row = {
        "prompt": format_prompt(row[problem_column]),
        "answer": _gold_text(gold).strip(),
        "problem": row[problem_column],
    }
    if trace_column is not None:
        task_row["expert"] = _trace_text(row[trace_column])
    if "level" in row:  # MATH's difficulty ("Level 3" or 3): kept for per-level metrics
        task_row["level"] = str(row["level"])
    return task_row


def _gradable_rows(
    rows: datasets.Dataset, source: str, gold_column: str, trace_column: str | None
) -> datasets.Dataset:
    """The rows with a gold answer (and a trace, when one is asked for); the rest cannot
    be graded and are dropped with a warning. If none is left that is an error, not an
    empty set: a run on it would train nothing and report the base model as its result."""
    gradable = rows.filter(lambda row: bool(row["answer"]) and bool(row.get("expert", True)))
    wanted = "a gold answer" + ("" if trace_column is None else f" and an expert trace ({trace_column!r})")
    if len(gradable) == 0:
        raise ValueError(
            f"{source}: none of its {len(rows)} rows has {wanted} (gold answers come from column "
            f"{gold_column!r}), so there is nothing to train or evaluate on"
        )
    if len(gradable) < len(rows):
        dropped = len(rows) - len(gradable)
        warnings.warn(f"{source}: dropped {dropped} of {len(rows)} rows without {wanted}", stacklevel=3)
    return gradable


def load_math_dataset(
    name_or_path: str,
    split: str = "test",
    problem_column: str = "problem",
    answer_column: str = "answer",
    solution_column: str = "solution",
    trace_column: str | None = None,
    limit: int | None = None,
) -> datasets.Dataset:
    r"""A MATH-style data set as R1 prompts with gold answers, ready for ``GRPOTrainer``.

    ``name_or_path`` is a Hub id, a .jsonl/.json/.parquet/.csv file, a folder of such
    files or a folder written by ``save_to_disk``. The result has the columns ``prompt``
    (conversational, see :func:`format_prompt`), ``answer`` (gold), ``problem`` and,
    when ``trace_column`` is given, ``expert`` (the off-policy trace LUFFY mixes
    into each group), and ``level`` when the source has one (MATH's difficulty). When
    there is no answer column, the gold is the last ``\boxed{}`` of the solution
    column, as in MATH. ``limit`` keeps the first rows only. Rows left
    without a gold answer (or without a trace, when one is asked for) cannot be graded
    and are dropped with a warning.

    Raises:
        DatasetUnavailableError: a Hub id could not be fetched (e.g. no network).
        FileNotFoundError: a local path does not exist.
        ValueError: a requested column is missing (the message lists those present),
            ``limit`` is not a positive integer, or no row is left to grade: a run on
            an empty set would train nothing and report the base model as its result.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive number of rows (or None for all), got {limit!r}")
    raw = _load_raw(name_or_path, split)
    if limit is not None:
        raw = raw.select(range(min(limit, len(raw))))
    trace_columns = [] if trace_column is None else [trace_column]
    _require_columns(raw, [problem_column, *trace_columns], repr(name_or_path))
    gold_column = _gold_column(raw, answer_column, solution_column, repr(name_or_path))
    gold_from_solution = gold_column != answer_column
    rows = raw.map(
        _to_task_row,
        fn_kwargs={
            "problem_column": problem_column,
            "gold_column": gold_column,
            "gold_from_solution": gold_from_solution,
            "trace_column": trace_column,
        },
        remove_columns=raw.column_names,
    )
    return _gradable_rows(rows, f"{name_or_path!r} (split {split!r})", gold_column, trace_column)
