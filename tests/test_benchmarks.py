"""The benchmark's own baselines, on real tiny images (their timings never run in the suite)."""

import numpy as np

from benchmarks.baselines import baseline_aurocs
from tests.conftest import stripes


def test_baselines_rank_bright_scratches_above_normal_stripes():
    train = stripes(60, 32, 32, seed=0)
    good = stripes(10, 32, 32, seed=1)
    scratched = stripes(10, 32, 32, seed=2)
    scratched[:, 10:14, 4:28] = 255
    labels = np.array([0] * 10 + [1] * 10)
    aurocs = baseline_aurocs(train, np.concatenate([good, scratched]), labels)
    assert aurocs["pca_reconstruction"] > 0.95
    assert 0.5 < aurocs["isolation_forest"] <= 1.0
