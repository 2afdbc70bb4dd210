"""Where the project's data and runs live, independent of the working directory.

Papermill may execute a notebook from any folder, so notebooks never build
paths from ``os.getcwd()``: they ask this module.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _folder_from_env(variable: str, default: Path) -> Path:
    """``$variable`` as a path, or ``default`` when it is unset or empty: ``Path("")`` is
    the current folder, so ``RLNB_RUNS=`` would otherwise scatter runs wherever a
    notebook happens to execute."""
    return Path(os.environ.get(variable) or default)


def data_dir() -> Path:
    """The shipped data folder (``$RLNB_DATA`` overrides it)."""
    return _folder_from_env("RLNB_DATA", PROJECT_ROOT / "data")


def runs_dir() -> Path:
    """Root of all run folders (``$RLNB_RUNS`` overrides it); created on demand."""
    path = _folder_from_env("RLNB_RUNS", PROJECT_ROOT / "runs")
    path.mkdir(parents=True, exist_ok=True)
    return path


def base_model_dir() -> Path:
    """The shipped tiny base model (``save_pretrained`` layout)."""
    return data_dir() / "tiny-base"
