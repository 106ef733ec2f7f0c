"""Baselines computed by the benchmark itself, on exactly the splits our models see.

- IsolationForest on raw pixels (scikit-learn), fitted on the training normals.
- PCA reconstruction error: fit on the training normals, score = mean squared residual.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score

PCA_COMPONENTS = 0.95  # fraction of the training normals' variance kept


def flat(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def isolation_forest_scores(train: np.ndarray, test: np.ndarray, seed: int = 0) -> np.ndarray:
    forest = IsolationForest(n_estimators=200, random_state=seed, n_jobs=-1).fit(flat(train))
    return -forest.score_samples(flat(test))  # higher = more anomalous


def pca_scores(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    pca = PCA(n_components=PCA_COMPONENTS, svd_solver="full").fit(flat(train))
    test_flat = flat(test)
    residual = test_flat - pca.inverse_transform(pca.transform(test_flat))
    return (residual**2).mean(axis=1)


def baseline_aurocs(train: np.ndarray, test: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {
        "isolation_forest": float(roc_auc_score(labels, isolation_forest_scores(train, test))),
        "pca_reconstruction": float(roc_auc_score(labels, pca_scores(train, test))),
    }
