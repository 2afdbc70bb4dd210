import numpy as np
import pytest
import torch

from rlnb.evaluate import evaluate, summarize
from rlnb.rollout import require_vllm, sample, token_logprobs
from rlnb.world import make_problems


def test_sample_shapes_logprobs_and_seed(base):
    model, tok = base
    prompts = ["12+34=", "99+99="]
    a = sample(model, tok, prompts, n=3, max_new_tokens=30, seed=1, batch_size=4, progress=False)
    b = sample(model, tok, prompts, n=3, max_new_tokens=30, seed=1, batch_size=4, progress=False)
    assert len(a) == 6 and list(a.prompt_index) == [0, 0, 0, 1, 1, 1]
    assert a.texts == b.texts
    for ids, lp, ent, text in zip(a.completion_ids, a.logprobs, a.entropies, a.texts):
        assert len(ids) == len(lp) == len(ent)
        assert np.all(lp <= 0) and np.all(ent >= 0)
        assert tok.decode(ids, skip_special_tokens=True) == text


def test_sampled_logprobs_match_a_forward_pass(base):
    model, tok = base
    roll = sample(model, tok, ["47+85="], n=2, max_new_tokens=30, seed=0, progress=False)
    for ids, lp in zip(roll.completion_ids, roll.logprobs):
        full = torch.tensor([tok("47+85=")["input_ids"] + ids])
        ref = token_logprobs(model, full)[0, -len(ids):]
        np.testing.assert_allclose(lp, ref.numpy(), atol=1e-4)


def test_unknown_backend_and_vllm_without_gpu(base):
    model, tok = base
    with pytest.raises(ValueError, match="unknown sampling backend 'jax'"):
        sample(model, tok, ["1+1="], backend="jax")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="needs a CUDA GPU.*backend='hf'"):
            require_vllm()
        with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
            sample(model, tok, ["1+1="], backend="vllm")


def test_shipped_base_reproduces_its_stored_pass_at_1(base):
    """The profile stored at ship time (other problems, other seed) within sampling error."""
    import json

    from rlnb.paths import base_model_dir

    stored = json.loads((base_model_dir() / "profile.json").read_text())
    model, tok = base
    level = "3"  # the inside level: the one whose pass@1 is far from 0 and 1, so a changed checkpoint shows
    table = evaluate(model, tok, make_problems([int(level)], 100, seed=99), n=16, seed=3, progress=False)
    measured = summarize(table)["pass@1"].iloc[0]
    per_problem = table["correct"] / table["n"]
    expected = stored["levels"][level]["task pass@1"]
    stderr = np.sqrt(per_problem.var(ddof=1) / len(per_problem) + stored["pass@1_stderr"][level] ** 2)
    assert abs(measured - expected) < 4 * stderr + 0.01, (measured, expected)
