"""Clip-Cov and KL-Cov (rlnb.entropy_control): token selection, penalty, and the trainer's loss.

The covariance, forking-token and entropy-law functions they build on are
tested on constructed inputs in tests/test_metrics.py
(``test_centered_logp_adv_cov_on_constructed_case``,
``test_top_entropy_mask_*``, ``test_law_fit_recovers_parameters_*``).
"""

import pytest
import torch

from rlnb.entropy_control import CovGRPOTrainer, clip_cov_selection, cov_token_loss, kl_cov_penalty, kl_cov_selection
from rlnb.runs import load_or_train, run_path
from rlnb.train import RunConfig, build_trainer
from rlnb.trainers import RecordingGRPOTrainer

TINY_RUN = dict(method="cov", max_steps=2, prompts_per_step=2, num_generations=4, max_completion_length=36,
                learning_rate=1e-3, save_steps=2, levels=(3,), format_reward_weight=0.1)
"""Room for a 3-digit trace, and a format reward, so that the groups have reward spread (a gradient)."""


def _band_case():
    """40 valid tokens with covariances -1.0 .. 2.9 (step 0.1), 8 padded ones carrying in-band values."""
    cov = torch.arange(48, dtype=torch.float32).view(4, 12) / 10 - 1.0
    mask = torch.ones(4, 12)
    mask[:, 10:] = 0
    return cov, mask


def test_clip_cov_takes_exactly_the_configured_fraction_inside_the_band():
    cov, mask = _band_case()  # 40 valid tokens
    inside = (mask > 0) & (cov > 0.5) & (cov < 2.0)
    for ratio, expected in ((0.1, 4), (0.25, 10), (0.0, 0)):
        chosen = clip_cov_selection(cov, mask, ratio, 0.5, 2.0, generator=torch.Generator().manual_seed(1))
        assert int(chosen.sum()) == expected
        assert not (chosen & ~inside).any(), "a token outside the band or on padding was clipped"
    # More asked than eligible: every eligible token, nothing else.
    everything = clip_cov_selection(cov, mask, 1.0, 0.5, 2.0)
    assert torch.equal(everything, inside)


def test_clip_cov_skips_tokens_the_ratio_clip_already_cut_and_draws_at_random():
    cov, mask = _band_case()
    clipped = torch.zeros_like(mask, dtype=torch.bool)
    clipped[0, :] = True
    chosen = clip_cov_selection(cov, mask, 1.0, -10.0, 10.0, already_clipped=clipped)
    assert not chosen[0].any() and int(chosen.sum()) == 30
    draws = {tuple(clip_cov_selection(cov, mask, 0.1, -10.0, 10.0, generator=torch.Generator().manual_seed(s))
                   .flatten().nonzero().flatten().tolist()) for s in range(5)}
    assert len(draws) > 1


def test_cov_selections_reject_bad_parameters():
    cov, mask = _band_case()
    with pytest.raises(ValueError, match="clip_cov_ratio"):
        clip_cov_selection(cov, mask, 1.5, 0.0, 1.0)
    with pytest.raises(ValueError, match="lower < upper"):
        clip_cov_selection(cov, mask, 0.1, 2.0, 1.0)
    with pytest.raises(ValueError, match="kl_cov_ratio"):
        kl_cov_selection(cov, mask, -0.1)


def test_kl_cov_selects_the_top_covariance_tokens_and_penalises_only_them():
    cov, mask = _band_case()  # padding holds the largest values: it must never be chosen
    selected = kl_cov_selection(cov, mask, 0.1)
    top4 = torch.zeros_like(selected)
    top4[3, 6:10] = True  # 2.6 .. 2.9, the four largest valid covariances
    assert torch.equal(selected, top4)

    logps = torch.randn(4, 12, requires_grad=True)
    old = logps.detach() - 0.3
    penalty = kl_cov_penalty(logps, old, selected, coef=2.0)
    torch.testing.assert_close(penalty[selected], torch.full((4,), 0.6))
    assert not penalty[~selected].any()
    penalty.sum().backward()
    assert not logps.grad[~selected].any() and logps.grad[selected].abs().min() > 0


@pytest.fixture(scope="module")
def cov_trainer(tmp_path_factory):
    """A tiny CovGRPOTrainer and one scored generation batch of 2 prompts x 4 completions."""
    folder = tmp_path_factory.mktemp("cov")
    trainer = build_trainer(RunConfig(**TINY_RUN), folder)
    rows = [trainer.train_dataset[i] for i in range(2) for _ in range(4)]
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(); the loss reads it
    inputs = trainer._generate_and_score_completions(rows)
    return trainer, inputs


def _loss_and_grads(trainer, inputs, compute):
    trainer.model.zero_grad()
    loss = compute(trainer, trainer.model, inputs)
    loss.backward()
    return loss.detach(), [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in trainer.model.parameters()]


def _set(trainer, **options):
    defaults = dict(clip_cov_ratio=0.0, clip_cov_lb=1.0, clip_cov_ub=5.0, kl_cov_ratio=0.0, kl_coef=1.0)
    for name, value in {**defaults, **options}.items():
        setattr(trainer.args, name, value)


def test_with_both_ratios_zero_the_loss_and_gradient_are_trls(cov_trainer):
    trainer, inputs = cov_trainer
    _set(trainer)
    ours, our_grads = _loss_and_grads(trainer, inputs, CovGRPOTrainer._compute_loss)
    trl, trl_grads = _loss_and_grads(trainer, inputs, RecordingGRPOTrainer._compute_loss)
    torch.testing.assert_close(ours, trl)
    for a, b in zip(our_grads, trl_grads):
        torch.testing.assert_close(a, b)
    assert any(g.abs().sum() > 0 for g in trl_grads), "the batch carries no signal: the test would be vacuous"


def test_clip_cov_over_every_token_stops_every_gradient(cov_trainer):
    trainer, inputs = cov_trainer
    _set(trainer, clip_cov_ratio=1.0, clip_cov_lb=-1e9, clip_cov_ub=1e9)
    _, grads = _loss_and_grads(trainer, inputs, CovGRPOTrainer._compute_loss)
    assert all(not g.any() for g in grads)


def test_kl_cov_adds_coef_times_the_log_ratio_on_the_selected_tokens_only(cov_trainer):
    trainer, inputs = cov_trainer
    shifted = dict(inputs)
    mask = inputs["completion_mask"]
    with torch.no_grad():
        current, *_ = trainer._get_per_token_logps_and_entropies(
            trainer.model, torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1),
            torch.cat([inputs["prompt_mask"], mask], 1), inputs["completion_ids"].size(1))
    shifted["old_per_token_logps"] = current - 0.05  # every ratio 1.05: inside the clip, so TRL's term is unchanged
    _set(trainer)
    base, _ = _loss_and_grads(trainer, shifted, CovGRPOTrainer._compute_loss)
    _set(trainer, kl_cov_ratio=0.25, kl_coef=2.0)
    with_kl, _ = _loss_and_grads(trainer, shifted, CovGRPOTrainer._compute_loss)
    chosen = int(0.25 * int(mask.sum()))
    expected = 2.0 * 0.05 * chosen / float(inputs["num_items_in_batch"])  # dapo: sum over tokens / tokens
    assert chosen > 0
    torch.testing.assert_close(with_kl - base, torch.tensor(expected), rtol=1e-3, atol=1e-6)
    _set(trainer)


# ---------------------------------------------------------------- fidelity to the official Entropy-Mechanism code
def _valid_cov(logp, adv, mask):
    """(A - mean A)(log p - mean log p) over the valid tokens, both means over valid tokens; -inf on padding."""
    a = adv.unsqueeze(1).expand_as(logp)
    valid = mask.bool()
    cov = (a - a[valid].mean()) * (logp - logp[valid].mean())
    return cov.masked_fill(~valid, float("-inf"))


def _official_kl_cov(logp, old, adv, mask, ratio, coef):
    """compute_policy_loss_kl_cov, transcribed from its description: -A r with no clip everywhere; on the top
    max(1, int(r N)) valid tokens by covariance, -A r + coef |log p - log p_old| instead."""
    a = adv.unsqueeze(1).expand_as(logp)
    r = torch.exp(logp - old)
    losses = -a * r
    with_kl = -a * r + coef * (logp - old).abs()
    k = max(1, int(ratio * int(mask.sum())))
    top = _valid_cov(logp.detach(), adv, mask).flatten().topk(k).indices
    flat = losses.flatten().clone()
    flat[top] = with_kl.flatten()[top]
    return flat.view_as(losses)


def _official_clip_cov(logp, old, adv, mask, ratio, lb, ub, eps_low, eps_high, chosen_order):
    """compute_policy_loss_clip_cov, transcribed: tokens cut by the clip are not eligible; of those with
    lb < cov < ub, min(max(1, int(r N)), eligible) drawn at random get a correction factor 0."""
    a = adv.unsqueeze(1).expand_as(logp)
    r = torch.exp(logp - old)
    l1, l2 = -a * r, -a * torch.clamp(r, 1 - eps_low, 1 + eps_high)
    cov = _valid_cov(logp.detach(), adv, mask)
    cov = cov.masked_fill((l2 > l1) & mask.bool(), float("-inf"))
    eligible = ((cov > lb) & (cov < ub) & mask.bool()).flatten().nonzero().squeeze(1)
    take = min(max(1, int(ratio * int(mask.sum()))), eligible.numel())
    corr = torch.ones(logp.numel())
    corr[eligible[chosen_order[:take]]] = 0.0
    return torch.maximum(l1, l2) * corr.view_as(logp)


def _random_case(seed):
    g = torch.Generator().manual_seed(seed)
    logp = (torch.rand(6, 9, generator=g) * 0.97 + 0.02).log()
    old = logp + 0.4 * torch.randn(6, 9, generator=g)  # ratios from ~0.3 to ~3: inside and outside the clip
    adv = torch.randn(6, generator=g)
    mask = (torch.arange(9) < torch.randint(3, 10, (6, 1), generator=g)).float()
    return logp, old, adv, mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kl_cov_equals_the_official_loss_in_value_and_gradient(seed):
    logp, old, adv, mask = _random_case(seed)
    ratios = torch.exp(logp - old)[mask.bool()]
    assert (ratios > 1.2).any() and (ratios < 0.8).any() and ((ratios > 0.8) & (ratios < 1.2)).any()
    ours_lp, ref_lp = logp.clone().requires_grad_(True), logp.clone().requires_grad_(True)
    ours, selected = cov_token_loss(ours_lp, old, adv, mask, clip=(0.2, 0.2), kl_cov=(0.05, 3.0))
    ref = _official_kl_cov(ref_lp, old, adv, mask, 0.05, 3.0)
    torch.testing.assert_close(ours * mask, ref * mask, rtol=1e-6, atol=1e-6)
    (ours * mask).sum().backward(); (ref * mask).sum().backward()
    torch.testing.assert_close(ours_lp.grad, ref_lp.grad, rtol=1e-6, atol=1e-6)
    assert int(selected.sum()) == max(1, int(0.05 * int(mask.sum())))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("clip", [(0.2, 0.2), (1.0, 1.0)])  # TRL's default, and the official recipes' setting
def test_clip_cov_equals_the_official_loss_in_value_and_gradient(seed, clip):
    logp, old, adv, mask = _random_case(seed)
    lb, ub, ratio = -0.5, 0.5, 0.1
    generator_seed = 7
    ours_lp, ref_lp = logp.clone().requires_grad_(True), logp.clone().requires_grad_(True)
    ours, selected = cov_token_loss(ours_lp, old, adv, mask, clip=clip, clip_cov=(ratio, lb, ub),
                                    generator=torch.Generator().manual_seed(generator_seed))
    # the same random draw: a permutation of the eligible tokens from the same generator state
    cov = _valid_cov(logp, adv, mask)
    a = adv.unsqueeze(1)
    r = torch.exp(logp - old)
    cut = (-a * torch.clamp(r, 1 - clip[0], 1 + clip[1]) > -a * r) & mask.bool()
    n_eligible = int(((cov.masked_fill(cut, float("-inf")) > lb) & (cov < ub) & mask.bool()).sum())
    order = torch.randperm(n_eligible, generator=torch.Generator().manual_seed(generator_seed))
    ref = _official_clip_cov(ref_lp, old, adv, mask, ratio, lb, ub, clip[0], clip[1], order)
    assert selected.sum() == min(max(1, int(ratio * int(mask.sum()))), n_eligible) > 0
    torch.testing.assert_close(ours * mask, ref * mask, rtol=1e-6, atol=1e-6)
    (ours * mask).sum().backward(); (ref * mask).sum().backward()
    torch.testing.assert_close(ours_lp.grad, ref_lp.grad, rtol=1e-6, atol=1e-6)


def test_a_small_batch_still_gets_one_token():
    cov, mask = _band_case()
    assert kl_cov_selection(cov, mask, 1e-4).sum() == 1  # int(1e-4 * 40) = 0, the official max(1, .) = 1
    assert clip_cov_selection(cov, mask, 1e-4, -2.0, 5.0).sum() == 1
    assert kl_cov_selection(cov, mask, 0.0).sum() == 0


def test_clip_cov_and_kl_cov_together_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        build_trainer(RunConfig(**TINY_RUN, method_options=dict(clip_cov_ratio=0.1, kl_cov_ratio=0.1)), tmp_path)


def test_unsupported_loss_type_is_refused(tmp_path):
    with pytest.raises(ValueError, match="loss_type"):
        build_trainer(RunConfig(**{**TINY_RUN, "loss_type": "cispo"}), tmp_path)


@pytest.mark.parametrize("options", [dict(clip_cov_ratio=0.1, clip_cov_lb=-1e9, clip_cov_ub=1e9),
                                     dict(kl_cov_ratio=0.1)])
def test_a_two_step_cov_run_finishes_and_logs_its_selections(options):
    cfg = RunConfig(**TINY_RUN, grpo={"steps_per_generation": 2}, method_options=options)
    name = "clip-cov" if "clip_cov_ratio" in options else "kl-cov"
    run = load_or_train(cfg, "test", name)
    assert run.trained and run.info["steps"] == 2 and run.run_dir == run_path(cfg, "test", name)
    m = run.metrics
    fractions = m[m.metric == name.replace("-", "_") + "/fraction"]["value"]
    assert len(fractions) == 2 and fractions.between(0.05, 0.1 + 1e-6).all()  # int(0.1 * N) of N tokens, as float32
    assert "entropy" in set(m.metric)
    if name == "kl-cov":
        assert "kl_cov/penalty" in set(m.metric)


def test_rollout_covariances_by_hand():
    import numpy as np

    from rlnb.entropy_control import rollout_covariances
    from rlnb.rollout import Rollouts

    # two prompts, groups of 2; the second group has no reward spread (advantage 0)
    logprobs = [np.log([0.5, 0.5]), np.log([0.25]), np.log([0.9]), np.log([0.8, 0.2])]
    roll = Rollouts(prompts=["p", "q"], prompt_index=np.array([0, 0, 1, 1]), texts=["a"] * 4,
                    completion_ids=[[1, 2], [1], [1], [1, 2]], logprobs=logprobs)
    cov = rollout_covariances(roll, [1.0, 0.0, 1.0, 1.0])
    adv = np.array([0.5, 0.5, -0.5, 0, 0, 0]) / np.std([1.0, 0.0], ddof=1)  # (r - mean) / std, per token
    lp = np.log([0.5, 0.5, 0.25, 0.9, 0.8, 0.2])
    expected = (lp - lp.mean()) * (adv - adv.mean())
    np.testing.assert_allclose(cov.numpy(), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="3 rewards for 4 completions"):
        rollout_covariances(roll, [1.0, 0.0, 1.0])


def test_entropy_change_is_the_update_on_its_own_batch(tmp_path):
    """With a vanishing learning rate an update changes nothing; with a large one it does."""
    changes = {}
    for lr in (1e-12, 3e-2):
        cfg = RunConfig(**{**TINY_RUN, "method": "grpo", "max_steps": 3, "learning_rate": lr,
                           "method_options": {"measure_entropy_change": True}})
        trainer = build_trainer(cfg, tmp_path / str(lr))
        trainer.train()
        logged = [row for row in trainer.state.log_history if "entropy_change" in row]
        assert [row["step"] for row in logged] == [2, 3]  # update t is measured at the start of step t + 1
        changes[lr] = [row["entropy_change"] for row in logged]
    assert max(abs(c) for c in changes[1e-12]) < 1e-6
    assert max(abs(c) for c in changes[3e-2]) > 1e-3
