"""Scoring head: maps, reductions, latent distances, the detector file and its checksum."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from anomaly.config import ReconstructionSignal, build_config
from anomaly.errors import AnomalyError
from anomaly.scoring.detector import AnomalyDetector, load_detector, save_detector, weights_checksum
from anomaly.scoring.latent import (
    MahalanobisDistance,
    PatchNearestNeighbourDistance,
    PositionBankDistance,
    greedy_k_centres,
)
from anomaly.scoring.line_runs import LineRunMaximum, line_kernels
from anomaly.scoring.maps import AnomalyMap, GaussianBlur, MapReduction


def test_mahalanobis_distance_on_a_known_gaussian():
    rng = np.random.default_rng(0)
    covariance = np.array([[4.0, 1.2, 0.0], [1.2, 1.0, 0.3], [0.0, 0.3, 0.5]])
    mean = np.array([1.0, -2.0, 0.5])
    codes = rng.multivariate_normal(mean, covariance, size=20_000)
    distance = MahalanobisDistance(3).fit(codes)
    probes = rng.multivariate_normal(mean, covariance, size=200)
    exact = np.sqrt(np.einsum("ij,jk,ik->i", probes - mean, np.linalg.inv(covariance), probes - mean))
    ours = distance(torch.from_numpy(probes).float()).numpy()
    assert np.allclose(ours, exact, rtol=0.03, atol=0.02)
    assert distance(torch.from_numpy(mean[None]).float()).item() == pytest.approx(0.0, abs=0.05)


def test_block_mahalanobis_adds_the_squared_distances_of_its_halves():
    rng = np.random.default_rng(1)
    first = rng.multivariate_normal([0.0, 1.0], [[2.0, 0.8], [0.8, 1.0]], size=20_000)
    second = 5 * first[:, ::-1] + rng.normal(size=first.shape)  # strongly tied to the first half
    whole = MahalanobisDistance(4, blocks=2).fit(np.hstack((first, second)))
    halves = [MahalanobisDistance(2).fit(part) for part in (first, second)]
    probes = rng.normal(size=(100, 4)) * 3
    expected = np.hypot(
        *(half(torch.from_numpy(probes[:, i : i + 2]).float()).numpy() for half, i in zip(halves, (0, 2)))
    )
    assert np.allclose(whole(torch.from_numpy(probes).float()).numpy(), expected, rtol=1e-4)
    with pytest.raises(ValueError, match="does not split into 2 equal blocks"):
        MahalanobisDistance(5, blocks=2)


def test_patch_knn_marks_the_one_unseen_patch_and_scores_its_neighbourhood():
    training = np.zeros((2, 3, 4, 5), dtype=np.float32)
    training[:, 0] = np.arange(20, dtype=np.float32).reshape(4, 5) / 10  # every position a different vector
    distance = PatchNearestNeighbourDistance(3, k=1, bank_size=1000).fit(training)
    assert distance.bank.shape == (40, 3)
    probe = torch.from_numpy(training[:1]).clone()
    probe[0, 1, 3, 4] = 6.0  # one corner position moves 6 away from every training vector's plane
    distance_map = distance.distance_map(probe)[0, 0]
    expected = torch.zeros(4, 5)
    expected[3, 4] = 6.0
    assert torch.allclose(distance_map, expected, atol=1e-3)
    # 3x3 mean without padding: the corner's window holds 4 positions, one of them the moved one
    assert distance(probe).item() == pytest.approx(6.0 / 4, abs=1e-3)


def test_position_normalisation_stops_a_varying_place_from_outranking_a_defect():
    """Normal features vary strongly at one place (glare at an edge) and little elsewhere; a defect is a
    moderate shift at another place. Raw patch kNN ranks normals with glare among the defects;
    standardised per position, the defects stand out."""
    rng = np.random.default_rng(0)

    def normals(count: int) -> np.ndarray:
        features = rng.normal(0, 0.1, size=(count, 4, 8, 8))
        features[:, :, 0, :2] += rng.normal(0, 1.5, size=(count, 4, 2))
        return features.astype(np.float32)

    training = normals(80)
    probes = normals(40)
    probes[20:, :, 5, 5] += 0.8
    labels = np.repeat([0, 1], 20)
    plain = PatchNearestNeighbourDistance(4, k=1, bank_size=3000).fit(training)
    normalised = PatchNearestNeighbourDistance(4, k=1, bank_size=3000, grid=(8, 8)).fit(training)
    # leave-own-image-out: a training image's patches never find themselves in the bank (about half of
    # them are in it), so the statistics describe unseen normal images
    with_own_patches = plain.smoothed_map(torch.from_numpy(training)).mean(dim=0)[0]
    assert float(normalised.position_mean[0, 0, 3:, 3:].mean()) > 1.5 * float(with_own_patches[3:, 3:].mean())
    assert normalised.position_scale[0, 0, 0, 0] > 3 * normalised.position_scale[0, 0, 5, 5]
    features = torch.from_numpy(probes)
    assert roc_auc_score(labels, plain(features).numpy()) < 0.8
    assert roc_auc_score(labels, normalised(features).numpy()) > 0.95


@pytest.mark.parametrize("k", [1, 3])
def test_patch_knn_chunks_agree_with_the_full_distance_matrix(k: int):
    rng = np.random.default_rng(2)
    distance = PatchNearestNeighbourDistance(4, k=k, bank_size=100).fit(rng.normal(size=(5, 4, 6, 6)))
    probe = torch.from_numpy(rng.normal(size=(2, 4, 6, 6))).float()
    whole = distance.distance_map(probe)
    distance.CHUNK = 7  # 100 bank vectors in 15 chunks, each with its own nearest k
    assert torch.allclose(distance.distance_map(probe), whole, atol=1e-4)
    distance.CHUNK_ELEMENTS = 2 * 36
    assert distance.chunk_size(6 * 6) == 2  # the grid, not CHUNK, now bounds the chunks
    assert torch.allclose(distance.distance_map(probe), whole, atol=1e-4)
    queries = probe.permute(0, 2, 3, 1).reshape(-1, 4)
    brute = (
        torch.cdist(queries - distance.bank_centre, distance.bank).topk(k, dim=1, largest=False).values.mean(dim=1)
    )  # the bank is stored centred
    assert torch.allclose(whole.permute(0, 2, 3, 1).reshape(-1), brute, atol=1e-4)


def test_line_runs_prefer_a_long_faint_line_to_a_single_bright_spot():
    spot = torch.zeros(1, 1, 21, 21)
    spot[0, 0, 10, 10] = 3.0
    lines = torch.zeros(3, 1, 21, 21)
    lines[0, 0, 10, :] = 1.0  # horizontal
    lines[1, 0, :, 7] = 1.0  # vertical
    lines[2, 0] = torch.eye(21)  # diagonal
    largest, runs = LineRunMaximum(1), LineRunMaximum(9)
    assert torch.equal(largest(lines), torch.ones(3)) and largest(spot).item() == 3.0
    assert torch.allclose(runs(lines), torch.ones(3))  # a run lies along each line
    assert runs(spot).item() == pytest.approx(3.0 / 9)  # the spot is one position of nine
    kernels = line_kernels(9)
    assert torch.allclose(kernels.sum(dim=(1, 2, 3)), torch.ones(8))
    assert torch.equal((kernels > 0).sum(dim=(1, 2, 3)), torch.full((8,), 9))
    assert torch.equal(kernels, kernels.flip(2, 3))  # symmetric about the centre
    with pytest.raises(ValueError, match="odd"):
        LineRunMaximum(4)


def test_a_capped_run_needs_a_raised_line_not_one_bright_spot():
    bright_spot = torch.zeros(1, 1, 21, 21)
    bright_spot[0, 0, 10, 10] = 30.0  # a rare normal edge: far above anything else
    faint_line = torch.zeros(1, 1, 21, 21)
    faint_line[0, 0, 4, 2:19] = 2.0  # a crack: 17 positions, each raised a little
    uncapped, capped = LineRunMaximum(9), LineRunMaximum(9, cap=3.0)
    assert uncapped(bright_spot).item() > uncapped(faint_line).item()  # without a cap the spot wins
    assert capped(bright_spot).item() == pytest.approx((3.0 + math.log(28.0)) / 9)  # the excess counts as its logarithm
    assert capped(faint_line).item() == pytest.approx(2.0)  # below the cap: unchanged
    assert capped(faint_line) < capped(faint_line * 2) < capped(faint_line * 4)  # soft: stronger still scores higher
    assert capped(faint_line * 2).item() == pytest.approx(3.0 + math.log(2.0))
    with pytest.raises(ValueError, match="cap runs longer than 1 only"):
        LineRunMaximum(1, cap=3.0)


def brute_force_position_distances(distance: PositionBankDistance, probe: np.ndarray) -> np.ndarray:
    """(B, h, w) mean distance to the k nearest stored bank vectors within the radius, in float64 from the bank as
    stored (float16, centred per place)."""
    height, width = probe.shape[2:]
    stored = (distance.bank.double() + distance.bank_centre.double()[:, :, None]).numpy()  # (h * w, C, per_position)
    stored = stored.reshape(height, width, *stored.shape[1:])
    r, expected = distance.radius, np.zeros((len(probe), height, width))
    for i in range(height):
        for j in range(width):
            candidates = (
                stored[max(i - r, 0) : i + r + 1, max(j - r, 0) : j + r + 1]
                .transpose(0, 1, 3, 2)
                .reshape(-1, probe.shape[1])
            )
            gaps = np.linalg.norm(probe[:, None, :, i, j].astype(np.float64) - candidates[None], axis=2)
            expected[:, i, j] = np.sort(gaps, axis=1)[:, : distance.k].mean(axis=1)
    return expected


@pytest.mark.parametrize("k", [1, 3])  # 1 searches by a minimum, more by top-k
def test_position_bank_is_the_k_nearest_within_the_radius(k: int):
    rng = np.random.default_rng(5)
    training = rng.normal(size=(6, 3, 5, 7)).astype(np.float32)
    distance = PositionBankDistance(3, k=k, per_position=10, grid=(5, 7), radius=1).fit(training)
    assert distance.bank.shape == (35, 3, 6)  # every training image's feature at each of the 35 positions
    assert distance.bank.dtype == torch.float16
    assert np.allclose(
        distance.bank_centre.numpy(), training.mean(axis=0).reshape(3, 35).T, atol=1e-6
    )  # centred per place
    probe = rng.normal(size=(2, 3, 5, 7)).astype(np.float32)
    expected = brute_force_position_distances(distance, probe)
    assert np.allclose(distance.distance_map(torch.from_numpy(probe))[:, 0].numpy(), expected, atol=1e-4)
    # a training image finds itself at distance 0, so its own features are left out of its position statistics
    alone = PositionBankDistance(3, k=1, per_position=6, grid=(5, 7), radius=0).fit(training)
    assert float(alone.distance_map(torch.from_numpy(training[:1])).max()) < 1e-3
    assert float(alone.position_mean.min()) > 0.1


def near_duplicate_features(images: int, seed: int) -> np.ndarray:
    """Feature maps of photographs of one part from one place: large features that differ between places (and
    from 0) by far more than between images, which differ by sensor noise (BSData's spindles are such a set)."""
    rng = np.random.default_rng(0)
    part = rng.normal(5.0, 3.0, size=(1, 64, 6, 6))
    return (part + np.random.default_rng(seed).normal(0, 0.003, size=(images, 64, 6, 6))).astype(np.float32)


def test_position_bank_distances_stay_exact_between_near_duplicate_images():
    """The search expands |q - b|^2 in float32; centred on one global mean, these distances came out a fifth off
    (and ONNX Runtime rounded them differently from PyTorch: a BSData export failed map parity). Centred per place,
    they match float64."""
    distance = PositionBankDistance(64, k=1, per_position=16, grid=(6, 6), radius=1).fit(
        near_duplicate_features(40, seed=1)
    )
    probe = near_duplicate_features(4, seed=2)
    expected = brute_force_position_distances(distance, probe)
    found = distance.distance_map(torch.from_numpy(probe))[:, 0].double().numpy()
    assert np.abs(found - expected).max() < 1e-4 * expected.max()


@pytest.mark.parametrize("bank", ["position", "random"])
def test_banks_fitted_block_by_block_from_a_memory_map_equal_the_in_memory_fit(bank, tmp_path: Path, monkeypatch):
    """Fitting reads the training features a block at a time (anomaly.scoring.fit writes them to a memory map), so a
    large training set never sits in memory at once; the blocks must not change what is fitted."""
    training = np.random.default_rng(9).normal(size=(12, 3, 5, 7)).astype(np.float32)
    mapped = np.lib.format.open_memmap(tmp_path / "features.npy", mode="w+", dtype=np.float32, shape=training.shape)
    mapped[:] = training

    def fitted(features: np.ndarray) -> torch.nn.Module:
        if bank == "position":
            return PositionBankDistance(3, k=1, per_position=6, grid=(5, 7), radius=1).fit(features)
        return PatchNearestNeighbourDistance(3, k=1, bank_size=200, grid=(5, 7)).fit(features)

    whole = fitted(training)
    monkeypatch.setattr(
        PositionBankDistance, "FIT_VALUES", 12 * 3 * 7
    )  # blocks of 7 positions, and of 2 images for the centre
    streamed = fitted(mapped)
    for name, tensor in whole.state_dict().items():
        assert torch.allclose(tensor.float(), streamed.state_dict()[name].float(), atol=1e-6), name


def test_greedy_k_centres_cover_the_spread_not_the_crowd():
    points = torch.tensor([0.0, 0.1, 0.2, 0.3, 5.0, 10.0]).reshape(1, 6, 1)  # a crowd near 0, two rare values
    assert greedy_k_centres(points, 3, first=0).tolist() == [[0, 5, 4]]
    assert greedy_k_centres(points.expand(2, 6, 1).contiguous(), 2, first=5).tolist() == [[5, 0], [5, 0]]


def test_position_bank_finds_a_normal_pattern_in_the_wrong_place():
    """Normal parts show texture A on their left half and texture B on their right; an anomaly shows A on the
    right. Every patch of it exists somewhere in normal images, so a bank sampled from anywhere calls it normal;
    a bank that compares each place with the same place does not."""
    rng = np.random.default_rng(7)
    texture_a, texture_b = np.array([1.0, 0.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0, 0.0])

    def parts(count: int) -> np.ndarray:
        features = rng.normal(0, 0.1, size=(count, 4, 8, 8))
        features[:, :, :, :4] += texture_a[None, :, None, None]
        features[:, :, :, 4:] += texture_b[None, :, None, None]
        return features.astype(np.float32)

    training, probes = parts(60), parts(40)
    probes[20:, :, 2:5, 5:8] += (texture_a - texture_b)[None, :, None, None]
    labels = np.repeat([0, 1], 20)
    anywhere = PatchNearestNeighbourDistance(4, k=1, bank_size=3000, grid=(8, 8)).fit(training)
    same_place = PositionBankDistance(4, k=1, per_position=30, grid=(8, 8), radius=1).fit(training)
    features = torch.from_numpy(probes)
    assert roc_auc_score(labels, anywhere(features).numpy()) < 0.75
    assert roc_auc_score(labels, same_place(features).numpy()) > 0.95


@pytest.mark.parametrize("line_length", [1, 12])  # pixels: 1 and 3 positions at stride 4
def test_patch_heat_map_finds_the_defect_and_leaves_the_reconstruction_score_alone(line_length):
    config = build_config(
        {
            "data": {"kind": "folder", "root": "x", "image_size": 32},
            "model": {"depth": 2, "base_channels": 4, "latent_dim": 6},
            "scoring": {
                "latent": {
                    "kind": "patches",
                    "level": 2,
                    "aligned": False,
                    "bank_size": 10_000,
                    "line_length": line_length,
                }
            },
        }
    )
    torch.manual_seed(0)
    detector = AnomalyDetector(config).eval()
    normals = torch.rand(20, 1, 32, 32) * 0.1 + 0.45  # a flat, slightly noisy surface
    with torch.no_grad():
        detector.latent_distance.fit(detector.measured_features(normals).numpy())
        probe = normals[:2].clone()
        probe[:, :, 20:26, 4:10] = 1.0  # a bright blob, lower left
        served = detector(probe)
        output = detector.model(probe)
        error_map = detector.anomaly_map(probe, output.reconstruction, output.target)
    assert served.anomaly_map.shape == (2, 1, 32, 32)
    assert torch.equal(served.reconstruction_score, detector.reduce(error_map))  # still the reconstruction error's
    assert not torch.equal(served.anomaly_map, error_map)
    blob, elsewhere = served.anomaly_map[:, 0, 20:26, 4:10], served.anomaly_map[:, 0, :12, 16:]
    assert blob.mean() > 3 * elsewhere.mean()  # the images are standardised first, which dims the blob a little
    peaks = served.anomaly_map.flatten(1).argmax(dim=1)
    assert all(16 <= row < 30 and col < 14 for row, col in zip((peaks // 32).tolist(), (peaks % 32).tolist()))
    assert detector.latent_distance.image_distance.length == (1 if line_length == 1 else 3)
    if line_length == 1:  # the image's distance is the patch map's largest position; upsampling adds no peaks
        assert torch.all(served.anomaly_map.amax(dim=(1, 2, 3)) <= served.latent_distance + 1e-6)


def test_map_reductions():
    maps = torch.zeros(1, 1, 10, 10)
    maps[0, 0, 0, :5] = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    size = (10, 10)
    assert MapReduction(ReconstructionSignal(top_fraction=1.0), size)(maps).item() == pytest.approx(15 / 100)
    assert MapReduction(ReconstructionSignal(top_fraction=0.01), size)(maps).item() == 5.0
    assert MapReduction(ReconstructionSignal(top_fraction=0.03), size)(maps).item() == pytest.approx(4.0)


def test_gaussian_blur_keeps_constants_and_mass():
    blur = GaussianBlur(2.0)
    assert torch.allclose(blur(torch.full((1, 1, 20, 20), 0.7)), torch.full((1, 1, 20, 20), 0.7))
    spike = torch.zeros(1, 1, 41, 41)
    spike[0, 0, 20, 20] = 1.0
    blurred = blur(spike)
    assert blurred.sum().item() == pytest.approx(1.0, rel=1e-4) and blurred.max() < 0.05
    assert torch.equal(GaussianBlur(0.0)(spike), spike)


@pytest.mark.parametrize("kind", ["squared", "ssim"])
def test_anomaly_map_is_zero_for_perfect_reconstruction_and_marks_differences(kind):
    anomaly_map = AnomalyMap(ReconstructionSignal(map=kind, smoothing_sigma=1.0))
    images = torch.rand(2, 3, 32, 32)
    assert anomaly_map(images, images).abs().max() < 1e-5
    damaged = images.clone()
    damaged[:, :, 8:16, 8:16] = 0.0
    result = anomaly_map(images, damaged)
    assert result.shape == (2, 1, 32, 32)
    assert result[:, :, 8:16, 8:16].mean() > 10 * result[:, :, 24:, 24:].mean()


def fitted_tiny_detector(scoring: dict, fitted_shape: tuple[int, ...]) -> AnomalyDetector:
    """An untrained 16 x 16 detector whose latent distance is fitted on random features of `fitted_shape`."""
    config = build_config(
        {
            "data": {"kind": "folder", "root": "x", "image_size": 16},
            "model": {"depth": 2, "base_channels": 4, "latent_dim": 6},
            "scoring": scoring,
        }
    )
    detector = AnomalyDetector(config).eval()
    detector.latent_distance.fit(np.random.default_rng(0).normal(size=fitted_shape))
    return detector


@pytest.mark.parametrize(
    ("scoring", "fitted_shape"),
    [
        ({}, (30, 6)),
        ({"latent": {"kind": "patches", "aligned": False, "bank_size": 50}}, (3, 8, 4, 4)),
        ({"latent": {"kind": "patches"}}, (3, 8, 4, 4)),  # all 3 images' features per place
    ],
)
def test_detector_file_round_trip_and_checksum(scoring, fitted_shape, tmp_path: Path):
    detector = fitted_tiny_detector(scoring, fitted_shape)
    save_detector(detector, tmp_path / "detector.pt")
    loaded = load_detector(tmp_path / "detector.pt")
    assert weights_checksum(loaded) == weights_checksum(detector)
    images = torch.rand(3, 1, 16, 16)
    assert torch.equal(loaded(images).latent_distance, detector(images).latent_distance)
    with torch.no_grad():
        next(loaded.model.parameters()).add_(1e-3)
    assert weights_checksum(loaded) != weights_checksum(detector)
    (tmp_path / "broken.pt").write_bytes(b"not a torch file")
    with pytest.raises(AnomalyError, match="cannot read detector file"):
        load_detector(tmp_path / "broken.pt")
    saved = torch.load(tmp_path / "detector.pt", weights_only=True)
    newest_buffer = [key for key in saved["state_dict"] if key.startswith("latent_distance.")][-1]
    del saved["state_dict"][
        newest_buffer
    ]  # as in a file from before that buffer existed (the patches' position statistics)
    torch.save(saved, tmp_path / "older.pt")
    with pytest.raises(AnomalyError, match="written by another version of anomaly; re-run `anomaly evaluate`"):
        load_detector(tmp_path / "older.pt")


def test_detector_file_with_a_float32_position_bank_still_scores(tmp_path: Path):
    """Detector files written before the position bank was stored in float16 hold it in float32."""
    detector = fitted_tiny_detector({"latent": {"kind": "patches"}}, (3, 8, 4, 4))
    save_detector(detector, tmp_path / "detector.pt")
    saved = torch.load(tmp_path / "detector.pt", weights_only=True)
    saved["state_dict"]["latent_distance.bank"] = saved["state_dict"]["latent_distance.bank"].float()
    torch.save(saved, tmp_path / "float32.pt")
    loaded = load_detector(tmp_path / "float32.pt")
    assert loaded.latent_distance.bank.dtype == torch.float32
    images = torch.rand(3, 1, 16, 16)
    assert torch.equal(loaded(images).latent_distance, detector(images).latent_distance)


@pytest.mark.parametrize("bank", ["position", "pooled"])
def test_patch_bank_fitted_in_chunks_equals_one_pass(bank):
    """Fitting split across workers (chunks of training images, merged) gives the one-pass fit: the same bank,
    position statistics, distances and p-values, even on near-duplicate images where any approximation would show."""
    from anomaly.calibration.distribution import TailFittedDistribution

    training = near_duplicate_features(48, seed=3)
    held_out, probes = (
        torch.from_numpy(near_duplicate_features(30, seed=4)),
        torch.from_numpy(near_duplicate_features(8, seed=5)),
    )

    def distance() -> PatchNearestNeighbourDistance:
        if bank == "position":
            return PositionBankDistance(64, k=1, per_position=12, grid=(6, 6), radius=1)
        return PatchNearestNeighbourDistance(64, k=1, bank_size=500, grid=(6, 6))

    whole = distance().fit(training, seed=2)
    for sizes in ([12, 8, 12, 12, 4], [30, 18]):  # chunks smaller and larger than the 12 vectors kept per place
        chunked = distance().fit_chunks(np.split(training, np.cumsum(sizes)[:-1]), seed=2)
        for name, tensor in whole.state_dict().items():
            assert torch.equal(tensor, chunked.state_dict()[name]), name
        with torch.no_grad():
            pvalues = [
                TailFittedDistribution.fit(model(held_out).numpy()).pvalue(model(probes).numpy())
                for model in (whole, chunked)
            ]
        assert np.array_equal(*pvalues)


def test_cross_fitted_distances_score_training_images_as_new_parts():
    """Eight parts of five near-identical photographs each: a photograph's out-of-fold distance (its part's run
    left out of the bank) matches a photograph of a part never seen, not a new photograph of a part in the bank."""
    from types import SimpleNamespace

    from anomaly.scoring.fit import cross_fitted_distances

    rng = np.random.default_rng(0)

    def photographs(parts: int) -> np.ndarray:
        looks = rng.normal(size=(parts, 1, 4, 3, 3))
        return (looks + 0.05 * rng.normal(size=(parts, 5, 4, 3, 3))).reshape(parts * 5, 4, 3, 3).astype(np.float32)

    training = photographs(8)
    distance = PatchNearestNeighbourDistance(channels=4, k=1, bank_size=10_000).fit(training)
    out_of_fold = cross_fitted_distances(SimpleNamespace(latent_distance=distance), training, folds=8, seed=0)
    with torch.no_grad():
        new_part = distance(torch.from_numpy(photographs(4))).numpy()
        seen_part = distance(
            torch.from_numpy(training + 0.05 * rng.normal(size=training.shape).astype(np.float32))
        ).numpy()
    assert out_of_fold.shape == (40,)
    assert np.median(out_of_fold) > 3 * np.median(seen_part)
    assert 0.6 < np.median(out_of_fold) / np.median(new_part) < 1.6
