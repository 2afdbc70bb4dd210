"""Tests for rlnb.math_task: prompts, extraction, the bounded-time verifier, rewards, data.

Verdicts below were checked by hand against the mathematics, not copied from
math-verify's output. Where math-verify (0.9.0) disagrees with the mathematically
correct verdict, the pair lives in KNOWN_MATH_VERIFY_DISAGREEMENTS instead, asserting
what math-verify actually does, so that a change in its behaviour is noticed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rlnb import math_task
from rlnb.math_task import (
    MAX_ANSWER_CHARS,
    MAX_NESTING_DEPTH,
    R1_SYSTEM_PROMPT,
    DatasetUnavailableError,
    extract_boxed,
    extract_final_answer,
    format_prompt,
    load_math_dataset,
    math_accuracy_reward,
    math_format_reward,
    verify_answer,
)

# (prediction, gold, mathematically correct verdict); math-verify agrees on all of them.
EQUIVALENCE_CASES = [
    # fractions and decimals
    (r"\frac{1}{2}", "0.5", True),
    ("0.5", r"\frac{1}{2}", True),
    ("1/2", r"\frac{1}{2}", True),
    (r"\dfrac12", r"\frac{1}{2}", True),
    (r"\tfrac{1}{2}", "0.5", True),
    (r"\frac{2}{4}", r"\frac12", True),
    (r"-\frac{1}{2}", "-0.5", True),
    ("1.5", r"\frac32", True),
    (r"1\frac{1}{2}", r"\frac{3}{2}", True),
    (r"\frac{1}{3}", r"\frac{1}{2}", False),
    ("0.1", "0.10", True),
    # close but wrong
    ("0.333", r"\frac13", False),
    ("0.33", r"\frac13", False),
    ("3.14159", r"\pi", False),
    ("1.414", r"\sqrt{2}", False),
    ("0.999999999", "1", False),
    # intervals
    ("[1,2)", "[1,2)", True),
    ("[1,2]", "[1,2)", False),
    ("(1,2]", "[1,2)", False),
    (r"(-\infty, 3)", r"(-\infty,3)", True),
    (r"x \in [1,2]", "[1,2]", True),
    # percentages: 50% is the number 0.5
    (r"50\%", "0.5", True),
    ("0.5", r"50\%", True),
    ("0.5", "50", False),
    # units are not part of the value
    (r"5 \text{cm}", "5", True),
    ("5", r"5\text{ cm}", True),
    (r"5\text{ cm}^2", "5", True),
    (r"6 \text{cm}", "5", False),
    (r"\$5", "5", True),
    # boxed and unboxed, whole completions
    (r"\boxed{5}", "5", True),
    ("5", r"\boxed{5}", True),
    (r"The answer is \boxed{7}.", "7", True),
    (r"<think>maybe \boxed{3}</think> so \boxed{4}", "4", True),
    (r"<think>maybe \boxed{3}</think> so \boxed{4}", "3", False),
    (r"<think>it is \boxed{3}", "3", False),  # cut off while thinking: no answer yet
    (r"\frac{1}{2}.", r"\frac12", True),  # final full stop
    # roots and pi
    (r"2\sqrt{2}", r"\sqrt{8}", True),
    (r"\sqrt{2}/2", r"\frac{1}{\sqrt{2}}", True),
    (r"\sqrt{3}", r"\sqrt{2}", False),
    (r"\pi \cdot 2", r"2\pi", True),
    ("3.141592653589793", r"\pi", True),
    (r"90^\circ", r"\frac{\pi}{2}", False),  # degrees are dropped, 90 != pi/2
    # signs
    ("-3", "-3", True),
    ("3", "-3", False),
    ("- 5", "-5", True),
    (r"-\infty", r"\infty", False),
    # sets and tuples
    (r"\{2,1\}", r"\{1,2\}", True),
    (r"\{1,3\}", r"\{1,2\}", False),
    (r"\{1,2\}", r"\{1,2,3\}", False),
    ("(1,2)", "(1,2)", True),
    ("(2,1)", "(1,2)", False),
    ("2,1", "1,2", True),  # a list of solutions is a set
    (r"3 \text{ and } 4", "3,4", True),
    # equations against values
    ("x=3", "3", True),
    ("3", "x=3", True),
    ("x=4", "3", False),
    ("y=3", "x=3", False),
    ("2x+1", "y=2x+1", True),
    # expressions
    ("(x+1)^2", "x^2+2x+1", True),
    ("(x-1)(x+1)", "x^2-1", True),
    ("(x+1)^2", "x^2+1", False),
    ("4i+3", "3+4i", True),
    # large integers
    ("12345678901234567890", "12345678901234567890", True),
    ("12345678901234567891", "12345678901234567890", False),
    ("1267650600228229401496703205376", "2^{100}", True),
    ("1000000", "1,000,000", True),
    ("1000", "10^{3}", True),
    ("2.0", "2", True),
    # multiple choice, matrices
    ("A", r"\text{(A)}", True),
    ("B", "A", False),
    (r"\begin{pmatrix}1\\2\end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}", True),
    (r"\begin{pmatrix}2\\1\end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}", False),
    # nothing to grade
    ("", "5", False),
    ("5", "", False),
    ("", "", False),
    ("   ", "5", False),
    (r"\boxed{}", "5", False),
]


@pytest.mark.parametrize(("prediction", "gold", "expected"), EQUIVALENCE_CASES)
def test_verify_answer_matches_the_mathematics(prediction: str, gold: str, expected: bool) -> None:
    assert verify_answer(prediction, gold) is expected


# NOT the mathematically correct verdicts: these pin math-verify 0.9.0's actual behaviour
# (through verify_answer), so that an upgrade that changes it makes this test fail and
# the pair can move into EQUIVALENCE_CASES (or the grading rules can be revisited).
KNOWN_MATH_VERIFY_DISAGREEMENTS = [
    # 50 is not 50% (= 0.5), but math-verify compares a percentage both as its value and
    # as the bare number, so "50" is accepted for "50%" and vice versa (MATH answers
    # "what percent" questions with the bare number, which is the reason for the rule).
    ("50", r"50\%", True),
    (r"50\%", "50", True),
    # A two-element set is not the open interval (1, 2), yet math-verify equates them.
    ("(1,2)", r"\{1,2\}", True),
    (r"\{1,2\}", "(1,2)", True),
    # Floats are compared after rounding to 6 decimals: 0.333333 != 1/3 and
    # 1.41421356 != sqrt(2), but both are accepted.
    ("0.333333", r"\frac13", True),
    ("1.41421356", r"\sqrt{2}", True),
    # The solution set of x < 3 is (-oo, 3); math-verify only compares relations with
    # intervals when the *prediction* is the interval.
    ("x<3", r"(-\infty,3)", False),
    # Without other complex-number cues, i is read as a plain symbol, not sqrt(-1).
    (r"\sqrt{-1}", "i", False),
    # ARABIC-INDIC DIGIT THREE is the number 3, but the parser only knows ASCII digits.
    ("\u0663", "3", False),
]


@pytest.mark.parametrize(("prediction", "gold", "math_verify_says"), KNOWN_MATH_VERIFY_DISAGREEMENTS)
def test_known_math_verify_disagreements_are_pinned(prediction: str, gold: str, math_verify_says: bool) -> None:
    assert verify_answer(prediction, gold) is math_verify_says


def _timed_verify(prediction: str, gold: str, timeout_s: float = 1.0) -> tuple[bool, float]:
    start = time.perf_counter()
    verdict = verify_answer(prediction, gold, timeout_s=timeout_s)
    return verdict, time.perf_counter() - start


ADVERSARIAL_CASES = {
    "power tower": (r"\boxed{9^{9^{9^9}}}", "1"),
    "huge power": ("2^{10^{10}}", "1"),
    "1 MB of digits": ("7" * 1_000_000, "7"),
    "1 MB of open braces": ("{" * 1_000_000, "1"),
    "5000-deep braces": ("{" * 5000 + "1" + "}" * 5000, "1"),
    "5000-deep boxed parentheses": (r"\boxed{" + "(" * 5000 + "1" + ")" * 5000 + "}", "1"),
    "unicode digit": ("\u0663", "3"),
    "unicode soup": ("∑∞√😀\u202e\ufeff", "1"),
    "null bytes": ("\x00" * 1000, "0"),
}


@pytest.mark.parametrize(("prediction", "gold"), ADVERSARIAL_CASES.values(), ids=ADVERSARIAL_CASES.keys())
def test_adversarial_input_returns_false_within_two_seconds(prediction: str, gold: str) -> None:
    verdict, elapsed = _timed_verify(prediction, gold)
    assert elapsed < 2.0
    assert verdict is False


def test_null_bytes_next_to_an_answer_neither_raise_nor_hang() -> None:
    # "3" followed by NULs: either verdict is defensible, so only the contract is checked.
    verdict, elapsed = _timed_verify("3", "3\x00\x00")
    assert elapsed < 2.0
    assert isinstance(verdict, bool)


def test_verifier_answers_correctly_right_after_a_timeout() -> None:
    assert _timed_verify("9^{9^{9^9}}", "1")[0] is False
    verdict, elapsed = _timed_verify(r"\frac{1}{2}", "0.5")
    assert verdict is True
    assert elapsed < 0.5


def test_worker_that_overruns_is_killed_and_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    verify_answer("1", "1")  # make sure a worker and its spare exist
    stuck_pid = math_task._POOL.worker_pids()[0]
    # Let the worker's own deadline come after the caller's, as for a C-level loop that
    # SIGALRM cannot interrupt, so that only the hard kill can end the call.
    monkeypatch.setattr(math_task, "_SOFT_DEADLINE_FRACTION", 10.0)
    verdict, elapsed = _timed_verify("9^{9^{9^9}}", "1", timeout_s=0.5)
    assert verdict is False
    assert elapsed < 1.5
    assert stuck_pid not in math_task._POOL.worker_pids()
    monkeypatch.undo()
    verdict, elapsed = _timed_verify(r"\sqrt{8}", r"2\sqrt{2}")
    assert verdict is True
    assert elapsed < 1.0  # the warm spare answers, no cold start
    assert stuck_pid not in math_task._POOL.worker_pids()


def test_answers_over_the_caps_are_rejected_without_parsing() -> None:
    long_answer = "1" * (MAX_ANSWER_CHARS + 1)
    deep_answer = "(" * (MAX_NESTING_DEPTH + 1) + "1" + ")" * (MAX_NESTING_DEPTH + 1)
    assert _timed_verify(long_answer, long_answer)[0] is False
    verdict, elapsed = _timed_verify(deep_answer, "1")
    assert verdict is False
    assert elapsed < 0.1  # far less than a parse of this would take
    assert verify_answer("((1))", "1") is True  # modest nesting is parsed as usual


def test_verify_answer_rejects_non_strings_and_bad_timeouts() -> None:
    with pytest.raises(TypeError):
        verify_answer(None, "1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        verify_answer("1", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout_s"):
        verify_answer("1", "1", timeout_s=0)


def test_verify_answer_works_from_threads() -> None:
    # math-verify's own signal-based timeouts raise outside the main thread.
    pairs = [(r"\frac{1}{2}", "0.5", True), ("3", "4", False), (r"\sqrt{8}", r"2\sqrt2", True)] * 3
    with ThreadPoolExecutor(max_workers=3) as pool:
        verdicts = list(pool.map(lambda pair: verify_answer(pair[0], pair[1]), pairs))
    assert verdicts == [expected for _, _, expected in pairs]


def test_verify_answer_overhead_is_a_few_milliseconds() -> None:
    verify_answer("1", "1")
    start = time.perf_counter()
    for numerator in range(20):
        assert verify_answer(f"{numerator}/7", rf"\frac{{{numerator}}}{{7}}")
    assert (time.perf_counter() - start) / 20 < 0.05  # ~1-2 ms measured; generous for CI load


def _process_is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_workers_do_not_outlive_the_interpreter() -> None:
    script = (
        "from rlnb import math_task\n"
        "assert math_task.verify_answer('1/2', '0.5')\n"
        "print(*math_task._POOL.worker_pids())\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    pids = [int(pid) for pid in result.stdout.split()]
    assert len(pids) == 2  # the active worker and its spare
    deadline = time.monotonic() + 5
    while any(map(_process_is_running, pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(_process_is_running, pids))


# ------------------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{\sqrt{\frac{a}{b}}} done", r"\sqrt{\frac{a}{b}}"),
        (r"\boxed{1} then \boxed{2} and finally \boxed{3}.", "3"),
        (r"\fbox{4}", "4"),
        (r"\boxed{1} and \fbox{5}", "5"),
        (r"\boxed {6}", "6"),
        (r"\boxed{\{1,2\}}", r"\{1,2\}"),  # escaped braces do not count
        (r"\boxed{\}}", r"\}"),
        (r"\boxed{}", ""),
        (r"\boxed{\frac{1}{2}", None),  # unbalanced
        (r"\boxed{1} then \boxed{2", None),  # the last box decides
        ("no box at all", None),
        ("", None),
    ],
)
def test_extract_boxed(text: str, expected: str | None) -> None:
    assert extract_boxed(text) == expected


def test_extract_boxed_is_linear_on_adversarial_input() -> None:
    start = time.perf_counter()
    assert extract_boxed(r"\boxed{" + "{" * 1_000_000) is None
    assert extract_boxed(r"\boxed" * 200_000) is None
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (r"<think>try \boxed{1}</think>The answer is \boxed{2}.", "2"),
        (r"<think>a</think><think>b \boxed{9}</think>so \boxed{3}", "3"),
        ("<think>reasoning</think> 42.", "42"),
        (r"no think block, \boxed{x+1}", "x+1"),
        ("  7  ", "7"),
        (r"<think>still going \boxed{5}", None),
        (r"<think>done</think>\boxed{ }", None),
        ("", None),
    ],
)
def test_extract_final_answer(completion: str, expected: str | None) -> None:
    assert extract_final_answer(completion) == expected


# ---------------------------------------------------------------------------- rewards

GOOD = r"<think>2+2 is 4</think> The answer is \boxed{4}."
WRONG = r"<think>2+2 is 5</think> The answer is \boxed{5}."
UNBOXED = "<think>2+2 is 4</think> The answer is 4."
NO_THINK = r"The answer is \boxed{4}."
GARBAGE = "}}{{\\boxed{\x00<think></think></think>\\fbox"


def test_accuracy_reward_scores_strings_and_survives_garbage() -> None:
    completions = [GOOD, WRONG, UNBOXED, "", GARBAGE, "<think>never finished"]
    rewards = math_accuracy_reward(completions=completions, answer=["4"] * len(completions))
    assert rewards == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    assert all(type(reward) is float for reward in rewards)


def test_accuracy_reward_accepts_conversational_completions_and_trl_keywords() -> None:
    completions = [
        [{"role": "assistant", "content": GOOD}],
        [{"role": "assistant", "content": WRONG}],
        [{"role": "assistant", "content": None}],
        [{"role": "assistant"}],
        [],
        None,
    ]
    rewards = math_accuracy_reward(
        prompts=[format_prompt("What is 2+2?")] * len(completions),
        completions=completions,
        completion_ids=[[1, 2, 3]] * len(completions),
        answer=[4] * len(completions),  # typed columns arrive as numbers
        problem=["What is 2+2?"] * len(completions),
        trainer_state=object(),
    )
    assert rewards == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_accuracy_reward_rejects_misaligned_columns() -> None:
    with pytest.raises(ValueError, match="gold"):
        math_accuracy_reward(completions=[GOOD, GOOD], answer=["4"])


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (GOOD, 1.0),
        ("\n<think>\nline\n</think>\n\\boxed{\\frac{1}{2}}", 1.0),
        ([{"role": "assistant", "content": GOOD}], 1.0),
        (WRONG, 1.0),  # format only: a wrong answer can be well formed
        (UNBOXED, 0.0),
        (NO_THINK, 0.0),
        (r"<think>\boxed{4}</think> so four", 0.0),  # box only inside the reasoning
        (r"<think>a</think><think>b</think>\boxed{4}", 0.0),
        (r"<think>a</think>\boxed{}", 0.0),
        (r"<think>a</think>\boxed{4", 0.0),
        (r"preamble <think>a</think>\boxed{4}", 0.0),
        ("", 0.0),
        (GARBAGE, 0.0),
        ([{"role": "assistant", "content": None}], 0.0),
        (None, 0.0),
    ],
)
def test_format_reward(completion: object, expected: float) -> None:
    assert math_format_reward(completions=[completion], prompts=["p"], completion_ids=[[0]], answer=["4"]) == [
        expected
    ]


# ---------------------------------------------------------------------------- prompts


def _tiny_tokenizer(chat_template: str | None):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(WordLevel({"[UNK]": 0, "two": 1}, unk_token="[UNK]"))
    backend.pre_tokenizer = Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", name_or_path="tiny-wordlevel")
    tokenizer.chat_template = chat_template
    return tokenizer


def test_format_prompt_without_tokenizer_is_conversational() -> None:
    messages = format_prompt("What is 1+1?")
    assert messages == [
        {"role": "system", "content": R1_SYSTEM_PROMPT},
        {"role": "user", "content": "What is 1+1?"},
    ]
    assert "<think>" in R1_SYSTEM_PROMPT and "</think>" in R1_SYSTEM_PROMPT and r"\boxed{}" in R1_SYSTEM_PROMPT


def test_format_prompt_renders_with_a_chat_template() -> None:
    template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    rendered = format_prompt("What is 1+1?", _tiny_tokenizer(template))
    assert rendered == f"<|system|>{R1_SYSTEM_PROMPT}\n<|user|>What is 1+1?\n<|assistant|>"


def test_format_prompt_explains_a_missing_chat_template() -> None:
    with pytest.raises(ValueError, match="tiny-wordlevel") as error:
        format_prompt("What is 1+1?", _tiny_tokenizer(None))
    message = str(error.value)
    assert "chat_template" in message
    assert "without a tokenizer" in message


# ------------------------------------------------------------------------------- data


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the Arrow files `datasets` writes for local loads out of the home directory."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


MATH_ROWS = [
    {"problem": "What is 1+1?", "answer": "2", "solution": r"Add: \boxed{2}.", "level": "Level 1"},
    {"problem": "Half of 1?", "answer": r"\frac{1}{2}", "solution": r"\boxed{\frac12}", "level": "Level 2"},
    {"problem": "3 squared?", "answer": "9", "solution": r"\boxed{9}", "level": "Level 1"},
]


@pytest.mark.usefixtures("hf_cache")
def test_load_math_dataset_from_jsonl(tmp_path: Path) -> None:
    dataset = load_math_dataset(str(_write_jsonl(tmp_path / "math.jsonl", MATH_ROWS)))
    assert sorted(dataset.column_names) == ["answer", "level", "problem", "prompt"]
    assert dataset["answer"] == ["2", r"\frac{1}{2}", "9"]
    assert dataset["problem"] == [row["problem"] for row in MATH_ROWS]
    assert dataset[0]["prompt"] == format_prompt("What is 1+1?")
    assert len(load_math_dataset(str(tmp_path / "math.jsonl"), limit=2)) == 2


@pytest.mark.usefixtures("hf_cache")
def test_load_math_dataset_takes_gold_from_the_solution(tmp_path: Path) -> None:
    rows = [{"problem": r["problem"], "solution": r["solution"]} for r in MATH_ROWS]
    rows.append({"problem": "No boxed answer here", "solution": "It is three."})
    path = _write_jsonl(tmp_path / "solutions.jsonl", rows)
    with pytest.warns(UserWarning, match="dropped 1 of 4"):
        dataset = load_math_dataset(str(path), split="train")
    assert dataset["answer"] == ["2", r"\frac12", "9"]


@pytest.mark.usefixtures("hf_cache")
def test_load_math_dataset_with_expert_traces(tmp_path: Path) -> None:
    rows = [
        {"problem": "What is 1+1?", "answer": "2", "generations": [r"<think>1+1</think>\boxed{2}", "second try"]},
        {"problem": "Half of 1?", "answer": "0.5", "generations": [r"<think>1/2</think>\boxed{0.5}"]},
    ]
    path = _write_jsonl(tmp_path / "openr1.jsonl", rows)
    dataset = load_math_dataset(str(path), trace_column="generations")
    assert sorted(dataset.column_names) == ["answer", "expert", "problem", "prompt"]
    assert dataset["expert"] == [r"<think>1+1</think>\boxed{2}", r"<think>1/2</think>\boxed{0.5}"]
    assert math_accuracy_reward(completions=dataset["expert"], answer=dataset["answer"]) == [1.0, 1.0]


@pytest.mark.usefixtures("hf_cache")
def test_load_math_dataset_reports_missing_columns(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "math.jsonl", MATH_ROWS)
    with pytest.raises(ValueError, match="generations") as error:
        load_math_dataset(str(path), trace_column="generations")
    assert "level" in str(error.value)  # lists the columns that are there
    with pytest.raises(ValueError, match="question"):
        load_math_dataset(str(path), problem_column="question")
    with pytest.raises(ValueError, match="neither an answer column"):
        load_math_dataset(str(path), answer_column="final", solution_column="worked")


@pytest.mark.usefixtures("hf_cache")
def test_load_math_dataset_from_a_saved_folder(tmp_path: Path) -> None:
    import datasets

    datasets.DatasetDict({"test": datasets.Dataset.from_list(MATH_ROWS)}).save_to_disk(str(tmp_path / "saved"))
    assert load_math_dataset(str(tmp_path / "saved"))["answer"] == ["2", r"\frac{1}{2}", "9"]
    with pytest.raises(ValueError, match="no split 'train'"):
        load_math_dataset(str(tmp_path / "saved"), split="train")


def test_load_math_dataset_missing_local_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_math_dataset(str(tmp_path / "absent.jsonl"))


@pytest.mark.usefixtures("hf_cache")
def test_load_math_dataset_offline_hub_id_says_how_to_use_a_local_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # Both libraries read these variables once, at import; patch the values they read, so
    # that no request (and no retry loop on a machine without network) is attempted.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    with pytest.raises(DatasetUnavailableError) as error:
        load_math_dataset("rlnb-tests/no-such-math-dataset")
    assert time.perf_counter() - start < 10
    assert isinstance(error.value, RuntimeError)
    message = str(error.value)
    assert "rlnb-tests/no-such-math-dataset" in message
    assert "network" in message
    assert ".jsonl" in message and "save_to_disk" in message


@pytest.mark.usefixtures("hf_cache")
def test_load_math_dataset_refuses_a_set_without_gradable_rows(tmp_path: Path) -> None:
    # Issue #17 item 6: an empty training set trained nothing and saved the base as final/.
    path = _write_jsonl(tmp_path / "blank.jsonl", [{**row, "answer": ""} for row in MATH_ROWS])
    with pytest.raises(ValueError, match=r"blank\.jsonl.*none of its 3 rows has a gold answer.*'answer'"):
        load_math_dataset(str(path))
    traces = _write_jsonl(tmp_path / "traces.jsonl", [{**row, "trace": ""} for row in MATH_ROWS])
    with pytest.raises(ValueError, match="none of its 3 rows has a gold answer and an expert trace"):
        load_math_dataset(str(traces), trace_column="trace")


@pytest.mark.usefixtures("hf_cache")
@pytest.mark.parametrize("limit", [0, -1, 2.5, True])
def test_load_math_dataset_refuses_a_limit_that_keeps_no_rows(tmp_path: Path, limit: object) -> None:
    path = _write_jsonl(tmp_path / "math.jsonl", MATH_ROWS)
    with pytest.raises(ValueError, match=rf"limit must be a positive number of rows.*{limit!r}"):
        load_math_dataset(str(path), limit=limit)  # type: ignore[arg-type]

