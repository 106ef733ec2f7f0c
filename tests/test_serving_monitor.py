"""The service in production: a recalibrated model served as it is, the p-value monitor's alarm on a real server on
loopback, and what ANOMALY_API_KEY protects."""

from __future__ import annotations

import io
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from anomaly.calibration.recalibrate import recalibrate_directory
from anomaly.runtime.bundle import OnnxDetector
from serving.monitor import MIN_IMAGES
from serving.process import free_port, running_server, serve_command
from tests.conftest import stripes
from tests.test_recalibrate import normals_folder

pytestmark = pytest.mark.slow  # a real server and the shared trained model

API_KEY = "monitor-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
BATCH = 10
SHIFT_DETECTED_WITHIN = MIN_IMAGES  # images after the shift: what docs/serving.md states


@pytest.fixture(scope="module")
def recalibrated(published_model, tmp_path_factory) -> Path:
    """The published model recalibrated on 120 new normals (its own 12 held-out normals cannot resolve 1%)."""
    root = tmp_path_factory.mktemp("monitored")
    recalibrate_directory(published_model.directory, normals_folder(root / "normals", 120, seed=51), root / "model")
    return root / "model"


@pytest.fixture(scope="module")
def server(recalibrated, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("logs") / "serve.log"
    with running_server(serve_command(str(recalibrated), port), {"ANOMALY_API_KEY": API_KEY}, port, log) as url:
        with httpx.Client(base_url=url, headers=AUTH, timeout=60) as client:
            yield client


def pngs(images: np.ndarray) -> list[tuple[str, tuple[str, bytes]]]:
    files = []
    for i, image in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        files.append(("images", (f"{i}.png", buffer.getvalue())))
    return files


def gauge(metrics: str, name: str) -> float:
    match = re.search(rf"^{name}{{[^}}]*}} (\S+)$", metrics, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def test_the_served_model_is_the_recalibrated_one(server, recalibrated):
    description = server.get("/model").json()["calibration"]
    assert description["recalibration"]["images"] == 120 and description["promise"]["calibration_normals"] == 120
    assert description["holdout"].startswith("a folder of normal images given to anomaly calibrate")
    image = stripes(1, 40, 36, seed=52)
    answer = server.post("/score_batch", files=pngs(image)).json()["results"][0]
    detector = OnnxDetector(recalibrated)
    expected = detector.results(detector.run(detector.load_image(pngs(image)[0][1][1])[None]))[0]
    assert answer["p_combined"] == pytest.approx(expected.p_combined, rel=1e-5, abs=1e-12)
    assert answer["warning"] is None
    strict = server.post("/score", params={"target_fpr": 0.001}, files={"image": pngs(image)[0][1]}).json()
    assert "below what 120 calibration normal images can resolve (at least 0.83%)" in strict["warning"]


def test_unchanged_normals_keep_quiet_and_a_brighter_line_raises_the_alarm(server):
    """150 new normal images: no alarm. Then every image 10% brighter: the alarm rises within
    SHIFT_DETECTED_WITHIN images, on /model (the page reads it) and on /metrics."""
    before = server.get("/model").json()["monitoring"]["window_images"]  # what earlier tests scored
    normals = stripes(150, 40, 36, seed=53)
    for start in range(0, len(normals), BATCH):
        assert server.post("/score_batch", files=pngs(normals[start : start + BATCH])).status_code == 200
    quiet = server.get("/model").json()["monitoring"]
    assert quiet["window_images"] == before + 150 and not quiet["alarm"]
    assert gauge(server.get("/metrics").text, "anomaly_monitor_alarm") == 0.0
    brighter = np.clip(stripes(100, 40, 36, seed=54).astype(np.float64) * 1.1, 0, 255).astype(np.uint8)
    raised_after = None
    for start in range(0, len(brighter), BATCH):
        server.post("/score_batch", files=pngs(brighter[start : start + BATCH]))
        if server.get("/model").json()["monitoring"]["alarm"]:
            raised_after = start + BATCH
            break
    assert raised_after is not None and raised_after <= SHIFT_DETECTED_WITHIN
    metrics = server.get("/metrics").text
    assert gauge(metrics, "anomaly_monitor_alarm") == 1.0 and gauge(metrics, "anomaly_monitor_flagged_share") > 0.05
    assert (
        gauge(metrics, "anomaly_monitor_target_fpr") == 0.01
        and gauge(metrics, "anomaly_monitor_window_images") == before + 150 + raised_after
    )


def test_with_a_key_only_the_page_and_health_answer_without_it(server):
    for path in ("/", "/livez", "/readyz"):
        assert httpx.get(f"{server.base_url}{path}").status_code == 200, path
    for path in ("/metrics", "/docs.json", "/docs", "/model"):
        response = httpx.get(f"{server.base_url}{path}")
        assert response.status_code == 401 and "API key" in response.json()["error"], path
        assert server.get(path).status_code == 200, path
