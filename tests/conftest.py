"""Shared fixtures: tiny real image folders, the shared real data sets, a temporary MLflow store."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get("ANOMALY_DATASETS", PROJECT_ROOT.parent / "shared" / "datasets"))


def pytest_configure(config: pytest.Config) -> None:
    """Tests train in-process, where the command line's filters (anomaly.quiet) are not set: the same deliberate-choice
    warnings are kept out of the test log, so what is left is worth reading."""
    from anomaly.quiet import DELIBERATE_WARNINGS

    for pattern in DELIBERATE_WARNINGS:
        config.addinivalue_line("filterwarnings", f"ignore:{pattern}")


def cli_command(*args: str) -> list[str]:
    """`anomaly ARGS` as this interpreter runs it in a child process."""
    return [sys.executable, "-m", "anomaly.cli", *args]


def run_cli_process(*args: str) -> subprocess.CompletedProcess:
    """Run `anomaly ARGS` in a child process from the project root; capture its text output."""
    return subprocess.run(cli_command(*args), capture_output=True, text=True, cwd=PROJECT_ROOT)


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run `anomaly ARGS` in this process, as its entry point does: (exit code, stdout, stderr)."""
    from anomaly.cli import main

    monkeypatch.setattr("sys.argv", ["anomaly", *args])
    capsys.readouterr()  # drop what the test printed before: only the command's output counts
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def png_pixels(png: bytes) -> np.ndarray:
    """A PNG's RGB pixels as signed integers, so two images can be subtracted."""
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def stripes(count: int, height: int, width: int, seed: int) -> np.ndarray:
    """Normal texture: horizontal stripes of random phase and period, with sensor-like noise."""
    rng = np.random.default_rng(seed)
    rows = np.arange(height)[:, None]
    images = []
    for _ in range(count):
        period, phase = rng.uniform(6, 10), rng.uniform(0, 2 * np.pi)
        image = 0.5 + 0.35 * np.sin(2 * np.pi * rows / period + phase) + rng.normal(0, 0.03, (height, width))
        images.append((np.clip(image, 0, 1) * 255).astype(np.uint8))
    return np.stack(images)


def write_texture_folder(root: Path, train: int = 24, test_good: int = 4, test_defect: int = 4) -> Path:
    """An MVTec-layout folder of PNG and JPEG files of mixed sizes, with one defect type and masks."""
    (root / "train" / "good").mkdir(parents=True)
    (root / "test" / "good").mkdir(parents=True)
    (root / "test" / "scratch").mkdir(parents=True)
    (root / "ground_truth" / "scratch").mkdir(parents=True)
    for i, image in enumerate(stripes(train, 40, 36, seed=0)):
        suffix = ".png" if i % 2 else ".jpg"
        Image.fromarray(image).save(root / "train" / "good" / f"{i:03d}{suffix}")
    for i, image in enumerate(stripes(test_good, 48, 48, seed=1)):
        Image.fromarray(image).convert("RGB").save(root / "test" / "good" / f"{i:03d}.png")
    for i, image in enumerate(stripes(test_defect, 40, 36, seed=2)):
        mask = np.zeros_like(image)
        mask[10:20, 8 + i : 26 + i] = 255
        image = np.where(mask > 0, 250, image).astype(np.uint8)
        Image.fromarray(image).save(root / "test" / "scratch" / f"{i:03d}.png")
        Image.fromarray(mask).save(root / "ground_truth" / "scratch" / f"{i:03d}_mask.png")
    return root


@pytest.fixture
def texture_folder(tmp_path: Path) -> Path:
    return write_texture_folder(tmp_path / "textures")


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The real data sets beside the project. CI always has them, so there a gap fails the run."""
    if not SHARED_DATASETS.is_dir():
        message = f"real data sets not found at {SHARED_DATASETS} (set ANOMALY_DATASETS)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return SHARED_DATASETS


def tiny_config(root: Path, architecture: str = "ae", **sections: dict) -> dict:
    """A config small enough to train in seconds on 2 CPU cores."""
    config = {
        "data": {"kind": "folder", "root": str(root), "image_size": [32, 32], "channels": 1, "batch_size": 8},
        "model": {"architecture": architecture, "depth": 3, "base_channels": 8, "latent_dim": 16},
        "train": {"max_epochs": 2, "early_stopping_patience": 0},
        "trainer": {"enable_progress_bar": False},
    }
    for section, values in sections.items():
        config[section] = {**config.get(section, {}), **values} if isinstance(values, dict) else values
    return config


class PublishedModel(NamedTuple):
    directory: Path  # the exported model directory
    data: Path  # the texture folder it was trained on


@pytest.fixture(scope="session")
def published_model(tmp_path_factory) -> PublishedModel:
    """One small AE trained on textures, evaluated and exported: the model the service tests serve."""
    import json

    from anomaly.export.publish import publish
    from tests.test_export import evaluated

    folder = write_texture_folder(
        tmp_path_factory.mktemp("served-data") / "textures", train=60, test_good=6, test_defect=6
    )
    root = tmp_path_factory.mktemp("served")
    evaluation = evaluated(folder, root, f"sqlite:///{root / 'mlflow.db'}", "ae")
    run_id = json.loads((evaluation / "run.json").read_text())["mlflow_run_id"]
    return PublishedModel(publish(evaluation, root / "model", [], run_id).directory, folder)


SHIPPED_TRAIN_IMAGES, SHIPPED_TEST_IMAGES = 64, 6  # 12 held-out normals at calibration_fraction 0.2


class Shipped(NamedTuple):
    model: Path  # the pipeline's exported model directory
    evaluation: Path  # the evaluated PyTorch detector the export was made from
    images: list[Path]  # the test images every way of asking scores: defects first, then normal parts


def kolektor_slice(source: Path, target: Path) -> Path:
    """The first training images and a few test images of each kind (with masks), in MVTec layout."""
    for kind, count in (
        ("train/good", SHIPPED_TRAIN_IMAGES),
        ("test/good", SHIPPED_TEST_IMAGES),
        ("test/defect", SHIPPED_TEST_IMAGES),
    ):
        (target / kind).mkdir(parents=True)
        for path in sorted((source / kind).glob("*.jpg"))[:count]:
            shutil.copyfile(path, target / kind / path.name)
    (target / "ground_truth" / "defect").mkdir(parents=True)
    for path in (target / "test" / "defect").iterdir():
        mask = f"{path.stem}_mask.png"
        shutil.copyfile(source / "ground_truth" / "defect" / mask, target / "ground_truth" / "defect" / mask)
    return target


@pytest.fixture(scope="session")
def shipped(shared_datasets, tmp_path_factory) -> Shipped:
    """The shipped folder default as the README's own-folder command runs it, on a slice of KolektorSDD at its
    production input size (640 x 256), one epoch. What the end-to-end tests serve."""
    root = tmp_path_factory.mktemp("shipped")
    folder = kolektor_slice(shared_datasets / "kolektorsdd", root / "kolektorsdd")
    result = run_cli_process(
        *("pipeline", "run", "--config", "pipelines/folder.yaml", "--output", str(root / "run")),
        *("--set", f"data.root={folder}", "train.max_epochs=1", "data.calibration_fraction=0.2"),
        f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    images = sorted((folder / "test" / "defect").iterdir()) + sorted((folder / "test" / "good").iterdir())
    return Shipped(root / "run" / "model", root / "run" / "evaluation", images)


@contextmanager
def page_in_chromium(url: str) -> Iterator[Any]:
    """A headless Chromium driver on the page at `url`/; without Chromium the test fails saying what to install."""
    from anomaly.errors import AnomalyError
    from benchmarks.page_screenshot import chromium_driver

    try:
        driver = chromium_driver()
    except AnomalyError as error:  # never skip silently
        pytest.fail(str(error))
    try:
        driver.get(f"{url}/")
        yield driver
    finally:
        driver.quit()
