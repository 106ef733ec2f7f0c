"""Archive scoring (`anomaly score --input --output`): Ray Data on a local 2-CPU cluster, one process without Ray,
resumption after a real kill, corrupt files recorded, and the rows equal to `anomaly score`'s answers."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from anomaly.archive.job import connect_ray, part_files, read_parts, score_archive
from anomaly.archive.location import ArchiveLocation
from anomaly.errors import AnomalyError
from anomaly.runtime.bundle import META_MODEL_CHECKSUM, OnnxDetector
from tests.conftest import cli_command, run_cli, run_cli_process

CORRUPT = ("broken/cut.png", "broken/empty.png")


def write_archive(root: Path, data: Path, copies: int = 1) -> dict[str, Path]:
    """Good and scratched test images (each `copies` times under new names), a truncated PNG, an empty file and a text
    file that is not an image. Returns the images by their path relative to `root`."""
    images = {}
    for category in ("good", "scratch"):
        for source in sorted((data / "test" / category).glob("*.png")):
            for copy in range(copies):
                relative = f"{category}/{source.stem}-{copy:03d}.png"
                (root / category).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, root / relative)
                images[relative] = root / relative
    (root / "broken").mkdir()
    whole = (data / "test" / "good" / "000.png").read_bytes()
    (root / CORRUPT[0]).write_bytes(whole[: len(whole) // 2])
    (root / CORRUPT[1]).write_bytes(b"")
    (root / "notes.txt").write_text("not an image")
    return images


def anomaly_score_lines(model: Path, files: list[Path]) -> dict[str, dict]:
    """What `anomaly score MODEL FILES` prints, by file."""
    completed = run_cli_process("score", "--model", str(model), *map(str, files))
    assert completed.returncode == 0, completed.stderr
    return {line["image"]: line for line in map(json.loads, completed.stdout.splitlines())}


@pytest.fixture
def ray_cluster():
    ray = connect_ray(num_cpus=2, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_resumes_a_killed_job_scores_nothing_twice_and_matches_anomaly_score(
    published_model, tmp_path, ray_cluster
):
    archive, output = tmp_path / "archive", tmp_path / "results.parquet"
    images = write_archive(archive, published_model.data, copies=40)

    # A real interruption: the one-process engine is killed as soon as its first part is complete.
    job = subprocess.Popen(
        cli_command(
            "score",
            "--model",
            str(published_model.directory),
            "--input",
            str(archive),
            "--output",
            str(output),
            "--local",
            "--rows-per-file",
            "8",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not any(not Path(path).name.startswith(".") for path in part_files(ArchiveLocation(str(output)))):
        assert job.poll() is None and time.monotonic() < deadline, job.stderr.read().decode() if job.stderr else ""
        time.sleep(0.005)
    job.send_signal(signal.SIGKILL)
    job.wait()
    before = read_parts(ArchiveLocation(str(output)), ["path"]).column("path").to_pylist()
    total = len(images) + len(CORRUPT)
    assert 0 < len(before) < total and len(set(before)) == len(before)

    summary = score_archive(str(published_model.directory), str(archive), str(output), actors=2, rows_per_file=32)
    assert summary.engine == "ray" and summary.actors == 2
    assert (summary.images, summary.skipped, summary.scored) == (total, len(before), total - len(before))
    assert summary.errors == len({str(archive / relative) for relative in CORRUPT} - set(before))

    rows = pq.read_table(output).to_pylist()
    paths = [row["path"] for row in rows]
    assert sorted(paths) == sorted({str(archive / relative) for relative in [*images, *CORRUPT]})  # each file once

    by_path = {row["path"]: row for row in rows}
    for relative in CORRUPT:
        row = by_path[str(archive / relative)]
        assert row["p_combined"] is None and str(archive / relative) in row["error"]
    checksum = OnnxDetector(published_model.directory).metadata[META_MODEL_CHECKSUM]
    expected = anomaly_score_lines(
        published_model.directory, [path for relative, path in images.items() if relative.endswith("-000.png")]
    )
    for image, line in expected.items():
        row = by_path[image]
        assert (
            row["error"] is None
            and row["model_checksum"] == checksum
            and row["model_name"] == published_model.directory.name
        )
        assert row["is_anomaly"] == line["is_anomaly"]
        for name in ("latent_distance", "p_latent", "p_combined", "anomaly_score"):
            assert row[name] == pytest.approx(line[name], rel=1e-5, abs=1e-7), name
    assert sum(row["is_anomaly"] for row in by_path.values() if "/scratch/" in row["path"]) > 0

    again = score_archive(str(published_model.directory), str(archive), str(output), actors=2)
    assert (again.skipped, again.scored) == (total, 0)


@pytest.mark.slow
def test_one_process_archive_writes_heat_maps_and_skips_what_is_done(published_model, tmp_path):
    archive, output = tmp_path / "archive", tmp_path / "results.parquet"
    images = write_archive(archive, published_model.data)
    summary = score_archive(
        str(published_model.directory), str(archive), str(output), local=True, heatmaps=True, target_fpr=0.2
    )
    assert (summary.engine, summary.scored, summary.errors) == ("local", len(images) + len(CORRUPT), len(CORRUPT))

    detector = OnnxDetector(published_model.directory)
    rows = {row["path"]: row for row in pq.read_table(output).to_pylist()}
    for relative in images:
        row = rows[str(archive / relative)]
        assert row["target_fpr"] == 0.2 and row["is_anomaly"] == (row["p_combined"] < 0.2)
        heatmap = Image.open(row["heatmap"])
        assert heatmap.size == detector.image_size[::-1] and heatmap.mode == "RGB"
    assert all(rows[str(archive / relative)]["heatmap"] is None for relative in CORRUPT)
    assert Path(summary.heatmaps).parent == output.parent and not list(output.glob("*.png"))

    again = score_archive(str(published_model.directory), str(archive), str(output), local=True)
    assert (again.skipped, again.scored) == (summary.scored, 0)

    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with pytest.raises(AnomalyError, match=f"^{blocked}/results.parquet: "):  # the storage failure as one line
        score_archive(str(published_model.directory), str(archive), str(blocked / "results.parquet"), local=True)


@pytest.mark.slow
def test_a_part_cut_short_is_removed_and_its_images_scored_again(published_model, tmp_path):
    archive, output = tmp_path / "archive", tmp_path / "results.parquet"
    images = write_archive(archive, published_model.data)
    score_archive(str(published_model.directory), str(archive), str(output), local=True, rows_per_file=4)
    parts = sorted(output.glob("part-*.parquet"))
    lost = pq.read_table(parts[0]).num_rows
    parts[0].write_bytes(parts[0].read_bytes()[:100])  # what a writer killed mid-file leaves
    (output / ".part-unfinished.parquet").write_bytes(b"PAR1")

    summary = score_archive(str(published_model.directory), str(archive), str(output), local=True, rows_per_file=4)
    assert (summary.skipped, summary.scored) == (len(images) + len(CORRUPT) - lost, lost)
    assert not (output / ".part-unfinished.parquet").exists()
    paths = pq.read_table(output).column("path").to_pylist()
    assert len(paths) == len(set(paths)) == len(images) + len(CORRUPT)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--input", "{missing}", "--output", "{out}"], "input folder not found"),
        (["--input", "{empty}", "--output", "{out}"], "no image files under"),
        (["--input", "{empty}"], "--input and --output together"),
        (["--input", "{empty}", "--output", "{out}", "{image}"], "--input and --output together"),
        (["--input", "{archive}", "--output", "{file}"], "is not a folder of Parquet files"),
        (["--input", "{archive}", "--output", "{out}", "--target-fpr", "0.7"], "--target-fpr must be in (0, 0.5)"),
        (["--input", "{archive}", "--output", "{out}"], "model directory not found"),
    ],
)
def test_archive_refusals_are_one_line(tmp_path, monkeypatch, capsys, arguments, message):
    """Each refused before any work starts, so no trained model is needed: the model path does not exist."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "archive").mkdir()
    image = tmp_path / "archive" / "a.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    (tmp_path / "file").write_text("x")
    names = {
        "missing": tmp_path / "missing",
        "out": tmp_path / "out",
        "empty": tmp_path / "empty",
        "image": image,
        "archive": tmp_path / "archive",
        "file": tmp_path / "file",
    }
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "score",
        "--model",
        str(tmp_path / "no-model"),
        "--local",
        *(argument.format(**names) for argument in arguments),
    )
    assert code == 2 and err.strip().count("\n") == 0, err
    assert message in err


@pytest.mark.slow
def test_fdr_flags_by_benjamini_hochberg_over_the_whole_archive(published_model, tmp_path, monkeypatch, capsys):
    """200 new normal images and 12 of plain noise: --fdr 0.05 flags by scipy's Benjamini-Hochberg over all 212 p-values
    (an unreadable file has none and is never flagged), records the rule and q-value in every row, and a rerun without
    --fdr decides every row at its target FPR again."""
    from scipy.stats import false_discovery_control

    from anomaly.calibration.recalibrate import recalibrate_directory
    from tests.test_recalibrate import normals_folder

    model = tmp_path / "model"
    recalibrate_directory(published_model.directory, normals_folder(tmp_path / "calibration", 120, seed=31), model)
    archive = normals_folder(tmp_path / "archive" / "good", 200, seed=32).parent
    (archive / "noise").mkdir()
    for i in range(12):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (32, 32), dtype=np.uint8)).save(
            archive / "noise" / f"{i:02d}.png"
        )
    (archive / "noise" / "empty.png").write_bytes(b"")
    output = tmp_path / "results"
    code, out, err = run_cli(
        monkeypatch,
        capsys,
        "score",
        "--model",
        str(model),
        "--input",
        str(archive),
        "--output",
        str(output),
        "--local",
        "--fdr",
        "0.05",
    )
    assert code == 0, err
    summary = json.loads(out)
    rows = pq.read_table(output).to_pandas().sort_values("path")
    scored = rows[rows.error.isna()]
    assert len(scored) == 212 and rows.error.notna().sum() == 1
    expected = false_discovery_control(scored.p_combined.to_numpy(), method="bh")
    np.testing.assert_allclose(scored.q_value.to_numpy(), expected, rtol=1e-12)
    assert (scored.is_anomaly.to_numpy() == (expected <= 0.05)).all()
    assert set(scored.decision_rule) == {"fdr_bh"} and set(scored.fdr) == {0.05}
    flagged = scored[scored.is_anomaly.astype(bool)]
    assert summary["decision_rule"] == "fdr_bh" and summary["flagged"] == len(flagged)
    assert flagged.path.str.contains("/noise/").sum() >= 10 and flagged.path.str.contains("/good/").sum() <= 2
    at_target = (scored.p_combined < scored.target_fpr).sum()
    code, out, err = run_cli(
        monkeypatch, capsys, "score", "--model", str(model), "--input", str(archive), "--output", str(output), "--local"
    )
    assert code == 0, err
    again = pq.read_table(output).to_pandas()
    again = again[again.error.isna()]
    assert set(again.decision_rule) == {"target_fpr"} and again.q_value.isna().all()
    assert (again.is_anomaly == (again.p_combined < again.target_fpr)).all() and json.loads(out)["flagged"] == at_target
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "score",
        "--model",
        str(model),
        "--input",
        str(archive),
        "--output",
        str(output),
        "--fdr",
        "1.5",
    )
    assert code == 2 and "--fdr must be in (0, 1), got 1.5" in err
    code, _, err = run_cli(
        monkeypatch, capsys, "score", "--model", str(model), "--fdr", "0.05", str(next((archive / "good").iterdir()))
    )
    assert code == 2 and "--fdr decides over a whole archive: give --input and --output" in err
