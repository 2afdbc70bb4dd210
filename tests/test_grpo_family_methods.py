"""Notebook 06's two additions: DAPO's dynamic sampling (the recording trainers' option) and GMPO (TRL's loss, recorded)."""

import pytest
import torch
from datasets import Dataset
from trl import GRPOTrainer

from rlnb.experiments import GRPO_FAMILY_METHODS, RATIO_METHODS, grpo_family_config
from rlnb.grpo_family import GMPOTrainer, RecordingGMPOConfig, RecordingGMPOTrainer  # TRL's, imported without its notice
from rlnb.luffy import LuffyConfig
from rlnb.models import load_model
from rlnb.runs import load_or_train
from rlnb.tasks import WORLD
from rlnb.train import RunConfig, build_trainer, grpo_args
from rlnb.trainers import (RecordingGRPOConfig, RecordingGRPOTrainer, concat_padded, dynamic_sampling_plan,
                           zero_spread_groups)

NAN = float("nan")
TINY = dict(max_steps=4, prompts_per_step=2, num_generations=4, max_completion_length=24, learning_rate=1e-3,
            save_steps=4)
"""Notebook 06's settings, shrunk: 4 steps = 2 generation batches of 2 prompts x 4 completions a step."""


# ---------------------------------------------------------------- dynamic sampling: the pieces by hand
def test_zero_spread_groups_by_hand():
    rewards = torch.tensor([1.0, 1.0, 1.0, 1.0,  # all right: no spread
                            0.1, 0.0, 0.0, 0.0,  # the format term alone gives spread
                            1.0, NAN, 1.0, 1.0,  # an unscored completion is ignored: no spread
                            NAN, NAN, NAN, 0.0])  # one scored completion: no spread
    assert zero_spread_groups(rewards, 4).tolist() == [True, False, True, True]
    with pytest.raises(ValueError, match="whole groups of 3"):
        zero_spread_groups(rewards, 3)


def test_dynamic_sampling_plan_keeps_spread_groups_then_fills_at_the_cap():
    t, f = True, False
    # Round 0: groups 1 and 3 have spread; round 1: groups 0, 2 and 3. Four wanted: the first four with spread.
    chosen, filled = dynamic_sampling_plan([torch.tensor([t, f, t, f]), torch.tensor([f, t, f, f])], 4)
    assert chosen == [(0, 1), (0, 3), (1, 0), (1, 2)] and filled == 0  # (1, 3) had spread but was not needed
    # The cap was hit with only two groups with spread: the two earliest zero-spread groups fill the batch.
    chosen, filled = dynamic_sampling_plan([torch.tensor([t, f, t]), torch.tensor([t, f, t])], 3)
    assert chosen == [(0, 0), (0, 1), (1, 1)] and filled == 1
    chosen, filled = dynamic_sampling_plan([torch.tensor([t, t])], 2)
    assert chosen == [(0, 0), (0, 1)] and filled == 2
    with pytest.raises(ValueError, match="cannot fill a batch of 3"):
        dynamic_sampling_plan([torch.tensor([f, t])], 3)


def test_rounds_are_padded_as_trl_pads_one_batch():
    first = {"prompt_ids": torch.tensor([[5, 6]]), "prompt_mask": torch.tensor([[1, 1]]),
             "completion_ids": torch.tensor([[7, 8, 9]]), "completion_mask": torch.tensor([[1, 1, 1]]),
             "old_per_token_logps": torch.tensor([[-1.0, -2.0, -3.0]]), "advantages": torch.tensor([0.5]),
             "num_items_in_batch": torch.tensor(3)}
    second = {"prompt_ids": torch.tensor([[4, 5, 6], [3, 3, 3]]), "prompt_mask": torch.ones(2, 3, dtype=torch.long),
              "completion_ids": torch.tensor([[7], [8]]), "completion_mask": torch.tensor([[1], [1]]),
              "old_per_token_logps": torch.tensor([[-0.5], [-0.7]]), "advantages": torch.tensor([0.1, 0.2]),
              "num_items_in_batch": torch.tensor(2)}
    out = concat_padded([first, second], [torch.tensor([0]), torch.tensor([1])], pad_token_id=0)
    assert set(out) == {"prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "old_per_token_logps"}
    assert out["prompt_ids"].tolist() == [[0, 5, 6], [3, 3, 3]]  # prompts padded on the left
    assert out["prompt_mask"].tolist() == [[0, 1, 1], [1, 1, 1]]
    assert out["completion_ids"].tolist() == [[7, 8, 9], [8, 0, 0]]  # completions on the right
    assert out["completion_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    torch.testing.assert_close(out["old_per_token_logps"], torch.tensor([[-1.0, -2.0, -3.0], [-0.7, 0.0, 0.0]]))
    with pytest.raises(NotImplementedError, match="pixel_values"):
        concat_padded([{**first, "pixel_values": torch.zeros(1, 3)}], None, pad_token_id=0)


# ---------------------------------------------------------------- dynamic sampling in the trainer, on a hand-built case
def _kind_reward(completions, kind, **kwargs):
    """A 'flat' prompt's group gets reward 0 throughout (no spread); a 'mixed' one 0, 1, 0, 1 (spread)."""
    return [0.0 if k == "flat" else float(i % 2) for i, k in enumerate(kind)]


def _hand_built_trainer(tmp_path, kinds: list[str], max_rounds: int) -> RecordingGRPOTrainer:
    """A recording trainer on prompts labelled flat/mixed, groups of 4 (the tests hand it batches of 3 groups)."""
    cfg = RunConfig(max_steps=1, prompts_per_step=3, num_generations=4, max_completion_length=6, save_steps=1,
                    grpo={"reward_weights": [1.0], "steps_per_generation": 2},  # 2: TRL keeps old log-probs
                    method_options={"dynamic_sampling": True, "dynamic_sampling_max_rounds": max_rounds})
    dataset = Dataset.from_dict({"prompt": [f"{100 + i}+{200 + i}=" for i in range(len(kinds))],
                                 "answer": [str(300 + 2 * i) for i in range(len(kinds))],
                                 "level": [3] * len(kinds), "kind": kinds})
    model, tokenizer = load_model("tiny", device="cpu")
    trainer = RecordingGRPOTrainer(model=model, processing_class=tokenizer, reward_funcs=[_kind_reward], task=WORLD,
                                   args=grpo_args(cfg, tmp_path, RecordingGRPOConfig), train_dataset=dataset)
    trainer.model.train()
    return trainer


def _first_batch(trainer, rows):
    return [dict(trainer.train_dataset[i]) for i in rows for _ in range(trainer.num_generations)]


def test_dynamic_sampling_drops_zero_spread_groups_and_refills_with_new_prompts(tmp_path, monkeypatch):
    kinds = ["flat", "mixed", "flat"] + ["mixed"] * 9
    trainer = _hand_built_trainer(tmp_path, kinds, max_rounds=4)
    seen = []
    refill = trainer.refill_prompts
    trainer.refill_prompts = lambda *a: seen.append(refill(*a)) or seen[-1]
    generated = []  # every round's output, as TRL returned it
    trl_generate = GRPOTrainer._generate_and_score_completions
    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions",
                        lambda self, batch: generated.append(trl_generate(self, batch)) or generated[-1])
    torch.manual_seed(0)
    out = trainer._generate_and_score_completions(_first_batch(trainer, [0, 1, 2]))
    # Round 1 kept its one mixed group; one refill round of 3 new (mixed) prompts gave 3 more, one too many.
    assert len(seen) == 1 and {x["prompt"] for x in seen[0]}.isdisjoint({"100+200=", "101+201=", "102+202="})
    m = trainer._metrics["train"]
    assert m["dynamic_sampling/rounds"] == [2.0] and m["dynamic_sampling/generations"] == [24.0]
    assert m["dynamic_sampling/zero_spread_groups"] == [2.0] and m["dynamic_sampling/filled_groups"] == [0.0]
    assert m["dynamic_sampling/unused_groups"] == [1.0]
    # The entropy of every generation (both rounds, 24 completions), token-weighted, not of the kept batch;
    # and the loss's recorded entropies are left alone for the training step.
    assert len(generated) == 2 and trainer._last_logps_entropies is None
    with torch.no_grad():
        every = [(trainer._get_per_token_logps_and_entropies(trainer.model, *trainer._model_inputs(o),
                                                             compute_entropy=True)[1], o["completion_mask"])
                 for o in generated]
    expected = sum(float((e * k).sum()) for e, k in every) / sum(float(k.sum()) for _, k in every)
    trainer._last_logps_entropies = None
    assert m["dynamic_sampling/entropy"] == [pytest.approx(expected, rel=1e-5)]
    assert len(m["rewards/_kind_reward/mean"]) == 2  # TRL's reward metrics: one per round, every generation
    assert m["frac_reward_zero_std"] == [pytest.approx(2 / 3), 0.0]
    # The kept batch: exactly TRL's shape, no zero-spread group, rewards 0, 1, 0, 1 in each group.
    assert out["completion_ids"].size(0) == 12 and out["prompt_ids"].size(0) == 12
    assert out["advantages"].shape == (12,) and int(out["num_items_in_batch"]) == int(out["completion_mask"].sum())
    assert not zero_spread_groups(out["advantages"], 4).any()
    assert torch.equal(out["advantages"].view(3, 4).sign(), torch.tensor([[-1.0, 1, -1, 1]] * 3))
    # The old log-probs of each round, re-padded, are those of one forward pass on the assembled batch.
    with torch.no_grad():
        fresh = trainer._get_per_token_logps_and_entropies(trainer.model, *trainer._model_inputs(out))[0]
    mask = out["completion_mask"].bool()
    torch.testing.assert_close(out["old_per_token_logps"][mask], fresh[mask], rtol=1e-4, atol=1e-4)
    # Refills are drawn by a generator seeded from the run's seed, step and round: the same every time.
    used = {"100+200=", "101+201=", "102+202="}
    assert trainer.refill_prompts(3, used, 1) == refill(3, used, 1) == seen[0]
    assert [x["prompt"] for x in trainer.refill_prompts(3, used, 2)] != [x["prompt"] for x in seen[0]]


def test_dynamic_sampling_respects_its_cap_and_fills_with_zero_spread_groups(tmp_path):
    kinds = ["flat", "mixed"] + ["flat"] * 10  # the only mixed prompt is in the first batch
    trainer = _hand_built_trainer(tmp_path, kinds, max_rounds=3)
    torch.manual_seed(0)
    out = trainer._generate_and_score_completions(_first_batch(trainer, [0, 1, 2]))
    m = trainer._metrics["train"]
    assert m["dynamic_sampling/rounds"] == [3.0] and m["dynamic_sampling/generations"] == [36.0]
    assert m["dynamic_sampling/zero_spread_groups"] == [8.0] and m["dynamic_sampling/filled_groups"] == [2.0]
    assert m["dynamic_sampling/unused_groups"] == [0.0]
    # The mixed group and the two earliest flat ones (the first round's), in generation order.
    assert zero_spread_groups(out["advantages"], 4).tolist() == [True, False, True]
    assert out["completion_ids"].size(0) == 12
    # TRL's completions log holds the last 24 generations (two refill rounds), none of them trained on: advantage 0.
    assert list(trainer._logs["advantages"]) == [0.0] * 24


def test_dynamic_sampling_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="dynamic_sampling_max_rounds must be at least 1"):
        grpo_args(RunConfig(method_options={"dynamic_sampling": True, "dynamic_sampling_max_rounds": 0}), tmp_path,
                  RecordingGRPOConfig)
    with pytest.raises(ValueError, match="not supported with LUFFY"):
        grpo_args(RunConfig(method="luffy", scale_rewards="none", method_options={"dynamic_sampling": True}),
                  tmp_path, LuffyConfig)


def test_dapo_ds_trains_and_logs_the_generations_it_spent():
    run = load_or_train(grpo_family_config("ci", "DAPO-DS", 0, **TINY), "test", "dapo-ds")
    assert run.trained and run.info["steps"] == 4
    m = run.metrics
    batch = TINY["prompts_per_step"] * 2 * TINY["num_generations"]  # steps_per_generation = 2
    spent = m[m.metric == "dynamic_sampling/generations"].set_index("step")["value"]
    rounds = m[m.metric == "dynamic_sampling/rounds"].set_index("step")["value"]
    assert list(spent.index) == [1, 3]  # logged once per generation batch, on its first optimiser step
    assert (spent == rounds * batch).all() and (rounds >= 1).all() and (rounds <= 4).all()
    for metric in ("dynamic_sampling/filled_groups", "frac_reward_zero_std", "accuracy", "entropy", "loss"):
        assert metric in set(m.metric), metric


# ---------------------------------------------------------------- GMPO: TRL's loss under the recorder
def test_gmpo_is_trls_loss_and_is_recorded(tmp_path):
    cfg = grpo_family_config("ci", "GMPO", 0, **TINY)
    trainer = build_trainer(cfg, tmp_path)
    assert type(trainer) is RecordingGMPOTrainer and isinstance(trainer.args, RecordingGMPOConfig)
    assert trainer.args.epsilon == 0.4 and trainer.epsilon_low == 0.4 and trainer.epsilon_high == 0.4
    assert GMPOTrainer.__module__ == "trl.experimental.gmpo.gmpo_trainer"
    defining = [c for c in type(trainer).__mro__ if "_compute_loss" in vars(c)]
    assert defining[:3] == [RecordingGRPOTrainer, GMPOTrainer, GRPOTrainer]
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(); the loss divides by it
    torch.manual_seed(0)
    inputs = trainer._generate_and_score_completions(
        [trainer.train_dataset[i] for i in range(4) for _ in range(4)])
    assert (inputs["advantages"] != 0).any()
    # Off-policy: the old log-probs moved away from the current ones, so ratios differ from 1 and clip.
    noise = 0.6 * torch.randn(inputs["old_per_token_logps"].shape, generator=torch.Generator().manual_seed(1))
    inputs = {**inputs, "old_per_token_logps": inputs["old_per_token_logps"] + noise}
    ours = trainer._compute_loss(trainer.model, dict(inputs))
    assert trainer._metrics["train"]["cov_logp_adv"] and trainer._metrics["train"]["entropy_q50"]  # recorded
    assert trainer._metrics["train"]["clip_ratio/region_mean"][-1] > 0  # GMPO's own clip metric
    theirs = GMPOTrainer._compute_loss(trainer, trainer.model, dict(inputs))
    grpo = GRPOTrainer._compute_loss(trainer, trainer.model, dict(inputs))
    torch.testing.assert_close(ours, theirs)  # the recording trainer adds metrics, not terms
    assert not torch.isclose(ours, grpo)
    # The reference is transcribed from the official code, not from TRL: callsys/GMPO, train_zero_math_gmpo.py,
    # ZeroMathLearner.learning_step, branch critic_type_modify == "gmpo". It takes one sequence per micro-batch:
    # flip the log-ratio's sign by the advantage's (-1 for A >= 0, +1 below), clamp to +-cliprange, take the
    # max of the flipped and the clamped value, flip back, and weigh A by exp(the token mean); the sequences'
    # losses are averaged by gradient accumulation.
    with torch.no_grad():
        logps = trainer._get_per_token_logps_and_entropies(trainer.model, *trainer._model_inputs(inputs))[0]
    official = []
    for new_logps, old_logps, advantage, response_mask in zip(
            logps, inputs["old_per_token_logps"], inputs["advantages"], inputs["completion_mask"].bool()):
        sign = -1 if advantage >= 0 else 1
        flipped = sign * (new_logps - old_logps)
        flipped_max = torch.max(flipped, torch.clamp(flipped, -0.4, 0.4))
        ratio = torch.exp((sign * flipped_max)[response_mask].sum() / response_mask.sum())
        official.append(-advantage * ratio)
    torch.testing.assert_close(ours.detach(), torch.stack(official).mean(), rtol=1e-4, atol=1e-6)


def test_gmpo_trains_and_records_like_every_run():
    run = load_or_train(grpo_family_config("ci", "GMPO", 0, **TINY), "test", "gmpo")
    assert run.trained and run.info["steps"] == 4
    names = set(run.metrics.metric)
    for metric in ("accuracy", "reward", "entropy", "clip_ratio/region_mean", "cov_logp_adv", "frac_reward_zero_std"):
        assert metric in names, metric
    assert "GMPO" in RATIO_METHODS and GRPO_FAMILY_METHODS["GMPO"]["method"] == "gmpo"
