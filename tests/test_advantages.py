"""The advantage hook and the GRPO family's estimators: TRL's own advantages reproduced, each formula by hand."""

import itertools
import math

import pytest
import torch
from transformers import set_seed
from trl import GRPOConfig, GRPOTrainer

from rlnb.advantages import (
    entropy_shaped_advantages,
    grpo_advantages,
    nsr_advantages,
    pass_at_k_advantages,
    pass_at_k_group,
    psr_advantages,
    w_reinforce_advantages,
)
from rlnb.grpo_family import ADVANTAGES, AdvantageConfig, AdvantageGRPOTrainer
from rlnb.metrics import token_entropy
from rlnb.models import load_model
from rlnb.tasks import WORLD
from rlnb.train import RunConfig, build_trainer, grpo_args, world_dataset
from rlnb.trainers import RecordingGRPOConfig, RecordingGRPOTrainer

TINY = dict(method="grpo", max_steps=2, prompts_per_step=3, num_generations=4, max_completion_length=24,
            learning_rate=1e-3, save_steps=2, loss_type="dr_grpo", levels=(3,), format_reward_weight=0.1)
NAN = float("nan")


# ---------------------------------------------------------------- GRPO as TRL computes it
def test_grpo_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    # Group 1: mean 1/4, unbiased std sqrt((9/16 + 3/16) / 3) = 1/2; group 2 has no spread, so 0 / (0 + 1e-4) = 0.
    group = torch.tensor([0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0]) / (0.5 + 1e-4)
    torch.testing.assert_close(grpo_advantages(rewards, 4, "group"), group)
    # "batch" keeps the *group* mean and divides by the batch's unbiased std: mean 5/8, sum of squares
    # 5 * 9/64 + 3 * 25/64 = 120/64, so std = sqrt(120 / 64 / 7).
    batch_std = math.sqrt(120 / 64 / 7)
    torch.testing.assert_close(grpo_advantages(rewards, 4, "batch"),
                               torch.tensor([0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0]) / (batch_std + 1e-4))
    torch.testing.assert_close(grpo_advantages(rewards, 4, "none"), torch.tensor([0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0]))
    # An unscored completion (NaN) is left out of its group's mean and std and stays NaN.
    with_nan = grpo_advantages(torch.tensor([1.0, 0.0, NAN, 1.0]), 4, "group")
    std = math.sqrt((2 * (1 / 3) ** 2 + (2 / 3) ** 2) / 2)
    torch.testing.assert_close(with_nan[[0, 1, 3]], torch.tensor([1 / 3, -2 / 3, 1 / 3]) / (std + 1e-4))
    assert with_nan[2].isnan()
    with pytest.raises(ValueError, match="scale_rewards"):
        grpo_advantages(rewards, 4, "std")
    with pytest.raises(ValueError, match="whole groups of 3"):
        grpo_advantages(rewards, 3)


def _random_rewards_per_func(rows: int) -> torch.Tensor:
    """(rows, 2) rewards: 0/1 accuracy plus a format reward, a group with no spread, an unscored row, a half-scored one."""
    g = torch.Generator().manual_seed(7)
    rewards = torch.stack([torch.randint(0, 2, (rows,), generator=g).float(), torch.rand(rows, generator=g)], 1)
    rewards[4:8] = torch.tensor([1.0, 0.5])  # the second group: every completion the same reward
    rewards[1] = NAN  # no reward function scored it
    rewards[10, 1] = NAN  # only the accuracy reward did
    return rewards


@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none"])
def test_default_hook_equals_trls_own_advantages(tmp_path, monkeypatch, scale_rewards):
    trainer = build_trainer(RunConfig(**{**TINY, "scale_rewards": scale_rewards}), tmp_path)
    trainer.model.train()
    rows = TINY["prompts_per_step"] * TINY["num_generations"]
    fixed = _random_rewards_per_func(rows)
    monkeypatch.setattr(GRPOTrainer, "_calculate_rewards", lambda self, *args: fixed.clone())
    seen = []
    hook = trainer.compute_advantages
    monkeypatch.setattr(trainer, "compute_advantages", lambda r, g: seen.append((r.clone(), g)) or hook(r, g))
    batch = [trainer.train_dataset[i] for i in range(TINY["prompts_per_step"]) for _ in range(TINY["num_generations"])]
    theirs = GRPOTrainer._generate_and_score_completions(trainer, batch)["advantages"]
    ours = trainer._generate_and_score_completions(batch)["advantages"]
    assert len(seen) == 1 and seen[0][1] == 4  # the hook ran, on whole groups of num_generations
    expected_rewards = fixed[:, 0] + 0.1 * fixed[:, 1].nan_to_num()
    expected_rewards[1] = NAN
    torch.testing.assert_close(seen[0][0], expected_rewards, equal_nan=True)
    assert torch.equal(ours, theirs), (ours, theirs)  # bit for bit
    assert ours[1] == 0 and (ours[4:8] == 0).all() and ours.abs().sum() > 0


def test_default_hook_trains_exactly_as_plain_trl(tmp_path):
    """Two steps of the recording trainer (hook in place) and of TRL's own GRPOTrainer: same losses, same weights."""
    cfg = RunConfig(**TINY)
    hooked = build_trainer(cfg, tmp_path / "hooked")
    model, tokenizer = load_model(cfg.model, device="cpu")
    plain = GRPOTrainer(model=model, processing_class=tokenizer, reward_funcs=list(WORLD.reward_funcs),
                        args=grpo_args(cfg, tmp_path / "plain", GRPOConfig),
                        train_dataset=world_dataset(cfg.levels, cfg.max_steps * cfg.prompts_per_step, cfg.seed))
    assert type(hooked) is RecordingGRPOTrainer and type(plain) is GRPOTrainer
    before = [p.detach().clone() for p in plain.model.parameters()]
    for trainer in (hooked, plain):
        set_seed(cfg.seed)  # each trainer seeded when built; the other's building and training moved the RNG since
        trainer.train()
    losses = [[h["loss"] for h in t.state.log_history if "loss" in h] for t in (hooked, plain)]
    assert len(losses[0]) == 2 and losses[0] == losses[1]
    moved = False
    for a, b, start in zip(hooked.model.parameters(), plain.model.parameters(), before):
        assert torch.equal(a, b)
        moved |= not torch.equal(b, start)
    assert moved  # the steps did update the weights, so equal weights mean equal gradients


# ---------------------------------------------------------------- PSR, NSR, W-REINFORCE (Zhu et al. 2025)
def test_positive_negative_and_weighted_reinforce_by_hand():
    # Summed rewards of one group: correct with format, wrong with format, correct, wrong; one unscored.
    rewards = torch.tensor([1.1, 0.1, 1.0, 0.0, NAN, 0.9, 1.0, 0.0])
    torch.testing.assert_close(psr_advantages(rewards, 4), torch.tensor([1.0, 0, 1, 0, NAN, 0, 1, 0]), equal_nan=True)
    torch.testing.assert_close(nsr_advantages(rewards, 4), torch.tensor([0.0, -1, 0, -1, NAN, -1, 0, -1]), equal_nan=True)
    torch.testing.assert_close(w_reinforce_advantages(rewards, 4),
                               torch.tensor([0.1, -1, 0.1, -1, NAN, -1, 0.1, -1]), equal_nan=True)
    torch.testing.assert_close(w_reinforce_advantages(rewards, 4, positive_weight=0.5, correct_reward=0.9),
                               torch.tensor([0.5, -1, 0.5, -1, NAN, 0.5, 0.5, -1]), equal_nan=True)
    # No baseline: a group all correct still gets +1 under PSR, one all wrong -1 under NSR.
    assert psr_advantages(torch.ones(4), 4).tolist() == [1.0] * 4
    assert nsr_advantages(torch.zeros(4), 4).tolist() == [-1.0] * 4


# ---------------------------------------------------------------- pass@k training (Chen et al. 2025)
def test_pass_at_k_group_by_hand():
    # N = 4, c = 1, k = 2: R = 1 - C(3,2)/C(4,2) = 1/2, sigma = 1/2;
    # A_pos = (1/2) / (1/2) = 1, A_neg = (1/2 - C(2,1)/C(3,1)) / (1/2) = (1/2 - 2/3) * 2 = -1/3.
    positive, negative = pass_at_k_group(4, 1, 2)
    assert math.isclose(positive, 0.5 / (0.5 + 1e-6)) and math.isclose(negative, (0.5 - 2 / 3) / (0.5 + 1e-6))
    # N = 4, c = 2, k = 2: R = 1 - 1/6 = 5/6, sigma = sqrt(5)/6; A_pos = (1/6)/sigma, A_neg = (1/6 - 1/3)/sigma.
    sigma = math.sqrt(5) / 6
    positive, negative = pass_at_k_group(4, 2, 2)
    assert math.isclose(positive, (1 / 6) / (sigma + 1e-6)) and math.isclose(negative, (-1 / 6) / (sigma + 1e-6))
    # No spread among the subsets: all wrong, all right, or too few wrong for a failing k-subset (N - c < k).
    assert pass_at_k_group(4, 0, 2) == pass_at_k_group(4, 4, 2) == pass_at_k_group(4, 3, 2) == (0.0, 0.0)
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k_group(4, 1, 5)


@pytest.mark.parametrize("n,correct,k", [(4, 1, 2), (5, 2, 3), (6, 1, 1), (6, 2, 4), (8, 2, 3), (8, 6, 2)])
def test_pass_at_k_advantage_is_the_mean_subset_advantage(n, correct, k):
    """The derivation checked by enumeration: a response's advantage is the average normalised advantage
    (R_subset - mean) / std (population std over all C(N, k) subsets) of the k-subsets containing it."""
    labels = [1] * correct + [0] * (n - correct)
    subsets = list(itertools.combinations(range(n), k))
    passed = {s: float(any(labels[i] for i in s)) for s in subsets}
    mean = sum(passed.values()) / len(subsets)
    std = math.sqrt(sum((r - mean) ** 2 for r in passed.values()) / len(subsets))
    per_response = [sum((passed[s] - mean) / std for s in subsets if i in s) / sum(i in s for s in subsets)
                    for i in range(n)]
    positive, negative = pass_at_k_group(n, correct, k)
    assert math.isclose(positive, per_response[0], rel_tol=1e-5)
    assert math.isclose(negative, per_response[-1], rel_tol=1e-5, abs_tol=1e-9)


def test_pass_at_k_advantages_on_a_batch():
    # Group 1: one correct of 4 (k = 2: +1, -1/3); group 2: an unscored row leaves N = 3 with c = 1,
    # R = 1 - C(2,2)/C(3,2) = 2/3, sigma = sqrt(2)/3: A_pos = (1/3)/sigma, A_neg = (1/3 - C(1,1)/C(2,1))/sigma.
    rewards = torch.tensor([0.0, 1.1, 0.1, 0.0, 1.0, NAN, 0.0, 0.1])
    s1, s2 = 0.5 + 1e-6, math.sqrt(2) / 3 + 1e-6
    expected = torch.tensor([-(1 / 6) / s1, 0.5 / s1, -(1 / 6) / s1, -(1 / 6) / s1,
                             (1 / 3) / s2, NAN, (1 / 3 - 1 / 2) / s2, (1 / 3 - 1 / 2) / s2])
    torch.testing.assert_close(pass_at_k_advantages(rewards, 4, k=2), expected, equal_nan=True)
    # k = 1 is GRPO's group advantage with the population std (and the official epsilon).
    binary = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    grouped = binary.view(2, 4)
    std = grouped.std(1, unbiased=False).repeat_interleave(4)
    torch.testing.assert_close(pass_at_k_advantages(binary, 4, k=1),
                               (binary - grouped.mean(1).repeat_interleave(4)) / (std + 1e-6))
    # Fewer scored completions than k: no k-subset, no signal.
    assert pass_at_k_advantages(torch.tensor([1.0, NAN, NAN, NAN]), 4, k=2)[0] == 0


# ---------------------------------------------------------------- entropy-shaped advantages (Cheng et al. 2025)
def test_entropy_shaped_advantages_by_hand():
    adv = torch.tensor([1.0, -0.5, 0.0])
    entropies = torch.tensor([[0.1, 2.0], [0.1, 2.0], [1.0, 1.0]])
    # alpha = 0.4, kappa = 2: row 0 min(0.04, 0.5), min(0.8, 0.5); row 1 min(0.04, 0.25), min(0.8, 0.25); row 2 |A| = 0.
    expected = torch.tensor([[1.04, 1.5], [-0.46, -0.25], [0.0, 0.0]])
    torch.testing.assert_close(entropy_shaped_advantages(adv, entropies, 0.4, 2.0), expected)
    # Detached: the entropy weights the policy gradient and is not itself optimised.
    assert not entropy_shaped_advantages(adv, entropies.clone().requires_grad_(True), 0.4, 2.0).requires_grad


def test_entropy_shaping_trains_on_the_shaped_advantages(tmp_path):
    """The trainer's loss and gradient equal TRL's loss given per-token advantages shaped by hand from an
    independent forward pass (entropy of softmax(logits / temperature) at each completion position)."""
    options = {"advantage": "nsr", "entropy_alpha": 0.4, "entropy_kappa": 2.0}
    shaped_trainer = build_trainer(RunConfig(**{**TINY, "method": "advantage", "method_options": options}),
                                   tmp_path / "shaped")
    plain = build_trainer(RunConfig(**{**TINY, "method": "advantage", "method_options": {"advantage": "nsr"}}),
                          tmp_path / "plain")
    plain.model.load_state_dict(shaped_trainer.model.state_dict())
    for t in (shaped_trainer, plain):
        t.model.train()
        t.current_gradient_accumulation_steps = 1  # set by Trainer.train(); the loss divides by it
    torch.manual_seed(0)
    batch = [shaped_trainer.train_dataset[i] for i in range(3) for _ in range(4)]
    inputs = shaped_trainer._generate_and_score_completions(batch)
    assert (inputs["advantages"] != 0).any()
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    width = inputs["completion_ids"].size(1)
    with torch.no_grad():
        logits = plain.model(input_ids=ids, attention_mask=attention).logits[:, -width - 1:-1] / plain.temperature
    entropy = token_entropy(logits)
    by_hand = torch.zeros_like(entropy)
    for i, a in enumerate(inputs["advantages"].tolist()):
        for t in range(width):
            by_hand[i, t] = a + min(0.4 * float(entropy[i, t]), abs(a) / 2.0)
    losses, grads = [], []
    for trainer, batch_inputs in ((shaped_trainer, dict(inputs)), (plain, {**inputs, "advantages": by_hand})):
        trainer.model.zero_grad()
        loss = trainer._compute_loss(trainer.model, batch_inputs)
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None]))
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-7)
    unshaped = plain._compute_loss(plain.model, dict(inputs))
    assert not torch.isclose(unshaped, losses[0])  # the shaping changed the loss
    assert shaped_trainer._metrics["train"]["entropy_shaping/mean"][-1] > 0


# ---------------------------------------------------------------- the switch
@pytest.mark.parametrize("advantage", ["nsr", "pass_at_k"])
def test_the_switch_sets_the_trained_and_logged_advantages(tmp_path, monkeypatch, advantage):
    cfg = RunConfig(**{**TINY, "method": "advantage", "method_options": {"advantage": advantage, "pass_k": 2}})
    trainer = build_trainer(cfg, tmp_path)
    assert isinstance(trainer, AdvantageGRPOTrainer)
    trainer.model.train()
    fixed = _random_rewards_per_func(12)
    monkeypatch.setattr(GRPOTrainer, "_calculate_rewards", lambda self, *args: fixed.clone())
    batch = [trainer.train_dataset[i] for i in range(3) for _ in range(4)]
    out = trainer._generate_and_score_completions(batch)
    rewards = fixed[:, 0] + 0.1 * fixed[:, 1].nan_to_num()
    rewards[1] = NAN
    estimator = {"nsr": lambda r: nsr_advantages(r, 4), "pass_at_k": lambda r: pass_at_k_advantages(r, 4, k=2)}
    expected = estimator[advantage](rewards).nan_to_num()
    torch.testing.assert_close(out["advantages"], expected)
    assert list(trainer._logs["advantages"])[-12:] == expected.tolist()  # TRL's completions log shows them too
    assert not torch.equal(expected, grpo_advantages(rewards, 4).nan_to_num())


def test_bad_switches_name_the_problem(tmp_path):
    def config(**options):
        return grpo_args(RunConfig(**{**TINY, "method": "advantage", "method_options": options}), tmp_path,
                         AdvantageConfig)

    assert config().advantage == "grpo" and ADVANTAGES == ("grpo", "psr", "nsr", "w_reinforce", "pass_at_k")
    with pytest.raises(ValueError, match=r"unknown advantage 'rloo': choose one of \('grpo', 'psr', 'nsr', "
                                         r"'w_reinforce', 'pass_at_k'\)"):
        config(advantage="rloo")
    with pytest.raises(ValueError, match=r"pass_k=5 must lie in \[1, num_generations=4\]"):
        config(advantage="pass_at_k", pass_k=5)
    with pytest.raises(ValueError, match="positive_weight"):
        config(advantage="w_reinforce", positive_weight=-0.1)
    with pytest.raises(ValueError, match="entropy_kappa must be at least 1"):
        config(entropy_alpha=0.4, entropy_kappa=0.5)
    with pytest.raises(ValueError, match="multi_objective_aggregation must be 'sum_then_normalize'"):
        grpo_args(RunConfig(**{**TINY, "grpo": {"multi_objective_aggregation": "normalize_then_sum"}}), tmp_path,
                  RecordingGRPOConfig)
