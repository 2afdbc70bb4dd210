"""Load a causal LM and its tokenizer from the shipped tiny base, a local folder or a hub id."""

from __future__ import annotations

from pathlib import Path

import torch
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
    is_local = Path(path).exists()
    try:
        return _load(path, device, dtype, local_files_only=True)
    except OSError:
        if is_local:
            raise
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
