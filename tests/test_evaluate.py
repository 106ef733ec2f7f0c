"""`anomaly evaluate` and `anomaly oneclass` end to end on real (small) data and a real MLflow store."""

import json

import mlflow
import numpy as np
import pytest
import torch

from anomaly.calibration.artifact import Calibration
from anomaly.config import build_config
from anomaly.data.datamodule import AnomalyDataModule
from anomaly.errors import AnomalyError
from anomaly.evaluation.run import evaluate_checkpoint
from anomaly.scoring.detector import load_detector, weights_checksum
from anomaly.training.train import train
from tests.conftest import run_cli, tiny_config, write_texture_folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny AE on a texture folder with masks, trained once for this module's tests."""
    root = tmp_path_factory.mktemp("evaluate")
    folder = write_texture_folder(root / "textures", train=80, test_good=8, test_defect=8)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    config = build_config(
        tiny_config(
            folder,
            data={"calibration_fraction": 0.2, "synthetic_validation": True},
            train={"max_epochs": 3, "early_stopping_patience": 0},
            tracking={"uri": uri},
            output_dir=str(root / "runs"),
        )
    )
    return train(config), uri, root


def test_evaluate_writes_metrics_calibration_plots_and_logs_to_the_training_run(trained):
    result, uri, root = trained
    evaluation = evaluate_checkpoint(result.checkpoint, [], root / "evaluation")
    metrics = json.loads((root / "evaluation" / "metrics.json").read_text())
    assert metrics == evaluation.metrics
    for key in ("image_auroc", "image_aupr", "pixel_auroc", "pixel_aupro", "target_fpr", "test_fpr", "threshold"):
        assert isinstance(metrics[key], float), key
    assert set(metrics["image"]) == {"reconstruction", "latent", "combined"}
    assert metrics["counts"] == {"normal": 8, "anomalous": 8}
    assert set(metrics["categories"]) == {"scratch"}
    assert "at_f1_optimal_threshold" in metrics
    # The bright scratches are far off the training texture: reconstruction finds them.
    assert metrics["image"]["reconstruction"]["auroc"] > 0.9
    assert metrics["pixel_auroc"] > 0.9
    detector = load_detector(root / "evaluation" / "detector.pt")
    calibration = Calibration.load(
        root / "evaluation" / "calibration.json", expected_model_checksum=weights_checksum(detector)
    )
    assert calibration.sample_sizes["calibration_images"] == 16
    # The training split (80 normals less 8 validation and 16 calibration) is scored out of fold in 5 runs.
    assert calibration.sample_sizes["cross_fitted_images"] == 56 and calibration.sample_sizes["cross_fit_folds"] == 5
    assert len(calibration.distributions["latent"].sample) == 16 + 56
    assert calibration.holdout == "whole runs of consecutive training normals in name order (data.holdout=blocks)"
    assert calibration.f1_optimal_score is not None
    # The calibration curve: at each target, the share of the 8 test normals flagged and its 95% binomial range.
    curve = {point["target_fpr"]: point for point in metrics["calibration_curve"]}
    assert list(curve) == [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2]
    assert all(point["normals"] == 8 and point["realised_fpr"] == point["flagged"] / 8 for point in curve.values())
    assert curve[0.2]["interval_low"] == 0.0 and curve[0.2]["interval_high"] == 0.5  # binom(8, 0.2): 0 to 4 of 8
    assert [point["flagged"] for point in curve.values()] == sorted(point["flagged"] for point in curve.values())
    assert metrics["promise"] == calibration.promise().to_dict()
    # Settings are compared on validation normals and their synthetic anomalies, never on test labels.
    signals = {"reconstruction", "latent", "combined", "pixel"}
    assert set(calibration.validation_auroc) == signals | {
        f"{kind}.{name}" for kind in ("synthetic_blob", "synthetic_line", "synthetic_shade") for name in signals
    }
    plots = {path.name for path in (root / "evaluation" / "plots").iterdir()}
    assert plots == {"score_histograms.png", "examples.png", "latent_pca.png", "roc.png", "calibration.png"}
    client = mlflow.MlflowClient(uri)
    run = client.get_run(result.run_id)
    assert run.data.metrics["test.image_auroc"] == pytest.approx(metrics["image_auroc"])
    assert run.data.metrics["validation.synthetic_auroc.combined"] == pytest.approx(
        calibration.validation_auroc["combined"]
    )
    line_pixel = calibration.validation_auroc["synthetic_line.pixel"]
    assert run.data.metrics["validation.synthetic_auroc.synthetic_line.pixel"] == pytest.approx(line_pixel)
    logged = {item.path for item in client.list_artifacts(result.run_id, "evaluation")}
    assert {"evaluation/metrics.json", "evaluation/calibration.json", "evaluation/plots"} <= logged
    assert "evaluation/plots/calibration.png" in {
        item.path for item in client.list_artifacts(result.run_id, "evaluation/plots")
    }


def test_auto_combination_is_chosen_at_calibration_and_recorded(trained, tmp_path):
    result, _, _ = trained
    # Without cross-fitting, which refits the latent distribution after the choice (and so a fisher statistic's AUROC).
    evaluation = evaluate_checkpoint(result.checkpoint, ["scoring.combine=auto", "data.cross_fit_folds=0"], tmp_path)
    saved = json.loads((tmp_path / "calibration.json").read_text())
    validation, chosen = saved["validation_auroc"], saved["scoring"]["combine"]
    [choice] = saved["choices"]
    assert choice["setting"] == "scoring.combine" and choice["chosen"] == chosen
    assert set(choice["validation_auroc"]) == {"latent", "reconstruction", "fisher"}
    assert validation["combined"] == pytest.approx(choice["validation_auroc"][chosen])
    # the best candidate wins unless its lead over the chosen one is within the bootstrap interval
    low, high = choice["best_lead_interval"]
    assert choice["best"] == chosen or low <= 0 < high
    # from then on the model decides exactly as one configured with the chosen rule
    fixed = evaluate_checkpoint(
        result.checkpoint, [f"scoring.combine={chosen}", "data.cross_fit_folds=0"], tmp_path / "fixed"
    )
    assert evaluation.metrics["image"]["combined"] == fixed.metrics["image"]["combined"]
    assert evaluation.metrics["test_fpr"] == fixed.metrics["test_fpr"]


PATCH_SCORING = ["scoring.latent.kind=patches", "scoring.latent.bank_size=16", "scoring.latent.line_length=12"]


def test_auto_choices_are_resolved_once_for_detector_and_calibration(trained, tmp_path):
    result, _, _ = trained
    evaluation = evaluate_checkpoint(
        result.checkpoint, [*PATCH_SCORING, "scoring.latent.level=auto", "scoring.combine=auto"], tmp_path
    )
    saved = json.loads((tmp_path / "calibration.json").read_text())
    validation, chosen = saved["validation_auroc"], saved["scoring"]["latent"]["level"]
    level_choice, combine_choice = saved["choices"]  # the level's choice, then the chosen level's combination
    assert level_choice["setting"] == "scoring.latent.level" and level_choice["chosen"] == chosen
    assert level_choice["best"] == chosen or level_choice["best_lead_interval"][0] <= 0
    assert validation["combined"] == pytest.approx(validation[f"patch_level_{chosen}"])
    assert combine_choice["setting"] == "scoring.combine" and combine_choice["chosen"] == saved["scoring"]["combine"]
    detector = load_detector(tmp_path / "detector.pt")  # what export and serving see: the same resolved choices
    assert detector.config.scoring.model_dump(mode="json") == saved["scoring"]
    assert detector.latent_distance.image_distance.length == {2: 3, 1: 5}[chosen]  # 12 pixels at either stride
    # from then on the model decides exactly as one configured with the chosen level and combination
    fixed = evaluate_checkpoint(
        result.checkpoint,
        [*PATCH_SCORING, f"scoring.latent.level={chosen}", f"scoring.combine={saved['scoring']['combine']}"],
        tmp_path / "fixed",
    )
    assert evaluation.metrics["image"] == fixed.metrics["image"]
    assert evaluation.metrics["pixel_auroc"] == fixed.metrics["pixel_auroc"]


def test_line_runs_are_a_candidate_read_from_the_same_fitted_bank(trained, tmp_path):
    """line_length=auto: the largest position or the crack-shaped run, both scored from one fitted bank's patch maps;
    the kept one decides exactly as a detector configured with it from the start."""
    result, _, _ = trained
    # the default 96 vectors per place, more than the training images: the fitted bank is smaller than asked for
    patches = ["scoring.latent.kind=patches", "scoring.latent.level=2"]
    evaluation = evaluate_checkpoint(
        result.checkpoint, [*patches, "scoring.latent.line_length=auto", "scoring.combine=latent"], tmp_path
    )
    saved = json.loads((tmp_path / "calibration.json").read_text())
    [choice] = saved["choices"]
    assert choice["setting"] == "scoring.latent.line_length" and set(choice["validation_auroc"]) == {"1", "68"}
    length, cap = (1, None) if choice["chosen"] == 1 else (68, 3.5)
    assert (saved["scoring"]["latent"]["line_length"], saved["scoring"]["latent"]["line_cap"]) == (length, cap)
    assert saved["validation_auroc"]["combined"] == pytest.approx(choice["validation_auroc"][str(length)])
    fixed_run = [f"scoring.latent.line_length={length}", *([f"scoring.latent.line_cap={cap}"] if cap else [])]
    fixed = evaluate_checkpoint(result.checkpoint, [*patches, *fixed_run, "scoring.combine=latent"], tmp_path / "fixed")
    assert evaluation.metrics["image"] == fixed.metrics["image"]
    other = 68 if length == 1 else 1  # the other candidate, configured alone, ranks validation as the choice recorded
    other_run = (
        ["scoring.latent.line_length=68", "scoring.latent.line_cap=3.5"]
        if other == 68
        else ["scoring.latent.line_length=1"]
    )
    evaluate_checkpoint(result.checkpoint, [*patches, *other_run, "scoring.combine=latent"], tmp_path / "other")
    other_auroc = json.loads((tmp_path / "other" / "calibration.json").read_text())["validation_auroc"]["combined"]
    assert other_auroc == pytest.approx(choice["validation_auroc"][str(other)])


@pytest.mark.parametrize(
    "scoring", [[], [*PATCH_SCORING, "scoring.combine=fisher"], [*PATCH_SCORING, "scoring.combine=reconstruction"]]
)
def test_the_pixel_threshold_is_fitted_on_the_heat_map_that_is_served(trained, tmp_path, scoring):
    """The pixel distribution's sample is the held-out normals' heat map exactly as the detector computes it (the
    reconstruction error for the code distance; for patches the maps mixed as the combination chose), so the served
    map is coloured at the calibrated target."""
    result, _, _ = trained
    evaluate_checkpoint(result.checkpoint, scoring, tmp_path)
    detector = load_detector(tmp_path / "detector.pt")
    calibration = Calibration.load(tmp_path / "calibration.json")
    datamodule = AnomalyDataModule(detector.config.data)
    datamodule.setup()
    images = torch.from_numpy(datamodule.calibration_set.images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        served = detector(images).anomaly_map.numpy().ravel()
    assert served.size <= 20_000  # every held-out pixel is in the sample
    assert np.allclose(np.sort(served), calibration.distributions["pixel"].sample, rtol=1e-5, atol=1e-6)


def test_evaluation_scoring_can_change_but_the_model_cannot(trained, tmp_path):
    result, _, _ = trained
    evaluation = evaluate_checkpoint(
        result.checkpoint, [*PATCH_SCORING, "scoring.reconstruction.map=ssim", "scoring.target_fpr=0.05"], tmp_path
    )
    assert evaluation.metrics["target_fpr"] == 0.05
    assert json.loads((tmp_path / "calibration.json").read_text())["scoring"]["latent"]["kind"] == "patches"
    with pytest.raises(AnomalyError, match="only data, scoring, tracking, output_dir can change after training"):
        evaluate_checkpoint(result.checkpoint, ["model.depth=2"], tmp_path)
    with pytest.raises(
        AnomalyError,
        match=r"data.image_size is fixed by the trained model \(\(32, 32\)\); it cannot change to \(64, 64\)",
    ):
        evaluate_checkpoint(result.checkpoint, ["data.image_size=64"], tmp_path)


def test_round_trip_latent_is_fitted_on_the_vectors_it_measures(trained, tmp_path):
    result, _, _ = trained
    evaluate_checkpoint(result.checkpoint, ["scoring.latent.round_trip=true"], tmp_path)
    detector = load_detector(tmp_path / "detector.pt")
    datamodule = AnomalyDataModule(detector.config.data)
    datamodule.setup()
    with torch.no_grad():
        images = torch.cat([batch["image"] for batch in datamodule.train_dataloader_for_fitting()])
        codes = detector.model(images).latent
        round_trip = codes - detector.model(detector.model(images).reconstruction).latent
    # Fitted on [E(x), E(x) - E(D(E(x)))] of the training images, one covariance per half.
    half = codes.shape[1]
    distance = detector.latent_distance
    assert torch.allclose(distance.mean, torch.cat((codes, round_trip), dim=1).mean(0), atol=1e-4)
    assert torch.count_nonzero(distance.precision[:half, half:]) == 0
    assert torch.count_nonzero(distance.precision[half:, half:]) > half


def test_evaluate_cli_errors(trained, tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", "--checkpoint", str(tmp_path / "missing.ckpt"))
    assert code == 2 and err.strip() == f"error: checkpoint not found: {tmp_path / 'missing.ckpt'}"
    (tmp_path / "broken.ckpt").write_bytes(b"garbage")
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", "--checkpoint", str(tmp_path / "broken.ckpt"))
    assert code == 2 and "cannot load checkpoint" in err and "Traceback" not in err


def test_too_few_calibration_images_is_a_clear_error(texture_folder, tmp_path):
    config = build_config(
        tiny_config(
            texture_folder,
            train={"max_epochs": 1, "early_stopping_patience": 0},
            tracking={"uri": f"sqlite:///{tmp_path / 'm.db'}"},
            output_dir=str(tmp_path / "runs"),
        )
    )
    result = train(config)
    with pytest.raises(AnomalyError, match="calibration needs at least 10 held-out normal images, got 2"):
        evaluate_checkpoint(result.checkpoint, [], tmp_path / "evaluation")


@pytest.mark.slow
def test_oneclass_protocol_on_mnist(shared_datasets, tmp_path, monkeypatch, capsys):
    config = tmp_path / "mnist.yaml"
    config.write_text(
        json.dumps(
            tiny_config(
                shared_datasets,
                data={"kind": "mnist", "normal_class": 0, "batch_size": 64},
                trainer={"enable_progress_bar": False, "limit_train_batches": 5, "limit_val_batches": 2},
                train={"max_epochs": 1, "early_stopping_patience": 0},
                tracking={"uri": f"sqlite:///{tmp_path / 'm.db'}"},
                output_dir=str(tmp_path / "runs"),
            )
        )
    )
    code, out, err = run_cli(
        monkeypatch,
        capsys,
        "oneclass",
        "-c",
        str(config),
        "--classes",
        "1",
        "--architectures",
        "ae,vae",
        "-o",
        str(tmp_path / "oneclass"),
    )
    assert code == 0, err
    results = json.loads((tmp_path / "oneclass" / "oneclass.json").read_text())
    assert set(results["architectures"]) == {"ae", "vae"}
    row = results["architectures"]["vae"]["1"]
    assert 0.5 < row["combined_auroc"] <= 1.0 and 0 <= row["test_fpr"] <= 1
    assert (tmp_path / "oneclass" / "vae" / "class_1" / "plots" / "vae_samples.png").is_file()
    assert "| vae | mean |" in out


def test_oneclass_refuses_folder_data(texture_folder, tmp_path, monkeypatch, capsys):
    config = tmp_path / "folder.yaml"
    config.write_text(json.dumps(tiny_config(texture_folder)))
    code, _, err = run_cli(monkeypatch, capsys, "oneclass", "-c", str(config))
    assert code == 2 and "the one-class protocol needs data.kind in mnist" in err


def test_category_names_become_valid_mlflow_metric_names():
    from anomaly.evaluation.run import mlflow_metric_name

    assert mlflow_metric_name("test.categories.p>=0.67.auroc") == "test.categories.p__0.67.auroc"
    assert mlflow_metric_name("test.image.combined.auroc") == "test.image.combined.auroc"
