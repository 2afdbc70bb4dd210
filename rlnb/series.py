"""Execute the whole notebook series headless with papermill (``make run``).

Executed copies go to ``runs/notebooks/<preset>/``; the notebooks under
``notebooks/`` are never modified. For ``--preset gpu`` each notebook also gets
its parameter file ``notebooks/params/gpu/<notebook>.yaml`` when one exists.

Notebooks are executed exactly as the committed ones were: with
``RLNB_PROGRESS=0`` in the kernel, so cell outputs hold results and no
progress bars, while the runner's own progress (which notebook, papermill's
cell bar, how long) goes to the terminal. The kernel talks to papermill over
IPC sockets, not TCP: nothing leaves the machine, and ipykernel has no reason
to warn about unencrypted traffic for every notebook.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import yaml

from rlnb.paths import PROJECT_ROOT, runs_dir
from rlnb.presets import PRESETS, check_preset

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"


def notebooks() -> list[Path]:
    """The series in reading order (numbered file names)."""
    return sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def select(available: list[Path], prefixes: list[str] | None) -> list[Path]:
    """The notebooks whose names start with one of ``prefixes`` (all of them without prefixes)."""
    return [nb for nb in available if not prefixes or any(nb.name.startswith(p) for p in prefixes)]


def parameters_for(notebook: Path, preset: str) -> dict:
    params = {"preset": preset}
    extra = NOTEBOOKS_DIR / "params" / preset / f"{notebook.stem}.yaml"
    if extra.exists():
        params.update(yaml.safe_load(extra.read_text()) or {})
    return params


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables for the kernels started inside the block (they inherit this process's)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def execute(notebook: Path, out: Path, parameters: dict, *, progress_bar: bool = True) -> None:
    """Execute one notebook with papermill as the committed notebooks are executed.

    Raises papermill's ``PapermillExecutionError`` when a cell fails; the
    executed notebook, with the error, is still written to ``out``.
    """
    import papermill as pm  # heavy import, only when running
    from traitlets.config import Config

    config = Config()
    config.KernelManager.transport = "ipc"
    with _environment(RLNB_PROGRESS="0"):
        pm.execute_notebook(str(notebook), str(out), parameters=parameters, kernel_name="python3",
                            cwd=str(NOTEBOOKS_DIR), progress_bar=progress_bar, config=config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="ci", choices=PRESETS)
    parser.add_argument("--only", nargs="*", help="notebook name prefixes to run (default: all)")
    ns = parser.parse_args(argv)
    check_preset(ns.preset)
    selected = select(notebooks(), ns.only)
    if not selected:
        parser.error(f"--only {' '.join(ns.only)} matches no notebook; the notebooks are: "
                     + ", ".join(nb.stem for nb in notebooks()))
    from papermill import PapermillExecutionError

    out_dir = runs_dir() / "notebooks" / ns.preset
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = []
    for nb in selected:
        out = out_dir / nb.name
        print(f"==> {nb.name} (preset {ns.preset}) -> {out}", flush=True)
        start = time.perf_counter()
        try:
            execute(nb, out, parameters_for(nb, ns.preset))
        except PapermillExecutionError as err:
            failed.append(nb.name)
            print(f"    FAILED: {err.ename}: {err.evalue} (executed notebook kept at {out})", flush=True)
            continue
        print(f"    done in {time.perf_counter() - start:.0f} s", flush=True)
    print(f"\nexecuted notebooks are in {out_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
