"""Prometheus metrics of the scoring service, served by BentoML's /metrics.

prometheus_client is imported on first use, not at module import: BentoML sets
PROMETHEUS_MULTIPROC_DIR in each worker after importing the service module, and metrics
created before that would be invisible in multi-worker mode.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

from serving.guard import ASGIApp, Message, Receive, Scope, Send
from serving.monitor import MonitorState

SCORE_BUCKETS = (0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class ServiceMetrics:
    requests: Any
    latency: Any
    scores: Any
    images: Any
    flagged: Any
    monitor: dict[str, Any]  # gauges of the p-value monitor (serving.monitor), by MonitorState field

    def observe_results(self, anomaly_scores: list[float], flags: list[bool]) -> None:
        for score in anomaly_scores:
            self.scores.observe(score)
        self.images.inc(len(anomaly_scores))
        self.flagged.inc(sum(flags))

    def observe_monitor(self, model: str, version: str, state: MonitorState) -> None:
        for field, gauge in self.monitor.items():
            gauge.labels(model=model, version=version).set(float(getattr(state, field)))


@functools.cache
def service_metrics() -> ServiceMetrics:
    from prometheus_client import Counter, Gauge, Histogram

    def gauge(name: str, description: str) -> Any:
        # One series per API worker (pid label in multi-worker mode): each keeps its own window.
        return Gauge(name, description, ["model", "version"], multiprocess_mode="liveall")

    return ServiceMetrics(
        requests=Counter("anomaly_http_requests", "HTTP requests by route and status code", ["route", "status"]),
        latency=Histogram(
            "anomaly_http_request_seconds", "HTTP request latency by route", ["route"], buckets=LATENCY_BUCKETS
        ),
        scores=Histogram(
            "anomaly_score", "anomaly_score (1 - combined p-value) of scored images", buckets=SCORE_BUCKETS
        ),
        images=Counter("anomaly_images_scored", "Images scored"),
        flagged=Counter("anomaly_images_flagged", "Images flagged as anomalous at the requested target FPR"),
        monitor={
            "images": gauge("anomaly_monitor_window_images", "Images in the worker's window of served p-values"),
            "flagged_share": gauge(
                "anomaly_monitor_flagged_share", "Share of the window flagged at the calibrated target FPR"
            ),
            "target_fpr": gauge(
                "anomaly_monitor_target_fpr", "The calibrated target FPR the flagged share is held against"
            ),
            "flagged_test_p": gauge(
                "anomaly_monitor_flagged_test_p", "Binomial test p-value: flagged share above the target"
            ),
            "uniformity_test_p": gauge(
                "anomaly_monitor_uniformity_test_p", "KS test p-value: normal-looking p-values still uniform"
            ),
            "alarm": gauge("anomaly_monitor_alarm", "1 when the calibration no longer holds on the window's traffic"),
        },
    )


class RequestMetrics:
    """Counts every request on the known routes by status, refusals by the guard included."""

    def __init__(self, app: ASGIApp, routes: frozenset[str]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in self.routes else "other"
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            metrics = service_metrics()
            metrics.requests.labels(route=route, status=str(status)).inc()
            metrics.latency.labels(route=route).observe(time.perf_counter() - started)
