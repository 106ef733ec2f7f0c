"""`anomaly calibrate`: a new calibration for an exported model from a folder of normal images, without retraining.

What a line does after a lighting change or a new batch of raw material. The folder is scored with the model's own
ONNX graph (ONNX Runtime, no torch); the distributions are refitted on those scores with the exported calibration's
choices (combination, patch level, line runs) kept; the graph and its weights are not touched. The new
calibration.json carries the weights' checksum and the sha256 of the calibration it replaces, which is how the model
directory's loader tells a recalibration from a stray file (anomaly.runtime.bundle).
"""

from __future__ import annotations

import datetime
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from anomaly.calibration.artifact import Calibration
from anomaly.calibration.distribution import MIN_FIT_SAMPLES
from anomaly.calibration.fit import fit_calibration
from anomaly.calibration.promise import Promise, normals_to_resolve, promise_lines
from anomaly.calibration.scored import ScoredSet
from anomaly.errors import AnomalyError
from anomaly.imageio import finish_decoding, image_files, open_image
from anomaly.progress import progress
from anomaly.runtime.bundle import (
    CARD_FILE,
    META_CALIBRATION_SHA256,
    OnnxDetector,
    find_file,
    sha256_file,
)

# More than this share of the folder flagged by the current calibration: these are not the normal parts it stands for.
MAX_FLAGGED_SHARE = 0.5
SCORING_BATCH = 16
ALPHA_BANDS = {"LA": 1, "RGBA": 3, "PA": 3}


@dataclass(frozen=True)
class Recalibrated:
    location: str  # the model directory written, or models:/NAME/VERSION registered
    images: int
    flagged_by_previous: int  # of the folder's images, flagged by the calibration it replaces at its target
    previous: Promise
    promise: Promise

    def to_dict(self) -> dict[str, object]:
        return {
            "model": self.location,
            "images": self.images,
            "flagged_by_previous": self.flagged_by_previous,
            "previous_promise": self.previous.to_dict(),
            "promise": self.promise.to_dict(),
        }


def normal_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise AnomalyError(f"normal images folder not found: {folder}")
    files = image_files(folder)
    if not files:
        raise AnomalyError(f"no images in {folder}: give a folder of normal images (png, jpg, tif, bmp, webp, pgm)")
    return files


def required_images(target_fpr: float) -> int:
    """The fewest normals that resolve `target_fpr` and fit a distribution."""
    return max(MIN_FIT_SAMPLES, normals_to_resolve(target_fpr))


def image_bands(image: Image.Image) -> int:
    """1 for a grayscale image, 3 for colour (alpha not counted; palettes count as colour)."""
    return ALPHA_BANDS.get(image.mode, 3 if image.mode in ("RGB", "P", "CMYK", "YCbCr") else 1)


def decode_normal(path: Path, detector: OnnxDetector) -> np.ndarray:
    """The image at the model's input size; refused when it cannot come from the model's camera: another number of
    channels, or smaller than the model's input (it would be enlarged)."""
    image = open_image(path, str(path))
    bands = image_bands(image)
    if bands != detector.channels:
        kinds = {1: "grayscale", 3: "colour"}
        raise AnomalyError(
            f"{path} is a {kinds[bands]} image and the model reads {kinds[detector.channels]} ones: calibrate with "
            "images from the camera the model was trained for"
        )
    width, height = image.size
    if height < detector.image_size[0] or width < detector.image_size[1]:
        raise AnomalyError(
            f"{path} is {height} x {width} pixels, smaller than the model's input {detector.image_size[0]} x "
            f"{detector.image_size[1]}: calibrate with full-size images from the model's camera"
        )
    return finish_decoding(image, str(path), detector.channels, detector.image_size)


def score_normals(detector: OnnxDetector, files: list[Path]) -> ScoredSet:
    outputs = []
    batches = [files[start : start + SCORING_BATCH] for start in range(0, len(files), SCORING_BATCH)]
    for batch in progress(batches, "scoring the normal images"):
        outputs.append(detector.run(np.stack([decode_normal(path, detector) for path in batch])))
    return ScoredSet.of_normal_outputs({name: np.concatenate([part[name] for part in outputs]) for name in outputs[0]})


def recalibrate_directory(model_dir: Path, normals: Path, output: Path, force: bool = False) -> Recalibrated:
    """Write `output` (which may be `model_dir` itself): the model directory with a calibration refitted on the images
    in `normals`. The replaced calibration stays beside it as calibration-<sha256 prefix>.json."""
    detector = OnnxDetector(model_dir)
    previous = detector.calibration
    files = normal_files(normals)
    needed = required_images(previous.target_fpr)
    if len(files) < needed:
        raise AnomalyError(
            f"{len(files)} normal images cannot resolve the {previous.target_fpr:.2%} target: give at least {needed}"
        )
    scored = score_normals(detector, files)
    flagged = int(previous.is_anomaly(previous.pvalues(scored.reconstruction_scores, scored.latent_distances)).sum())
    if flagged > MAX_FLAGGED_SHARE * len(files) and not force:
        raise AnomalyError(
            f"{flagged} of {len(files)} images in {normals} are flagged by the current calibration at "
            f"{previous.target_fpr:.2%}: they do not look like normal parts; check the folder, or pass --force if the "
            "line really changed this much"
        )
    calibration_path = detector.calibration_path
    replaced = sha256_file(calibration_path)
    fitted = fit_calibration(
        held_out=scored,
        scoring=previous.scoring,
        preprocessing=previous.preprocessing,
        model_checksum=previous.model_checksum,
        seed=0,
        choices=previous.choices,
    )
    exported = (previous.recalibration or {}).get("exported_calibration_sha256") or detector.metadata[
        META_CALIBRATION_SHA256
    ]
    record = {
        "normals": str(normals),
        "images": len(files),
        "flagged_by_previous": flagged,
        "replaced_calibration_sha256": replaced,
        "exported_calibration_sha256": exported,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    calibration = replace(
        fitted,
        validation_auroc=previous.validation_auroc,
        holdout=f"a folder of normal images given to anomaly calibrate ({normals})",
        recalibration=record,
    )
    if output.resolve() != model_dir.resolve():
        if output.exists():
            raise AnomalyError(
                f"output {output} exists: give a new folder, or leave --output out to recalibrate in place"
            )
        shutil.copytree(model_dir, output)
    target = output / calibration_path.relative_to(model_dir)
    shutil.copyfile(target, target.with_name(f"calibration-{replaced[:12]}.json"))
    calibration.save(target)
    note_in_card(output, calibration, record)
    OnnxDetector(output)  # the directory loads as it will be served
    return Recalibrated(str(output), len(files), flagged, previous.promise(), calibration.promise())


def note_in_card(directory: Path, calibration: Calibration, record: dict[str, Any]) -> None:
    """Append the recalibration (`record`) and its promise to the model card, so the card never describes a
    calibration that is not the one served."""
    card = find_file(directory, CARD_FILE)
    if card is None:
        return
    lines = [
        "",
        f"## Recalibrated {record['date']}",
        "",
        f"- from {record['images']} normal images in {record['normals']}, {record['flagged_by_previous']} of them "
        f"flagged by the calibration replaced (sha256 {record['replaced_calibration_sha256'][:12]}); weights unchanged",
        *promise_lines(calibration.promise(), record["images"], 0),
        "",
    ]
    card.write_text(card.read_text() + "\n".join(lines))


def recalibrate(
    model: str, normals: Path, output: Path | None = None, force: bool = False
) -> tuple[Recalibrated, str | None]:
    """Recalibrate a model directory (in place, or into `output`) or a registered model (a new version of it, the alias
    it was named by moved there); returns what was done and the new registry version (None for a directory)."""
    from anomaly.runtime.resolve import REGISTRY_PREFIX, parse_registry_reference, resolve_model

    resolved = resolve_model(model)
    if not model.startswith(REGISTRY_PREFIX):
        return recalibrate_directory(resolved.directory, normals, output or resolved.directory, force), None
    if output is not None:
        raise AnomalyError("a registered model is recalibrated into a new registry version: leave --output out")
    with tempfile.TemporaryDirectory(prefix="anomaly-recalibrate-") as scratch:
        done = recalibrate_directory(resolved.directory, normals, Path(scratch) / "model", force)
        alias = parse_registry_reference(model)[2]
        if resolved.version is None:
            raise AnomalyError(f"{model} resolved to no registry version")
        version = register_recalibrated(Path(done.location), resolved.name, resolved.version, alias)
    return replace(done, location=f"{REGISTRY_PREFIX}{resolved.name}/{version}"), version


def register_recalibrated(directory: Path, name: str, source_version: str, alias: str | None) -> str:
    """Log the recalibrated directory in a run of the source version's experiment, register it as a new version of
    `name`, and move `alias` to it."""
    import mlflow

    client = mlflow.MlflowClient()
    source = client.get_model_version(name, source_version)
    experiment = client.get_run(source.run_id).info.experiment_id if source.run_id else None
    with mlflow.start_run(experiment_id=experiment, run_name=f"recalibrate-{name}-v{source_version}") as run:
        mlflow.log_artifacts(str(directory), "model")
        mlflow.set_tags({"anomaly.recalibrated_from": f"{name}/{source_version}"})
    version = str(mlflow.register_model(f"runs:/{run.info.run_id}/model", name).version)
    client.set_model_version_tag(name, version, "recalibrated_from_version", str(source_version))
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return version
