"""`make run`: the series runner finds the notebooks in order and passes each its parameters."""

import pytest

from rlnb.series import main, notebooks, parameters_for


def test_notebooks_are_found_in_reading_order():
    names = [nb.name for nb in notebooks()]
    assert names == sorted(names) and names[0] == "00_reasoning_world.ipynb"


def test_gpu_parameters_come_from_the_parameter_file():
    nb = next(nb for nb in notebooks() if nb.stem == "01_zero_rl")
    assert parameters_for(nb, "ci") == {"preset": "ci"}
    gpu = parameters_for(nb, "gpu")
    assert gpu["preset"] == "gpu" and gpu["model"] and gpu["eval_dataset"]


def test_an_unknown_preset_is_refused():
    with pytest.raises(SystemExit):
        main(["--preset", "fast"])
