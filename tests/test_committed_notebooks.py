"""The committed notebooks read cleanly: no progress bars, warnings, errors, machine paths or stray control characters.

The notebooks are committed executed, so their outputs are what a reader sees
on GitHub. Each check is a function from a notebook (its JSON) to a list of
problems, one per offending output or cell; the second half of this file plants each
defect in a small synthetic notebook to show that its check (and only its
check) catches it.
"""

import json
import re
from pathlib import Path
from typing import Callable

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("0*.ipynb"))
PROGRESS_MARKS = ("\r", "%|", "it/s]", "s/it]")
"""What tqdm writes: carriage returns redrawing a bar, the bar's edge and its rate."""
WIDGET = "application/vnd.jupyter.widget-view+json"
WARNING_MARKS = ("Warning", "warn(")
ABSOLUTE_PATH = re.compile(r"(?:^|[\s'\"(=])(/(?:[\w.+-]+/)+[\w.+-]*)", re.M)
"""A POSIX path from the root with at least two parts (``/home/me/rlnb/runs``): it names the machine that ran
the notebook, not the reader's; ``https://a/b`` is not one (no blank or quote before its slashes)."""
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")
"""Control characters other than a newline: a TAB from an unescaped ``\\t``, a bell from ``\\a`` in ``\\alpha``."""

Problems = list[str]


def _text(value: str | list[str]) -> str:
    """Notebook JSON stores text as a string or a list of lines."""
    return value if isinstance(value, str) else "".join(value)


def _outputs(nb: dict) -> list[tuple[int, dict]]:
    """(cell index, output) for every output of every code cell."""
    return [(i, out) for i, cell in enumerate(nb["cells"]) for out in cell.get("outputs", [])]


def _shown_text(output: dict) -> str:
    """The text a reader sees: a stream's text or a result's ``text/plain``."""
    if output["output_type"] == "stream":
        return _text(output["text"])
    return _text(output.get("data", {}).get("text/plain", ""))


def progress_bars(nb: dict) -> Problems:
    found = []
    for i, out in _outputs(nb):
        marks = [m for m in PROGRESS_MARKS if m in _shown_text(out)]
        if WIDGET in out.get("data", {}):
            marks.append(WIDGET)
        if marks:
            found.append(f"cell {i}: progress output ({', '.join(map(repr, marks))})")
    return found


def stderr_warnings(nb: dict) -> Problems:
    return [f"cell {i}: warning on stderr: {_text(out['text']).strip()[:120]!r}" for i, out in _outputs(nb)
            if out["output_type"] == "stream" and out.get("name") == "stderr"
            and any(m in _text(out["text"]) for m in WARNING_MARKS)]


def error_outputs(nb: dict) -> Problems:
    return [f"cell {i}: error output {out.get('ename')}: {out.get('evalue')}" for i, out in _outputs(nb)
            if out["output_type"] == "error"]


def absolute_paths(nb: dict) -> Problems:
    found = []
    for i, out in _outputs(nb):
        paths = ABSOLUTE_PATH.findall(_shown_text(out))
        if paths:
            found.append(f"cell {i}: absolute path in output ({paths[0]!r})")
    return found


def markdown_control_characters(nb: dict) -> Problems:
    found = []
    for i, cell in enumerate(nb["cells"]):
        chars = sorted(set(CONTROL.findall(_text(cell["source"])))) if cell["cell_type"] == "markdown" else []
        if chars:
            found.append(f"cell {i}: markdown has control characters {chars}")
    return found


def kernelspec(nb: dict) -> Problems:
    name = nb.get("metadata", {}).get("kernelspec", {}).get("name")
    return [] if name == "python3" else [f"kernelspec name is {name!r}, not 'python3'"]


def execution_errors(nb: dict) -> Problems:
    """Cells papermill marked as failed, and a notebook-level exception it recorded."""
    def papermill(part: dict) -> dict:
        return part.get("metadata", {}).get("papermill", {})

    found = [f"cell {i}: execution failed ({papermill(cell)})" for i, cell in enumerate(nb["cells"])
             if papermill(cell).get("exception") or papermill(cell).get("status") == "failed"]
    if papermill(nb).get("exception"):
        found.append(f"notebook: execution exception {papermill(nb)['exception']}")
    return found


CHECKS: dict[str, Callable[[dict], Problems]] = {
    check.__name__: check for check in (progress_bars, stderr_warnings, error_outputs, absolute_paths,
                                         markdown_control_characters, kernelspec, execution_errors)
}


def test_notebooks_are_found():
    assert len(NOTEBOOKS) >= 6


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_clean(path: Path, check: str):
    nb = json.loads(path.read_text(encoding="utf-8"))
    problems = CHECKS[check](nb)
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


# ---------------------------------------------------------------------- each check catches its defect
def _clean_notebook() -> dict:
    markdown = {"cell_type": "markdown", "id": "m", "metadata": {}, "source": ["# Entropy\n", "$\\alpha$ and a\n\nb"]}
    code = {"cell_type": "code", "execution_count": 1, "id": "c",
            "metadata": {"papermill": {"exception": False, "status": "completed"}}, "source": ["print(1)"],
            "outputs": [{"output_type": "stream", "name": "stdout",
                         "text": ["reusing finished run 01_zero_rl/grpo-1a2b3c4d (40 steps), 3/4 digits,"
                                  " as in https://github.com/a/b\n"]},
                        {"output_type": "stream", "name": "stderr", "text": ["loading the base\n"]},
                        {"output_type": "execute_result", "execution_count": 1, "metadata": {},
                         "data": {"text/plain": ["50% of 2"], "text/html": ["<b>50%</b>"]}}]}
    return {"cells": [markdown, code], "nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                         "papermill": {"exception": None}}}


def _stream(name: str, text: str) -> dict:
    return {"output_type": "stream", "name": name, "text": [text]}


def _add_output(output: dict) -> Callable[[dict], None]:
    return lambda nb: nb["cells"][1]["outputs"].append(output)


def _set_markdown(source: str) -> Callable[[dict], None]:
    return lambda nb: nb["cells"][0].update(source=[source])


def _fail_cell(nb: dict) -> None:
    nb["cells"][1]["metadata"]["papermill"] = {"exception": True, "status": "failed"}


DEFECTS: dict[str, tuple[str, Callable[[dict], None]]] = {
    "tqdm bar on stderr": ("progress_bars", _add_output(_stream("stderr", "\rLoading: 100%|##| 50/50 [00:00<00:00]"))),
    "tqdm rate on stdout": ("progress_bars", _add_output(_stream("stdout", "2/2 [00:01<00:00, 1.80it/s]"))),
    "tqdm bar in a result": ("progress_bars", _add_output(
        {"output_type": "execute_result", "execution_count": 1, "metadata": {},
         "data": {"text/plain": ["Training:  50%|#####     | 1/2"]}})),
    "tqdm widget": ("progress_bars", _add_output(
        {"output_type": "display_data", "metadata": {},
         "data": {WIDGET: {"model_id": "x", "version_major": 2, "version_minor": 0}, "text/plain": ["HBox()"]}})),
    "a Warning on stderr": ("stderr_warnings", _add_output(_stream("stderr", "x.py:3: UserWarning: deprecated\n"))),
    "a warn( call on stderr": ("stderr_warnings", _add_output(_stream("stderr", "  warnings.warn(\n"))),
    "an absolute path": ("absolute_paths", _add_output(
        _stream("stdout", "reusing finished run /home/me/rlnb/runs/01_zero_rl/grpo-1a2b3c4d (40 steps)\n"))),
    "an absolute path in a result": ("absolute_paths", _add_output(
        {"output_type": "execute_result", "execution_count": 1, "metadata": {},
         "data": {"text/plain": ["PosixPath('/tmp/pytest-1/runs/x')"]}})),
    "an error output": ("error_outputs", _add_output(
        {"output_type": "error", "ename": "ValueError", "evalue": "bad", "traceback": ["ValueError: bad"]})),
    "a TAB from \\t": ("markdown_control_characters", _set_markdown("cost $O(n\to)$")),
    "a bell from \\a": ("markdown_control_characters", _set_markdown("entropy $\alpha$")),
    "another kernel": ("kernelspec", lambda nb: nb["metadata"]["kernelspec"].update(name="rlnb-venv")),
    "a failed cell": ("execution_errors", _fail_cell),
    "a notebook exception": ("execution_errors", lambda nb: nb["metadata"]["papermill"].update(exception=True)),
}


def test_a_clean_notebook_passes_every_check(tmp_path):
    path = tmp_path / "clean.ipynb"
    path.write_text(json.dumps(_clean_notebook()), encoding="utf-8")
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert {name: check(nb) for name, check in CHECKS.items()} == {name: [] for name in CHECKS}


@pytest.mark.parametrize("defect", DEFECTS)
def test_each_check_catches_its_planted_defect_and_only_it(tmp_path, defect):
    check, plant = DEFECTS[defect]
    nb = _clean_notebook()
    plant(nb)
    path = tmp_path / "planted.ipynb"
    path.write_text(json.dumps(nb), encoding="utf-8")
    nb = json.loads(path.read_text(encoding="utf-8"))
    caught = {name for name, run in CHECKS.items() if run(nb)}
    assert caught == {check}


# ---------------------------------------------------------------------- what `make run` writes
def test_the_series_runner_writes_notebooks_as_clean_as_the_committed_ones(tmp_path, monkeypatch):
    """A notebook that loads the base, trains a run and reuses it, executed the way ``make run`` executes the
    series, passes every check above: transformers' weight-loading bars and TRL's bar stay out of the
    outputs, and messages name runs relative to the runs folder."""
    from rlnb.series import execute

    monkeypatch.setenv("RLNB_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("RLNB_PROGRESS", raising=False)
    cells = [
        ("parameters", "preset = 'ci'"),
        (None, "from rlnb.models import load_model\nmodel, tokenizer = load_model('tiny')"),
        (None, "from rlnb.runs import load_or_train\nfrom rlnb.train import RunConfig\n"
               "cfg = RunConfig(max_steps=1, prompts_per_step=2, num_generations=4, max_completion_length=16,\n"
               "                learning_rate=1e-3, save_steps=1, levels=[3])\n"
               "first = load_or_train(cfg, 'series-test', 'tiny')"),
        (None, "again = load_or_train(cfg, 'series-test', 'tiny')\nprint(again.trained)"),
    ]
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "outputs": [], "source": src,
                     "metadata": {"tags": [tag]} if tag else {}} for i, (tag, src) in enumerate(cells)],
          "nbformat": 4, "nbformat_minor": 5,
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}}
    source, out = tmp_path / "small.ipynb", tmp_path / "small-executed.ipynb"
    source.write_text(json.dumps(nb), encoding="utf-8")
    execute(source, out, {"preset": "ci"}, progress_bar=False)
    executed = json.loads(out.read_text(encoding="utf-8"))
    shown = "".join(_shown_text(o) for _, o in _outputs(executed))
    assert "reusing finished run series-test/tiny-" in shown, shown
    assert {name: check(executed) for name, check in CHECKS.items()} == {name: [] for name in CHECKS}
