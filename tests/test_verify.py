import time

import pytest

from rlnb.verify import accuracy_reward, format_reward, parse_completion

ADVERSARIAL = [
    "9" * 100_000,
    "A" + "9" * 100_000,
    "[" * 50_000 + "]" * 50_000,
    "(" * 10_000 + "A12",
    "A٣٤",  # Arabic-Indic digits
    "A１２",  # full-width digits
    "\x00A12\x00",
    "🙂" * 10_000,
    "",
    "A",
    "1+2+0=3;" * 20_000 + "A3",
]


@pytest.mark.parametrize("text", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_adversarial_strings_score_fast_and_never_raise(text):
    start = time.perf_counter()
    acc = accuracy_reward([text], answer=[12])
    fmt = format_reward([text])
    assert time.perf_counter() - start < 1.0
    assert len(acc) == len(fmt) == 1 and all(isinstance(x, float) for x in acc + fmt)


def test_unicode_digits_are_not_answers():
    assert parse_completion("A٣٤").answer is None
    assert accuracy_reward(["A１２"], answer=[12]) == [0.0]


def test_first_answer_counts_and_trailing_text_breaks_format():
    assert accuracy_reward(["A46A12"], answer=[46]) == [1.0]
    assert format_reward(["A46A12", "A46", "4+2+0=6;A6", "4+2+0=6;"]) == [0.0, 1.0, 1.0, 0.0]


def test_reward_functions_take_trl_keywords_and_odd_completion_types():
    completions = ["A46", [{"role": "assistant", "content": "A46"}], None, 46, [], [{"content": None}]]
    out = accuracy_reward(prompts=["12+34="] * 6, completions=completions, completion_ids=[[1]] * 6,
                          answer=[46] * 6, level=[2] * 6, trainer_state=None)
    assert out == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert len(format_reward(prompts=None, completions=completions, answer=[46] * 6)) == 6


def test_mismatched_answers_are_reported():
    with pytest.raises(ValueError, match="2 completions but 1 answers"):
        accuracy_reward(["A1", "A2"], answer=[1])


def test_worked_format_reward_asks_for_steps_then_the_answer():
    from rlnb.verify import worked_format_reward

    texts = ["7+5+0=12;4+8+1=13;A132", "A132", "7+5+0=12;A12 junk", "7+5+0=12;"]
    assert worked_format_reward(texts, prompts=["47+85="] * 4) == [1.0, 0.0, 0.0, 0.0]
