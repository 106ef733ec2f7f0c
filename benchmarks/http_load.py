"""A bounded HTTP load generator for the scoring service: N concurrent clients on 127.0.0.1.

Each client is a thread with its own keep-alive connection (http.client, bodies encoded once),
posting images to /score in a loop until the request budget or the time budget runs out: on a
small machine the client shares the CPUs with the server, so it must cost as little as possible.
Latencies are per request, as a client sees them.
"""

from __future__ import annotations

import http.client
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import numpy as np


@dataclass
class LoadResult:
    clients: int
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float] = field(repr=False)
    error_samples: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        latencies = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        return {
            "clients": self.clients,
            "requests": self.requests,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "throughput_rps": round(self.requests / self.seconds, 2),
            "latency_p50_ms": round(float(np.percentile(latencies, 50)), 2),
            "latency_p99_ms": round(float(np.percentile(latencies, 99)), 2),
            "error_samples": self.error_samples[:5],
        }


BOUNDARY = "anomaly-load-boundary"


def multipart_body(name: str, data: bytes) -> bytes:
    head = (
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="image"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    return head.encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def run_load(
    base_url: str,
    images: list[tuple[str, bytes]],
    clients: int,
    max_requests: int,
    max_seconds: float,
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """Post `images` round-robin to /score from `clients` threads; stop at either budget."""
    if urlparse(base_url).hostname not in ("127.0.0.1", "localhost"):
        raise ValueError(f"load tests target loopback only, not {base_url}")
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    issued = 0
    deadline = time.monotonic() + max_seconds

    def next_index() -> int | None:
        nonlocal issued
        with lock:
            if issued >= max_requests or time.monotonic() >= deadline:
                return None
            issued += 1
            return issued

    bodies = [multipart_body(name, data) for name, data in images]
    url = urlparse(base_url)
    request_headers = {**(headers or {}), "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}

    def client() -> None:
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        try:
            while (index := next_index()) is not None:
                started = time.perf_counter()
                try:
                    connection.request("POST", "/score", body=bodies[index % len(bodies)], headers=request_headers)
                    response = connection.getresponse()
                    text = response.read()
                    ok, detail = response.status == 200, f"{response.status}: {text[:200]!r}"
                except (OSError, http.client.HTTPException) as error:
                    ok, detail = False, f"{type(error).__name__}: {error}"
                    connection.close()
                    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    (latencies.append(elapsed) if ok else errors.append(detail))
        finally:
            connection.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    seconds = time.perf_counter() - started
    return LoadResult(clients, len(latencies) + len(errors), len(errors), seconds, latencies, errors)
