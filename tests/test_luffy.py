"""LUFFY's mixed-policy loss and trainer: the formula term by term, the reduction to TRL's GRPO, the groups."""

import math

import pytest
import torch

from rlnb.luffy import GENERATE_FIELDS, LuffyGRPOTrainer, luffy_loss, mixed_token_loss, shaping_weight
from rlnb.runs import load_or_train
from rlnb.train import RunConfig, build_trainer
from rlnb.trainers import RecordingGRPOTrainer, reduce_like_trl

TINY = dict(method="luffy", max_steps=2, prompts_per_step=2, num_generations=4, max_completion_length=36,
            learning_rate=1e-3, save_steps=2, loss_type="dr_grpo", scale_rewards="none", levels=(3,))


def test_mixed_loss_equals_the_formula_term_by_term():
    # 2 on-policy rows, 1 trace row; T = 3 with padding; clip on for on-policy tokens.
    logps = torch.log(torch.tensor([[0.5, 0.9, 0.2], [0.3, 0.6, 0.7], [0.05, 0.4, 0.8]]))
    old = torch.log(torch.tensor([[0.25, 0.9, 0.4], [0.3, 0.3, 0.7], [0.9, 0.9, 0.9]]))  # trace's "old" is ignored
    adv = torch.tensor([1.0, -0.5, 0.75])
    off = torch.tensor([False, False, True])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    eps_lo, eps_hi, gamma, max_len = 0.2, 0.28, 0.1, 5
    on, offl = mixed_token_loss(logps, old, adv, off, clip=(eps_lo, eps_hi), shaping_gamma=gamma)

    expected = torch.zeros(3, 3)
    for i in range(3):
        for t in range(3):
            p, q, a = math.exp(logps[i, t]), math.exp(old[i, t]), float(adv[i])
            if off[i]:
                expected[i, t] = -a * p / (p + gamma)  # shaped, never clipped, pi_phi = 1
            else:
                r = p / q
                expected[i, t] = -min(r * a, min(max(r, 1 - eps_lo), 1 + eps_hi) * a)
    torch.testing.assert_close(on + offl, expected)
    assert on[2].abs().sum() == 0 and offl[:2].abs().sum() == 0
    # The clip bites on row 0 token 0 (ratio 2, A > 0) and row 1 token 1 (ratio 2, A < 0 is not clipped).
    assert math.isclose(float(on[0, 0]), -(1 + eps_hi) * 1.0, rel_tol=1e-6)
    assert math.isclose(float(on[1, 1]), 2.0 * 0.5, rel_tol=1e-6)
    # Dr. GRPO normalisation: every unmasked token summed, divided by B * max_completion_length.
    total = float((expected * mask).sum()) / (3 * max_len)
    reduced = reduce_like_trl(on + offl, mask, "dr_grpo", max_completion_length=max_len)
    assert math.isclose(float(reduced), total, rel_tol=1e-6)
    per_seq = float(((expected * mask).sum(1) / mask.sum(1)).mean())
    reduced = reduce_like_trl(on + offl, mask, "grpo", max_completion_length=max_len, accumulation=2.0)
    assert math.isclose(float(reduced), per_seq / 2, rel_tol=1e-6)
    # Without the clip, on-policy tokens are exactly -A * ratio; without shaping the trace weight is p itself.
    on_free, off_raw = mixed_token_loss(logps, old, adv, off, clip=None, policy_shaping=False)
    torch.testing.assert_close(on_free[0], -torch.exp(logps[0] - old[0]) * adv[0])
    torch.testing.assert_close(off_raw[2], -torch.exp(logps[2]) * adv[2])
    # The SFT variant trains traces by negative log-likelihood, and the scales multiply each term.
    _, off_sft = mixed_token_loss(logps, old, adv, off, off_policy_loss="sft", off_policy_scale=3.0)
    torch.testing.assert_close(off_sft[2], -3.0 * logps[2])


def test_shaped_gradients_follow_f_prime_and_favour_unlikely_tokens():
    p = torch.tensor([[0.01, 0.05, 0.1, 0.3, 0.6, 0.95]])
    adv = torch.tensor([0.875])
    logps = torch.log(p).requires_grad_(True)
    _, off = mixed_token_loss(logps, logps.detach(), adv, torch.tensor([True]))
    off.sum().backward()
    # d/d log p of -A f(p) = -A * gamma p / (p + gamma)^2 = -A * f'(p) * p
    torch.testing.assert_close(logps.grad, -adv * shaping_weight(p, 0.1))
    logps_raw = torch.log(p).requires_grad_(True)
    _, off_raw = mixed_token_loss(logps_raw, logps_raw.detach(), adv, torch.tensor([True]), policy_shaping=False)
    off_raw.sum().backward()
    torch.testing.assert_close(logps_raw.grad, -adv * p)
    relative = (logps.grad / logps_raw.grad).squeeze()  # f'(p) = gamma / (p + gamma)^2, falling in p
    assert torch.all(relative[:-1] > relative[1:])
    assert relative[0] > 5 and relative[-1] < 0.2


def _rollout_batch(trainer, k_prompts: int = 2) -> list[dict]:
    rows = [trainer.train_dataset[i] for i in range(k_prompts)]
    return [row for row in rows for _ in range(trainer.num_generations)]


def test_groups_keep_the_configured_number_of_expert_traces(tmp_path):
    cfg = RunConfig(**{**TINY, "num_generations": 6, "method_options": {"expert_traces": 2}})
    trainer = build_trainer(cfg, tmp_path)
    trainer.model.train()
    sampled = []
    generate = trainer._generate_single_turn

    def spy(prompt_ids, *args, **kwargs):
        sampled.append(len(prompt_ids))
        return generate(prompt_ids, *args, **kwargs)

    trainer._generate_single_turn = spy
    inputs = _rollout_batch(trainer)
    out = trainer._generate_and_score_completions(inputs)
    off = out["off_policy_mask"].view(-1, 6)
    assert off.sum(1).tolist() == [2, 2]
    assert sampled == [2 * (6 - 2)]  # only the on-policy slots are generated
    texts = trainer.processing_class.batch_decode(out["completion_ids"] * out["completion_mask"],
                                                  skip_special_tokens=True)
    for i, row in enumerate(inputs):
        if out["off_policy_mask"][i]:
            assert texts[i] == row["expert"]
            last = out["completion_mask"][i].sum() - 1
            assert out["completion_ids"][i, last] == trainer.processing_class.eos_token_id
    # Mixed-group advantage: r - mean(r) over all 6 rows, so each group sums to zero and traces (r >= 1) get A >= 0.
    adv = out["advantages"].view(-1, 6)
    torch.testing.assert_close(adv.sum(1), torch.zeros(2), atol=1e-5, rtol=0)
    assert (adv[off] >= 0).all()


@pytest.mark.parametrize("loss_type", ["dr_grpo", "dapo", "grpo", "bnpo"])
def test_zero_traces_reduce_exactly_to_trls_grpo_loss(tmp_path, loss_type):
    options = {"expert_traces": 0, "on_policy_clip": True, "entropy_coef": 0.0, "loss_normalization": "trl"}
    cfg = RunConfig(**{**TINY, "loss_type": loss_type, "method_options": options})
    luffy = build_trainer(cfg, tmp_path / "luffy")
    grpo = build_trainer(RunConfig(**{**TINY, "loss_type": loss_type, "method": "grpo"}), tmp_path / "grpo")
    assert isinstance(luffy, LuffyGRPOTrainer) and type(grpo) is RecordingGRPOTrainer
    grpo.model.load_state_dict(luffy.model.state_dict())
    for t in (luffy, grpo):
        t.model.train()
        t.current_gradient_accumulation_steps = 2  # the accumulation scaling must match TRL's too
    torch.manual_seed(0)
    inputs = luffy._generate_and_score_completions(_rollout_batch(luffy))
    assert not inputs["off_policy_mask"].any()
    inputs["advantages"] = torch.linspace(-1, 1, inputs["advantages"].numel())
    # Old log-probs away from the current ones, so that the clip is active on some tokens.
    with torch.no_grad():
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
        am = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
        now, _, _ = grpo._get_per_token_logps_and_entropies(grpo.model, ids, am, inputs["completion_ids"].size(1))
    inputs["old_per_token_logps"] = now + 0.5 * torch.randn_like(now)
    losses, grads = [], []
    for t in (luffy, grpo):
        t.model.zero_grad()
        loss = t._compute_loss(t.model, dict(inputs))
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in t.model.parameters() if p.grad is not None]))
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-8)
    assert grpo._metrics["train"]["clip_ratio/region_mean"][-1] > 0


def test_a_shaped_trace_row_has_a_non_zero_gradient_and_sft_rows_get_no_advantage(tmp_path):
    cfg = RunConfig(**{**TINY, "method_options": {"expert_traces": 1, "off_policy_loss": "sft"}})
    trainer = build_trainer(cfg, tmp_path)
    trainer.model.train()
    out = trainer._generate_and_score_completions(_rollout_batch(trainer))
    adv, off = out["advantages"].view(-1, 4), out["off_policy_mask"].view(-1, 4)
    assert (adv[off] == 0).all()
    torch.testing.assert_close(adv[~off].view(2, 3).sum(1), torch.zeros(2), atol=1e-5, rtol=0)


def test_bad_options_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="expert_traces"):
        build_trainer(RunConfig(**{**TINY, "method_options": {"expert_traces": 4}}), tmp_path)
    with pytest.raises(ValueError, match=r"no options \['expert_trace'\].*LuffyConfig has .*'expert_traces'"):
        build_trainer(RunConfig(**{**TINY, "method_options": {"expert_trace": 1}}), tmp_path)
    with pytest.raises(ValueError, match="loss_normalization"):
        build_trainer(RunConfig(**{**TINY, "method_options": {"loss_normalization": "verl"}}), tmp_path)
    with pytest.raises(ValueError, match="scale_rewards"):
        build_trainer(RunConfig(**{**TINY, "scale_rewards": "group", "method_options": {"expert_traces": 1}}), tmp_path)


def test_a_two_step_lora_run_finishes():
    lora = {"r": 4, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}
    run = load_or_train(RunConfig(**{**TINY, "method_options": {"expert_traces": 1}}, lora=lora), "test", "luffy-lora")
    assert run.trained and run.info["steps"] == 2
    assert (run.run_dir / "adapter").exists() and (run.run_dir / "final" / "config.json").exists()
    names = set(run.metrics["metric"])
    assert {"on_policy/prob", "off_policy/prob", "off_policy/loss_share", "off_policy/weight_mean", "entropy",
            "off_policy/grad_share", "off_policy/min_prob"} <= names
    shares = run.metrics[run.metrics.metric == "off_policy/grad_share"]["value"]
    assert shares.between(0, 1).all() and (shares > 0).all()  # one trace in a group of 4 always has a gradient


def test_gpu_preset_runs_luffy_and_its_baselines_from_the_math_config(monkeypatch):
    """Validated on a CPU by pretending a GPU is there: a YAML typo fails here, not on the GPU."""
    import torch

    from rlnb.experiments import LUFFY_METHODS, luffy_config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for name, switch in LUFFY_METHODS.items():
        cfg = luffy_config("gpu", name)
        assert cfg.task == "math" and cfg.method == "luffy" and cfg.trace_column == "solution"
        assert cfg.method_options == {"expert_traces": 1, "loss_normalization": "official", **switch}, name
        assert cfg.grpo["steps_per_generation"] == 2 and cfg.prompts_per_step * cfg.num_generations == 64


def test_group_gradient_mass_by_hand():
    from rlnb.luffy import group_gradient_mass

    # Two failed own rollouts (5 and 3 tokens) and one correct trace with token probabilities 0.1 and 0.9.
    mass = group_gradient_mass([5, 3], [0.0, 0.0], [[0.1, 0.9]], [1.0])
    assert math.isclose(mass["own_pushed"], (5 + 3) / 3)  # A = -1/3 on every own token
    w = 0.1 * 0.1 / 0.2**2 + 0.1 * 0.9 / 1.0**2  # shaping weights gamma p / (p + gamma)^2
    assert math.isclose(mass["traces_pulled"], 2 / 3 * w) and mass["own_pulled"] == 0
    raw = group_gradient_mass([5, 3], [0.0, 0.0], [[0.1, 0.9]], [1.0], policy_shaping=False)
    assert math.isclose(raw["traces_pulled"], 2 / 3 * 1.0)  # unshaped: the weight is p itself
    # A solved own rollout is pulled, and a group that all agrees carries no gradient.
    assert group_gradient_mass([4, 4], [1.0, 0.0], [], [])["own_pulled"] == 2.0
    assert group_gradient_mass([4], [1.0], [[0.5]], [1.0]) == {"own_pushed": 0.0, "own_pulled": 0.0, "traces_pulled": 0.0}


def test_measured_gradient_mass_on_the_tiny_base(base):
    from rlnb.luffy import measure_gradient_mass
    from rlnb.world import expert_trace, make_problems

    model, tok = base
    problems = make_problems([3, 7], 3, seed=0)
    table = measure_gradient_mass(model, tok, [p.prompt for p in problems], [expert_trace(p.a, p.b) for p in problems],
                                  [p.answer for p in problems], num_generations=8, expert_traces=1)
    assert len(table) == 6 and (table[["own_pushed", "own_pulled", "traces_pulled"]] >= 0).all().all()
    hard = table.iloc[3:]  # level 7 (outside): the base never solves it, so every own rollout is pushed and the trace pulled
    assert (hard["own_solved"] == 0).all() and (hard["own_pushed"] > 0).all() and (hard["traces_pulled"] > 0).all()


# ---------------------------------------------------------------- fidelity to the official LUFFY code
def _official_luffy_transcription(logp, old_logp, adv, mask, prefix, entropy, *, gamma, entropy_coeff, sft=False,
                                  sft_coef=1.0):
    """The official loss, transcribed independently from ElliottYan/LUFFY ``luffy/verl/verl/mix_src/mix_actor.py``
    (``update_policy``) and ``mix_core_alg.py``: ``loss_remove_token_mean`` (token sum over the micro-batch /
    padded response length) for the policy term, and ``entropy_loss = masked_mean(entropy, response_mask)`` (a
    token mean over the micro-batch, whatever the policy term's normalisation) for the bonus,
    ``p / (p + gamma)`` on prefix (trace) tokens, no clip; RL + SFT adds a token-mean NLL over prefix tokens."""
    t_max = mask.shape[-1]
    a = adv.unsqueeze(1).expand_as(logp)
    ratio = torch.exp(logp - old_logp)
    p = torch.exp(logp)
    if sft:
        pg = -a * ratio * (~prefix).unsqueeze(1)
        nll = (-logp * mask * prefix.unsqueeze(1)).sum() / (mask * prefix.unsqueeze(1)).sum()
        return (pg * mask).sum() / t_max + sft_coef * nll - entropy_coeff * (entropy * mask).sum() / mask.sum()
    off_ratio = p / (p + gamma)
    pg = torch.where(prefix.unsqueeze(1), -a * off_ratio, -a * ratio)
    return (pg * mask).sum() / t_max - entropy_coeff * (entropy * mask).sum() / mask.sum()


@pytest.mark.parametrize("sft", [False, True])
def test_official_normalisation_equals_the_official_formula_in_value_and_gradient(sft):
    g = torch.Generator().manual_seed(3)
    rows, t_max = 8, 7
    logp = (torch.rand(rows, t_max, generator=g) * 0.98 + 0.01).log().requires_grad_(True)
    old = (logp.detach() + 0.3 * torch.randn(rows, t_max, generator=g))  # ratios in and out of any clip
    adv = torch.randn(rows, generator=g)
    mask = (torch.arange(t_max) < torch.randint(2, t_max + 1, (rows, 1), generator=g)).float()
    prefix = torch.tensor([True, False, False, False] * 2)
    entropy = (torch.rand(rows, t_max, generator=g) * 2).requires_grad_(True)
    opts = dict(off_policy_loss="sft", off_policy_scale=0.5) if sft else {}
    ours = luffy_loss(logp, old, adv, prefix, mask, entropy, normalization="official", max_completion_length=t_max,
                      entropy_coef=0.001, **opts).total
    ref_logp, ref_ent = logp.detach().clone().requires_grad_(True), entropy.detach().clone().requires_grad_(True)
    ref = _official_luffy_transcription(ref_logp, old, adv, mask, prefix, ref_ent, gamma=0.1, entropy_coeff=0.001,
                                        sft=sft, sft_coef=0.5)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-7)
    ours.backward(); ref.backward()
    torch.testing.assert_close(logp.grad, ref_logp.grad, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(entropy.grad, ref_ent.grad, rtol=1e-6, atol=1e-7)
    # Both normalisations take the entropy as the same token mean; only the policy terms differ (by the rows B
    # with full masks, relative to a dr_grpo policy term).
    full = torch.ones(rows, t_max)
    trl = luffy_loss(logp.detach(), old, adv, prefix, full, entropy.detach(), normalization="trl",
                     max_completion_length=t_max, entropy_coef=0.001,
                     trl_reduce=lambda x, m: reduce_like_trl(x, m, "dr_grpo", max_completion_length=t_max), **opts)
    official = luffy_loss(logp.detach(), old, adv, prefix, full, entropy.detach(), normalization="official",
                          max_completion_length=t_max, entropy_coef=0.001, **opts)
    torch.testing.assert_close(official.entropy_bonus, trl.entropy_bonus)
    if not sft:
        torch.testing.assert_close(official.on_policy + official.off_policy, rows * (trl.on_policy + trl.off_policy))


def test_trl_generate_returns_the_fields_luffy_splices_into():
    """LUFFY edits the tuple TRL's private ``_generate`` returns: a TRL that changes it must fail here, loudly."""
    import inspect

    from trl import GRPOTrainer

    source = inspect.getsource(GRPOTrainer._generate)
    returned = source[source.rindex("return "):].split("\n")[0]
    names = [name.strip() for name in returned.removeprefix("return ").split(",")]
    assert tuple(names) == GENERATE_FIELDS, returned


def test_the_gradient_share_is_measured_on_the_logits_where_a_learnt_token_barely_moves():
    """Issue #24: |dL/d log p| counts a trace token the policy predicts at p = 0.99 as fully as an own token at
    p = 0.5; on the logits (d log p / dz = onehot - softmax, L1 norm 2(1 - p)) it weighs 0.01 against 0.5."""
    from rlnb.luffy import logit_gradient_share

    grad = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    logps = torch.tensor([[0.99, 0.99], [0.5, 0.5]]).log()
    mask, rows = torch.ones(2, 2), torch.tensor([True, False])
    assert logit_gradient_share(grad, logps, mask, rows) == pytest.approx(0.01 / 0.51)
    assert logit_gradient_share(grad, logps, torch.tensor([[1.0, 0.0], [0.0, 0.0]]), rows) == pytest.approx(1.0)
    assert logit_gradient_share(torch.zeros(2, 2), logps, mask, rows) == 0.0


def test_the_speed_summary_labels_settings_and_refuses_a_step_difference_where_a_seed_never_arrived():
    import pandas as pd

    from rlnb.luffy import speed_settings, speed_summary

    speed = pd.DataFrame({"shaping_gamma": [0.1, 0.1, 1.0, 1.0, 0.1, 0.1], "expert_traces": [1, 1, 1, 1, 2, 2],
                          "policy_shaping": [True, True, True, True, True, True],
                          "first_step_own_acc_0.1": [10.0, 12.0, 20.0, 24.0, 11.0, float("nan")],
                          "first_step_own_acc_0.5": [20.0, float("nan"), 30.0, 40.0, 21.0, float("nan")],
                          "own_acc_last10": [0.8, 0.7, 0.6, 0.5, 0.8, 0.2]})
    labelled, order = speed_settings(speed)
    assert order == ["γ 0.1, 1 trace", "γ 1, 1 trace", "γ 0.1, 2 traces"]
    table = speed_summary(labelled, order, "γ 0.1, 1 trace")
    assert table.loc["γ 0.1, 1 trace", "reached 0.5"].startswith("1 of 2")
    assert table.loc["γ 1, 1 trace", "steps to 0.1 minus γ 0.1, 1 trace"].startswith("+11.0")
    assert table.loc["γ 0.1, 2 traces", "steps to 0.1 minus γ 0.1, 1 trace"] == "a seed never reached it"
    assert table.loc["γ 0.1, 1 trace", "last-10 acc minus γ 0.1, 1 trace"] == ""  # the reference against itself
