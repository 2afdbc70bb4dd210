import random

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlnb.paths import base_model_dir
from rlnb.world import (
    LEVELS, TASK_CHARS, PretrainRecipe, build_tokenizer, direct_answer, expert_trace, is_test_pair,
    make_problems, pretrain_base, sample_problem, uses_steps,
)
from rlnb.verify import is_correct, parse_completion


def test_tokenizer_round_trips_every_task_character():
    tok = build_tokenizer()
    text = TASK_CHARS + "12+34=4+2+0=6;3+1+0=4;A46"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text), "one token per character"
    assert tok.unk_token_id not in ids
    assert tok.decode(ids) == text
    assert tok(text)["input_ids"][0] == tok.bos_token_id


@pytest.mark.parametrize("level", LEVELS)
def test_expert_solves_every_level(level):
    rng = random.Random(level)
    for _ in range(200):
        p = sample_problem(level, rng)
        trace = expert_trace(p.a, p.b)
        assert is_correct(trace, p.answer)
        parsed = parse_completion(trace)
        assert parsed.well_formed and parsed.wrote_steps
        assert trace.count(";") == level


def test_direct_answer_is_well_formed_without_steps():
    parsed = parse_completion(direct_answer(47, 85))
    assert parsed == parse_completion("A132") and parsed.answer == 132
    assert parsed.well_formed and not parsed.wrote_steps and not uses_steps("A132")


def test_held_out_split_is_disjoint_and_deterministic():
    test = make_problems([3, 4], 150, seed=0, split="test")
    train = make_problems([3, 4], 150, seed=0, split="train")
    assert all(is_test_pair(p.a, p.b) for p in test)
    assert not any(is_test_pair(p.a, p.b) for p in train)
    assert test == make_problems([3, 4], 150, seed=0, split="test")
    assert len({(p.a, p.b) for p in test}) == len(test)


def test_unknown_level_and_split_are_named():
    with pytest.raises(ValueError, match="unknown level 9"):
        sample_problem(9, random.Random(0))
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        sample_problem(3, random.Random(0), "dev")


def test_shipped_base_loads_with_auto_classes():
    path = base_model_dir()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    n_params = sum(p.numel() for p in model.parameters())
    assert 0.5e6 < n_params < 2e6
    assert tok.decode(tok("12+34=")["input_ids"], skip_special_tokens=True) == "12+34="


def test_short_pretraining_lowers_the_loss():
    recipe = PretrainRecipe(steps=60, batch_size=32, warmup_steps=5, seed=3)
    result = pretrain_base(recipe, progress=False)
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)


def test_pretraining_is_seeded(tmp_path):
    recipe = PretrainRecipe(steps=3, batch_size=8, warmup_steps=1, seed=5)
    a = pretrain_base(recipe, progress=False)
    b = pretrain_base(recipe, out_dir=tmp_path / "m", progress=False)
    assert a.losses == b.losses
    assert torch.equal(a.model.model.embed_tokens.weight, b.model.model.embed_tokens.weight)
    assert (tmp_path / "m" / "recipe.json").exists()


# Issue #30 item 10: the worked format pays only for the problem's own digit steps.
def test_worked_format_reward_pays_only_for_the_problems_own_digit_steps() -> None:
    from rlnb.verify import worked_format_reward
    from rlnb.world import expert_trace

    texts = ["0+0+0=0;A5", "9+9+1=99;A132", expert_trace(47, 85), "7+5+0=12;A132", "7+5+0=12;4+8+1=13;A999",
             "A132", "7+5+0=13;4+8+1=13;A132", "7+5+0=12;8+4+1=13;A132"]
    # a wrong sum is an arithmetic slip (the accuracy reward's business), swapped digits are not this problem
    assert worked_format_reward(texts, prompts=["47+85="] * len(texts)) == [0, 0, 1, 0, 1, 0, 1, 0]
    assert worked_format_reward([expert_trace(5, 123)], prompts=["5+123="]) == [1.0]  # 0 past the shorter number


def test_a_prompt_that_is_not_a_world_problem_is_an_error() -> None:
    from rlnb.world import operands

    assert operands("47+85=") == (47, 85) and operands("47+85:") == (47, 85)
    with pytest.raises(ValueError, match="not a tiny-world prompt"):
        operands("what is 47+85?")
