"""Trace an AnomalyDetector to ONNX with its scoring head; p-values stay outside the graph.

Preprocessing (decode, resize, /255) also stays outside: it is done by anomaly.imageio with
Pillow, the same code training used, so no second resize implementation can disagree.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from anomaly.errors import AnomalyError
from anomaly.export.card import data_source
from anomaly.runtime.bundle import (
    INPUT_NAME,
    META_ARCHITECTURE,
    META_CALIBRATION_SHA256,
    META_DATASET,
    META_ENCODER,
    META_INPUT,
    META_MODEL_CHECKSUM,
    META_TEST_METRICS,
    META_TRAINING_RUN,
)
from anomaly.scoring.detector import AnomalyDetector, encoder_checksum, weights_checksum

OPSET = 18
ONE_FILE_LIMIT_BYTES = 2**31  # protobuf's limit on one message: model.onnx holds every weight and bank inline


class ExportWrapper(nn.Module):
    """The detector's served outputs as a flat tuple, in served_outputs order."""

    def __init__(self, detector: AnomalyDetector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.detector.serve(image)


def export_onnx(
    detector: AnomalyDetector,
    path: Path,
    calibration_sha256: str,
    sample: torch.Tensor,
    run_id: str | None = None,
    metrics: dict[str, float] | None = None,
) -> None:
    """Export with a dynamic batch axis; record which calibration, weights, run and data belong to it, and the test
    metrics measured before export (shown by the service, never used to decide)."""
    if sample.shape[0] < 2:
        raise ValueError("export needs a sample batch of at least 2 images to keep the batch axis dynamic")
    tensor_bytes = sum(tensor.numel() * tensor.element_size() for tensor in detector.state_dict().values())
    if tensor_bytes >= ONE_FILE_LIMIT_BYTES:
        raise AnomalyError(
            f"the detector's weights and banks take {tensor_bytes / 2**30:.1f} GiB, over the 2 GiB that one ONNX file "
            "holds: lower scoring.latent.bank_size or data.image_size"
        )
    wrapper = ExportWrapper(detector.eval()).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (sample,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=list(detector.served_outputs),
            dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1)}},
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    config = detector.config
    write_metadata(
        path,
        {
            META_CALIBRATION_SHA256: calibration_sha256,
            META_MODEL_CHECKSUM: weights_checksum(detector),
            META_ARCHITECTURE: config.model.architecture,
            META_ENCODER: config.model.encoder
            if not config.model.pretrained
            else f"{config.model.encoder} sha256:{encoder_checksum(detector)}",
            META_INPUT: json.dumps(
                {"name": INPUT_NAME, "shape": ["batch", config.data.channels, *config.data.image_size], "range": [0, 1]}
            ),
            META_TRAINING_RUN: run_id or "",
            META_DATASET: data_source(config),
            META_TEST_METRICS: json.dumps(metrics or {}),
        },
    )


def write_metadata(path: Path, values: dict[str, str]) -> None:
    """Set (or replace) metadata entries of an ONNX file in place."""
    model = onnx.load(str(path))
    kept = [(entry.key, entry.value) for entry in model.metadata_props if entry.key not in values]
    del model.metadata_props[:]
    for key, value in [*kept, *values.items()]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
