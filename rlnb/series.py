"""Execute the whole notebook series headless with papermill (``make run``).

Executed copies go to ``runs/notebooks/<preset>/``; the notebooks under
``notebooks/`` are never modified. For ``--preset gpu`` each notebook also gets
its parameter file ``notebooks/params/gpu/<notebook>.yaml`` when one exists.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

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
    import papermill as pm  # heavy import, only when running

    out_dir = runs_dir() / "notebooks" / ns.preset
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = []
    for nb in selected:
        out = out_dir / nb.name
        print(f"==> {nb.name} (preset {ns.preset}) -> {out}", flush=True)
        start = time.perf_counter()
        try:
            pm.execute_notebook(str(nb), str(out), parameters=parameters_for(nb, ns.preset),
                                kernel_name="python3", cwd=str(NOTEBOOKS_DIR), progress_bar=True)
        except pm.PapermillExecutionError as err:
            failed.append(nb.name)
            print(f"    FAILED: {err.ename}: {err.evalue} (executed notebook kept at {out})", flush=True)
            continue
        print(f"    done in {time.perf_counter() - start:.0f} s", flush=True)
    print(f"\nexecuted notebooks are in {out_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
