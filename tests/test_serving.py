"""The BentoML service, started for real with `anomaly serve` on 127.0.0.1, with a small trained model."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from benchmarks.http_load import run_load
from serving.process import free_port, running_server, serve_command
from tests.conftest import PROJECT_ROOT, run_cli_process

pytestmark = pytest.mark.slow  # real servers, browsers or trained pipelines: `-m "not slow"` skips them

API_KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
LIMITS = {"ANOMALY_MAX_BODY_MB": "1", "ANOMALY_MAX_IMAGE_PIXELS": "1000000", "ANOMALY_MAX_BATCH_IMAGES": "8"}


@pytest.fixture(scope="module")
def model_dir(published_model) -> Path:
    return published_model.directory


@pytest.fixture(scope="module")
def folder(published_model) -> Path:
    """The texture folder the model was trained on (its test images have scratches and masks)."""
    return published_model.data


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    port = free_port()
    env = {"ANOMALY_API_KEY": API_KEY, **LIMITS}
    log = tmp_path_factory.mktemp("logs") / "serve.log"
    with running_server(serve_command(str(model_dir), port), env, port, log) as url:
        with httpx.Client(base_url=url, headers=AUTH, timeout=60) as client:
            yield client


def images_of(folder: Path) -> list[Path]:
    return (
        sorted((folder / "test" / "scratch").glob("*.png"))[:3] + sorted((folder / "test" / "good").glob("*.png"))[:3]
    )


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def assert_serves(server: httpx.Client, folder: Path) -> None:
    response = server.post("/score", files={"image": images_of(folder)[0].open("rb")})
    assert response.status_code == 200, response.text


def test_scores_equal_the_cli(server, model_dir, folder):
    paths = images_of(folder)
    cli = run_cli_process("score", "--model", str(model_dir), *map(str, paths))
    assert cli.returncode == 0, cli.stderr
    expected = [json.loads(line) for line in cli.stdout.splitlines()]
    singles = [server.post("/score", files={"image": path.open("rb")}).json() for path in paths]
    batch = server.post("/score_batch", files=[("images", path.open("rb")) for path in paths]).json()
    assert [item["filename"] for item in batch["results"]] == [path.name for path in paths]
    assert any(item["is_anomaly"] for item in expected) and not all(item["is_anomaly"] for item in expected)
    for want, single, batched in zip(expected, singles, batch["results"]):
        for key in (
            "reconstruction_score",
            "latent_distance",
            "p_reconstruction",
            "p_latent",
            "p_combined",
            "anomaly_score",
        ):
            assert single[key] == pytest.approx(want[key], rel=1e-5, abs=1e-12), key
            assert batched[key] == pytest.approx(want[key], rel=1e-5, abs=1e-12), key
        assert single["is_anomaly"] == batched["is_anomaly"] == want["is_anomaly"]
        assert single["target_fpr"] == want["target_fpr"] and single["threshold"] == pytest.approx(
            1 - want["target_fpr"]
        )
    assert singles[0]["model"]["model_checksum"] == batch["model"]["model_checksum"]
    assert singles[0]["time_ms"] > 0


def test_per_request_target_fpr_moves_the_decision(server, folder):
    """An image whose p-value lies between two rates is normal at the stricter one and an anomaly at the looser one,
    on both routes; the p-value itself does not move."""
    candidates = sorted((folder / "test").glob("*/*.png"))
    answers = {path: server.post("/score", files={"image": path.open("rb")}).json() for path in candidates}
    between = [(path, answer) for path, answer in answers.items() if 2e-4 < answer["p_combined"] < 0.4]
    assert between, {path.name: answer["p_combined"] for path, answer in answers.items()}
    path, answer = between[0]
    strict, loose = answer["p_combined"] / 2, min(answer["p_combined"] * 1.2, 0.49)
    for rate, flagged in ((strict, False), (loose, True)):
        single = server.post("/score", params={"target_fpr": rate}, files={"image": path.open("rb")}).json()
        batch = server.post("/score_batch", params={"target_fpr": rate}, files=[("images", path.open("rb"))]).json()
        for result in (single, batch["results"][0]):
            assert result["p_combined"] == pytest.approx(answer["p_combined"], rel=1e-6)
            assert result["is_anomaly"] is flagged, (rate, result["p_combined"])
            assert result["target_fpr"] == rate and result["threshold"] == pytest.approx(1 - rate)


def test_heatmap_is_a_png_overlay_that_marks_the_defect(server, folder):
    result = server.post("/score", params={"heatmap": "true"}, files={"image": images_of(folder)[0].open("rb")}).json()
    overlay = np.asarray(Image.open(io.BytesIO(base64.b64decode(result["heatmap_png_base64"]))))
    assert overlay.shape == (32, 32, 3)
    # the input is grey; colour (R != B) appears only where the map is high: inside the bright scratch
    coloured = np.abs(overlay[..., 0].astype(int) - overlay[..., 2].astype(int)) > 40
    assert coloured[8:16].mean() > coloured[24:].mean()
    plain = server.post("/score", files={"image": images_of(folder)[0].open("rb")}).json()
    assert plain["heatmap_png_base64"] is None


def test_heatmap_at_the_uploads_own_size_is_the_map_alone(server, folder):
    """heatmap_size=original: RGBA at the upload's size (here 3x the model's 32 x 32, another aspect), for a page to
    lay over the upload; the same places are marked as in the input-size overlay."""
    grey = np.asarray(Image.open(images_of(folder)[0]).convert("L").resize((96, 48)))
    result = server.post(
        "/score", params={"heatmap": "true", "heatmap_size": "original"}, files={"image": ("wide.png", png_bytes(grey))}
    ).json()
    assert (result["image_height"], result["image_width"]) == (48, 96)
    layer = np.asarray(Image.open(io.BytesIO(base64.b64decode(result["heatmap_png_base64"]))))
    assert layer.shape == (48, 96, 4)
    assert layer[12:24, :, 3].mean() > layer[36:, :, 3].mean()  # the scratch (rows 8-16 of 32) is the most opaque
    batch = server.post(
        "/score_batch",
        params={"heatmap": "true", "heatmap_size": "original"},
        files=[("images", ("wide.png", png_bytes(grey))), ("images", ("small.png", png_bytes(grey[::2, ::2])))],
    ).json()
    assert [
        np.asarray(Image.open(io.BytesIO(base64.b64decode(r["heatmap_png_base64"])))).shape for r in batch["results"]
    ] == [(48, 96, 4), (24, 48, 4)]


def test_model_endpoint_says_which_model_answers(server, model_dir):
    info = server.get("/model").json()
    calibration = json.loads((model_dir / "calibration.json").read_text())
    assert info["model"]["model_checksum"] == calibration["model_checksum"]
    assert info["model"]["name"] == "model" and info["model"]["version"] is None
    assert info["reference"] == str(model_dir) and info["architecture"] == "ae"
    assert len(info["training_run"]) == 32 and info["dataset"].endswith("textures")
    assert (info["input"]["channels"], info["input"]["height"], info["input"]["width"]) == (1, 32, 32)
    assert info["input"]["max_body_bytes"] == 1024 * 1024 and info["input"]["max_batch_images"] == 8
    assert info["calibration"]["target_fpr"] == calibration["target_fpr"]
    assert (
        info["calibration"]["sample_sizes"]["calibration_images"] == calibration["sample_sizes"]["calibration_images"]
    )
    card = (model_dir / "model_card.md").read_text()
    assert set(info["test_metrics"]) >= {"image_auroc", "pixel_auroc"}
    assert f"| image_auroc | {info['test_metrics']['image_auroc']:.4f} |" in card


def metric_value(client: httpx.Client, name: str, **labels: str) -> float:
    """The sum of the scraped samples called `name` whose labels include `labels`."""
    from prometheus_client.parser import text_string_to_metric_families

    samples = [
        sample for family in text_string_to_metric_families(client.get("/metrics").text) for sample in family.samples
    ]
    return sum(sample.value for sample in samples if sample.name == name and labels.items() <= sample.labels.items())


COUNTED = {
    "score_ok": ("anomaly_http_requests_total", {"route": "/score", "status": "200"}),
    "score_bad": ("anomaly_http_requests_total", {"route": "/score", "status": "400"}),
    "batch_ok": ("anomaly_http_requests_total", {"route": "/score_batch", "status": "200"}),
    "images": ("anomaly_images_scored_total", {}),
    "flagged": ("anomaly_images_flagged_total", {}),
    "scores": ("anomaly_score_count", {}),
    "score_latencies": ("anomaly_http_request_seconds_count", {"route": "/score"}),
}


def test_health_is_open_and_metrics_count_requests(server, folder):
    for path in ("/livez", "/readyz"):
        assert httpx.get(f"{server.base_url}{path}").status_code == 200, path
    before = {key: metric_value(server, name, **labels) for key, (name, labels) in COUNTED.items()}
    paths = images_of(folder)
    singles = [server.post("/score", files={"image": path.open("rb")}).json() for path in paths[:3]]
    batch = server.post("/score_batch", files=[("images", path.open("rb")) for path in paths]).json()["results"]
    assert server.post("/score", files={"image": ("junk.png", b"junk")}).status_code == 400
    after = {key: metric_value(server, name, **labels) for key, (name, labels) in COUNTED.items()}
    flagged = sum(result["is_anomaly"] for result in singles + batch)
    assert 0 < flagged < 9
    assert {key: after[key] - before[key] for key in COUNTED} == {
        "score_ok": 3,
        "score_bad": 1,
        "batch_ok": 1,
        "images": 9,
        "flagged": flagged,
        "scores": 9,
        "score_latencies": 4,
    }


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {API_KEY}"}])
def test_api_key_is_required(server, folder, headers):
    for method, path in (("POST", "/score"), ("POST", "/score_batch"), ("GET", "/model")):
        files = {"image": images_of(folder)[0].read_bytes()} if method == "POST" else None
        response = httpx.request(method, f"{server.base_url}{path}", headers=headers, files=files)
        assert response.status_code == 401 and "API key" in response.json()["error"]
        assert response.headers["www-authenticate"] == "Bearer"


def random_png(height: int, width: int) -> bytes:
    return png_bytes(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8))


# name -> (httpx arguments for POST /score built from a good image's bytes, expected status, expected message part)
BAD_REQUESTS: dict[str, tuple[Callable[[bytes], dict], int, str]] = {
    "not an image": (
        lambda good: {"files": {"image": ("notes.txt", b"hello, not pixels")}},
        400,
        "not a readable image",
    ),
    "truncated": (lambda good: {"files": {"image": ("cut.png", good[: len(good) // 2])}}, 400, "truncated"),
    "zero bytes": (lambda good: {"files": {"image": ("empty.png", b"")}}, 400, "empty (0 bytes)"),
    # 1.1 Mpx in a few KB, over the 1 Mpx limit
    "pixel bomb": (
        lambda good: {"files": {"image": ("bomb.png", png_bytes(np.zeros((1100, 1000), dtype=np.uint8)))}},
        413,
        "above the limit of 1,000,000 pixels",
    ),
    "body too large": (lambda good: {"files": {"image": ("noise.png", random_png(700, 700))}}, 413, "limit of 1 MB"),
    "url as json": (lambda good: {"json": "http://127.0.0.1:1/x.png"}, 415, "does not fetch URLs"),
    "url as form text": (
        lambda good: {"data": {"image": "http://127.0.0.1:1/x.png"}, "files": {"other": ("x", b"")}},
        422,
        "must be an uploaded file",
    ),
    "pickle": (
        lambda good: {"content": b"\x80\x04K\x01.", "headers": {"Content-Type": "application/vnd.bentoml+pickle"}},
        415,
        "pickled bodies are never accepted",
    ),
    "no image field": (lambda good: {"files": {"picture": ("a.png", good)}}, 422, "image"),
    "target fpr too high": (
        lambda good: {"files": {"image": ("a.png", good)}, "params": {"target_fpr": 0.9}},
        422,
        "target_fpr",
    ),
    "target fpr not a number": (
        lambda good: {"files": {"image": ("a.png", good)}, "params": {"target_fpr": "lots"}},
        422,
        "target_fpr",
    ),
    "target fpr nan": (
        lambda good: {"files": {"image": ("a.png", good)}, "params": {"target_fpr": "nan"}},
        422,
        "target_fpr: must be a number from 0.0001 to 0.5",
    ),
    "gif": (
        lambda good: {"files": {"image": ("a.gif", gif_bytes())}},
        415,
        "is GIF, which is not accepted; send one of PNG, JPEG",
    ),
    "two image fields": (
        lambda good: {"files": [("image", ("a.png", good)), ("image", ("b.png", good))]},
        422,
        "this request has 2; send several images to /score_batch",
    ),
}


def gif_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (32, 32), 120).save(buffer, format="GIF")
    return buffer.getvalue()


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_gets_a_clear_4xx_and_the_server_keeps_serving(server, folder, case):
    build, status, message = BAD_REQUESTS[case]
    arguments = build(images_of(folder)[0].read_bytes())
    headers = {**AUTH, **arguments.pop("headers", {})}
    response = httpx.post(f"{server.base_url}/score", headers=headers, timeout=60, **arguments)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert_serves(server, folder)


def test_chunked_body_over_the_limit_is_refused(server, folder):
    """No Content-Length: the body is counted as it streams to the multipart parser and refused past the limit."""

    def chunks():
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n'
        yield b"Content-Type: image/png\r\n\r\n"
        for _ in range(40):
            yield b"x" * 64 * 1024

    response = httpx.post(
        f"{server.base_url}/score",
        headers={**AUTH, "Content-Type": "multipart/form-data; boundary=b"},
        content=chunks(),
    )
    assert response.status_code == 413 and "over the limit of 1 MB" in response.json()["error"]
    assert_serves(server, folder)


def test_other_channel_layouts_are_converted(server, folder):
    """Documented: RGBA, palette, 16-bit and RGB inputs are converted to the model's grayscale; 16-bit by value /
    257."""
    grey = np.asarray(Image.open(images_of(folder)[0]).convert("L"))
    reference = server.post("/score", files={"image": ("grey.png", png_bytes(grey))}).json()
    variants = {
        "sixteen-bit": png_bytes(grey.astype(np.uint16) * 257),  # the same pixels, value x 257
        "rgb": png_bytes(np.repeat(grey[..., None], 3, axis=2)),
        "rgba": png_bytes(np.dstack([np.repeat(grey[..., None], 3, axis=2), np.full_like(grey, 255)])),
        "palette": palette_png(grey),
    }
    for name, data in variants.items():
        result = server.post("/score", files={"image": (f"{name}.png", data)})
        assert result.status_code == 200, (name, result.text)
        for score in ("reconstruction_score", "latent_distance"):
            assert result.json()[score] == pytest.approx(reference[score], rel=1e-4), (name, score)
    # an under-exposed part (15% brightness) scores as dark in 16 bits as in 8, not brightened back to normal
    dark = (grey * 0.15).astype(np.uint8)
    eight, sixteen = (
        server.post("/score", files={"image": ("dark.png", data)}).json()
        for data in (png_bytes(dark), png_bytes(dark.astype(np.uint16) * 257))
    )
    for score in ("reconstruction_score", "latent_distance"):
        assert sixteen[score] == pytest.approx(eight[score], rel=1e-4), score


def palette_png(grey: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(grey).convert("P").save(buffer, format="PNG")
    return buffer.getvalue()


def test_batch_limits_and_a_bad_member(server, folder):
    path = images_of(folder)[0]
    too_many = server.post("/score_batch", files=[("images", path.read_bytes())] * 9)
    assert (
        too_many.status_code == 422
        and too_many.json()["error"] == "invalid request: images: send 1 to 8 image files (ANOMALY_MAX_BATCH_IMAGES)"
    )
    mixed = server.post(
        "/score_batch", files=[("images", ("a.png", path.read_bytes())), ("images", ("b.png", b"junk"))]
    )
    assert mixed.status_code == 400 and "#1 (b.png)" in mixed.json()["error"]
    assert server.get("/nowhere").status_code == 404
    wrong_method = server.get("/score")
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"


def test_thirty_two_concurrent_clients_without_errors(server, folder):
    images = [(path.name, path.read_bytes()) for path in images_of(folder)]
    result = run_load(str(server.base_url), images, clients=32, max_requests=640, max_seconds=60, headers=AUTH)
    assert result.errors == 0, result.error_samples[:3]
    assert result.requests == 640


def test_schemathesis_finds_no_server_errors_and_no_schema_violations(server, tmp_path):
    """Every check (status codes, response schemas and headers, 405 with Allow, ...) but positive_data_acceptance:
    schema-valid bytes in an image field are mostly not an image, and are rightly refused with 400."""
    schemathesis = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [
            str(schemathesis),
            "run",
            f"{server.base_url}/docs.json",
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
            "--header",
            f"Authorization: Bearer {API_KEY}",
            "--max-examples",
            "15",
            "--max-time",
            "45",
            "--seed",
            "7",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert generated and int(generated.group(1)) > 100 and generated.group(1) == generated.group(2), result.stdout[
        -2000:
    ]


def test_service_modules_do_not_import_torch():
    code = "import sys, serving.service; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT)
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_serve_without_a_model_is_a_one_line_error(tmp_path):
    result = run_cli_process("serve", "--model", str(tmp_path / "missing"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: model directory not found: {tmp_path / 'missing'}"
