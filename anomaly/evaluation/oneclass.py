"""The one-class protocol: each class in turn is normal, the others anomalous; AUROC per class."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from anomaly.config import TORCHVISION_KINDS, load_config
from anomaly.errors import AnomalyError
from anomaly.evaluation.run import evaluate_checkpoint
from anomaly.training.train import train

SIGNAL_COLUMNS = ("reconstruction_auroc", "latent_auroc", "combined_auroc", "test_fpr")


def summary_row(metrics: dict[str, Any]) -> dict[str, Any]:
    image = metrics["image"]
    return {
        "reconstruction_auroc": image["reconstruction"]["auroc"],
        "latent_auroc": image["latent"]["auroc"],
        "combined_auroc": image["combined"]["auroc"],
        "test_fpr": metrics["test_fpr"],
        "recall": metrics["at_target_fpr"]["recall"],
    }


def run_oneclass(
    config_path: Path, overrides: list[str], classes: list[int], architectures: list[str], output_dir: Path
) -> dict[str, Any]:
    base = load_config(config_path, overrides)
    if base.data.kind not in TORCHVISION_KINDS:
        raise AnomalyError(
            f"the one-class protocol needs data.kind in {', '.join(TORCHVISION_KINDS)}, got '{base.data.kind}'"
        )
    results: dict[str, Any] = {"data": base.data.kind, "target_fpr": base.scoring.target_fpr, "architectures": {}}
    for architecture in architectures:
        rows: dict[str, Any] = {}
        for normal_class in classes:
            config = load_config(
                config_path,
                [
                    *overrides,
                    f"model.architecture={architecture}",
                    f"data.normal_class={normal_class}",
                    f"tracking.run_name={base.data.kind}-{architecture}-class-{normal_class}",
                ],
            )
            trained = train(config)
            evaluation = evaluate_checkpoint(
                trained.checkpoint, [], output_dir / architecture / f"class_{normal_class}"
            )
            rows[str(normal_class)] = {**summary_row(evaluation.metrics), "mlflow_run_id": trained.run_id}
            write_results(results | {"architectures": {**results["architectures"], architecture: rows}}, output_dir)
        rows["mean"] = {column: float(np.mean([rows[str(c)][column] for c in classes])) for column in SIGNAL_COLUMNS}
        results["architectures"][architecture] = rows
    write_results(results, output_dir)
    return results


def markdown_table(results: dict[str, Any]) -> str:
    lines = [
        "| model | class | reconstruction AUROC | latent AUROC | combined AUROC | test FPR |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for architecture, rows in results["architectures"].items():
        for normal_class, row in rows.items():
            cells = " | ".join(f"{row[column]:.4f}" for column in SIGNAL_COLUMNS)
            lines.append(f"| {architecture} | {normal_class} | {cells} |")
    return "\n".join(lines)


def write_results(results: dict[str, Any], output_dir: Path) -> None:
    """Written after every class, so an interrupted protocol keeps what it measured."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "oneclass.json").write_text(json.dumps(results, indent=1))
    (output_dir / "oneclass.md").write_text(markdown_table(results) + "\n")
