"""Every notebook's `parameters` cell must be fully readable by papermill.

papermill parses that cell line by line with a regex (not with Python), and it
silently drops a line it cannot read (e.g. one with a second `=` in its
comment); `papermill -p NAME ...` then warns "Passed unknown parameter" and the
notebook runs with its default. Comparing papermill's view with Python's own
parse catches such a line before a run does.
"""

import ast
import json
from pathlib import Path

import papermill
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("0*.ipynb"))


def parameters_source(path: Path) -> str:
    """The source of the one cell tagged `parameters` in the notebook at path."""
    cells = [cell for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]
             if "parameters" in cell.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{path.name}: {len(cells)} cells tagged parameters, expected 1"
    return "".join(cells[0]["source"])


def assigned_literals(source: str) -> dict[str, object]:
    """Name -> value of each `name = literal` statement, as Python reads the cell."""
    values = {}
    for statement in ast.parse(source).body:
        assert isinstance(statement, ast.Assign) and len(statement.targets) == 1, (
            f"not a single assignment: {ast.unparse(statement)}")
        target = statement.targets[0]
        assert isinstance(target, ast.Name), f"not a plain name: {ast.unparse(target)}"
        values[target.id] = ast.literal_eval(statement.value)
    return values


def test_notebooks_are_found():
    assert len(NOTEBOOKS) >= 7


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_papermill_reads_every_parameter(path: Path):
    expected = assigned_literals(parameters_source(path))
    inspected = papermill.inspect_notebook(str(path))
    assert sorted(inspected) == sorted(expected)
    for name, value in expected.items():
        assert ast.literal_eval(inspected[name]["default"]) == value, name


def test_a_second_equals_sign_in_a_comment_is_caught(tmp_path: Path):
    """The check above fails for the defect that hid `preset` in notebook 04."""
    source = 'preset = "ci"  # "ci": n = 64\nseed = 0\n'
    cell = {"cell_type": "code", "execution_count": None, "id": "p", "outputs": [],
            "metadata": {"tags": ["parameters"]}, "source": source.splitlines(keepends=True)}
    notebook = {"cells": [cell], "metadata": {"kernelspec": {"name": "python3", "language": "python",
                                                             "display_name": "Python 3"}},
                "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "bad.ipynb"
    path.write_text(json.dumps(notebook), encoding="utf-8")
    assert sorted(assigned_literals(parameters_source(path))) == ["preset", "seed"]
    assert sorted(papermill.inspect_notebook(str(path))) == ["seed"]
