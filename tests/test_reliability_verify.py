"""The math verifier stays in step and cannot be gamed (issue #17, items 1, 2 and 11).

Item 1: a call interrupted between question and answer must not leave the worker's reply
in the pipe for the next call. Item 2: a worker that died (even while starting) is
replaced, not asked. Item 11: answers math-verify misreads are not rewarded.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from multiprocessing.connection import Connection

import pytest

from rlnb import math_task
from rlnb.math_task import verify_answer
from test_math_task import _process_is_running  # the same /proc check the math-task tests use

# (prediction, gold, verdict): alternating verdicts, so an answer shifted by one call shows.
KNOWN_PAIRS = [
    ("1", "2", False),
    ("5", "5", True),
    ("3", "4", False),
    ("7", "7", True),
    (r"\frac{1}{2}", "0.5", True),
    ("0.25", r"\frac13", False),
    (r"2\sqrt{2}", r"\sqrt{8}", True),
    ("x=4", "3", False),
]


def _grade_many(count: int) -> tuple[list[bool], list[bool]]:
    """Verdicts and right verdicts for ``count`` consecutive calls on KNOWN_PAIRS."""
    pairs = [KNOWN_PAIRS[i % len(KNOWN_PAIRS)] for i in range(count)]
    return [verify_answer(prediction, gold) for prediction, gold, _ in pairs], [right for *_, right in pairs]


def _wait_until_dead(pid: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while _process_is_running(pid):
        assert time.monotonic() < deadline, f"process {pid} did not die"
        time.sleep(0.01)


def _interrupt_while_starting(pid: int) -> None:
    """Ctrl-C for a worker that is starting: SIGINT kills it, unless it lands where an import swallows the
    KeyboardInterrupt (a bare ``except``) or after the worker began ignoring SIGINT, timing a test cannot
    control (one CI run on a loaded machine saw it survive 10 s); then SIGKILL. Either way the spare is dead
    before the pool meets it, which is what the pool must handle."""
    os.kill(pid, signal.SIGINT)
    try:
        _wait_until_dead(pid, timeout_s=5.0)
    except AssertionError:
        os.kill(pid, signal.SIGKILL)
        _wait_until_dead(pid)


# ------------------------------------------------------------------ item 1: in step


@pytest.mark.usefixtures("ctrl_c_raises")
def test_a_call_interrupted_by_ctrl_c_leaves_1000_later_verdicts_right() -> None:
    verify_answer("1", "1")
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            verify_answer("3^{10^{9}}", "1")  # still being computed when Ctrl-C arrives
    finally:
        timer.join()
    verdicts, right = _grade_many(1000)
    assert verdicts == right


def test_an_exception_between_question_and_answer_leaves_later_verdicts_right(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    verify_answer("1", "1")

    def overflow(self: Connection, timeout: float = 0.0) -> bool:
        raise OverflowError("timeout is too large")

    monkeypatch.setattr(Connection, "poll", overflow)  # after the question has been sent
    with pytest.raises(OverflowError):
        verify_answer("5", "5")
    monkeypatch.undo()
    verdicts, right = _grade_many(40)
    assert verdicts == right


@pytest.mark.parametrize("timeout_s", [math.inf, -math.inf, math.nan, 0, -1.0, 1e12, True, "2"])
def test_a_timeout_that_is_not_a_positive_finite_number_is_refused_before_asking(timeout_s: object) -> None:
    with pytest.raises(ValueError, match="timeout_s must be a positive, finite number"):
        verify_answer("5", "5", timeout_s=timeout_s)  # type: ignore[arg-type]
    verdicts, right = _grade_many(8)
    assert verdicts == right


def test_numpy_and_integer_timeouts_are_accepted() -> None:
    import numpy as np

    assert verify_answer("5", "5", timeout_s=np.float32(2.0)) is True
    assert verify_answer("5", "5", timeout_s=3) is True


# ------------------------------------------------------ item 2: dead workers replaced


def test_workers_that_died_are_replaced_before_they_are_asked() -> None:
    verify_answer("1", "1")  # an active worker and a warm spare
    pids = math_task._POOL.worker_pids()
    assert len(pids) == 2
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
        _wait_until_dead(pid)
    verdicts, right = _grade_many(16)
    assert verdicts == right  # no "wrong" verdict from the dead active worker either
    assert not set(pids) & set(math_task._POOL.worker_pids())


def test_a_spare_killed_by_ctrl_c_while_starting_is_replaced() -> None:
    pool = math_task._VerifierPool()
    try:
        spare = math_task._Worker()
        _interrupt_while_starting(spare.pid)
        pool._spare = spare
        assert pool.verify("$1$", "$1$", 2.0) is True
        assert pool.verify("$2$", "$1$", 2.0) is False
        assert spare.pid not in pool.worker_pids()
    finally:
        pool.close()


def test_a_worker_that_fails_to_start_does_not_break_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = math_task._VerifierPool()
    try:
        monkeypatch.setattr(math_task, "_WORKER_BOOTSTRAP", "import sys; sys.exit(3)")
        with pytest.raises(RuntimeError, match="exited with code 3 while starting"):
            pool.verify("$1$", "$1$", 2.0)
        monkeypatch.undo()
        assert pool.verify("$1$", "$1$", 2.0) is True
    finally:
        pool.close()


# ----------------------------------------------------------- item 11: reward hacking

REWARD_HACKS = {
    "1000-term sum of ones equals 1": ("+".join(["1"] * 1000), "1"),
    "7 plus a thousand ones equals 7": ("7" + "+1" * 1000, "7"),
    "boxed long sum": (r"\boxed{" + "7" + "+1" * 1000 + "}", "7"),
    "thin-space thousands read as 1*000": (r"1\,000", "0"),
    "repeating decimal read as 0": (r"0.\overline{3}", "0"),
    "unparsable sum equal to the gold": ("+".join(["1"] * 1000), "1000"),
}


@pytest.mark.parametrize(("prediction", "gold"), REWARD_HACKS.values(), ids=REWARD_HACKS.keys())
def test_reward_hacks_through_the_verifier_are_refused(prediction: str, gold: str) -> None:
    assert verify_answer(prediction, gold) is False
    assert math_task.math_accuracy_reward([prediction], [gold]) == [0.0]


HONEST_ANSWERS = [
    (r"\frac{1}{2}", "0.5"),
    ("1000", "1000"),
    (r"\boxed{7}", "7"),
    ("1+1+1", "3"),
    (r"1\,000", "1000"),
    (r"1{,}000", "1000"),
    ("1,000", "1000"),
    (r"10,\!000", "10000"),
    (r"1\,000\,000", "10^6"),
    (r"-2\,500.5", "-2500.5"),
    ("1000", r"1\,000"),  # a gold answer with separators is read the same way
    (r"0.\overline{3}", r"\frac{1}{3}"),
    (r"1.2\overline{45}", r"\frac{137}{110}"),
    (r"0.\overline{9}", "1"),
    ("The answer is 4", "4"),
]


@pytest.mark.parametrize(("prediction", "gold"), HONEST_ANSWERS)
def test_honest_answers_still_verify(prediction: str, gold: str) -> None:
    assert verify_answer(prediction, gold) is True


@pytest.mark.parametrize(
    ("answer", "normalised"),
    [
        (r"1\,000", "1000"),
        (r"12{,}345{,}678", "12345678"),
        ("1,000,000", "1000000"),
        ("1,2", "1,2"),  # a list, not a number
        ("(1,000, 2)", "(1,000, 2)"),  # commas inside a tuple stay
        (r"0{,}125", r"0{,}125"),  # a decimal comma, not a thousands separator
        (r"3.141\,592", r"3.141\,592"),  # digit grouping after the point is left to math-verify
        (r"1\,00", "1?00"),  # groups must have three digits: otherwise ambiguous, and matches nothing
        (r"0.1\overline{6}", r"\frac{1}{6}"),
        (r"-0.\overline{3}", r"-\frac{1}{3}"),
        (r"\overline{AB}", r"\overline{AB}"),  # a segment, not a repeating decimal
    ],
)
def test_number_notation_is_normalised_only_where_unambiguous(answer: str, normalised: str) -> None:
    assert math_task._normalise_numbers(answer) == normalised


# Issue #30 item 9: every LaTeX space between digit groups is a thousands separator; any other spacing
# between digits is ambiguous and matches nothing (math-verify would read it as a product or a sum).
SPACES = [r"\,", r"\;", r"\:", r"\!", "\\ ", "~", r"\quad ", r"\qquad ", " ", "{,}"]


@pytest.mark.parametrize("space", SPACES)
def test_every_latex_space_between_thousands_groups_reads_as_one_number(space: str) -> None:
    assert verify_answer(f"1{space}000", "1000") is True
    assert verify_answer(rf"\boxed{{5{space}000}}", "5000") is True
    assert verify_answer(rf"\boxed{{5{space}000}}", "0") is False


@pytest.mark.parametrize(("prediction", "wrong_gold"), [
    (r"3\;4", "7"), (r"3\;4", "12"), (r"7\quad 5", "12"), (r"7\quad 5", "35"), ("7~5", "12"), (r"1\:00", "100"),
])
def test_digits_spaced_other_than_in_thousands_match_no_gold(prediction: str, wrong_gold: str) -> None:
    assert verify_answer(prediction, wrong_gold) is False
