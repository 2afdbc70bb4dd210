"""Load a causal LM and its tokenizer from the shipped tiny base, a local folder or a hub id."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from rlnb.paths import base_model_dir

TINY = "tiny"
"""Name of the embedded default: the tiny-world base model shipped under ``data/``."""


def resolve_model_path(name_or_path: str) -> str:
    """Map ``"tiny"`` to the shipped base; check that a local-looking path exists."""
    if name_or_path == TINY:
        path = base_model_dir()
        if not (path / "config.json").exists():
            raise FileNotFoundError(
                f"the shipped tiny base model is missing at {path}: "
                "rebuild it with rlnb.world.pretrain_base(out_dir=...) or run notebook 00 with retrain=True"
            )
        return str(path)
    looks_local = name_or_path.startswith((".", "/", "~")) or Path(name_or_path).expanduser().exists()
    if looks_local and not (Path(name_or_path).expanduser() / "config.json").exists():
        raise FileNotFoundError(
            f"model path {name_or_path!r} does not exist or holds no config.json "
            "(expected a folder written by save_pretrained)"
        )
    return str(Path(name_or_path).expanduser()) if looks_local else name_or_path


class DamagedModelError(ValueError):
    """A local model folder whose files cannot be loaded; the message names the file and what to delete."""


def damaged_file(folder: Path) -> Path | None:
    """The first weight file in ``folder`` that is empty or whose safetensors header cannot be read, if any."""
    for path in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        if path.stat().st_size == 0:
            return path
        if path.suffix == ".safetensors":
            try:
                with safe_open(str(path), framework="pt"):
                    pass
            except (OSError, SafetensorError):
                return path
    return None


def damaged_model_message(folder: Path, err: BaseException) -> str:
    """Why a local model folder does not load, naming the damaged file when one is found, and the fix."""
    bad = damaged_file(folder)
    weights = [p.name for p in folder.glob("*.safetensors")] + [p.name for p in folder.glob("*.bin")]
    what = (f"{bad} is damaged (empty, or cut off while it was written)" if bad is not None
            else f"{folder} holds no loadable weights (files: {sorted(weights) or 'no weight files'})")
    return (f"cannot load the model in {folder}: {what}; the library said {type(err).__name__}: {err}. "
            f"Delete {folder} (or the run folder holding it) and train or save it again")


def folder_weights_hash(folder: str | Path) -> str | None:
    """Hash of a local model folder's weight files (``*.safetensors``, ``*.bin``); ``None`` when it is no folder."""
    path = Path(folder)
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


SAMPLED_VALUES = 4096
"""Values per tensor that :func:`model_fingerprint` reads from a large tensor (evenly spaced)."""


@torch.no_grad()
def model_fingerprint(model: PreTrainedModel | str) -> str:
    """A short identity of a model's weights, for keying cached evaluations.

    A loaded model is hashed over every tensor's name, shape, dtype and values
    (up to :data:`SAMPLED_VALUES` evenly spaced ones of a large tensor, so a
    1.5B model costs milliseconds; training or zeroing weights changes them);
    a folder by its weight files; a hub id by its name.
    """
    if isinstance(model, str):
        return folder_weights_hash(resolve_model_path(model)) or f"hub:{model}"
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().reshape(-1)
        if flat.numel() > SAMPLED_VALUES:
            flat = flat[torch.linspace(0, flat.numel() - 1, SAMPLED_VALUES, device=flat.device).long()]
        values = flat.float().cpu().numpy().tobytes()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}\0".encode() + values)
    return digest.hexdigest()[:16]


def default_dtype(device: str) -> torch.dtype:
    """bf16 on a GPU (the memory a 1.5B model needs), float32 on a CPU (bf16 matmuls are slow there)."""
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers at all: checked first so that an offline
    machine gets a clear error at once instead of a minute of retries."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def load_model(
    name_or_path: str = TINY,
    device: str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model and tokenizer, with a clear error when the weights cannot be found or fetched.

    A hub id is served from the local cache when it is there; otherwise it is
    fetched only if the hub is reachable.
    """
    path = resolve_model_path(name_or_path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if Path(path).exists():
        try:
            return _load(path, device, dtype, local_files_only=True)
        except (OSError, ValueError, SafetensorError) as err:
            raise DamagedModelError(damaged_model_message(Path(path), err)) from err
    try:
        return _load(path, device, dtype, local_files_only=True)
    except OSError:
        pass
    if not hub_reachable():
        raise OSError(
            f"cannot fetch model {name_or_path!r}: it is not in the local cache and this machine has no network. "
            "Download it on a connected machine (`hf download ID --local-dir DIR`) and pass DIR as the model"
        )
    try:
        return _load(path, device, dtype, local_files_only=False)
    except OSError as err:
        raise OSError(f"could not load model {name_or_path!r} from the hub: {err}") from None


def _load(
    path: str, device: str, dtype: torch.dtype | None, local_files_only: bool
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local_files_only)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype or default_dtype(device), local_files_only=local_files_only
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model.to(device).eval(), tokenizer
