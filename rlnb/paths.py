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
    """Root of all run folders (``$RLNB_RUNS`` overrides it); created on demand.

    Raises:
        NotADirectoryError: when the path is a file (or lies under one).
        PermissionError: when it cannot be created or written: every run would fail later, with less said.
    """
    path = _folder_from_env("RLNB_RUNS", PROJECT_ROOT / "runs")
    where = "$RLNB_RUNS" if os.environ.get("RLNB_RUNS") else "the runs folder"
    return make_folder(path, where, "point RLNB_RUNS at a writable folder")


def make_folder(path: Path, what: str, fix: str) -> Path:
    """Create ``path`` (with its parents) and check that files can be written in it.

    A folder that is a file, lies under one or cannot be written raises ``NotADirectoryError`` or
    ``PermissionError`` naming ``what`` it is and the ``fix``, before any work that would fail later
    with less said (a traceback from ``mkdir``, or a run that trains and cannot save).
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise NotADirectoryError(f"{what} {path} is a file (or lies under one), not a folder: {fix}, "
                                 "or move that file away") from None
    except PermissionError:
        raise PermissionError(f"{what} {path} cannot be created here (permission denied): {fix}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} {path} is not writable: {fix} or fix its permissions")
    return path


def write_atomic(path: Path, text: str) -> None:
    """Write a file whole or not at all (a temporary file, then a rename): a crash never leaves it torn."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # per process: every rank of a launch may write
    tmp.write_text(text)
    os.replace(tmp, path)


def display_path(path: str | Path) -> str:
    """``path`` as messages show it: relative to the runs folder when inside it
    (``02_luffy_off_policy/luffy-7d24c7de``), else to the project root, else its name.

    Absolute paths in printed lines differ per machine and user, so committed
    notebook outputs would change with whoever ran them; a relative name says the same.
    """
    path = Path(path)
    resolved = path.resolve()
    root = _folder_from_env("RLNB_RUNS", PROJECT_ROOT / "runs").resolve()  # no mkdir: only a name is asked
    for base in (root, PROJECT_ROOT):
        if resolved.is_relative_to(base) and resolved != base:
            return str(resolved.relative_to(base))
    return path.name or str(path)


def base_model_dir() -> Path:
    """The shipped tiny base model (``save_pretrained`` layout)."""
    return data_dir() / "tiny-base"
