"""`anomaly calibrate`: a new calibration for an exported model from a folder of normal images, weights untouched."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from PIL import Image

from anomaly.runtime.bundle import CALIBRATION_FILE, MODEL_FILE, OnnxDetector, sha256_file
from anomaly.runtime.resolve import resolve_model
from tests.conftest import run_cli, stripes

pytestmark = pytest.mark.slow  # trains the shared published model


def normals_folder(root: Path, count: int, seed: int, size: tuple[int, int] = (40, 36), colour: bool = False) -> Path:
    """`count` new normal images from the generator the published model was trained on."""
    root.mkdir(parents=True)
    for i, image in enumerate(stripes(count, *size, seed=seed)):
        Image.fromarray(image).convert("RGB" if colour else "L").save(root / f"{i:04d}.png")
    return root


@pytest.fixture(autouse=True)
def no_progress_bars(monkeypatch):
    """The CLI's stderr as a log file gets it without bars: its lines are what these tests read."""
    monkeypatch.setattr("anomaly.progress.ENABLED", False)


@pytest.fixture(scope="module")
def line_now(tmp_path_factory) -> Path:
    return normals_folder(tmp_path_factory.mktemp("normals") / "today", 120, seed=21)


def scored(directory: Path, images: list[Path]) -> list[dict]:
    detector = OnnxDetector(directory)
    outputs = detector.run(np.stack([detector.load_image(path) for path in images]))
    return [result.to_dict() for result in detector.results(outputs)]


def test_recalibration_changes_p_values_and_not_weights(published_model, line_now, tmp_path, monkeypatch, capsys):
    source = published_model.directory
    code, out, err = run_cli(
        monkeypatch,
        capsys,
        "calibrate",
        "--model",
        str(source),
        "--normals",
        str(line_now),
        "--output",
        str(tmp_path / "today"),
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["images"] == 120 and report["registered_version"] is None
    assert report["promise"]["calibration_normals"] == 120 and report["promise"]["warning"] is None
    assert err.startswith(f"recalibrated {tmp_path / 'today'} on 120 normal images")
    recalibrated = tmp_path / "today"
    assert sha256_file(recalibrated / MODEL_FILE) == sha256_file(source / MODEL_FILE)  # the weights are the same bytes
    before, after = (json.loads((folder / CALIBRATION_FILE).read_text()) for folder in (source, recalibrated))
    assert after["model_checksum"] == before["model_checksum"]
    assert after["recalibration"]["replaced_calibration_sha256"] == sha256_file(source / CALIBRATION_FILE)
    assert after["scoring"] == before["scoring"] and after["choices"] == before["choices"]
    assert (recalibrated / f"calibration-{sha256_file(source / CALIBRATION_FILE)[:12]}.json").read_text() == (
        source / CALIBRATION_FILE
    ).read_text()
    assert "## Recalibrated" in (recalibrated / "model_card.md").read_text()
    probe = sorted((published_model.data / "test" / "scratch").glob("*.png")) + sorted(
        (published_model.data / "test" / "good").glob("*.png")
    )
    old, new = scored(source, probe), scored(recalibrated, probe)
    assert [o["reconstruction_score"] for o in old] == [
        n["reconstruction_score"] for n in new
    ]  # same graph, same scores
    assert [o["p_combined"] for o in old] != [n["p_combined"] for n in new]  # another calibration, other p-values
    # A second recalibration, in place, still names the exported calibration: the chain stays bound to the graph.
    code, _, err = run_cli(monkeypatch, capsys, "calibrate", "--model", str(recalibrated), "--normals", str(line_now))
    assert code == 0, err
    again = json.loads((recalibrated / CALIBRATION_FILE).read_text())["recalibration"]
    assert again["exported_calibration_sha256"] == after["recalibration"]["exported_calibration_sha256"]


def test_the_checksum_binding_refuses_a_foreign_or_edited_calibration(
    published_model, line_now, tmp_path, monkeypatch, capsys
):
    copy = tmp_path / "copy"
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "calibrate",
        "--model",
        str(published_model.directory),
        "--normals",
        str(line_now),
        "--output",
        str(copy),
    )
    assert code == 0, err
    data = json.loads((copy / CALIBRATION_FILE).read_text())
    (copy / CALIBRATION_FILE).write_text(json.dumps({**data, "model_checksum": "f" * 64}))
    code, _, err = run_cli(monkeypatch, capsys, "score", "--model", str(copy), str(next(line_now.iterdir())))
    assert code == 2 and "belongs to model ffffffffffff, not to this model" in err
    forged = {**data, "recalibration": {**data["recalibration"], "exported_calibration_sha256": "0" * 64}}
    (copy / CALIBRATION_FILE).write_text(json.dumps(forged))
    code, _, err = run_cli(monkeypatch, capsys, "score", "--model", str(copy), str(next(line_now.iterdir())))
    assert (
        code == 2 and "is neither the calibration this model was exported with nor one `anomaly calibrate` made" in err
    )


def test_refusals_are_one_line_each(published_model, line_now, tmp_path, monkeypatch, capsys):
    model = str(published_model.directory)
    cases = {
        "few": (
            normals_folder(tmp_path / "few", 20, seed=3),
            "20 normal images cannot resolve the 1.00% target: give at least 99",
        ),
        "colour": (
            normals_folder(tmp_path / "colour", 120, seed=3, colour=True),
            "is a colour image and the model reads grayscale ones",
        ),
        "small": (
            normals_folder(tmp_path / "small", 120, seed=3, size=(20, 18)),
            "is 20 x 18 pixels, smaller than the model's input 32 x 32",
        ),
        "empty": (tmp_path / "empty", "no images in"),
        "missing": (tmp_path / "absent", "normal images folder not found"),
    }
    (tmp_path / "empty").mkdir()
    noise = tmp_path / "noise"
    noise.mkdir()
    for i in range(120):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (32, 32), dtype=np.uint8)).save(
            noise / f"{i:03d}.png"
        )
    cases["not normal"] = (noise, "of 120 images in")
    # The published model's 12 held-out normals cannot resolve 1% (noise gets p of about 2%): the folder of plain noise
    # is judged by a calibration on 120 normals, which can.
    resolving = tmp_path / "resolving"
    assert (
        run_cli(
            monkeypatch, capsys, "calibrate", "--model", model, "--normals", str(line_now), "--output", str(resolving)
        )[0]
        == 0
    )
    for name, (folder, message) in cases.items():
        judge = str(resolving) if name == "not normal" else model
        code, out, err = run_cli(
            monkeypatch,
            capsys,
            "calibrate",
            "--model",
            judge,
            "--normals",
            str(folder),
            "--output",
            str(tmp_path / f"out-{name}"),
        )
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and out == "", (name, err)
        assert not (tmp_path / f"out-{name}").exists()
    assert "flagged by the current calibration at 1.00%: they do not look like normal parts" in err
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "calibrate",
        "--model",
        str(resolving),
        "--normals",
        str(noise),
        "--output",
        str(tmp_path / "forced"),
        "--force",
    )
    assert code == 0, err


def test_a_registered_model_gets_a_new_version_and_its_alias(published_model, line_now, tmp_path, monkeypatch, capsys):
    from anomaly.export.registry import register_version

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("line")  # this store's own: an earlier test may have left another store's experiment active
    with np.load(published_model.directory.parent / "evaluation" / "sample_images.npz") as stored:
        example = stored["images"]
    version = register_version(published_model.directory, "line", None, example)
    mlflow.MlflowClient().set_registered_model_alias("line", "champion", version)
    code, out, err = run_cli(
        monkeypatch, capsys, "calibrate", "--model", "models:/line@champion", "--normals", str(line_now)
    )
    assert code == 0, err
    assert json.loads(out)["registered_version"] == "2" and json.loads(out)["model"] == "models:/line/2"
    champion = resolve_model("models:/line@champion")
    assert champion.version == "2"
    detector = OnnxDetector(champion.directory)
    assert detector.calibration.recalibration["images"] == 120
    assert OnnxDetector(resolve_model("models:/line/1").directory).calibration.recalibration is None
