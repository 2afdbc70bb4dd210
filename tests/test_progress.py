"""RLNB_PROGRESS=0 keeps executed notebooks free of progress bars and of the Trainer's log printing."""

from transformers import PrinterCallback
from transformers.trainer_callback import ProgressCallback

from rlnb.progress import progress_enabled
from rlnb.train import RunConfig, build_trainer
from rlnb.world import LEVELS

TINY_RUN = dict(max_steps=1, prompts_per_step=2, num_generations=4, max_completion_length=8, levels=list(LEVELS[:1]))


def callback_types(trainer) -> set[type]:
    return {type(cb) for cb in trainer.callback_handler.callbacks}


def test_progress_is_on_unless_switched_off(monkeypatch):
    monkeypatch.delenv("RLNB_PROGRESS", raising=False)
    assert progress_enabled()
    for off in ("0", "false", "Off"):
        monkeypatch.setenv("RLNB_PROGRESS", off)
        assert not progress_enabled()


def test_a_quiet_trainer_has_neither_a_bar_nor_a_log_printer(monkeypatch, tmp_path):
    monkeypatch.setenv("RLNB_PROGRESS", "0")
    quiet = build_trainer(RunConfig(**TINY_RUN), tmp_path / "quiet")
    assert quiet.args.disable_tqdm
    assert not callback_types(quiet) & {PrinterCallback, ProgressCallback}
    monkeypatch.setenv("RLNB_PROGRESS", "1")
    loud = build_trainer(RunConfig(**TINY_RUN), tmp_path / "loud")
    assert ProgressCallback in callback_types(loud)
