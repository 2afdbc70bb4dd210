"""Run folders: cached, resumable training runs that later notebooks reuse.

A run lives in ``runs/<notebook>/<name>-<hash>/`` where the hash is taken over
its :class:`~rlnb.train.RunConfig`, so changing a parameter makes a new run
instead of silently reusing a stale one. The folder holds ``config.yaml``,
``code.json`` (the code that trained it), ``metrics.csv`` (tidy),
``completions.jsonl``, TRL checkpoints while training, ``run.lock``, and
``final/`` (model and tokenizer, ``save_pretrained`` layout) plus ``done.json``
when finished. A finished run is loaded, never retrained; an interrupted one
resumes from its last complete checkpoint.

Runs know their code: ``code.json`` records a hash of the ``rlnb/*.py``
sources, a hash of the starting model's weights (the shipped base for
``"tiny"``, or any local model folder), the torch, transformers, trl and peft
versions, and, as a pointer for people only, the git commit and whether the
tree was clean. A run whose recorded code differs from the current code (or
that has no record) is not reused: its content is moved aside to
``<run>.stale-<old code hash>/`` (kept, not deleted, so old results can still
be compared) and it is trained again, with one printed line saying so. Only the
package sources count, so editing a notebook or a test never retrains a run;
the git commit is not compared for the same reason.

One process at a time: the process that trains a folder (rank 0 of an
``accelerate`` launch) holds an ``flock`` on ``run.lock`` in it. A second
process that needs to change the same folder stops at once with
:class:`RunFolderBusy`, naming the folder and the holder's pid, rather than
waiting, so a notebook cell never hangs silently behind a long run. Reusing a
finished run takes no lock.

Damaged folders are repaired where nothing is lost, and named where something
would be: incomplete checkpoints (no weights, optimizer, scheduler or RNG state,
or an unreadable ``trainer_state.json``) are deleted and the run resumes from
the previous complete one (or from scratch); an unreadable ``done.json`` makes
the run resume as unfinished; ``metrics.csv`` and ``completions.jsonl`` are cut
back to the resumed step; a folder of another configuration is refused.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import yaml
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlnb.models import load_model, resolve_model_path
from rlnb.paths import PROJECT_ROOT, runs_dir
from rlnb.train import RunConfig, build_trainer
from rlnb.trainers import METRICS_FILE, METRICS_HEADER, truncate_metrics, truncate_samples

FINAL = "final"
ADAPTER = "adapter"
DONE = "done.json"
CONFIG = "config.yaml"
CODE = "code.json"
LOCK = "run.lock"
PACKAGE_DIR = Path(__file__).resolve().parent
LIBRARIES = ("torch", "transformers", "trl", "peft")

CHECKPOINT_PARTS: dict[str, tuple[str, ...]] = {
    # part -> file patterns, any of which holds it (DeepSpeed keeps weights and optimizer in global_step*/)
    "model weights": ("model*.safetensors*", "adapter_model.*", "pytorch_model*", "global_step*"),
    "optimizer state": ("optimizer*", "global_step*"),
    "scheduler state": ("scheduler.pt",),
    "RNG state": ("rng_state*.pth",),
    "trainer state": ("trainer_state.json",),
}
"""What ``Trainer`` needs to resume exactly; without any of it a resume would silently start fresh state."""


class RunFolderError(RuntimeError):
    """A run folder that cannot be used as asked; the message names the folder and what to do."""


class RunFolderBusy(RunFolderError):
    """Another process holds the run folder's lock."""


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


# ---------------------------------------------------------------------- the code that trains a run
def source_hash(package: Path = PACKAGE_DIR) -> str:
    """Hash of the package's ``*.py`` files (names and contents, sorted): nothing else of the tree counts."""
    digest = hashlib.sha256()
    for path in sorted(package.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def weights_hash(model: str) -> str | None:
    """Hash of a local model folder's weight files (the shipped base for ``"tiny"``).

    ``None`` for a hub id: the configuration names it already.
    """
    path = Path(resolve_model_path(model))
    if not path.is_dir():
        return None
    files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin"))
    return _files_hash(tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))


@functools.lru_cache(maxsize=None)
def _files_hash(files: tuple[tuple[str, int, int], ...]) -> str:
    """Hash of files given as (path, size, mtime): cached, since a real model's weights take seconds to read."""
    digest = hashlib.sha256()
    for name, _, _ in files:
        with open(name, "rb") as fh:
            digest.update(Path(name).name.encode() + b"\0" + hashlib.file_digest(fh, "sha256").digest())
    return digest.hexdigest()[:16]


def code_record(cfg: RunConfig) -> dict[str, str | None]:
    """What a run's result depends on besides its configuration; compared before a run is reused."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"rlnb_sources": source_hash(), "model_weights": weights_hash(cfg.model), **versions}


def git_state(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """The checkout's commit and whether its tree was clean: recorded for people, never compared."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()

    try:
        return {"git_commit": git("rev-parse", "HEAD"), "git_clean": git("status", "--porcelain") == ""}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_clean": None}


def code_changes(recorded: dict | None, current: dict[str, str | None]) -> list[str]:
    """How the recorded code differs from the current, one entry per field (empty when it does not)."""
    if recorded is None:
        return [f"no readable {CODE}"]
    return [f"{key} {recorded.get(key)} -> {value}" for key, value in current.items() if recorded.get(key) != value]


# ---------------------------------------------------------------------- folder state
def checkpoint_step(checkpoint: Path) -> int:
    """The training step a TRL ``checkpoint-N`` folder was saved at."""
    return int(checkpoint.name.split("-")[1])


def checkpoints(run_dir: Path) -> list[Path]:
    """The run's ``checkpoint-N`` folders, oldest first."""
    found = [p for p in run_dir.glob("checkpoint-*") if p.name.split("-", 1)[1].isdigit()]
    return sorted(found, key=checkpoint_step)


def checkpoint_models(run_dir: Path, base: str) -> dict[int, PreTrainedModel]:
    """``{step: model}`` of every checkpoint a run kept, for evaluating along training.

    A LoRA run's checkpoints hold only the adapter: it is loaded on a fresh ``base``
    (the run's ``RunConfig.model``) and merged, so every model samples at the same speed.
    """
    from rlnb.lora import load_adapter, merge_for_eval

    models = {}
    for path in checkpoints(Path(run_dir)):
        if (path / "adapter_config.json").exists():
            models[checkpoint_step(path)] = merge_for_eval(load_adapter(path, base))
        else:
            models[checkpoint_step(path)] = load_model(str(path), device="cpu")[0]
    if not models:
        raise FileNotFoundError(f"{run_dir} kept no checkpoint-N folders: train it with save_total_limit None "
                                "(rlnb.experiments.CHECKPOINTS_KEPT) to follow it along training")
    return models


def missing_checkpoint_parts(checkpoint: Path) -> list[str]:
    """The parts of :data:`CHECKPOINT_PARTS` a checkpoint lacks (an empty file counts as missing)."""
    def present(pattern: str) -> bool:
        return any(p.is_dir() or p.stat().st_size > 0 for p in checkpoint.glob(pattern))

    missing = [part for part, patterns in CHECKPOINT_PARTS.items() if not any(map(present, patterns))]
    if "trainer state" not in missing and _read_json(checkpoint / "trainer_state.json") is None:
        missing.append("readable trainer_state.json")
    return missing


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint in a run folder, if any."""
    complete = [p for p in checkpoints(run_dir) if not missing_checkpoint_parts(p)]
    return complete[-1] if complete else None


def _read_json(path: Path) -> dict | None:
    """The JSON object in ``path``; ``None`` when the file is missing or damaged."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _write_atomic(path: Path, text: str) -> None:
    """Write a small file whole or not at all, so a crash never leaves a torn ``done.json``."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # per process: every rank of a launch writes
    tmp.write_text(text)
    os.replace(tmp, path)


def is_finished(run_dir: Path) -> bool:
    """Whether the run has its final model and a readable ``done.json`` (whatever code made it)."""
    return _read_json(run_dir / DONE) is not None and (run_dir / FINAL / "config.json").exists()


def is_current(cfg: RunConfig, run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a finished run of ``cfg`` made by the current code: one to reuse as it is."""
    return is_finished(run_dir) and not code_changes(_read_json(run_dir / CODE), code_record(cfg))


def check_config(cfg: RunConfig, run_dir: Path) -> None:
    """Refuse a folder whose ``config.yaml`` is another configuration, or that is no run folder at all.

    An explicit ``run_dir`` may be any folder; one with files but no
    ``config.yaml`` is not a run's, and retiring its content would move the user's files.
    """
    path = run_dir / CONFIG
    if not path.exists():
        if run_dir.is_dir() and any(p.name != LOCK for p in run_dir.iterdir()):
            raise RunFolderError(f"{run_dir} is not empty and has no {CONFIG}, so it is no run folder: "
                                 "pass a new or empty folder")
        return
    try:
        recorded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise RunFolderError(f"{path} is not readable YAML ({err}): delete the run folder or repair the file") from None
    wanted = yaml.safe_load(yaml.safe_dump(cfg.to_dict(), sort_keys=True))
    if not isinstance(recorded, dict):
        recorded = {}
    absent = "<missing>"
    differing = [f"{key}: {recorded.get(key, absent)!r} there, {wanted.get(key, absent)!r} asked"
                 for key in sorted(set(recorded) | set(wanted)) if recorded.get(key, absent) != wanted.get(key, absent)]
    if differing:
        raise RunFolderError(f"run folder {run_dir} holds another configuration ({path}) than the one asked for; "
                             f"differing fields: {'; '.join(differing)}. Use another run folder, or delete this one")


def load_metrics(run_dir: Path) -> pd.DataFrame:
    path = run_dir / METRICS_FILE
    if not path.exists():
        return pd.DataFrame(columns=METRICS_HEADER)
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise RunFolderError(f"{path} is empty although the run finished: "
                             "delete the run folder to train it again") from None


# ---------------------------------------------------------------------- locking
def _is_main_process() -> bool:
    """Rank 0 of an ``accelerate``/``torchrun`` launch (or a lone process): the one that owns the folder."""
    return os.environ.get("RANK", "0") == "0"


@contextmanager
def folder_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``run_dir/run.lock``, or raise :class:`RunFolderBusy` at once.

    The lock dies with its process, so a crashed run never leaves the folder
    locked; the file keeps the holder's pid for the message. Other ranks of the
    same launch do not lock: they train in the folder together with rank 0.
    """
    if not _is_main_process():
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    with path.open("a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise RunFolderBusy(f"run folder {run_dir} is in use by process {holder} (lock file {path}): "
                                "wait until it finishes, or stop that process") from None
        fh.truncate(0)
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield


# ---------------------------------------------------------------------- loading and training
def load_or_train(
    cfg: RunConfig, notebook: str, name: str, run_dir: str | Path | None = None, device: str | None = None
) -> TrainedRun:
    """Return the finished run for ``cfg``, training (or resuming) only what is missing.

    The model is loaded on the preset's device (a GPU for ``gpu``, else the CPU) unless ``device`` says otherwise.
    Raises :class:`RunFolderError` for a folder of another configuration, :class:`RunFolderBusy` while another
    process trains in it.
    """
    device = device or ("cuda" if cfg.preset == "gpu" else "cpu")
    folder = Path(run_dir) if run_dir is not None else run_path(cfg, notebook, name)
    check_config(cfg, folder)
    trained = False
    if not is_current(cfg, folder):
        with folder_lock(folder):
            if not is_current(cfg, folder):  # another process may have finished it since the check above
                _train(cfg, folder)
                trained = True
    model, tokenizer = load_model(str(folder / FINAL), device=device)
    info = _read_json(folder / DONE)
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


def _retire_other_code(folder: Path, code: dict[str, str | None]) -> None:
    """Move what other (or unrecorded) code left in the folder to ``<folder>.stale-<its code hash>``."""
    content = [p for p in folder.iterdir() if p.name != LOCK]
    recorded = _read_json(folder / CODE)
    changes = code_changes(recorded, code)
    if not content or not changes:
        return
    tag = hashlib.sha1(json.dumps(recorded, sort_keys=True).encode()).hexdigest()[:8] if recorded else "unrecorded"
    stale = folder.resolve().with_name(f"{folder.resolve().name}.stale-{tag}")
    if stale.exists():  # retired before, e.g. after going back to old code: keep both
        stale = stale.with_name(f"{stale.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    stale.mkdir(parents=True)
    for path in content:
        path.rename(stale / path.name)
    print(f"not reusing {folder}: made by other code ({'; '.join(changes)}); moved it to {stale} and training again")


def _drop_damaged_state(folder: Path) -> None:
    """Delete an unreadable ``done.json`` and incomplete checkpoints, saying so: the run resumes from what is sound."""
    done = folder / DONE
    if done.exists() and _read_json(done) is None:
        print(f"{done} is unreadable: resuming the run as unfinished")
        done.unlink()
    for ckpt in checkpoints(folder):
        missing = missing_checkpoint_parts(ckpt)
        if missing:
            print(f"deleting incomplete checkpoint {ckpt} (no {', '.join(missing)}): it cannot resume exactly")
            shutil.rmtree(ckpt)


def _train(cfg: RunConfig, folder: Path) -> None:
    """Train (or resume) the run in ``folder``; the caller holds its lock."""
    folder.mkdir(parents=True, exist_ok=True)
    code = code_record(cfg)
    main = _is_main_process()
    if main:
        _retire_other_code(folder, code)
        _drop_damaged_state(folder)
    resume = last_checkpoint(folder)
    resume_step = checkpoint_step(resume) if resume else 0
    if main:
        _write_atomic(folder / CODE, json.dumps({**code, **git_state()}, indent=2))
        _write_atomic(folder / CONFIG, yaml.safe_dump(cfg.to_dict(), sort_keys=True))
        truncate_metrics(folder, resume_step)
        truncate_samples(folder, resume_step)
    if resume:
        print(f"resuming {folder.name} from {resume.name}")
    trainer = build_trainer(cfg, folder)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - start
    _save_final(trainer, folder)
    steps_done = trainer.state.global_step - resume_step
    info = {"steps": trainer.state.global_step, "train_seconds": seconds,
            "seconds_per_step": seconds / max(1, steps_done), "resumed_from": resume.name if resume else None}
    _write_atomic(folder / DONE, json.dumps(info, indent=2))
    if cfg.grpo.get("save_total_limit", 1) is not None:  # None keeps them all: for evaluation along training
        for ckpt in checkpoints(folder):
            shutil.rmtree(ckpt)
