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


def test_readme_quotes_only_numbers_from_measurement_documents():
    """Every number in the README's results table appears, whole, in BENCHMARKS.md or docs/pretrained-encoders.md."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    results = readme[readme.index("## Results") : readme.index("## Install")]
    quoted = re.findall(r"\d+\.\d+x?", results)
    assert len(quoted) >= 12
    sources = [(PROJECT_ROOT / name).read_text() for name in ("BENCHMARKS.md", "docs/pretrained-encoders.md")]
    measured = {
        number for text in sources for number in re.findall(r"\d+\.\d+x?", text)
    }  # whole numbers: 0.9 is not 0.902
    assert [number for number in quoted if number not in measured] == []


def test_environment_records_the_cpus_a_cgroup_quota_leaves(tmp_path, monkeypatch):
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("100000 100000\n")  # one CPU, whatever the affinity set holds
    monkeypatch.setattr(cpus, "CGROUP_V2_MAX", cpu_max)
    recorded = environment()
    assert recorded["cpus_usable"] == 1
    assert recorded["cpus_affinity"] == len(cpus.os.sched_getaffinity(0))


def test_benchmark_rows_are_measured_once_per_code_version(tmp_path, monkeypatch):
    from benchmarks import kept

    calls = []

    def measure() -> dict:
        calls.append(1)
        return {"auroc": 0.5 + len(calls) / 10}

    assert kept.kept_row(tmp_path, "row", measure) == {"auroc": 0.6}
    assert kept.kept_row(tmp_path, "row", measure) == {"auroc": 0.6} and len(calls) == 1  # resumed, not measured again
    monkeypatch.setattr(kept, "code_version", lambda: "another")
    assert kept.kept_row(tmp_path, "row", measure) == {"auroc": 0.7}  # another version of the code measures afresh
    model = tmp_path / "model"
    assert kept.kept_row(tmp_path, "row", measure, leaves=model) == {
        "auroc": 0.8
    }  # what it left is gone: measured again
    model.mkdir()
    assert kept.kept_row(tmp_path, "row", measure, leaves=model) == {"auroc": 0.8} and len(calls) == 3


def test_benchmark_records_name_the_commit_and_whether_measured_code_differed(tmp_path, monkeypatch):
    import subprocess

    from benchmarks import run

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    (tmp_path / "anomaly").mkdir()
    (tmp_path / "anomaly" / "model.py").write_text("A = 1\n")
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "quality.json").write_text("{}")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "measured")
    monkeypatch.setattr(run, "ROOT", tmp_path)
    head = git("rev-parse", "--short", "HEAD")
    (tmp_path / "benchmarks" / "results" / "quality.json").write_text('{"written": "by the run itself"}')
    assert run.commit() == head
    (tmp_path / "anomaly" / "model.py").write_text("A = 2\n")
    assert run.commit() == f"{head}+changes"
