"""The service's NumPy-only parts, without a server: settings, CPU budget, heat maps, output packing."""

from __future__ import annotations

import asyncio
import socket

import numpy as np
import pytest

from anomaly.errors import AnomalyError
from anomaly.runtime import cpus
from anomaly.runtime.heatmap import map_layer, original_size_for_map, overlay
from serving.budget import ByteBudget
from serving.guard import RequestGuard
from serving.scoring import pack_outputs, unpack_outputs
from serving.settings import ServingSettings
from serving.supervision import remove_stale_socket_folders


def test_settings_come_from_anomaly_variables_and_bad_values_name_the_variable():
    settings = ServingSettings.from_env(
        {"ANOMALY_MODEL": "m", "ANOMALY_MAX_BODY_MB": "5", "ANOMALY_ADAPTIVE_BATCHING": "false", "HOME": "/x"}
    )
    assert (settings.model, settings.max_body_bytes, settings.adaptive_batching) == ("m", 5 * 1024 * 1024, False)
    assert ServingSettings.from_env(settings.to_env()) == settings
    with pytest.raises(AnomalyError, match="ANOMALY_MAX_BATCH_IMAGES: Input should be greater than or equal to 1"):
        ServingSettings.from_env({"ANOMALY_MAX_BATCH_IMAGES": "0"})
    with pytest.raises(AnomalyError, match="ANOMALY_ORT_THREADS: Input should be a valid integer"):
        ServingSettings.from_env({"ANOMALY_ORT_THREADS": "many"})


@pytest.mark.parametrize(("content", "expected"), [("max 100000", None), ("150000 100000", 1.5), ("50000 100000", 0.5)])
def test_cgroup_v2_quota_caps_the_cpu_count(tmp_path, monkeypatch, content, expected):
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text(content + "\n")
    monkeypatch.setattr(cpus, "CGROUP_V2_MAX", cpu_max)
    assert cpus.cgroup_cpu_limit() == expected
    affinity = len(cpus.os.sched_getaffinity(0))
    assert cpus.available_cpus() == (affinity if expected is None else min(affinity, int(np.ceil(expected))))


def test_threads_are_shared_between_workers(monkeypatch):
    monkeypatch.setattr(cpus, "available_cpus", lambda: 8)
    assert [cpus.threads_per_worker(workers) for workers in (1, 2, 3, 16)] == [8, 4, 2, 1]
    assert cpus.threads_per_worker(4, override=3) == 3


def test_heatmap_colour_follows_the_calibrated_pixel_threshold():
    image = np.full((2, 3, 1), 100, dtype=np.uint8)
    anomaly_map = np.array([[0.0, 1.0, 2.0], [4.0, 0.0, 0.0]])
    result = overlay(image, anomaly_map, pixel_threshold=1.0).astype(int)
    assert result.shape == (2, 3, 3)
    assert tuple(result[0, 0]) == (100, 100, 100)  # nothing below the threshold's half is painted
    assert result[0, 1, 0] > result[0, 1, 2] and result[0, 1, 1] > 150  # at the threshold: yellow
    assert (
        tuple(result[0, 2]) == tuple(result[1, 0]) and result[0, 2, 0] > 200 and result[0, 2, 1] < 50
    )  # 2x and above: red


def test_the_map_alone_is_upsampled_to_the_upload_with_its_opacity_in_alpha():
    anomaly_map = np.array([[0.0, 0.0], [2.0, 2.0]])  # top: nothing; bottom: twice the threshold
    layer = map_layer(anomaly_map, pixel_threshold=1.0, size=(40, 30))
    assert layer.shape == (40, 30, 4) and layer.dtype == np.uint8
    assert layer[0, :, 3].max() == 0 and tuple(layer[-1, 0]) == (
        255,
        0,
        0,
        round(0.75 * 255),
    )  # transparent; red at 75%
    assert 0 < layer[20, 0, 3] < layer[-1, 0, 3]  # bilinear in between
    assert original_size_for_map(6300, 6300) == (2000, 2000) and original_size_for_map(300, 200) == (300, 200)


def test_packed_outputs_round_trip_per_image():
    outputs = {
        "reconstruction_score": np.array([0.1, 0.2], dtype=np.float32),
        "latent_distance": np.array([3.0, 4.0], dtype=np.float32),
        "anomaly_map": np.arange(2 * 1 * 2 * 3, dtype=np.float32).reshape(2, 1, 2, 3),
    }
    both = ("reconstruction_score", "latent_distance")
    packed = pack_outputs(outputs)
    scores, distances, maps = unpack_outputs(packed[1:], (2, 3))
    assert scores.tolist() == pytest.approx([0.2]) and distances.tolist() == [4.0]
    np.testing.assert_array_equal(maps[0], outputs["anomaly_map"][1, 0])
    scores_only = pack_outputs({key: outputs[key] for key in both})
    assert scores_only.shape == (2, 2) and unpack_outputs(scores_only, (2, 3))[2] is None


def test_api_keys_may_hold_any_utf8_characters():
    key = "clé-ключ-鍵"
    guard = RequestGuard(None, api_key=key, max_body_bytes=1, upload_paths=frozenset(), read_timeout_s=1)
    assert guard.authorised({"authorization": f"Bearer {key}".encode()})
    assert not guard.authorised({"authorization": b"Bearer cle-kljuch"})
    assert not guard.authorised({})
    browser = RequestGuard(None, api_key="schlüssel", max_body_bytes=1, upload_paths=frozenset(), read_timeout_s=1)
    assert browser.authorised({"authorization": "Bearer schlüssel".encode("latin-1")})  # what fetch() sends
    assert browser.authorised({"authorization": "Bearer schlüssel".encode()})


def test_the_decoding_budget_bounds_what_is_held_at_once():
    async def scenario() -> tuple[int, int]:
        budget, holding, most = ByteBudget(100), 0, 0

        async def decode(size: int) -> None:
            nonlocal holding, most
            async with budget.reserve(size):
                holding += size
                most = max(most, holding)
                await asyncio.sleep(0.01)
                holding -= size

        await asyncio.gather(*(decode(size) for size in (60, 60, 30, 90, 10, 40)))
        return most, budget.reserved

    most, left = asyncio.run(scenario())
    assert 60 <= most <= 100 and left == 0
    with pytest.raises(ValueError, match="can never fit a budget of 100"):
        asyncio.run(ByteBudget(100).reserve(101).__aenter__())


def test_only_socket_folders_that_nobody_listens_on_are_removed(tmp_path):
    stale, live, other = tmp_path / "bentoml-uds-stale", tmp_path / "bentoml-uds-live", tmp_path / "unrelated"
    for folder in (stale, live, other):
        folder.mkdir()
    left = socket.socket(socket.AF_UNIX)
    left.bind(str(stale / "1.sock"))
    left.close()  # the file stays, as after a SIGKILL
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(live / "2.sock"))
        listening.listen()
        assert remove_stale_socket_folders(tmp_path) == [stale]
    assert not stale.exists() and live.is_dir() and other.is_dir()
