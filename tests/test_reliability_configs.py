"""Issue #30 items 7-8: method options and GRPOConfig options are checked like RunConfig's own fields."""

from __future__ import annotations

import math

import pytest

from rlnb.grpo_family import AdvantageConfig
from rlnb.luffy import LuffyConfig
from rlnb.train import RunConfig, grpo_args, trainer_class
from rlnb.trainers import RecordingGRPOConfig

CPU = dict(output_dir="unused", use_cpu=True, report_to="none")


@pytest.mark.parametrize("cls, options, message", [
    (RecordingGRPOConfig, {"dynamic_sampling": "false"}, "RecordingGRPOConfig.dynamic_sampling must be true or false"),
    (LuffyConfig, {"on_policy_clip": "false", "scale_rewards": "none"}, "LuffyConfig.on_policy_clip must be true or"),
    (AdvantageConfig, {"entropy_alpha": math.nan}, "AdvantageConfig.entropy_alpha must be a finite number"),
    (AdvantageConfig, {"pass_k": 2.5}, "AdvantageConfig.pass_k must be an integer"),
])
def test_method_options_of_the_wrong_type_are_refused_naming_the_field(cls, options, message) -> None:
    with pytest.raises(ValueError, match=message):
        cls(**CPU, **options)


def test_numbers_yaml_reads_as_strings_become_numbers_in_method_and_grpo_options(tmp_path) -> None:
    cfg = RunConfig(method="luffy", scale_rewards="none", grpo={"epsilon_high": "0.28"},
                    method_options={"shaping_gamma": "1e-3"})
    args = grpo_args(cfg, tmp_path, trainer_class("luffy").config_class)
    assert args.shaping_gamma == 0.001 and args.epsilon_high == 0.28


@pytest.mark.parametrize("options, key", [
    ("grpo", "max_steps"), ("grpo", "num_train_epochs"), ("method_options", "num_generations"),
    ("method_options", "output_dir"), ("method_options", "seed"), ("grpo", "per_device_train_batch_size"),
])
def test_options_that_runconfig_sets_itself_are_refused_naming_the_field_to_use(options: str, key: str) -> None:
    with pytest.raises(ValueError, match=rf"RunConfig.{options} may not set '{key}': RunConfig sets it from"):
        RunConfig(**{options: {key: 0}})


@pytest.mark.parametrize("text, message", [
    ("a: &a [1, 1, 1]\nb: &b [*a, *a, *a]\nmax_steps: 3\n", "aliases"),  # the head of a billion-laughs file
    ("max_steps: 3\nmax_steps: 5\n", "'max_steps' appears twice"),
    ("1: 3\nmax_steps: 5\n", r"keys must be RunConfig field names, got \[1\]"),
])
def test_yaml_aliases_repeated_keys_and_non_string_keys_are_refused_naming_the_file(tmp_path, text, message) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"{path}: .*{message}"):
        RunConfig.from_yaml(path)


def test_a_huge_max_steps_draws_a_bounded_number_of_world_prompts(tmp_path, monkeypatch) -> None:
    from rlnb import train

    class Drawn(Exception):
        pass

    def world_dataset(levels, size, seed):
        raise Drawn(size)

    monkeypatch.setattr(train, "world_dataset", world_dataset)
    with pytest.raises(Drawn) as drawn:
        train.build_trainer(RunConfig(max_steps="1e8"), tmp_path)
    assert drawn.value.args == (train.WORLD_ROWS_MAX,)
