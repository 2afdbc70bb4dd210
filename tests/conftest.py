"""Shared fixtures: runs go to a temporary folder so tests never touch ``runs/``."""

from __future__ import annotations

import pytest

from rlnb.models import load_model


@pytest.fixture(autouse=True)
def isolated_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("RLNB_RUNS", str(tmp_path / "runs"))


@pytest.fixture(scope="session")
def base():
    """The shipped tiny base model and tokenizer."""
    return load_model("tiny", device="cpu")
