"""The calibration artifact: fitted score distributions, thresholds, and what they belong to.

One JSON file with a schema version. It names the checksum of the detector weights it was
fitted for, so a calibration can never silently be used with another model. p-values and
decisions are computed here in NumPy, outside any model graph, so sensitivity (target FPR)
changes without re-export.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anomaly.calibration.combine import CombineMethod, combination_statistic
from anomaly.calibration.distribution import TailFittedDistribution
from anomaly.calibration.promise import Promise
from anomaly.calibration.scored import ScoredSet
from anomaly.errors import AnomalyError

SCHEMA_VERSION = 1
SIGNALS = ("reconstruction", "latent")


@dataclass(frozen=True)
class ScorePValues:
    reconstruction: np.ndarray
    latent: np.ndarray
    combined: np.ndarray
    statistic: np.ndarray  # the combination statistic: ranks like `combined`, without ties at p = 0

    @property
    def anomaly_score(self) -> np.ndarray:
        """Combined evidence in [0, 1]: 1 - combined p-value."""
        return 1.0 - self.combined


def signal_scores(scored: ScoredSet, pvalues: ScorePValues) -> dict[str, np.ndarray]:
    """The three ranked signals. The combined one is ranked by its combination statistic, which
    orders images as the combined p-value does but does not tie where p underflows to 0."""
    return {
        "reconstruction": scored.reconstruction_scores,
        "latent": scored.latent_distances,
        "combined": pvalues.statistic,
    }


@dataclass(frozen=True)
class Calibration:
    model_checksum: str
    preprocessing: dict[str, Any]
    scoring: dict[str, Any]
    distributions: dict[str, TailFittedDistribution]  # reconstruction, latent, combined, pixel
    target_fpr: float
    f1_optimal_score: float | None = None
    sample_sizes: dict[str, int] = field(default_factory=dict)
    # Image AUROC per signal on validation normals plus their synthetic anomalies: the number to
    # compare settings by, since test labels must never choose them. None without synthetic validation.
    validation_auroc: dict[str, float] | None = None
    # How each auto setting was chosen (anomaly.calibration.choice.Choice.record), in the order they were made.
    choices: list[dict[str, Any]] = field(default_factory=list)
    holdout: str | None = None  # how the calibration normals were held out, in words (model card, /model)
    # Set by `anomaly calibrate`: which normals replaced the exported calibration, and that calibration's sha256.
    recalibration: dict[str, Any] | None = None

    @property
    def combine_method(self) -> CombineMethod:
        return self.scoring["combine"]

    def pvalues(self, reconstruction_scores: np.ndarray, latent_distances: np.ndarray) -> ScorePValues:
        """p-values of each signal and of their combination."""
        reconstruction = self.distributions["reconstruction"].pvalue(reconstruction_scores)
        latent = self.distributions["latent"].pvalue(latent_distances)
        statistic = combination_statistic(reconstruction, latent, self.combine_method)
        return ScorePValues(reconstruction, latent, self.distributions["combined"].pvalue(statistic), statistic)

    def is_anomaly(self, pvalues: ScorePValues, target_fpr: float | None = None) -> np.ndarray:
        return self.is_anomaly_pvalue(pvalues.combined, target_fpr)

    def is_anomaly_pvalue(self, combined: np.ndarray, target_fpr: float | None = None) -> np.ndarray:
        """The decision on combined p-values: flagged below the target (the default one when None)."""
        return combined < (self.target_fpr if target_fpr is None else target_fpr)

    def pixel_threshold(self, target_fpr: float | None = None) -> float:
        return self.distributions["pixel"].score_at_pvalue(self.target_fpr if target_fpr is None else target_fpr)

    def thresholds(self, target_fpr: float | None = None) -> dict[str, float]:
        """Scores at which each signal alone, the combination, and a pixel reach p = target FPR."""
        alpha = self.target_fpr if target_fpr is None else target_fpr
        values = {name: self.distributions[name].score_at_pvalue(alpha) for name in (*SIGNALS, "pixel")}
        values["combined_statistic"] = self.distributions["combined"].score_at_pvalue(alpha)
        values["anomaly_score"] = 1.0 - alpha
        return values

    def promise(self, target_fpr: float | None = None) -> Promise:
        """What this calibration can promise at `target_fpr` (the default target when None): how many normals the
        decision's distribution rests on, how they were held out, the range of realised rates they support."""
        alpha = self.target_fpr if target_fpr is None else target_fpr
        return Promise.of(alpha, len(self.distributions["combined"].sample), self.holdout)

    def sample_size_warning(self, target_fpr: float | None = None) -> str | None:
        """Why the decision may miss its target: a target below what the calibration can resolve."""
        return self.promise(target_fpr).warning

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "model_checksum": self.model_checksum,
            "preprocessing": self.preprocessing,
            "scoring": self.scoring,
            "target_fpr": self.target_fpr,
            "thresholds": self.thresholds(),
            "f1_optimal_score": self.f1_optimal_score,
            "sample_sizes": self.sample_sizes,
            "validation_auroc": self.validation_auroc,
            "choices": self.choices,
            "holdout": self.holdout,
            "recalibration": self.recalibration,
            "promise": self.promise().to_dict(),
            "distributions": {name: dist.to_dict() for name, dist in self.distributions.items()},
        }

    def save(self, path: Path) -> str:
        """Write the JSON; return its sha256, which the exported model records."""
        text = json.dumps(self.to_dict(), indent=1)
        path.write_text(text)
        return hashlib.sha256(text.encode()).hexdigest()

    @classmethod
    def load(cls, path: Path, expected_model_checksum: str | None = None) -> Calibration:
        if not path.is_file():
            raise AnomalyError(f"calibration file not found: {path}")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise AnomalyError(f"calibration file {path} is not valid JSON") from None
        return cls.from_dict(data, f"calibration file {path}", expected_model_checksum)

    @classmethod
    def from_dict(
        cls, data: Any, label: str = "calibration", expected_model_checksum: str | None = None
    ) -> Calibration:
        """Rebuild from `to_dict()` output (a file, or a message from the model server)."""
        version = data.get("schema_version") if isinstance(data, dict) else None
        if version != SCHEMA_VERSION:
            raise AnomalyError(f"{label} has schema version {version}, this version reads {SCHEMA_VERSION}")
        if expected_model_checksum is not None and data["model_checksum"] != expected_model_checksum:
            raise AnomalyError(
                f"{label} belongs to model {data['model_checksum'][:12]}, "
                f"not to this model {expected_model_checksum[:12]}: calibrate this model again"
            )
        return cls(
            model_checksum=data["model_checksum"],
            preprocessing=data["preprocessing"],
            scoring=data["scoring"],
            distributions={name: TailFittedDistribution.from_dict(d) for name, d in data["distributions"].items()},
            target_fpr=float(data["target_fpr"]),
            f1_optimal_score=data.get("f1_optimal_score"),
            sample_sizes=data.get("sample_sizes", {}),
            validation_auroc=data.get("validation_auroc"),
            choices=data.get("choices", []),
            holdout=data.get("holdout"),
            recalibration=data.get("recalibration"),
        )
