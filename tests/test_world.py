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
