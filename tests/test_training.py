"""`anomaly train` end to end: real data, real Lightning training, a real MLflow SQLite store."""

import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

from anomaly.training.module import AutoencoderModule
from tests.conftest import run_cli, tiny_config


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def parse_output(out: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)


def assert_run_recorded(tracking_uri: str, run_id: str, epochs: int) -> None:
    client = mlflow.MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model.depth"] == "3" and "data.image_size" in params and "loss.terms.mse" in params
    assert run.data.tags["torch.version"] == torch.__version__ and int(run.data.tags["torch.threads"]) >= 1
    for metric in ("train_loss", "val_loss", "epoch"):  # once per epoch, though Lightning sends `epoch` with both
        assert len(client.get_metric_history(run_id, metric)) == epochs, metric
    artifacts = {item.path for item in client.list_artifacts(run_id)}
    assert {"config.yaml", "splits.json", "plots", "checkpoints"} <= artifacts
    assert [item.path for item in client.list_artifacts(run_id, "plots")] == ["plots/reconstructions.png"]
    assert [item.path for item in client.list_artifacts(run_id, "checkpoints")] == ["checkpoints/best.ckpt"]
    logged_config = yaml.safe_load(Path(client.download_artifacts(run_id, "config.yaml")).read_text())
    assert logged_config["model"]["depth"] == 3


def test_auto_image_size_is_resolved_from_the_images_and_recorded(
    texture_folder, tracking_uri, tmp_path, monkeypatch, capsys
):
    """The training images are 40 x 36; a budget of half their pixels at depth 3 gives 32 x 24."""
    settings = tiny_config(
        texture_folder, data={"image_size": "auto", "max_input_pixels": 720}, output_dir=str(tmp_path / "runs")
    )
    config = write_config(tmp_path / "config.yaml", settings)
    code, out, err = run_cli(
        monkeypatch, capsys, "train", "--config", str(config), "--set", f"tracking.uri={tracking_uri}"
    )
    assert code == 0, err
    printed = parse_output(out)
    assert (
        mlflow.MlflowClient(tracking_uri).get_run(printed["mlflow run id"]).data.params["data.image_size"] == "[32, 24]"
    )
    module = AutoencoderModule.load_from_checkpoint(printed["checkpoint"], map_location="cpu")
    assert module.config.data.image_size == (32, 24)
    assert module(torch.rand(2, 1, 32, 24)).reconstruction.shape == (2, 1, 32, 24)


@pytest.mark.parametrize("architecture", ["ae", "vae", "unet"])
def test_train_on_folder_records_everything_in_mlflow(
    architecture, texture_folder, tracking_uri, tmp_path, monkeypatch, capsys
):
    config = write_config(
        tmp_path / "config.yaml", tiny_config(texture_folder, architecture, output_dir=str(tmp_path / "runs"))
    )
    code, out, err = run_cli(
        monkeypatch, capsys, "train", "--config", str(config), "--set", f"tracking.uri={tracking_uri}"
    )
    assert code == 0, err
    printed = parse_output(out)
    assert Path(printed["checkpoint"]).is_file()
    assert_run_recorded(tracking_uri, printed["mlflow run id"], epochs=2)


@pytest.mark.parametrize("architecture", ["ae", "vae", "unet"])
def test_train_mnist_one_class(architecture, shared_datasets, tracking_uri, tmp_path, monkeypatch, capsys):
    config = tiny_config(
        shared_datasets,
        architecture,
        data={"kind": "mnist", "normal_class": 5, "batch_size": 64},
        trainer={"enable_progress_bar": False, "limit_train_batches": 8, "limit_val_batches": 2},
        output_dir=str(tmp_path / "runs"),
    )
    code, out, err = run_cli(
        monkeypatch,
        capsys,
        "train",
        "-c",
        str(write_config(tmp_path / "c.yaml", config)),
        "--set",
        f"tracking.uri={tracking_uri}",
        "tracking.experiment=mnist",
    )
    assert code == 0, err
    assert_run_recorded(tracking_uri, parse_output(out)["mlflow run id"], epochs=2)


@pytest.mark.parametrize("architecture", ["ae", "vae", "unet"])
def test_train_on_real_kolektorsdd_folder(architecture, shared_datasets, tracking_uri, tmp_path, monkeypatch, capsys):
    config = tiny_config(
        shared_datasets / "kolektorsdd",
        architecture,
        data={"image_size": [64, 32]},
        trainer={"enable_progress_bar": False, "limit_train_batches": 3, "limit_val_batches": 2},
        output_dir=str(tmp_path / "runs"),
    )
    code, out, err = run_cli(
        monkeypatch,
        capsys,
        "train",
        "-c",
        str(write_config(tmp_path / "c.yaml", config)),
        "--set",
        f"tracking.uri={tracking_uri}",
    )
    assert code == 0, err
    assert_run_recorded(tracking_uri, parse_output(out)["mlflow run id"], epochs=2)


def test_mlflow_tracking_uri_from_environment(texture_folder, tracking_uri, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    config = tiny_config(
        texture_folder, train={"max_epochs": 1, "early_stopping_patience": 0}, output_dir=str(tmp_path / "runs")
    )
    code, out, err = run_cli(monkeypatch, capsys, "train", "-c", str(write_config(tmp_path / "c.yaml", config)))
    assert code == 0, err
    assert parse_output(out)["tracking uri"] == tracking_uri
    assert mlflow.MlflowClient(tracking_uri).get_run(parse_output(out)["mlflow run id"]).info.status == "FINISHED"


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(texture_folder, tracking_uri, tmp_path):
    """The Trainer's strategy and devices reach Lightning: a real 2-process DDP run (gloo, CPU)."""
    config = write_config(
        tmp_path / "c.yaml",
        tiny_config(
            texture_folder,
            output_dir=str(tmp_path / "runs"),
            trainer={"enable_progress_bar": False, "accelerator": "cpu", "devices": 2, "strategy": "ddp"},
        ),
    )
    result = subprocess.run(
        [sys.executable, "-m", "anomaly.cli", "train", "-c", str(config), "--set", f"tracking.uri={tracking_uri}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    printed = parse_output(result.stdout)
    assert result.stdout.count("mlflow run id:") == 1  # only rank 0 reports
    assert Path(printed["checkpoint"]).is_file()
    assert_run_recorded(tracking_uri, printed["mlflow run id"], epochs=2)


def test_seeded_runs_are_reproducible(texture_folder, tracking_uri, tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path / "c.yaml", tiny_config(texture_folder, output_dir=str(tmp_path / "runs")))
    losses = []
    for _ in range(2):
        code, out, err = run_cli(
            monkeypatch, capsys, "train", "-c", str(config), "--set", f"tracking.uri={tracking_uri}"
        )
        assert code == 0, err
        printed = parse_output(out)
        losses.append(printed["best val loss"])
        threads = mlflow.MlflowClient(tracking_uri).get_run(printed["mlflow run id"]).data.tags["torch.threads"]
        assert threads == str(torch.get_num_threads())  # what a rerun must match, besides the seed
    assert losses[0] == losses[1]


def _expect_error(monkeypatch, capsys, config_path: Path, *extra: str) -> str:
    code, out, err = run_cli(monkeypatch, capsys, "train", "--config", str(config_path), *extra)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("missing_folder", "data folder not found"),
        ("empty_train", "no training images in"),
        ("mask_without_image", "has no image"),
        ("unreadable_image", "cannot read image"),
    ],
)
def test_data_errors_are_one_line(breakage, message, texture_folder, tmp_path, monkeypatch, capsys):
    root = texture_folder
    if breakage == "missing_folder":
        root = tmp_path / "absent"
    elif breakage == "empty_train":
        for image in (root / "train" / "good").iterdir():
            image.unlink()
    elif breakage == "mask_without_image":
        (root / "test" / "scratch" / "000.png").unlink()
    else:
        (root / "train" / "good" / "003.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    config = write_config(tmp_path / "c.yaml", tiny_config(root, output_dir=str(tmp_path / "runs")))
    assert message in _expect_error(monkeypatch, capsys, config)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.widht=3", "unknown key 'model.widht'"),
        ("data.image_size=[30, 32]", "not divisible by 2**model.depth = 8"),
        ("train.lr=-1", "train.lr: Input should be greater than 0"),
        ("model.depth", "overrides look like key.sub=value"),
    ],
)
def test_config_errors_are_one_line(override, message, texture_folder, tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path / "c.yaml", tiny_config(texture_folder))
    assert message in _expect_error(monkeypatch, capsys, config, "--set", override)


def test_missing_config_file(tmp_path, monkeypatch, capsys):
    assert "config file not found" in _expect_error(monkeypatch, capsys, tmp_path / "nope.yaml")


@pytest.mark.slow
def test_a_training_log_holds_only_what_a_user_can_act_on(texture_folder, tracking_uri, tmp_path):
    """`anomaly train` in a fresh process: no Lightning banners or tips, no MLflow set-up lines, no warnings about the
    project's own deliberate choices (a frozen encoder in eval mode); the command's own lines remain."""
    from tests.conftest import run_cli_process

    config = tiny_config(
        texture_folder,
        model={"encoder": "efficientnet_lite0", "latent_dim": 8},
        tracking={"uri": tracking_uri},
        output_dir=str(tmp_path / "runs"),
    )
    config["model"].pop("depth"), config["model"].pop("base_channels")
    done = run_cli_process("train", "--config", str(write_config(tmp_path / "config.yaml", config)))
    assert done.returncode == 0, done.stderr
    for noise in (
        "GPU available",
        "TPU available",
        "Tip:",
        "limit_train_batches",
        "INFO mlflow",
        "eval mode",
        "LeafSpec",
        "warning",
    ):
        assert noise not in done.stderr, (noise, done.stderr)
    assert "mlflow run id:" in done.stdout and "encoding training images" in done.stderr
