"""Run folders: cached, resumable training runs that later notebooks reuse.

A run lives in ``runs/<notebook>/<name>-<hash>/`` where the hash is taken over
its :class:`~rlnb.train.RunConfig`, so changing a parameter makes a new run
instead of silently reusing a stale one. The folder holds ``config.yaml``,
``code.json`` (the code that trained it), ``metrics.csv`` (tidy),
``completions.jsonl``, TRL checkpoints while training, ``run.lock``, and
``final/`` (model and tokenizer, ``save_pretrained`` layout) plus ``done.json``
when finished. A finished run is loaded, never retrained; an interrupted one
resumes from its last complete checkpoint.

Runs know their code: ``code.json`` records a hash of the package's modules
(``rlnb/<name>.py``, taken when this module is imported: the code in memory), a hash of the starting model's weights (the shipped base for
``"tiny"``, or any local model folder), the torch, transformers, trl and peft
versions, and, as a pointer for people only, the git commit and whether the
tree was clean. A run whose recorded code differs from the current code (or
that has no record) is not reused: its content is moved aside to
``<run>.stale-<old code hash>/`` (kept, not deleted, so old results can still
be compared) and it is trained again, with one printed line saying so. Only the
package sources count, so editing a notebook or a test never retrains a run;
the git commit is not compared for the same reason. A run whose content
matches the current code again (an edit reverted) is restored from its
``.stale-`` copy instead of being trained again. If the files on disk change
after the process imported ``rlnb``, the code in memory no longer matches any
record: training or reusing a run then stops with :class:`CodeChangedError`
until the kernel is restarted.

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
back to the resumed step; a folder of another configuration is refused; weights
that do not load are named with the file to delete.

Printed lines name runs relative to the runs folder (:func:`rlnb.paths.display_path`).
"""

from __future__ import annotations

import fcntl
import hashlib
import math
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
from safetensors import SafetensorError
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlnb.models import DamagedModelError, damaged_model_message, folder_weights_hash, load_model, resolve_model_path
from rlnb.paths import PROJECT_ROOT, display_path, make_folder, runs_dir, write_atomic
from rlnb.train import RunConfig, build_trainer, grpo_args, trainer_class
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


class CodeChangedError(RuntimeError):
    """The package's files changed on disk after this process imported it: the code in memory is no file's."""


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
def package_modules(package: Path = PACKAGE_DIR) -> list[Path]:
    """The package's module files: ``<name>.py`` files importable as ``rlnb.<name>``, sorted.

    An editor's lock or backup (Emacs' ``.#plots.py`` symlink, ``#plots.py#``,
    ``plots.py~``) is no module: its name is not an identifier, or it is no file.
    """
    return sorted(p for p in package.glob("*.py") if p.stem.isidentifier() and p.is_file())


def source_hash(package: Path = PACKAGE_DIR) -> str:
    """Hash of the package's modules (names and contents, sorted): nothing else of the tree counts."""
    digest = hashlib.sha256()
    for path in package_modules(package):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


IMPORTED_SOURCES = source_hash()
"""The package's :func:`source_hash` when this process imported it: the code that trains here.

A kernel keeps the modules it imported even when their files are edited, so a
run is labelled with this hash, not with the files' hash at save time.
"""


def check_sources(expected: str | None = None) -> None:
    """Raise :class:`CodeChangedError` when the package on disk is not the code this process runs.

    ``expected``: the hash another process trains with (the parent of
    :func:`rlnb.seeds.train_seeds`' workers, which import the files afresh), so
    that the runs of one batch all come from one code.
    """
    on_disk = source_hash()
    if on_disk != IMPORTED_SOURCES:
        raise CodeChangedError(f"rlnb's files changed since this process imported them (hash {IMPORTED_SOURCES} "
                               f"at import, {on_disk} on disk now): the code in memory is not the code on disk, so "
                               "a run trained or reused now would be labelled with the wrong code. Restart the "
                               "kernel (or the process) and run again")
    if expected is not None and expected != IMPORTED_SOURCES:
        raise CodeChangedError(f"this process imported rlnb with hash {IMPORTED_SOURCES}, but the process that "
                               f"started it runs {expected}: the package changed on disk in between. Restart the "
                               "parent kernel (or process) and run again")


def weights_hash(model: str) -> str | None:
    """Hash of a local model folder's weight files (the shipped base for ``"tiny"``).

    ``None`` for a hub id: the configuration names it already.
    """
    return folder_weights_hash(resolve_model_path(model))


def code_record(cfg: RunConfig) -> dict[str, str | None]:
    """What a run's result depends on besides its configuration; compared before a run is reused."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"rlnb_sources": IMPORTED_SOURCES, "model_weights": weights_hash(cfg.model), **versions}


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
        try:
            if (path / "adapter_config.json").exists():
                if not any(p.stat().st_size > 0 for p in path.glob("adapter_model.*")):
                    raise DamagedModelError(f"the LoRA checkpoint {path} holds adapter_config.json but no "
                                            "adapter_model.safetensors: delete it")
                models[checkpoint_step(path)] = merge_for_eval(load_adapter(path, base))
            else:
                models[checkpoint_step(path)] = load_model(str(path), device="cpu")[0]
        except (OSError, ValueError, SafetensorError) as err:
            message = str(err) if isinstance(err, DamagedModelError) else damaged_model_message(path, err)
            raise RunFolderError(f"{message}. Deleting {path} loses only that step of {run_dir}") from err
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
    make_folder(run_dir, "run folder", "pass a folder that can hold the run")
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
    check_sources()
    folder = Path(run_dir) if run_dir is not None else run_path(cfg, notebook, name)
    check_config(cfg, folder)
    trained = False
    if not is_current(cfg, folder):
        check_resumable(cfg, folder)
        with folder_lock(folder):
            # another process may have finished it since the check above
            if not is_current(cfg, folder) and not _restore_stale(cfg, folder):
                _train(cfg, folder)
                trained = True
    try:
        model, tokenizer = load_model(str(folder / FINAL), device=device)
    except DamagedModelError as err:
        raise RunFolderError(f"run {folder} is finished but its final model does not load: {err}. Delete "
                             f"{folder / DONE} and {folder / FINAL} (or the whole run folder) to train it again") from err
    info = _read_json(folder / DONE)
    if not trained:
        print(f"reusing finished run {display_path(folder)} ({info['steps']} steps, "
              f"trained in {info['train_seconds']:.0f} s)")
    return TrainedRun(model, tokenizer, load_metrics(folder), folder, trained, info)


def check_resumable(cfg: RunConfig, folder: Path) -> None:
    """Refuse a ``save_steps`` that would checkpoint inside a generation batch.

    With ``steps_per_generation`` (or ``num_iterations``) above 1, TRL generates
    completions once and takes several optimizer steps on them; a checkpoint in
    the middle of that batch does not hold the batch, so a run resumed there
    generates anew and its steps differ from an uninterrupted run's. Checked
    on TRL's resolved arguments, before the folder is touched.
    """
    args = grpo_args(cfg, folder, trainer_class(cfg.method).config_class)
    per_batch = args.steps_per_generation * args.num_iterations  # micro-steps per generation batch
    accumulation = args.gradient_accumulation_steps
    if (cfg.save_steps * accumulation) % per_batch:
        every = per_batch // math.gcd(per_batch, accumulation)  # optimizer steps per generation batch, whole
        extra = "" if (args.num_iterations, accumulation) == (1, 1) else (
            f" (with num_iterations {args.num_iterations} and gradient_accumulation_steps {accumulation})")
        raise ValueError(f"save_steps {cfg.save_steps} is not a multiple of steps_per_generation "
                         f"{args.steps_per_generation}{extra}: a checkpoint inside a generation batch cannot "
                         "resume exactly (TRL would generate again at the resumed step, so every later step "
                         f"would differ from an uninterrupted run). Choose save_steps a multiple of {every}")


def _restore_stale(cfg: RunConfig, folder: Path) -> bool:
    """Bring back a finished ``<folder>.stale-*`` copy made by the current code (an edit reverted); True if one was.

    Only a lone process restores: the ranks of a launch would otherwise train
    while rank 0 moved the folder under them.
    """
    if os.environ.get("WORLD_SIZE", "1") != "1":
        return False
    for stale in sorted(folder.parent.glob(f"{folder.name}.stale-*"), reverse=True):
        if not (stale.is_dir() and is_current(cfg, stale)):
            continue
        try:
            check_config(cfg, stale)
        except RunFolderError:
            continue
        if folder.exists():
            _retire_other_code(folder, code_record(cfg))
            if any(p.name != LOCK for p in folder.iterdir()):  # an unfinished run of this code: resume it instead
                return False
        for path in stale.iterdir():
            if path.name != LOCK:
                shutil.move(str(path), str(folder / path.name))
        shutil.rmtree(stale)
        print(f"restoring {display_path(folder)} from {display_path(stale)}: it was made by the current code")
        return True
    return False


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
    for path in content:  # shutil.move copies where a rename cannot (a run folder that is a mount point)
        shutil.move(str(path), str(stale / path.name))
    print(f"not reusing {display_path(folder)}: made by other code ({'; '.join(changes)}); "
          f"moved it to {display_path(stale)} and training again")


def _drop_damaged_state(folder: Path) -> None:
    """Delete an unreadable ``done.json`` and incomplete checkpoints, saying so: the run resumes from what is sound."""
    done = folder / DONE
    if done.exists() and _read_json(done) is None:
        print(f"{display_path(done)} is unreadable: resuming the run as unfinished")
        done.unlink()
    for ckpt in checkpoints(folder):
        missing = missing_checkpoint_parts(ckpt)
        if missing:
            print(f"deleting incomplete checkpoint {display_path(ckpt)} (no {', '.join(missing)}): "
                  "it cannot resume exactly")
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
        write_atomic(folder / CODE, json.dumps({**code, **git_state()}, indent=2))
        write_atomic(folder / CONFIG, yaml.safe_dump(cfg.to_dict(), sort_keys=True))
        truncate_metrics(folder, resume_step)
        truncate_samples(folder, resume_step)
    if resume:
        print(f"resuming {display_path(folder)} from {resume.name}")
    trainer = build_trainer(cfg, folder)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - start
    _save_final(trainer, folder)
    steps_done = trainer.state.global_step - resume_step
    info = {"steps": trainer.state.global_step, "train_seconds": seconds,
            "seconds_per_step": seconds / max(1, steps_done), "resumed_from": resume.name if resume else None}
    write_atomic(folder / DONE, json.dumps(info, indent=2))
    if cfg.grpo.get("save_total_limit", 1) is not None:  # None keeps them all: for evaluation along training
        for ckpt in checkpoints(folder):
            shutil.rmtree(ckpt)
