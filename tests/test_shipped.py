"""What ships, end to end: `pipelines/folder.yaml` as written (pretrained Lite0 encoder, both signals, every choice
made on validation) trained briefly on a slice of KolektorSDD at its production input size (640 x 256), then served
over HTTP, scored by the CLI, by the archive job and on the inspection page. Every way of asking must give the
same answer, and that answer must be PyTorch's within the parity limits."""

from __future__ import annotations

import base64
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from anomaly.export.parity import parity_limit, pytorch_outputs, relative_difference
from anomaly.imageio import decode_image
from anomaly.runtime.bundle import META_ENCODER, OnnxDetector, image_results
from anomaly.scoring.detector import load_detector
from benchmarks.page_screenshot import page_cards
from serving.process import free_port, running_server, serve_command
from tests.conftest import PROJECT_ROOT, page_in_chromium, png_pixels, run_cli_process

pytestmark = pytest.mark.slow  # real servers, browsers or trained pipelines: `-m "not slow"` skips them

SCORES = ("reconstruction_score", "latent_distance")
PRODUCTION_SIZE = [640, 256]  # what image_size: auto makes of KolektorSDD's 1259 x 500 photos
PAGE_SCORES = ("p_reconstruction", "p_latent", "p_combined", "anomaly_score")
# One ONNX graph run in batches of different sizes: scores equal up to float32 summation order, and p-values up to
# what that moves them where the calibration's distribution is steep.
SAME = {"rel": 1e-5, "abs": 1e-9}
SAME_P = {"rel": 0, "abs": 1e-4}


def tolerance(name: str) -> dict[str, float]:
    return SAME if name in SCORES else SAME_P


@pytest.fixture(scope="module")
def pytorch(shipped) -> dict[str, np.ndarray]:
    """The evaluated PyTorch detector's outputs on the test images, decoded as the served model decodes them."""
    detector = load_detector(shipped.evaluation / "detector.pt")
    spec = detector.config.data
    images = np.stack([decode_image(path, spec.channels, spec.image_size) for path in shipped.images])
    return pytorch_outputs(detector, images, ("reconstruction_score", "latent_distance", "anomaly_map"))


def assert_within_parity(answers: list[dict], pytorch: dict[str, np.ndarray]) -> None:
    """Scores within the parity limit of PyTorch's, relative to the largest score, as the export checks them."""
    for name in ("reconstruction_score", "latent_distance"):
        served = np.array([answer[name] for answer in answers])
        assert relative_difference(name, served, pytorch[name]) <= parity_limit(name), name


def test_the_shipped_configuration_is_trained_at_production_size_and_matches_pytorch(shipped, pytorch):
    detector = OnnxDetector(shipped.model)
    assert detector.calibration.preprocessing["image_size"] == PRODUCTION_SIZE
    assert detector.metadata[META_ENCODER].startswith("efficientnet_lite0 sha256:")
    assert {"anomaly_map", "latent_distance", "reconstruction_score"} <= set(detector.outputs)
    images = np.stack([detector.load_image(path) for path in shipped.images])
    exported = detector.run(images)
    assert exported["anomaly_map"].shape == (len(images), 1, *PRODUCTION_SIZE)
    for name in ("reconstruction_score", "latent_distance", "anomaly_map"):  # scores to 1e-4, the map to 1e-3
        assert relative_difference(name, exported[name], pytorch[name]) <= parity_limit(name), name
    # the decisions PyTorch's scores lead to through the same calibration
    served = detector.results(exported)
    expected = image_results(detector.calibration, pytorch["reconstruction_score"], pytorch["latent_distance"])
    for answer, reference in zip(served, expected):
        assert answer.p_combined == pytest.approx(reference.p_combined, rel=1e-3, abs=1e-9)
        assert answer.p_reconstruction is not None and answer.is_anomaly == reference.is_anomaly


def http_answers(client: httpx.Client, images: list[Path]) -> tuple[list[dict], list[dict]]:
    """Each image alone (with its heat map), and all of them in one batch."""
    singles = [
        client.post("/score", params={"heatmap": "true"}, files={"image": (path.name, path.read_bytes())}).json()
        for path in images
    ]
    batch = client.post("/score_batch", files=[("images", (path.name, path.read_bytes())) for path in images])
    assert batch.status_code == 200, batch.text
    return singles, batch.json()["results"]


def page_rows(url: str, images: list[Path]) -> tuple[dict[str, dict], dict[str, str]]:
    """Upload the images on the page in headless Chromium; (the rows its export offers, the badges it shows)."""
    with page_in_chromium(url) as driver:
        wait = WebDriverWait(driver, 120)
        wait.until(expected_conditions.visibility_of_element_located((By.ID, "scoring")))
        driver.find_element(By.ID, "files").send_keys("\n".join(str(path) for path in images))
        wait.until(lambda d: len(page_cards(d)) == len(images) and "scoring…" not in page_cards(d).values())
        rows = {row["filename"]: row for row in driver.execute_script("return rows();")}
        return rows, page_cards(driver)


def readme_curl_answer(url: str, image: Path, workdir: Path) -> tuple[dict, dict]:
    """(the README's sample answer, what the README's curl command answers for `image` saved as its part.png)."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    command = shlex.split(re.search(r"```bash\n(curl .+?)\n```", readme).group(1))
    sample = json.loads(re.search(r"```json\n(.+?)\n```", readme, re.DOTALL).group(1))
    assert "image=@part.png" in command and "http://127.0.0.1:3000/score?heatmap=true" in command
    shutil.copyfile(image, workdir / "part.png")
    command = [argument.replace("http://127.0.0.1:3000", url) for argument in command]
    result = subprocess.run(command, capture_output=True, text=True, cwd=workdir, timeout=120)
    assert result.returncode == 0, result.stderr
    return sample, json.loads(result.stdout)


def assert_same_shape(sample: dict, answer: dict) -> None:
    """The same keys at every level, and values of the same JSON types (null where the sample's may be a string)."""
    assert set(sample) == set(answer)
    for key, value in sample.items():
        if isinstance(value, dict):
            assert_same_shape(value, answer[key])
        elif value is None:
            assert answer[key] is None or isinstance(answer[key], str), key
        else:
            assert type(answer[key]) is type(value), (key, answer[key])


def test_http_cli_archive_and_page_give_one_answer_and_it_is_pytorchs(shipped, pytorch, tmp_path):
    images = shipped.images
    cli = run_cli_process("score", "--model", str(shipped.model), *map(str, images))
    assert cli.returncode == 0, cli.stderr[-2000:]
    reference = [json.loads(line) for line in cli.stdout.splitlines()]
    assert [Path(answer["image"]).name for answer in reference] == [path.name for path in images]
    assert_within_parity(reference, pytorch)
    defects = sum(path.parent.name == "defect" for path in images)
    assert np.mean([answer["anomaly_score"] for answer in reference[:defects]]) > np.mean(
        [answer["anomaly_score"] for answer in reference[defects:]]
    )

    archive = run_cli_process(
        *("score", "--model", str(shipped.model), "--input", str(images[0].parents[1])),
        *("--output", str(tmp_path / "results.parquet"), "--heatmaps", "--local"),
    )
    assert archive.returncode == 0, archive.stderr[-2000:]
    rows = {Path(row["path"]).name: row for row in pq.read_table(tmp_path / "results.parquet").to_pylist()}

    port = free_port()
    with running_server(serve_command(str(shipped.model), port), {}, port, tmp_path / "serve.log") as url:
        with httpx.Client(base_url=url, timeout=120) as client:
            singles, batch = http_answers(client, images)
        shown, badges = page_rows(url, images)
        sample, curl = readme_curl_answer(url, images[0], tmp_path)

    # The README's curl command answers in the shape of the README's sample, with the CLI's numbers.
    assert_same_shape(sample, curl)
    width, height = Image.open(images[0]).size
    assert (curl["filename"], curl["image_height"], curl["image_width"]) == ("part.png", height, width)
    assert sample["image_width"] == width == 500  # the sample is a KolektorSDD photo too
    assert sample["anomaly_score"] == pytest.approx(1 - sample["p_combined"], abs=1e-5)
    assert sample["is_anomaly"] == (sample["p_combined"] < sample["target_fpr"])
    assert sample["threshold"] == pytest.approx(1 - sample["target_fpr"])
    assert curl["heatmap_png_base64"].startswith(sample["heatmap_png_base64"].removesuffix("..."))
    for name in SCORES + PAGE_SCORES:
        assert curl[name] == pytest.approx(reference[0][name], **tolerance(name)), name

    for path, want, single, batched in zip(images, reference, singles, batch):
        row, page = rows[path.name], shown[path.name]
        for name in SCORES + PAGE_SCORES:
            for way, answer in (("http", single), ("http batch", batched), ("archive", row)):
                assert answer[name] == pytest.approx(want[name], **tolerance(name)), f"{path.name} {name} {way}"
        for name in PAGE_SCORES:  # the page's export, from answers to its own (concurrent, so batched) requests
            assert page[name] == pytest.approx(want[name], **SAME_P), f"{path.name} {name} page"
        decisions = {single["is_anomaly"], batched["is_anomaly"], row["is_anomaly"], page["is_anomaly"]}
        assert decisions == {want["is_anomaly"]}, path.name
        assert badges[path.name] == ("anomaly" if want["is_anomaly"] else "normal")
        # the heat map the service draws is the one the archive job writes for the same image
        served_map = png_pixels(base64.b64decode(single["heatmap_png_base64"]))
        archived_map = png_pixels(Path(row["heatmap"]).read_bytes())
        assert served_map.shape == archived_map.shape == (*PRODUCTION_SIZE, 3)
        assert np.mean(np.abs(served_map - archived_map)) < 0.5, path.name
