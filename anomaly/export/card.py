"""The model card: what a model directory holds, where it came from, how good it is."""

from __future__ import annotations

import json
from typing import Any

from anomaly.calibration.artifact import Calibration
from anomaly.calibration.promise import promise_lines
from anomaly.config import Config, flatten_mapping
from anomaly.runtime.bundle import SERVED_OUTPUTS


def data_source(config: Config) -> str:
    """What the model was trained on, in words: a folder path, or a data set and its normal class."""
    data = config.data
    source = str(data.root) if data.kind == "folder" else data.kind
    if data.normal_class is not None and data.kind != "folder":
        source += f" (normal class {data.normal_class})"
    return source


def scoring_summary(config: Config) -> str:
    """The scoring head in the graph, in words, as fitting and calibration resolved it."""
    scoring = config.scoring
    patches = scoring.patches
    if patches is None:
        shift = " and its round-trip shift" if scoring.latent.round_trip else ""
        return f"latent distance: Mahalanobis on the code{shift}; heat map: reconstruction error"
    bank = (
        f"a bank of {patches.bank_vectors} per place" if patches.aligned else f"a pooled bank of {patches.bank_vectors}"
    )
    heatmap = {
        "latent": "patch distance",
        "reconstruction": "reconstruction error",
        "fisher": "patch distance plus reconstruction error, each in units of its spread on held-out normals",
    }
    return (
        f"latent distance: patches at encoder level {patches.level} (stride {2**patches.level}), {bank}; heat map: "
        f"{heatmap[scoring.combine]}"
    )


def choice_lines(calibration: Calibration) -> list[str]:
    """How each auto setting was chosen on the labelled validation set: candidates' AUROCs, the rule, the interval."""
    lines = []
    for choice in calibration.choices:
        aurocs = ", ".join(f"{candidate} {value:.4f}" for candidate, value in choice["validation_auroc"].items())
        low, high = choice["best_lead_interval"]
        lead = (
            ""
            if choice["chosen"] == choice["best"]
            else f"; {choice['best']} led by [{low:.4f}, {high:.4f}], within noise"
        )
        lines.append(
            f"- `{choice['setting']}`: {choice['chosen']} (validation AUROC {aurocs}{lead}); rule: {choice['rule']}"
        )
    return lines


def scoring_settings(config: Config) -> list[str]:
    """Every scoring setting with its resolved value, one card line each: the same values as detector.pt and
    calibration.json hold."""
    return [
        f"- `scoring.{key}`: {value}" for key, value in flatten_mapping(config.scoring.model_dump(mode="json")).items()
    ]


def encoder_summary(config: Config, encoder_sha256: str | None) -> str:
    """The encoder in words: the autoencoder's own, or the frozen pretrained CNN and the sha256 of its weights file."""
    if not config.model.pretrained:
        return "own (trained with the autoencoder)"
    return f"{config.model.encoder}, frozen, ImageNet-pretrained weights sha256 {encoder_sha256 or 'unknown'}"


def test_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The test metrics a model carries (card, ONNX metadata): those of evaluation's metrics that were measured."""
    return {
        key: float(metrics[key])
        for key in ("image_auroc", "image_aupr", "test_fpr", "pixel_auroc", "pixel_aupro")
        if metrics.get(key) is not None
    }


def model_card(
    config: Config,
    calibration: Calibration,
    metrics: dict[str, Any],
    parity: dict[str, float],
    run_id: str | None,
    encoder_sha256: str | None = None,
) -> str:
    data = config.data
    source = data_source(config)
    lines = [
        f"# Anomaly detector: {config.model.architecture}",
        "",
        f"- encoder: {encoder_summary(config, encoder_sha256)}",
        f"- data: {source}",
        f"- training run: {run_id or 'unknown'} (MLflow experiment `{config.tracking.experiment}`)",
        f"- input: float32 NCHW [batch, {data.channels}, {data.image_size[0]}, {data.image_size[1]}] in [0, 1];"
        " decode, convert and resize (bilinear) with anomaly.imageio, then divide by 255",
        f"- outputs: {', '.join(SERVED_OUTPUTS)}",
        f"- scoring: {scoring_summary(config)}",
        f"- calibration: {calibration.sample_sizes.get('calibration_images')} held-out normal images,"
        f" target FPR {calibration.target_fpr}, combine {calibration.combine_method}",
        "",
        "## What the calibration promises",
        "",
        *promise_lines(
            calibration.promise(),
            calibration.sample_sizes.get("calibration_images"),
            calibration.sample_sizes.get("cross_fitted_images", 0),
        ),
        "",
        "## Test metrics (PyTorch evaluation)",
        "",
        "| metric | value |",
        "| --- | --- |",
    ]
    lines += [f"| {key} | {value:.4f} |" for key, value in test_metrics(metrics).items()]
    lines += ["", "## Scoring settings", "", *scoring_settings(config)]
    if calibration.choices:
        lines += ["", "## Choices made on validation", "", *choice_lines(calibration)]
    lines += ["", "## ONNX parity", "", "```json", json.dumps(parity, indent=1), "```", ""]
    return "\n".join(lines)
