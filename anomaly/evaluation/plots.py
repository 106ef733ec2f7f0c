"""Evaluation plots, written as PNG files beside metrics.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from anomaly.calibration.artifact import Calibration  # noqa: E402
from anomaly.calibration.scored import ScoredSet  # noqa: E402

EXAMPLES = 4


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def score_histograms(
    scored: ScoredSet, signals: dict[str, np.ndarray], thresholds: dict[str, float], path: Path
) -> Path:
    """Normal against anomalous scores per signal, with the threshold at the target FPR."""
    threshold_keys = {"reconstruction": "reconstruction", "latent": "latent", "combined": "combined_statistic"}
    figure, axes = plt.subplots(1, len(signals), figsize=(5 * len(signals), 3.6))
    for axis, (name, scores) in zip(np.atleast_1d(axes), signals.items()):
        bins = np.histogram_bin_edges(scores, bins=50)
        axis.hist(scores[scored.labels == 0], bins=bins, alpha=0.6, density=True, label="normal")
        axis.hist(scores[scored.labels == 1], bins=bins, alpha=0.6, density=True, label="anomalous")
        axis.axvline(thresholds[threshold_keys[name]], color="k", linestyle="--", label="threshold")
        axis.set_title(name)
        axis.legend()
    return _save(figure, path)


def roc_curves(labels: np.ndarray, signals: dict[str, np.ndarray], path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    for name, scores in signals.items():
        fpr, tpr, _ = roc_curve(labels, scores)
        axis.plot(fpr, tpr, label=name)
    axis.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
    axis.set_xlabel("false-positive rate")
    axis.set_ylabel("true-positive rate")
    axis.legend()
    return _save(figure, path)


def example_overlays(scored: ScoredSet, images: np.ndarray, scores: np.ndarray, path: Path) -> Path:
    """Best (most confident correct) and worst (most wrong) examples, with the anomaly map on top."""
    normal, anomalous = np.flatnonzero(scored.labels == 0), np.flatnonzero(scored.labels == 1)
    rows = {
        "best anomalies": anomalous[np.argsort(-scores[anomalous])][:EXAMPLES],
        "worst anomalies": anomalous[np.argsort(scores[anomalous])][:EXAMPLES],
        "best normals": normal[np.argsort(scores[normal])][:EXAMPLES],
        "worst normals": normal[np.argsort(-scores[normal])][:EXAMPLES],
    }
    rows = {title: indices for title, indices in rows.items() if len(indices)}
    top = float(np.quantile(scored.maps, 0.999))
    figure, axes = plt.subplots(len(rows), EXAMPLES, figsize=(2.4 * EXAMPLES, 2.6 * len(rows)), squeeze=False)
    for row, (title, indices) in zip(axes, rows.items()):
        for axis in row:
            axis.axis("off")
        for axis, index in zip(row, indices):
            image = images[index]
            axis.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray")
            axis.imshow(scored.maps[index], cmap="jet", alpha=0.45, vmin=0, vmax=top)
            if scored.masks[index].any():
                axis.contour(scored.masks[index], levels=[0.5], colors="white", linewidths=0.8)
            axis.set_title(f"{title}\n{scored.categories[index]} {scores[index]:.3g}", fontsize=8)
    return _save(figure, path)


def latent_pca(scored: ScoredSet, path: Path) -> Path:
    points = PCA(n_components=2).fit_transform(scored.latents)
    figure, axis = plt.subplots(figsize=(5, 4.5))
    for label, name in ((0, "normal"), (1, "anomalous")):
        chosen = scored.labels == label
        axis.scatter(points[chosen, 0], points[chosen, 1], s=4, alpha=0.5, label=name)
    axis.set_title("latent space (PCA)")
    axis.legend()
    return _save(figure, path)


@torch.no_grad()
def vae_samples(model: torch.nn.Module, images: np.ndarray, path: Path, count: int = 8, seed: int = 0) -> Path:
    """Top: decoded draws from the prior N(0, I). Bottom: decoding along the line between two codes."""
    model.eval()
    tensors = torch.from_numpy(images[:2]).permute(0, 3, 1, 2).float() / 255.0
    output = model(tensors)
    prior = torch.randn((count, *output.mu.shape[1:]), generator=torch.Generator().manual_seed(seed))
    weights = torch.linspace(0, 1, count).view(count, *([1] * (output.mu.dim() - 1)))
    path_codes = (1 - weights) * output.mu[0] + weights * output.mu[1]
    decoded = [model.decode(prior), model.decode(path_codes)]
    figure, axes = plt.subplots(2, count, figsize=(1.4 * count, 3.2))
    for row, (title, batch) in zip(axes, zip(("prior samples", "interpolation"), decoded)):
        for axis, image in zip(row, batch):
            axis.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
            axis.axis("off")
        row[0].set_title(title, fontsize=8, loc="left")
    return _save(figure, path)


def calibration_plot(curve: list[dict[str, Any]], path: Path, title: str = "test normals") -> Path:
    """Realised false-positive rate on the test normals against the target, with the 95% binomial range for that many
    normals: a calibration that keeps its promise stays inside the band."""
    targets = np.array([point["target_fpr"] for point in curve])
    figure, axis = plt.subplots(figsize=(4.8, 4.5))
    axis.fill_between(
        targets,
        [point["interval_low"] for point in curve],
        [point["interval_high"] for point in curve],
        color="grey",
        alpha=0.25,
        label="95% binomial range",
    )
    axis.plot(targets, targets, color="grey", linewidth=0.8)
    axis.plot(targets, [point["realised_fpr"] for point in curve], marker="o", label="realised")
    axis.set_xscale("log")
    axis.set_yscale("symlog", linthresh=1e-3)
    axis.set_xlabel("target false-positive rate")
    axis.set_ylabel("realised false-positive rate")
    axis.set_title(f"{title} ({curve[0]['normals']})")
    axis.legend()
    return _save(figure, path)


def write_plots(
    folder: Path,
    scored: ScoredSet,
    images: np.ndarray,
    signals: dict[str, np.ndarray],
    calibration: Calibration,
    model: torch.nn.Module,
    curve: list[dict[str, Any]] | None = None,
) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [
        score_histograms(scored, signals, calibration.thresholds(), folder / "score_histograms.png"),
        example_overlays(scored, images, signals["combined"], folder / "examples.png"),
        latent_pca(scored, folder / "latent_pca.png"),
    ]
    if len(np.unique(scored.labels)) == 2:
        paths.append(roc_curves(scored.labels, signals, folder / "roc.png"))
    if curve and curve[0]["normals"]:
        paths.append(calibration_plot(curve, folder / "calibration.png"))
    if hasattr(model, "decode"):
        paths.append(vae_samples(model, images, folder / "vae_samples.png"))
    return paths
