"""Workers that do not outlive the server that started them.

BentoML's workers are children of the `bentoml serve` process, which restarts them when they die. Killed
itself (kill -9, an OOM kill), it cannot stop them: they would go on serving with nobody to restart them,
holding the port, so a new `anomaly serve` could not start. Each worker watches its parent instead and exits
when the parent is gone. The killed server also leaves its Unix sockets' folder behind in the temporary
directory; `anomaly serve` removes such folders whose sockets nobody listens on any more.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path

PARENT_POLL_S = 1.0


def exit_with_parent(poll_s: float = PARENT_POLL_S) -> None:
    """Send this process SIGTERM (a clean shutdown) once its parent process has died; checked every `poll_s`."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10 * poll_s)  # a worker that ignores SIGTERM (stuck in a request) is then killed
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _listened_on(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def remove_stale_socket_folders(root: Path | None = None) -> list[Path]:
    """Remove BentoML's `bentoml-uds-*` folders under `root` (the temporary directory) that hold no socket anybody
    listens on: what a server killed with SIGKILL left. Folders of running servers stay. Returns those removed."""
    removed = []
    for folder in Path(root or tempfile.gettempdir()).glob("bentoml-uds-*"):
        try:
            if folder.is_dir() and not any(_listened_on(path) for path in folder.glob("*.sock")):
                shutil.rmtree(folder)
                removed.append(folder)
        except OSError:  # another user's folder, or removed meanwhile
            continue
    return removed
