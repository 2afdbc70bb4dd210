"""Run folders: cached, resumable training runs that later notebooks reuse.

A run lives in ``runs/<notebook>/<name>-<hash>/`` where the hash is taken over
its :class:`~rlnb.train.RunConfig`, so changing a parameter makes a new run
instead of silently reusing a stale one. The folder holds ``config.yaml``,
``metrics.csv`` (tidy), ``completions.jsonl``, TRL checkpoints while training,
and ``final/`` (model and tokenizer, ``save_pretrained`` layout) plus
``done.json`` when finished. A finished run is loaded, never retrained; an
interrupted one resumes from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlnb.models import load_model
from rlnb.paths import runs_dir
from rlnb.train import RunConfig, build_trainer
from rlnb.trainers import METRICS_FILE, truncate_metrics

FINAL = "final"
ADAPTER = "adapter"
DONE = "done.json"


@dataclass
class TrainedRun:
    """A finished run: its model, tokenizer, tidy metrics, folder, and whether this call trained it."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    metrics: pd.DataFrame
    run_dir: Path
    trained: bool
    info: dict


def config_hash(cfg: RunConfig) -> str:
    """Short stable hash of a configuration (sorted YAML of its fields)."""
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def run_path(cfg: RunConfig, notebook: str, name: str) -> Path:
    return runs_dir() / notebook / f"{name}-{config_hash(cfg)}"


def checkpoint_step(checkpoint: Path) -> int:
    """The training step a TRL ``checkpoint-N`` folder was saved at."""
    return int(checkpoint.name.split("-")[1])


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete TRL checkpoint in a run folder, if any."""
    ckpts = [p for p in run_dir.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return max(ckpts, key=checkpoint_step, default=None)


def is_finished(run_dir: Path) -> bool:
    return (run_dir / DONE).exists() and (run_dir / FINAL / "config.json").exists()


def load_metrics(run_dir: Path) -> pd.DataFrame:
    path = run_dir / METRICS_FILE
    if not path.exists():
        return pd.DataFrame(columns=["step", "metric", "level", "value"])
    return pd.read_csv(path)


def load_or_train(
    cfg: RunConfig, notebook: str, name: str, run_dir: str | Path | None = None, device: str | None = None
) -> TrainedRun:
    """Return the finished run for ``cfg``, training (or resuming) only what is missing.

    The model is loaded on the preset's device (a GPU for ``gpu``, else the CPU) unless ``device`` says otherwise.
    """
    device = device or ("cuda" if cfg.preset == "gpu" else "cpu")
    folder = Path(run_dir) if run_dir is not None else run_path(cfg, notebook, name)
    trained = False
    if not is_finished(folder):
        _train(cfg, folder)
        trained = True
    model, tokenizer = load_model(str(folder / FINAL), device=device)
    info = json.loads((folder / DONE).read_text())
    if not trained:
        print(f"reusing finished run {folder} ({info['steps']} steps, trained in {info['train_seconds']:.0f} s)")
    return TrainedRun(model, tokenizer, load_metrics(folder), folder, trained, info)


def _save_final(trainer, folder: Path) -> None:
    """Write the final model; a LoRA run keeps its adapter and ships the merged model as ``final``.

    Merging makes every later consumer (evaluation, pass@k, vLLM) treat a LoRA
    run like any other ``save_pretrained`` folder.
    """
    from peft import PeftModel

    model = trainer.accelerator.unwrap_model(trainer.model)
    if isinstance(model, PeftModel):
        model.save_pretrained(str(folder / ADAPTER))
        model = model.merge_and_unload()
    model.save_pretrained(str(folder / FINAL))
    trainer.processing_class.save_pretrained(str(folder / FINAL))


def _train(cfg: RunConfig, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=True))
    resume = last_checkpoint(folder)
    resume_step = checkpoint_step(resume) if resume else 0
    if resume is None:
        (folder / METRICS_FILE).unlink(missing_ok=True)
    else:
        truncate_metrics(folder, resume_step)
        print(f"resuming {folder.name} from {resume.name}")
    trainer = build_trainer(cfg, folder)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - start
    _save_final(trainer, folder)
    steps_done = trainer.state.global_step - resume_step
    info = {"steps": trainer.state.global_step, "train_seconds": seconds,
            "seconds_per_step": seconds / max(1, steps_done), "resumed_from": resume.name if resume else None}
    (folder / DONE).write_text(json.dumps(info, indent=2))
    for ckpt in folder.glob("checkpoint-*"):
        shutil.rmtree(ckpt)
