"""Image AUROC of an exported model, measured with ONNX Runtime: what int8 and champion decisions use."""

from __future__ import annotations

import numpy as np

from anomaly.evaluation.metrics import ranking_metrics
from anomaly.imageio import conform_array
from anomaly.runtime.bundle import OnnxDetector


def onnx_image_auroc(detector: OnnxDetector, images: np.ndarray, labels: np.ndarray) -> float:
    """Rank by the model's own calibrated combination statistic; images are brought to its input spec."""
    if images.shape[1:3] != detector.image_size or images.shape[3] != detector.channels:
        images = np.stack([conform_array(image, detector.channels, detector.image_size) for image in images])
    outputs = detector.run(images, detector.score_names)
    statistic = detector.calibration.pvalues(outputs.get("reconstruction_score"), outputs["latent_distance"]).statistic
    return ranking_metrics(labels, statistic)["auroc"]
