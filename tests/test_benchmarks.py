"""The benchmark's own baselines, on real tiny images (their timings never run in the suite)."""

import re

import numpy as np

from anomaly.runtime import cpus
from benchmarks.baselines import baseline_aurocs
from benchmarks.environment import environment
from tests.conftest import PROJECT_ROOT, stripes


def test_baselines_rank_bright_scratches_above_normal_stripes():
    train = stripes(60, 32, 32, seed=0)
    good = stripes(10, 32, 32, seed=1)
    scratched = stripes(10, 32, 32, seed=2)
    scratched[:, 10:14, 4:28] = 255
    labels = np.array([0] * 10 + [1] * 10)
    aurocs = baseline_aurocs(train, np.concatenate([good, scratched]), labels)
    assert aurocs["pca_reconstruction"] > 0.95
    assert 0.5 < aurocs["isolation_forest"] <= 1.0


def test_readme_quotes_only_numbers_from_benchmarks_md():
    readme = (PROJECT_ROOT / "README.md").read_text()
    benchmarks = (PROJECT_ROOT / "BENCHMARKS.md").read_text()
    headline = readme[readme.index("Headline numbers from the full run"):readme.index("## Development")]
    pipelines = "\n".join(line for line in readme.splitlines() if line.startswith("| `pipelines/"))
    quoted = re.findall(r"\d+\.\d+x?", headline + pipelines) + re.findall(r"\d+ minutes", headline)
    assert len(quoted) >= 15
    measured = set(re.findall(r"\d+\.\d+x?", benchmarks)) | set(re.findall(r"\d+ minutes", benchmarks))  # whole numbers: 0.9 is not 0.902
    assert [number for number in quoted if number not in measured] == []


def test_environment_records_the_cpus_a_cgroup_quota_leaves(tmp_path, monkeypatch):
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("100000 100000\n")  # one CPU, whatever the affinity set holds
    monkeypatch.setattr(cpus, "CGROUP_V2_MAX", cpu_max)
    recorded = environment()
    assert recorded["cpus_usable"] == 1
    assert recorded["cpus_affinity"] == len(cpus.os.sched_getaffinity(0))
