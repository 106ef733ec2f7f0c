"""The service under hostile or unlucky conditions, on real `anomaly serve` processes on 127.0.0.1: huge and 16-bit
uploads with the API worker's memory measured, bursts of large bodies, stalled clients, a model worker that dies and
a server parent killed with SIGKILL."""

from __future__ import annotations

import io
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

from anomaly.imageio import decode_image
from anomaly.runtime.bundle import OnnxDetector
from serving.process import free_port, running_server, serve_command
from tests.conftest import run_cli_process

pytestmark = pytest.mark.slow  # real servers, browsers or trained pipelines: `-m "not slow"` skips them

ROOMY = {"ANOMALY_MAX_BODY_MB": "24", "ANOMALY_READ_TIMEOUT_S": "2", "ANOMALY_HEADER_TIMEOUT_S": "3"}


def png_bytes(array: np.ndarray, compress_level: int = 6) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def serving_parent(port: int) -> psutil.Process:
    """The `bentoml serve` process listening on `port` (what `anomaly serve` becomes)."""
    return next(
        process
        for process in psutil.process_iter(["cmdline"])
        if process.info["cmdline"]
        and process.info["cmdline"][1:4] == ["-m", "bentoml", "serve"]
        and str(port) in process.info["cmdline"]
    )


def workers_of(server_pid: int) -> dict[str, psutil.Process]:
    """BentoML's worker processes under the server, by service: 'api' answers HTTP, 'model' runs ONNX Runtime."""
    found = {}
    for child in psutil.Process(server_pid).children(recursive=True):
        command = " ".join(child.cmdline())
        if "_bentoml_impl.worker.service" in command:
            found["model" if "--service-name anomaly-model" in command else "api"] = child
    assert set(found) == {"api", "model"}, found
    return found


class PeakMemory:
    """Samples a process's resident memory every 10 ms in a thread; `peak_mb` is the largest seen."""

    def __init__(self, process: psutil.Process) -> None:
        self.process, self.peak_mb, self.running = process, 0.0, True
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def current_mb(self) -> float:
        return self.process.memory_info().rss / 2**20

    def sample(self) -> None:
        while self.running:
            self.peak_mb = max(self.peak_mb, self.current_mb())
            time.sleep(0.01)

    def __enter__(self) -> PeakMemory:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.running = False
        self.thread.join()


@pytest.fixture(scope="module")
def roomy_server(published_model, tmp_path_factory):
    """A server with a 24 MB body limit (20 MB uploads pass), 2 s body read and 3 s header timeouts; yields
    (client, server pid)."""
    port = free_port()
    log = tmp_path_factory.mktemp("logs") / "serve.log"
    with running_server(serve_command(str(published_model.directory), port), ROOMY, port, log) as url:
        with httpx.Client(base_url=url, timeout=120) as client:
            yield client, serving_parent(port).pid


def large_sixteen_bit_png() -> bytes:
    """6300 x 6300 16-bit grayscale (40 M pixels, under the 40 M limit; 79 MB decoded) in a few hundred KB."""
    pattern = (np.add.outer(np.arange(6300), np.arange(6300)) % 4096).astype(np.uint16) * 16
    return png_bytes(pattern)


def test_a_large_sixteen_bit_upload_stays_within_bounded_memory_and_scores_right(roomy_server, published_model):
    client, server_pid = roomy_server
    data = large_sixteen_bit_png()
    detector = OnnxDetector(published_model.directory)
    expected = detector.results(detector.run(decode_image(data, detector.channels, detector.image_size)[None]))[0]
    api = workers_of(server_pid)["api"]
    with PeakMemory(api) as memory:
        single = client.post("/score", files={"image": ("deep.png", data)})
        batch = client.post("/score_batch", files=[("images", ("deep.png", data))] * 4)
    assert single.status_code == 200 and batch.status_code == 200, (single.text, batch.text)
    for result in [single.json(), *batch.json()["results"]]:
        assert result["reconstruction_score"] == pytest.approx(expected.reconstruction_score, rel=1e-4)
        assert result["latent_distance"] == pytest.approx(expected.latent_distance, rel=1e-4)
    assert memory.peak_mb < 400, f"API worker peaked at {memory.peak_mb:.0f} MB"


def test_memory_returns_after_a_burst_of_large_uploads(roomy_server):
    """16 concurrent 20 MB uploads, three times: the API worker ends within 150 MB of where it started."""
    client, server_pid = roomy_server
    api = workers_of(server_pid)["api"]
    noise = np.random.default_rng(0).integers(0, 256, (2600, 2600, 3), dtype=np.uint8)
    upload = png_bytes(noise, compress_level=0)
    assert len(upload) > 19 * 2**20
    client.get("/model")
    idle_mb = api.memory_info().rss / 2**20
    with ThreadPoolExecutor(16) as pool:
        for _ in range(3):
            statuses = list(
                pool.map(lambda _: client.post("/score", files={"image": ("noise.png", upload)}).status_code, range(16))
            )
            assert statuses == [200] * 16
    time.sleep(1)
    after_mb = api.memory_info().rss / 2**20
    assert after_mb - idle_mb < 150, f"idle {idle_mb:.0f} MB, after the bursts {after_mb:.0f} MB"


def test_a_stalled_body_gets_408_and_the_server_keeps_serving(roomy_server, published_model):
    client, _ = roomy_server
    host, port = client.base_url.host, client.base_url.port
    started = time.monotonic()
    with socket.create_connection((host, port), timeout=15) as stalled:
        stalled.sendall(
            b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b'Content-Length: 100000\r\n\r\n--b\r\nContent-Disposition: form-data; name="image"; '
            b'filename="a.png"\r\n\r\n'
        )
        answer = b""
        while chunk := stalled.recv(4096):  # the server closes the connection after its answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"nothing arrived for 2 s" in answer
    assert time.monotonic() - started < 10
    good = next((published_model.data / "test" / "good").glob("*.png")).read_bytes()
    assert client.post("/score", files={"image": ("good.png", good)}).status_code == 200


def test_connections_that_never_finish_their_headers_are_closed(roomy_server, published_model):
    client, _ = roomy_server
    connections = [
        socket.create_connection((client.base_url.host, client.base_url.port), timeout=15) for _ in range(20)
    ]
    started = time.monotonic()
    for connection in connections:
        connection.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and never the rest
    for connection in connections:
        with connection:
            assert connection.recv(4096) == b""  # closed by the server, without an answer
    assert time.monotonic() - started < 10
    good = next((published_model.data / "test" / "good").glob("*.png")).read_bytes()
    assert client.post("/score", files={"image": ("good.png", good)}).status_code == 200


def test_a_second_server_on_a_busy_port_is_a_one_line_error(roomy_server, published_model):
    client, _ = roomy_server
    result = run_cli_process("serve", "--model", str(published_model.directory), "--port", str(client.base_url.port))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{client.base_url.port}: Address already in use; stop what uses it or pass "
        "--port"
    ]


def test_readyz_says_503_at_once_while_the_model_worker_restarts_and_workers_die_with_the_server(
    published_model, tmp_path
):
    port = free_port()
    command = serve_command(str(published_model.directory), port)
    with running_server(command, {}, port, tmp_path / "serve.log") as url:
        server = serving_parent(port)
        workers = workers_of(server.pid)
        workers["model"].kill()
        answers = []
        for _ in range(6):
            started = time.monotonic()
            try:
                status = httpx.get(f"{url}/readyz", timeout=5).status_code
            except httpx.HTTPError as error:
                status = type(error).__name__
            answers.append((status, time.monotonic() - started))
            if status == 200:
                break
        assert answers[0][0] == 503 and all(seconds < 1 for _, seconds in answers), answers
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/readyz", timeout=5).status_code != 200:  # the restarted worker loads the model
            assert time.monotonic() < deadline, "the model worker did not come back"
            time.sleep(0.5)
        workers = workers_of(server.pid)
        os.kill(server.pid, signal.SIGKILL)
        _, alive = psutil.wait_procs(list(workers.values()), timeout=10)
        assert not alive, [worker.pid for worker in alive]
