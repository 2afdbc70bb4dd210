"""LoRA: adapter options, saving and reloading, merging, parameter counts, the gpu preset's Tina config."""

import copy
import dataclasses

import pytest
import torch

from rlnb.experiments import (FORMAT_TRANSITION, LORA_ALPHA, LORA_DROPOUT, LORA_RATES, LORA_STEPS,
                              format_transition_job, lora_job, lora_rl_config, tina_config, tina_params, zero_rl_config)
from rlnb.lora import (
    TINA_TARGET_MODULES,
    attach_lora,
    count_parameters,
    load_adapter,
    lora_config,
    lora_options,
    lora_parameter_count,
    merge_for_eval,
    r1_distill_qwen_1p5b_config,
    truncate_update,
    update_spectrum,
)
from rlnb.rollout import token_logprobs
from rlnb.train import grpo_args

PROMPTS = ["47+85=", "123+456=7+3+0=10;", "9+9="]


def text_logprobs(model, tokenizer, texts):
    """Log-probability of every next token of ``texts`` (left-padded batch), padding zeroed."""
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    return token_logprobs(model, batch["input_ids"], batch["attention_mask"])


def trained_looking_adapter(base_model, rank=4):
    """A LoRA model whose B matrices are non-zero, as after training (PEFT starts B at zero)."""
    model = attach_lora(copy.deepcopy(base_model), lora_options(rank))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


def test_lora_options_follow_tina_and_reject_bad_values():
    opts = lora_options(8)
    assert opts == {"r": 8, "lora_alpha": 32.0, "lora_dropout": 0.05, "target_modules": list(TINA_TARGET_MODULES)}
    assert lora_options(4, alpha=8, dropout=0.0, target_modules="q_proj")["target_modules"] == ["q_proj"]
    for bad in (dict(rank=0), dict(rank=2.5), dict(rank=4, alpha=0), dict(rank=4, dropout=1.0),
                dict(rank=4, target_modules=[])):
        with pytest.raises(ValueError):
            lora_options(**bad)
    cfg = lora_config(opts)
    assert cfg.r == 8 and cfg.lora_alpha == 32 and set(cfg.target_modules) == set(TINA_TARGET_MODULES)


def test_adapter_saves_and_reloads_with_identical_logprobs(base, tmp_path):
    model, tok = base
    lora = trained_looking_adapter(model)
    before = text_logprobs(lora, tok, PROMPTS)
    assert not torch.allclose(before, text_logprobs(model, tok, PROMPTS)), "the adapter must change the model"
    lora.save_pretrained(str(tmp_path / "adapter"))
    reloaded = load_adapter(tmp_path / "adapter", base="tiny")
    assert torch.equal(text_logprobs(reloaded, tok, PROMPTS), before)
    with pytest.raises(FileNotFoundError, match="no LoRA adapter"):
        load_adapter(tmp_path, base="tiny")


def test_merged_and_unmerged_models_agree(base):
    model, tok = base
    lora = trained_looking_adapter(model, rank=8)
    merged = merge_for_eval(lora)
    assert type(merged).__name__ == "Qwen2ForCausalLM"
    assert not any("lora" in n for n, _ in merged.named_parameters())
    unmerged, folded = text_logprobs(lora, tok, PROMPTS), text_logprobs(merged, tok, PROMPTS)
    torch.testing.assert_close(folded, unmerged, rtol=1e-5, atol=1e-5)
    assert any("lora_B" in n for n, _ in lora.named_parameters()), "merging for evaluation leaves the adapter model intact"


@pytest.mark.parametrize("rank", [1, 8, 32])
def test_trainable_parameter_count_matches_peft(base, rank):
    model, _ = base
    lora = attach_lora(copy.deepcopy(model), lora_options(rank))
    count = count_parameters(lora)
    assert (count.trainable, count.total) == lora.get_nb_trainable_parameters()
    # by hand: r * (fan_in + fan_out) for each adapted projection of each layer
    c = model.config
    head = c.hidden_size // c.num_attention_heads
    h, kv, mlp = c.hidden_size, c.num_key_value_heads * head, c.intermediate_size
    per_layer = (h + h) + 2 * (h + kv) + (h + h) + 3 * (h + mlp)
    assert count.trainable == rank * per_layer * c.num_hidden_layers
    full = count_parameters(model)
    assert full.trainable == full.total == model.num_parameters(), "full fine-tuning trains everything, tied weights once"


def test_lora_runs_take_their_ranks_measured_rate_and_full_fine_tuning_is_notebook_01s_run():
    full, lora = lora_rl_config("ci", 0, None), lora_rl_config("ci", 0, 4)
    assert full.lora is None and lora.lora["r"] == 4 and lora.lora["lora_alpha"] == LORA_ALPHA
    assert lora.learning_rate == LORA_RATES[4] and lora.lora["lora_dropout"] == LORA_DROPOUT
    differs = ("lora", "learning_rate", "max_steps")
    assert {k: v for k, v in full.to_dict().items() if k not in differs} == \
           {k: v for k, v in lora.to_dict().items() if k not in differs}
    # LoRA stops at one of full fine-tuning's checkpoints, where the notebook compares the two
    assert lora.max_steps == LORA_STEPS["ci"] <= full.max_steps and lora.max_steps % full.save_steps == 0
    assert lora.save_steps == full.save_steps
    fmt = format_transition_job("ci", 0).config
    assert fmt.max_steps == lora.max_steps and fmt.format_reward == FORMAT_TRANSITION["format_reward"]
    assert fmt.lora["r"] == FORMAT_TRANSITION["rank"]
    job = lora_job("ci", 0, None)
    assert (job.notebook, job.name) == ("01_zero_rl", "grpo")
    assert job.config == zero_rl_config("ci", "grpo", 0, format_reward_weight=0.1)
    assert lora_job("ci", 0, None, learning_rate=3e-4).notebook == "05_lora_grpo_tina"
    with pytest.raises(ValueError, match="no measured learning rate for LoRA rank 3"):
        lora_rl_config("ci", 0, 3)
    with pytest.raises(ValueError, match="CPU presets"):
        lora_rl_config("gpu", 0, 8)


def test_gpu_preset_tina_config_validates_on_cpu(tmp_path):
    cfg = tina_config(tina_params())
    assert cfg.model == "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B" and cfg.task == "math"
    assert cfg.lora == {"r": 32, "lora_alpha": 128.0, "lora_dropout": 0.05, "target_modules": list(TINA_TARGET_MODULES)}
    peft_cfg = lora_config(cfg.lora)
    assert peft_cfg.r == 32 and peft_cfg.lora_alpha == 128 and len(peft_cfg.target_modules) == 7
    # the GRPOConfig the gpu preset would get, built with CPU device settings: nothing is loaded or started
    args = grpo_args(dataclasses.replace(cfg, preset="ci"), tmp_path)
    assert args.learning_rate == 1e-6 and args.num_generations == 6 and args.temperature == 0.7
    assert args.beta == 0.04 and args.reward_weights == [2.0, 1.0]  # accuracy 2.0, format 1.0
    assert args.lr_scheduler_type == "cosine_with_min_lr" and args.lr_scheduler_kwargs == {"min_lr_rate": 0.1}
    assert args.warmup_steps == 0.1 and args.max_completion_length == 3584
    assert args.use_vllm and args.vllm_mode == "colocate" and args.vllm_gpu_memory_utilization == 0.4
    # Tina's adapter on the base's shape, sized on the meta device
    count, base_params = lora_parameter_count(r1_distill_qwen_1p5b_config(), cfg.lora)
    assert 1.7e9 < base_params < 1.8e9 and count.trainable == 32 * 28 * (
        2 * (1536 + 1536) + 2 * (1536 + 256) + 3 * (1536 + 8960))


def test_tina_config_names_bad_keys():
    params = tina_params()
    with pytest.raises(ValueError, match=r"missing \['beta'\], unknown \['betta'\]"):
        tina_config({**{k: v for k, v in params.items() if k != "beta"}, "betta": 0.04})


def test_step_cost_times_generation_and_counts_what_is_trained():
    from rlnb.lora import grpo_step_cost
    from rlnb.train import RunConfig

    small = dict(prompts_per_step=2, num_generations=4, max_completion_length=16, learning_rate=1e-3)
    lora = grpo_step_cost(RunConfig(**small, lora=lora_options(2)), steps=1, warmup=1)
    full = grpo_step_cost(RunConfig(**small), steps=1, warmup=0)
    for cost in (lora, full):
        assert 0 < cost.generation_seconds_per_step < cost.seconds_per_step
        assert 0 < cost.generated_tokens_per_step <= 8 * 16 and cost.generated_tokens_per_s > 0
        assert cost.peak_memory_mb >= 0
    assert full.params.trainable == full.params.total and lora.params.trainable < 0.05 * full.params.total
    with pytest.raises(ValueError, match="steps >= 1"):
        grpo_step_cost(RunConfig(**small), steps=0)


def test_a_rank_r_lora_update_has_all_its_energy_in_r_directions_and_survives_truncation_to_r(base):
    base, tok = base
    lora = merge_for_eval(trained_looking_adapter(base, rank=4))
    spectrum = update_spectrum(base, lora, ranks=(1, 4, 32))
    assert set(spectrum["module"]) == set(TINA_TARGET_MODULES) and len(spectrum) == 7 * base.config.num_hidden_layers
    assert (spectrum["energy in top 4"] > 1 - 1e-9).all() and (spectrum["energy in top 32"] > 1 - 1e-9).all()
    assert (spectrum["energy in top 1"] < 0.99).all() and (spectrum["relative norm"] > 0).all()
    # cutting a rank-4 update to rank 4 gives the same model back; to rank 1 it does not
    gap = lambda m: (text_logprobs(m, tok, PROMPTS) - text_logprobs(lora, tok, PROMPTS)).abs().max().item()
    assert gap(truncate_update(base, lora, 4)) < 1e-4 and gap(truncate_update(base, lora, None)) < 1e-4
    assert gap(truncate_update(base, lora, 1)) > 1e-3


def test_truncation_keeps_the_base_outside_loras_matrices_and_leaves_its_inputs_alone(base):
    base, _ = base
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        for name, p in tuned.named_parameters():
            p.add_(0.01 * torch.ones_like(p))
    before = {n: p.clone() for n, p in base.named_parameters()}
    cut = truncate_update(base, tuned, 1)
    for (name, p), q in zip(cut.named_parameters(), before.values()):
        adapted = name.endswith(".weight") and name.split(".")[-2] in TINA_TARGET_MODULES
        # a constant shift of every entry is rank one: kept exactly; everything else is the base's
        assert torch.allclose(p, q + 0.01, atol=1e-6) if adapted else torch.equal(p, q), name
    assert all(torch.equal(p, before[n]) for n, p in base.named_parameters())
    with pytest.raises(ValueError, match="positive integer"):
        truncate_update(base, tuned, 0)
    with pytest.raises(ValueError, match="no 2-D weight"):
        update_spectrum(base, tuned, target_modules=("not_a_module",))
