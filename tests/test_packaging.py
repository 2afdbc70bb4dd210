"""The set-up contracts: pinned dependencies agree, presets and paths fail clearly."""

import re
import tomllib

import pytest
import yaml

from rlnb.models import load_model, resolve_model_path
from rlnb.paths import PROJECT_ROOT
from rlnb.presets import check_preset, device_settings

PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)$")


def _pins(specs):
    out = {}
    for spec in specs:
        m = PIN.match(spec.strip())
        assert m, f"dependency {spec!r} is not pinned with =="
        out[m.group(1).lower()] = m.group(2)
    return out


def test_environment_yml_mirrors_pyproject_pins():
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    pyproject = _pins(project["dependencies"])
    env = yaml.safe_load((PROJECT_ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_python = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert conda_python == ["python=3.11"]
    assert _pins([s for s in pip_section if not s.startswith("-e")]) == pyproject
    assert "-e ." in pip_section


def test_unknown_preset_is_named():
    with pytest.raises(ValueError, match="unknown preset 'fast'.*ci, full, gpu"):
        check_preset("fast")
    assert device_settings("ci")["use_cpu"] is True and device_settings("ci")["bf16"] is False


def test_gpu_preset_without_gpu_says_what_to_use():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the error path does not apply")
    with pytest.raises(RuntimeError, match="needs a CUDA GPU.*'ci'"):
        check_preset("gpu")


def test_missing_model_path_is_named(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model.*does not exist"):
        resolve_model_path(str(missing))
    with pytest.raises(FileNotFoundError):
        load_model(str(missing))


def test_unfetchable_hub_id_explains_the_offline_fix(monkeypatch):
    import rlnb.models

    monkeypatch.setattr(rlnb.models, "hub_reachable", lambda timeout_s=3.0: False)
    with pytest.raises(OSError, match="not-a-real-model-xyz.*no network.*local-dir DIR"):
        load_model("some-org/not-a-real-model-xyz")


def test_notebooks_use_python3_kernel_and_a_parameters_cell():
    import nbformat

    for path in sorted((PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.reads(path.read_text(), as_version=4)
        assert nb.metadata["kernelspec"]["name"] == "python3", path.name
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: exactly one cell must be tagged 'parameters'"
        assert "preset" in tagged[0].source and "seed" in tagged[0].source


def test_shipped_cli_configs_parse_into_run_configs():
    from rlnb.train import RunConfig

    configs = sorted((PROJECT_ROOT / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        cfg = RunConfig.from_yaml(path)
        assert cfg.preset == "gpu" and cfg.task == "math", path.name


def test_cli_rejects_unknown_fields(tmp_path):
    from rlnb.train import RunConfig

    bad = tmp_path / "bad.yaml"
    bad.write_text("max_step: 10\n")
    with pytest.raises(ValueError, match="unknown RunConfig fields \\['max_step'\\]"):
        RunConfig.from_yaml(bad)


def test_gpu_parameter_files_name_only_parameters_their_notebook_has():
    import nbformat

    for params in sorted((PROJECT_ROOT / "notebooks" / "params" / "gpu").glob("*.yaml")):
        nb = nbformat.reads((PROJECT_ROOT / "notebooks" / f"{params.stem}.ipynb").read_text(), as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        names = {line.split("=")[0].strip() for line in cell.source.splitlines() if "=" in line}
        unknown = set(yaml.safe_load(params.read_text())) - names
        assert not unknown, f"{params.name} sets parameters {sorted(unknown)} that {params.stem} does not have"
