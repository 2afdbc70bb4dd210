"""Notebook 07's guidance: the schedule, the guidance text, the loss's terms, the options, and the trainer.

The losses are written from the papers' descriptions (QuestA, Prefix-RFT, UFT, BREAD): their official code
was not transcribed, so each term is checked against the equation in ``rlnb.guidance.guidance_loss``'s
docstring, computed here by hand, token by token.
"""

import math

import pytest
import torch

from rlnb.evaluate import forced_start, prompt_text
from rlnb.guidance import GuidanceConfig, guidance_loss, guidance_share, prefix_token_mask, top_entropy_mask
from rlnb.train import world_dataset
from rlnb.world import Problem, expert_trace, trace_prefix


def test_trace_prefix_gives_whole_steps_never_the_answer():
    trace = expert_trace(4785, 1234)  # 4 column steps, then the answer
    assert trace_prefix(trace, 0.0) == ""
    assert trace_prefix(trace, 0.01) == "5+4+0=9;"  # any share above 0 gives at least one step
    assert trace_prefix(trace, 0.25) == "5+4+0=9;"
    assert trace_prefix(trace, 0.5) == "5+4+0=9;8+3+0=11;"
    assert trace_prefix(trace, 1.0) == trace.rsplit(";", 1)[0] + ";"  # every step, and no answer
    assert "A" not in trace_prefix(trace, 1.0)


def test_schedules_start_and_end_where_asked():
    assert guidance_share(0, 50, 0.5, 0.25) == 0.5
    assert guidance_share(50, 50, 0.5, 0.25) == 0.25
    assert guidance_share(25, 50, 0.5, 0.25) == pytest.approx(0.375)
    assert guidance_share(0, 50, 0.95, 0.05, "cosine") == pytest.approx(0.95)
    assert guidance_share(50, 50, 0.95, 0.05, "cosine") == pytest.approx(0.05)
    assert guidance_share(25, 50, 0.95, 0.05, "cosine") == pytest.approx(0.5)
    assert guidance_share(10, 50, 0.95, 0.05, "cosine") > guidance_share(10, 50, 0.95, 0.05, "linear")
    with pytest.raises(ValueError, match="unknown guidance schedule 'step'"):
        guidance_share(0, 10, 0.5, 0.2, "step")


def test_hinted_evaluation_forms_write_the_hint_for_the_model():
    p = Problem(4785, 1234, 4)
    assert forced_start(p, "hint-50") == "5+4+0=9;8+3+0=11;"
    assert prompt_text(p, "hint-25") == "4785+1234=5+4+0=9;"
    assert forced_start(p, "first-step") == "5+4+0=9;"
    assert forced_start(p, "task") == ""


def test_the_mismatched_column_is_another_problem_of_the_same_level_and_leaves_the_rows_alone():
    data = world_dataset([4, 5], 40, seed=3)
    for row in data:
        own, other = row["expert"], row["mismatched"]
        assert own.split(";")[0] != other.split(";")[0]
        assert own.count(";") == other.count(";")  # same number of columns: the same level
    assert data["prompt"] == world_dataset([4, 5], 40, seed=3)["prompt"]


def test_prefix_and_top_entropy_masks():
    mask = prefix_token_mask(torch.tensor([0, 2, 5]), 4)
    assert mask.tolist() == [[False] * 4, [True, True, False, False], [True] * 4]
    entropies = torch.tensor([[0.9, 0.1, 0.5, 0.2], [0.3, 0.8, 0.0, 0.0]])
    tokens = torch.tensor([[True, True, True, False], [True, True, False, False]])
    top = top_entropy_mask(entropies, tokens, 0.4)  # 5 guidance tokens: the 2 highest
    assert top.tolist() == [[True, False, False, False], [False, True, False, False]]
    assert top_entropy_mask(entropies, torch.zeros_like(tokens), 0.2).sum() == 0


def _batch():
    torch.manual_seed(0)
    logps = -torch.rand(3, 5) * 2
    old = logps.detach() + 0.1 * torch.randn(3, 5)
    adv = torch.tensor([0.75, -0.25, -0.5])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.float)
    prefix = prefix_token_mask(torch.tensor([2, 0, 0]), 5)
    entropies = torch.rand(3, 5)
    return logps, old, adv, prefix, mask, entropies


def test_own_tokens_are_luffys_on_policy_term_summed_over_t_max():
    logps, old, adv, prefix, mask, ent = _batch()
    loss = guidance_loss(logps, old, adv, prefix, mask, ent, prefix_loss="none", max_completion_length=8,
                         entropy_coef=0.0)
    by_hand = 0.0
    for i in range(3):
        for t in range(5):
            if mask[i, t] and not prefix[i, t]:
                by_hand += -math.exp(float(logps[i, t] - old[i, t])) * float(adv[i])
    assert float(loss.on_policy) == pytest.approx(by_hand / 8, rel=1e-5)
    assert float(loss.off_policy) == 0.0
    bonus = guidance_loss(logps, old, adv, prefix, mask, ent, prefix_loss="none", max_completion_length=8,
                          entropy_coef=0.01).entropy_bonus
    assert float(bonus) == pytest.approx(0.01 * float((ent * mask).sum() / mask.sum()), rel=1e-6)


def test_nll_prefix_term_is_a_token_mean_of_the_guidance_log_likelihood():
    logps, old, adv, prefix, mask, ent = _batch()
    loss = guidance_loss(logps, old, adv, prefix, mask, ent, prefix_loss="nll", nll_coef=0.5,
                         max_completion_length=8)
    assert float(loss.off_policy) == pytest.approx(-0.5 * float(logps[0, :2].mean()), rel=1e-6)


def test_top_entropy_prefix_term_shapes_only_the_highest_entropy_guidance_token():
    logps, old, adv, prefix, mask, ent = _batch()
    loss = guidance_loss(logps, old, adv, prefix, mask, ent, prefix_loss="top_entropy", top_quantile=0.5,
                         shaping_gamma=0.1, max_completion_length=8)
    t = int(ent[0, :2].argmax())  # 2 guidance tokens, top half: the one with the higher entropy
    p = math.exp(float(logps[0, t]))
    assert float(loss.off_policy) == pytest.approx(-(p / (p + 0.1)) * 0.75 / 8, rel=1e-5)
    # the gradient reaches that token's log-prob and no other guidance token's
    leaf = logps.clone().requires_grad_(True)
    guidance_loss(leaf, old, adv, prefix, mask, ent, prefix_loss="top_entropy", top_quantile=0.5,
                  max_completion_length=8).off_policy.backward()
    assert leaf.grad[0, t] != 0 and leaf.grad[0, 1 - t] == 0 and leaf.grad[1:].abs().sum() == 0


def test_options_are_checked():
    common = dict(output_dir="/tmp/unused", use_cpu=True, num_generations=8, per_device_train_batch_size=8,
                  scale_rewards="none", expert_traces=0)
    with pytest.raises(ValueError, match="set expert_traces=0"):
        GuidanceConfig(**{**common, "expert_traces": 1})
    with pytest.raises(ValueError, match="unknown guidance place 'prompt'"):
        GuidanceConfig(**common, place="prompt")
    with pytest.raises(ValueError, match="share_end must be a share"):
        GuidanceConfig(**common, share_end=1.5)
    with pytest.raises(ValueError, match="guided_rows=9 must be between 1"):
        GuidanceConfig(**common, guided_rows=9)
    GuidanceConfig(**common, guided_rows=8)  # UFT: every rollout of the group starts with the hint
    with pytest.raises(ValueError, match="keep at least one own rollout"):
        GuidanceConfig(**common, guided_rows=8, when="failed_groups")
    with pytest.raises(ValueError, match="unknown guidance share_sampling 'poisson'"):
        GuidanceConfig(**common, share_sampling="poisson")
    with pytest.raises(ValueError, match="scale_rewards='none'"):
        GuidanceConfig(**{**common, "scale_rewards": "group"})


@pytest.mark.parametrize("place", ["prefix", "hint"])
def test_the_trainer_guides_rollouts_and_trains(place, tmp_path, monkeypatch):
    """Two steps of each place: guided rows start with (prefix) or are conditioned on (hint) the trace's
    first steps, are judged with them, and the run finishes with a loadable model."""
    import pandas as pd

    from rlnb.runs import load_or_train
    from rlnb.train import RunConfig

    monkeypatch.setenv("RLNB_RUNS", str(tmp_path))
    options = {"expert_traces": 0, "entropy_coef": 0.0, "place": place, "share_start": 0.5, "share_end": 0.5,
               "sample_every": 1}
    cfg = RunConfig(method="guidance", levels=(4,), max_steps=2, save_steps=2, prompts_per_step=4,
                    num_generations=4, max_completion_length=40, learning_rate=1e-3, loss_type="dr_grpo",
                    scale_rewards="none", format_reward_weight=0.0, method_options=options)
    run = load_or_train(cfg, "guidance-test", place)
    metrics = run.metrics
    guided = metrics[metrics.metric == "guidance/guided_rows"]["value"]
    assert guided.tolist() == ([0.25, 0.25] if place == "prefix" else [1.0, 1.0])
    # the base continues the trace's first steps correctly (it knows the procedure), unguided it does not
    assert metrics[metrics.metric == "guidance/guided_accuracy"]["value"].mean() > 0.3
    samples = pd.read_json(run.run_dir / "completions.jsonl", lines=True)
    first = samples[samples.step == samples.step.min()].iloc[0]  # a group's first row is guided
    a, b = map(int, first["prompt"].split("=")[0].split("+"))
    hint = trace_prefix(expert_trace(a, b), 0.5)
    if place == "prefix":
        assert first["prompt"] == f"{a}+{b}=" and first["completion"].startswith(hint)
    else:
        assert first["prompt"] == f"{a}+{b}={hint}" and not first["completion"].startswith(hint)
    assert (run.run_dir / "final" / "config.json").exists()


def test_nll_term_is_ufts_sft_loss():
    """UFT's hint term, transcribed from liumy2010/UFT, ``verl/workers/actor/dp_actor.py``
    (``update_policy``): ``sft_loss = masked_mean(CrossEntropyLoss(reduction='none')(logits, labels), hint_mask)``
    times ``sft_loss_coef``, a token mean of the cross-entropy over the hint tokens of the micro-batch,
    computed here from logits, apart from rlnb's log-probabilities."""
    torch.manual_seed(1)
    logits = torch.randn(3, 5, 19)
    labels = torch.randint(0, 19, (3, 5))
    hint_mask = prefix_token_mask(torch.tensor([3, 1, 0]), 5)
    ce = torch.nn.CrossEntropyLoss(reduction="none")(logits.view(-1, 19), labels.view(-1))
    uft = 0.001 * (ce * hint_mask.reshape(-1)).sum() / hint_mask.sum()
    logps = torch.log_softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    ours = guidance_loss(logps, logps.detach(), torch.zeros(3), hint_mask, torch.ones(3, 5), torch.zeros(3, 5),
                         prefix_loss="nll", nll_coef=0.001, max_completion_length=5, entropy_coef=0.0)
    assert float(ours.off_policy) == pytest.approx(float(uft), rel=1e-5)


def test_binomial_hint_lengths_follow_ufts_sampling():
    """UFT (liumy2010/UFT, ``verl/utils/dataset/rl_dataset.py``): the hint's length is the number of successes
    of Binomial(steps, p(t)), p(t) = 0.05 + 0.45 (1 + cos(pi t / T_hint)), and 0 after T_hint."""
    import numpy as np

    from rlnb.guidance import sampled_share

    rng = np.random.default_rng(0)
    shares = [sampled_share(0.95, 4, rng) for _ in range(4000)]
    assert np.mean(shares) == pytest.approx(0.95, abs=0.01)  # E[Binomial(4, p)] / 4 = p
    assert set(np.round(np.array(shares) * 4)) <= {0, 1, 2, 3, 4}
    assert guidance_share(30, 50, 0.95, 0.05, "cosine", until=0.6) == pytest.approx(0.05)
    assert guidance_share(31, 50, 0.95, 0.05, "cosine", until=0.6) == 0.0
    assert guidance_share(15, 50, 0.95, 0.05, "cosine", until=0.6) == pytest.approx(0.5)
