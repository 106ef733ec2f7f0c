"""One batch of archive files -> one Arrow table of results: the function every engine maps over the archive."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import numpy as np

from anomaly.archive.decisions import TARGET_FPR_RULE
from anomaly.archive.location import ArchiveLocation
from anomaly.errors import AnomalyError
from anomaly.runtime.bundle import META_MODEL_CHECKSUM, ImageResult, OnnxDetector
from anomaly.runtime.heatmap import overlay, png_bytes
from anomaly.runtime.resolve import resolve_model

SCORE_COLUMNS = (
    "reconstruction_score",
    "latent_distance",
    "p_reconstruction",
    "p_latent",
    "p_combined",
    "anomaly_score",
)


def result_schema() -> Any:
    """One row per file: its scores, or the reason it could not be scored (`error`), and which model answered."""
    import pyarrow as pa

    return pa.schema(
        [
            ("path", pa.string()),
            ("error", pa.string()),
            *((name, pa.float64()) for name in SCORE_COLUMNS),
            ("is_anomaly", pa.bool_()),
            ("target_fpr", pa.float64()),
            (
                "decision_rule",
                pa.string(),
            ),  # target_fpr (each image at target_fpr) or fdr_bh (Benjamini-Hochberg at fdr)
            ("fdr", pa.float64()),
            ("q_value", pa.float64()),  # the Benjamini-Hochberg adjusted p-value over the archive, with fdr_bh
            ("heatmap", pa.string()),
            ("model_name", pa.string()),
            ("model_version", pa.string()),
            ("model_checksum", pa.string()),
        ]
    )


def heatmap_name(relative: str) -> str:
    return str(PurePosixPath(relative).with_suffix("")) + ".png"


class BatchScorer:
    """Holds one ONNX Runtime session; called with {"path": relative paths} and returns their rows. A file that cannot
    be read or decoded gets a row with its error, so one bad file never stops the job."""

    def __init__(
        self,
        model: str,
        source: ArchiveLocation,
        target_fpr: float | None = None,
        heatmaps: ArchiveLocation | None = None,
        threads: int | None = None,
    ) -> None:
        resolved = resolve_model(model)
        self.detector = OnnxDetector(resolved.directory, threads)
        self.source, self.target_fpr, self.heatmaps = source, target_fpr, heatmaps
        self.model_columns = {
            "model_name": resolved.name,
            "model_version": resolved.version,
            "model_checksum": self.detector.metadata.get(META_MODEL_CHECKSUM),
        }

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        import pyarrow as pa

        decoded: dict[str, np.ndarray] = {}
        rows = {}
        for relative in (str(path) for path in batch["path"]):
            try:
                decoded[relative] = self.detector.load_image(
                    self.source.read(relative), name=self.source.display(relative)
                )
            except (AnomalyError, OSError) as error:
                rows[relative] = self.row(relative, error=str(error) or type(error).__name__)
        if decoded:
            names = (*self.detector.score_names, "anomaly_map") if self.heatmaps else self.detector.score_names
            outputs = self.detector.run(np.stack(list(decoded.values())), names)
            for index, (relative, result) in enumerate(zip(decoded, self.detector.results(outputs, self.target_fpr))):
                heatmap = None
                if self.heatmaps is not None:
                    heatmap = self.write_heatmap(
                        relative,
                        decoded[relative],
                        outputs["anomaly_map"][index].reshape(self.detector.image_size),
                        result,
                    )
                rows[relative] = self.row(relative, result=result, heatmap=heatmap)
        ordered = [rows[str(path)] for path in batch["path"]]
        return pa.Table.from_pylist(ordered, schema=result_schema())

    def row(
        self, relative: str, result: ImageResult | None = None, error: str | None = None, heatmap: str | None = None
    ) -> dict[str, Any]:
        scores = (
            {name: None for name in SCORE_COLUMNS}
            if result is None
            else {name: getattr(result, name) for name in SCORE_COLUMNS}
        )
        return {
            "path": self.source.display(relative),
            "error": error,
            **scores,
            "is_anomaly": None if result is None else result.is_anomaly,
            "target_fpr": None if result is None else result.target_fpr,
            "decision_rule": None if result is None else TARGET_FPR_RULE,
            "fdr": None,
            "q_value": None,
            "heatmap": heatmap,
            **self.model_columns,
        }

    def write_heatmap(self, relative: str, image: np.ndarray, anomaly_map: np.ndarray, result: ImageResult) -> str:
        """The heat map over the model's input image, coloured against the pixel threshold at the decision's rate."""
        assert self.heatmaps is not None
        pixel_threshold = self.detector.calibration.pixel_threshold(result.target_fpr)
        return self.heatmaps.write(heatmap_name(relative), png_bytes(overlay(image, anomaly_map, pixel_threshold)))
