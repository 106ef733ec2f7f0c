"""Adaptive batching merges concurrent requests into one model call: every answer must still be its own image's. A
real `anomaly serve` on 127.0.0.1 with one API worker and with two, 192 concurrent requests over 48 distinct
images."""

from __future__ import annotations

import base64
import io
import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from serving.process import free_port, running_server, serve_command
from tests.conftest import png_pixels, stripes

pytestmark = pytest.mark.slow  # real servers, browsers or trained pipelines: `-m "not slow"` skips them

DISTINCT_IMAGES, REPEATS, CLIENTS = 48, 4, 32
SAME = {"rel": 1e-5, "abs": 1e-9}  # one graph run in batches of other sizes: equal up to float32 summation order


def distinct_images() -> dict[str, bytes]:
    """Normal textures and textures with a bright bar of growing length, so that the scores spread out."""
    images = {}
    for index, image in enumerate(stripes(DISTINCT_IMAGES, 32, 32, seed=11)):
        if index % 2:
            image[12:16, 2 : 4 + index // 2] = 250
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        images[f"image-{index:02d}.png"] = buffer.getvalue()
    return images


def score(client: httpx.Client, name: str, data: bytes, heatmap: bool) -> dict:
    response = client.post("/score", params={"heatmap": str(heatmap).lower()}, files={"image": (name, data)})
    assert response.status_code == 200, response.text
    return response.json()


def heatmap_pixels(answer: dict) -> np.ndarray:
    return png_pixels(base64.b64decode(answer["heatmap_png_base64"]))


@pytest.mark.parametrize("api_workers", [1, 2])
def test_each_concurrent_answer_is_its_own_images(published_model, tmp_path, api_workers):
    images = distinct_images()
    port = free_port()
    env = {"ANOMALY_API_WORKERS": str(api_workers)}
    with running_server(serve_command(str(published_model.directory), port), env, port, tmp_path / "serve.log") as url:
        with httpx.Client(base_url=url, timeout=120, limits=httpx.Limits(max_connections=CLIENTS)) as client:
            alone = {name: score(client, name, data, heatmap=True) for name, data in images.items()}
            distances = sorted(answer["latent_distance"] for answer in alone.values())
            assert min(np.diff(distances)) > 1e-4 * distances[-1]  # a swapped answer could not pass for the right one
            requests = [(name, heatmap) for name in images for heatmap in (False, True)] * (REPEATS // 2)
            random.Random(0).shuffle(requests)
            with ThreadPoolExecutor(CLIENTS) as pool:
                answers = list(
                    pool.map(lambda request: score(client, request[0], images[request[0]], request[1]), requests)
                )
    assert len(answers) == DISTINCT_IMAGES * REPEATS
    for (name, heatmap), answer in zip(requests, answers):
        expected = alone[name]
        assert answer["filename"] == name
        for key in ("reconstruction_score", "latent_distance", "p_combined"):
            assert answer[key] == pytest.approx(expected[key], **SAME), (name, key)
        assert answer["is_anomaly"] == expected["is_anomaly"]
        if heatmap:
            assert np.mean(np.abs(heatmap_pixels(answer) - heatmap_pixels(expected))) < 0.5, name
        else:
            assert answer["heatmap_png_base64"] is None
