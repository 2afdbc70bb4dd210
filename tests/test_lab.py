"""`make lab` starts a Jupyter server that serves the notebooks and a Python kernel, also as root."""

import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from rlnb.paths import PROJECT_ROOT

START_TIMEOUT_S = 25


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, token: str) -> dict | list:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def wait_until_up(server: subprocess.Popen, url: str, token: str, log: Path) -> None:
    """Poll the server's status until it answers; fail with its log if it exits or takes too long."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"`make lab` exited with {server.returncode}:\n{log.read_text()}")
        try:
            get_json(f"{url}/api/status", token)
            return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.3)
    raise AssertionError(f"`make lab` did not answer within {START_TIMEOUT_S} s:\n{log.read_text()}")


def test_make_lab_serves_the_notebooks_and_a_python_kernel(tmp_path):
    port, token = free_port(), secrets.token_hex(16)
    url = f"http://127.0.0.1:{port}"
    lab_args = f"--no-browser --ip=127.0.0.1 --port={port} --ServerApp.port_retries=0 --IdentityProvider.token={token}"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces")}
    log = tmp_path / "lab.log"
    with log.open("w") as out:  # -o: never reinstall the venv from inside a test
        server = subprocess.Popen(["make", "-s", "-o", ".venv/.installed", "lab", f"LAB_ARGS={lab_args}"],
                                  cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        wait_until_up(server, url, token, log)
        listing = get_json(f"{url}/api/contents", token)  # `make lab` serves notebooks/ as its root
        served = {item["name"] for item in listing["content"]}
        expected = {p.name for p in (PROJECT_ROOT / "notebooks").glob("0*.ipynb")}
        assert expected and expected <= served
        assert "python3" in get_json(f"{url}/api/kernelspecs", token)["kernelspecs"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # make and the jupyter it started
        server.wait(timeout=10)
