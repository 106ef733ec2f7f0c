"""Start `anomaly serve` as a child process and wait until /readyz says the model is loaded.

Used by the tests, the load benchmark and the Docker replay, which all need a real server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from anomaly.errors import AnomalyError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(base_url: str, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AnomalyError(f"server exited with code {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{base_url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise AnomalyError(f"server at {base_url} was not ready after {timeout_s:.0f} s")


@contextmanager
def running_server(
    command: list[str],
    env: dict[str, str],
    port: int,
    log_path: Path,
    timeout_s: float = 120.0,
    inherit_environment: bool = True,
) -> Iterator[str]:
    """Run `command` (which must listen on 127.0.0.1:`port`) with this process's environment updated by `env`, or
    with `env` alone; yield its base URL; stop it after."""
    base_url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command,
            env={**os.environ, **env} if inherit_environment else env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_ready(base_url, process, timeout_s)
            yield base_url
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def serve_command(model: str, port: int) -> list[str]:
    return [sys.executable, "-m", "anomaly.cli", "serve", "--model", model, "--host", "127.0.0.1", "--port", str(port)]
