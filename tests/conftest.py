"""Shared fixtures: runs go to a temporary folder so tests never touch ``runs/``."""

from __future__ import annotations

import signal

import pytest

from rlnb.models import load_model


@pytest.fixture(autouse=True)
def isolated_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("RLNB_RUNS", str(tmp_path / "runs"))


@pytest.fixture(scope="session")
def base():
    """The shipped tiny base model and tokenizer."""
    return load_model("tiny", device="cpu")


@pytest.fixture
def ctrl_c_raises():
    """Ctrl-C raises KeyboardInterrupt during the test, as in a notebook, a script or a terminal, even when the
    test process was started with SIGINT ignored (as a shell starts background jobs, and CI may)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
