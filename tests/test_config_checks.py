"""RunConfig checks its fields by type and value, documents them, and the CLI lists them
(issue #17, items 6 and 7)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from rlnb import train
from rlnb.train import RunConfig, main


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


# ------------------------------------------------------------------- item 7: types


def test_a_learning_rate_that_yaml_reads_as_a_string_becomes_a_float(tmp_path: Path) -> None:
    cfg = RunConfig.from_yaml(_yaml(tmp_path, "learning_rate: 1e-3\nmax_steps: '20'\n"))
    assert cfg.learning_rate == 0.001 and type(cfg.learning_rate) is float
    assert cfg.max_steps == 20 and type(cfg.max_steps) is int


@pytest.mark.parametrize(
    ("text", "field", "value"),
    [
        ("max_steps: 2.5", "max_steps", "2.5"),
        ("levels: 3", "levels", "3"),
        ("levels: [2, three]", r"levels\[1\]", "'three'"),
        ("learning_rate: fast", "learning_rate", "'fast'"),
        ("learning_rate: .nan", "learning_rate", "nan"),
        ("temperature: true", "temperature", "True"),
        ("seed: false", "seed", "False"),
        ("model: 7", "model", "7"),
        ("grpo: [beta]", "grpo", r"\['beta'\]"),
        ("dataset_limit: ten", "dataset_limit", "'ten'"),
    ],
)
def test_a_field_of_the_wrong_type_is_named_with_its_value(tmp_path: Path, text: str, field: str, value: str) -> None:
    path = _yaml(tmp_path, text + "\n")
    with pytest.raises(ValueError, match=rf"run\.yaml: RunConfig\.{field} must be .*, got {value}"):
        RunConfig.from_yaml(path)


def test_python_callers_get_the_same_checks() -> None:
    with pytest.raises(ValueError, match=r"RunConfig\.max_steps must be an integer, got 2\.5 \(float\)"):
        RunConfig(max_steps=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"RunConfig\.levels must be a list, got 3 \(int\)"):
        RunConfig(levels=3)  # type: ignore[arg-type]
    cfg = RunConfig(levels=[2, 3], max_steps=np.int64(7), learning_rate=np.float32(0.5), dataset_limit=None)
    assert cfg.levels == (2, 3)
    assert type(cfg.max_steps) is int and type(cfg.learning_rate) is float  # YAML can write them


def test_whole_numbers_are_accepted_where_they_fit() -> None:
    cfg = RunConfig(max_steps=300.0, learning_rate=1, save_steps="1e2")  # type: ignore[arg-type]
    assert (cfg.max_steps, cfg.learning_rate, cfg.save_steps) == (300, 1, 100)
    assert type(cfg.learning_rate) is int  # kept as given, so existing run hashes do not change


@pytest.mark.parametrize(
    ("value", "expected", "result"),
    [(True, bool, True), ("x", str | None, "x"), (None, str | None, None), ([1], tuple[int, ...], (1,))],
)
def test_the_type_checker_covers_every_kind_of_field_type(value: object, expected: object, result: object) -> None:
    assert train._checked("flag", value, expected) == result


def test_a_bool_field_takes_only_true_or_false() -> None:
    with pytest.raises(ValueError, match=r"RunConfig\.flag must be true or false, got 'yes'"):
        train._checked("RunConfig.flag", "yes", bool)


def test_an_empty_yaml_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"run\.yaml: the file is empty"):
        RunConfig.from_yaml(_yaml(tmp_path, "# only a comment\n"))
    with pytest.raises(ValueError, match=r"run\.yaml: expected a mapping of RunConfig fields, got a list"):
        RunConfig.from_yaml(_yaml(tmp_path, "- max_steps\n"))


def test_every_field_is_documented_with_its_trl_option_where_it_has_one() -> None:
    for spec in dataclasses.fields(RunConfig):
        assert len(spec.metadata.get("help", "")) > 20, f"RunConfig.{spec.name} has no help"
    helps = {spec.name: spec.metadata["help"] for spec in dataclasses.fields(RunConfig)}
    for name in ("seed", "max_steps", "learning_rate", "num_generations", "max_completion_length", "temperature",
                 "loss_type", "scale_rewards", "save_steps"):
        assert f"GRPOConfig.{name}" in helps[name]
    assert "GRPOConfig.per_device_train_batch_size" in helps["prompts_per_step"]
    assert "GRPOConfig.reward_weights" in helps["format_reward_weight"]


def test_cli_help_lists_every_field_with_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for spec in dataclasses.fields(RunConfig):
        assert f"{spec.name}: {spec.type} = " in out
        assert " ".join(spec.metadata["help"].split()) in out


# ------------------------------------------------------ item 6: runs that train nothing


@pytest.mark.parametrize("field", ["max_steps", "prompts_per_step", "num_generations", "max_completion_length",
                                   "save_steps", "dataset_limit"])
def test_counts_that_would_train_nothing_are_refused(field: str) -> None:
    with pytest.raises(ValueError, match=rf"RunConfig\.{field} must be at least 1, got 0"):
        RunConfig(**{field: 0})


def test_dataset_limit_zero_in_yaml_is_refused_before_training(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "task: math\ndataset: data.jsonl\ndataset_limit: 0\n")
    with pytest.raises(ValueError, match=r"run\.yaml: RunConfig\.dataset_limit must be at least 1, got 0"):
        RunConfig.from_yaml(path)


def test_a_world_run_needs_levels_and_positive_rates() -> None:
    with pytest.raises(ValueError, match="levels is empty"):
        RunConfig(levels=())
    with pytest.raises(ValueError, match=r"RunConfig\.learning_rate must be positive, got -0\.1"):
        RunConfig(learning_rate=-0.1)
    with pytest.raises(ValueError, match=r"RunConfig\.temperature must be positive, got 0"):
        RunConfig(temperature=0)


def test_a_math_run_on_a_set_without_gold_answers_stops_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets

    from rlnb.runs import load_or_train

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    blank = tmp_path / "blank.jsonl"
    blank.write_text('{"problem": "1+1?", "answer": ""}\n{"problem": "2+2?", "answer": ""}\n')
    cfg = RunConfig(task="math", dataset=str(blank), max_steps=1, prompts_per_step=1, num_generations=2)
    with pytest.raises(ValueError, match=r"blank\.jsonl.*none of its 2 rows has a gold answer"):
        load_or_train(cfg, "test", "blank", run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "final").exists() and not (tmp_path / "run" / "done.json").exists()


def test_format_reward_is_checked_and_the_worked_format_replaces_the_tasks_format_slot(tmp_path):
    from rlnb.train import RunConfig, build_trainer
    from rlnb.verify import format_reward, worked_format_reward

    with pytest.raises(ValueError, match="unknown format_reward 'steps'"):
        RunConfig(format_reward="steps")
    with pytest.raises(ValueError, match="tiny-world reward"):
        RunConfig(task="math", dataset="x.jsonl", format_reward="worked")
    small = dict(max_steps=1, prompts_per_step=1, num_generations=2, max_completion_length=4)
    assert build_trainer(RunConfig(**small), tmp_path / "a").reward_funcs[1] is format_reward
    assert build_trainer(RunConfig(**small, format_reward="worked"), tmp_path / "b").reward_funcs[1] is worked_format_reward


def test_dapos_overlong_punishment_is_a_third_reward_with_its_weight(tmp_path):
    from rlnb.train import build_trainer

    """Issue #24: DAPO's soft overlong punishment (eq. 13), TRL's reward function, behind one method option."""
    small = dict(max_steps=1, save_steps=1, prompts_per_step=2, num_generations=4, max_completion_length=8, levels=[3])
    trainer = build_trainer(RunConfig(**small, method_options={"overlong_buffer": 4, "overlong_penalty_factor": 0.5}),
                            tmp_path / "a")
    punish = trainer.reward_funcs[2]
    assert punish(completion_ids=[[1] * 4, [1] * 6, [1] * 8]) == [0.0, -0.5, -1.0]  # buffer: tokens 5-8
    assert trainer.reward_weights.tolist() == [1.0, 0.0, 0.5]  # accuracy, format (off by default), overlong
    assert len(build_trainer(RunConfig(**small), tmp_path / "b").reward_funcs) == 2  # off by default
    with pytest.raises(ValueError, match="overlong_buffer must be in"):
        build_trainer(RunConfig(**small, method_options={"overlong_buffer": 8}), tmp_path / "c")


@pytest.mark.parametrize("where, message", [("afile", "is a file"), ("afile/run", "lies under"), ]) 
def test_the_cli_names_a_run_dir_that_cannot_hold_a_run(tmp_path, where, message):
    config = tmp_path / "c.yaml"
    config.write_text("max_steps: 1\nsave_steps: 1\n")
    (tmp_path / "afile").write_text("")
    with pytest.raises(SystemExit, match=f"RUN_DIR .*{message}"):
        main([str(config), str(tmp_path / where)])


def test_seeds_given_as_text_are_refused_with_the_papermill_hint():
    from rlnb.seeds import train_seeds

    with pytest.raises(ValueError, match="-y 'seeds: "):
        train_seeds(lambda s: RunConfig(seed=s), "[]", "test", "text")
