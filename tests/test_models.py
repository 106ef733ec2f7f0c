import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from anomaly.config import ModelConfig, build_config
from anomaly.data.dataset import ImageSetDataset
from anomaly.data.imageset import normal_set
from anomaly.models import AutoencoderOutput, VariationalOutput, build_model
from anomaly.models.vae.loss import kl_divergence
from anomaly.training.module import AutoencoderModule
from tests.conftest import stripes


@pytest.mark.parametrize("architecture", ["ae", "vae", "unet"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(
    ("size", "depth", "bottleneck", "downsample", "upsample"),
    [
        ((32, 32), 3, "dense", "stride", "bilinear"),
        ((64, 48), 4, "spatial", "pool", "transposed"),
        ((16, 80), 2, "dense", "pool", "bilinear"),
    ],
)
def test_output_contract(architecture, channels, size, depth, bottleneck, downsample, upsample):
    config = ModelConfig(
        architecture=architecture,
        depth=depth,
        base_channels=8,
        latent_dim=12,
        bottleneck=bottleneck,
        downsample=downsample,
        upsample=upsample,
    )
    model = build_model(config, channels, size).eval()
    images = torch.rand(3, channels, *size)
    output = model(images)
    assert isinstance(output, AutoencoderOutput)
    assert output.reconstruction.shape == images.shape
    assert output.reconstruction.min() >= 0 and output.reconstruction.max() <= 1
    assert output.latent.ndim == 2 and output.latent.shape[0] == 3
    assert torch.allclose(model.latent(images), output.latent)
    if architecture == "vae":
        assert isinstance(output, VariationalOutput)
        assert output.mu.shape == output.logvar.shape
        assert torch.equal(output.latent, output.mu.flatten(1))
    if architecture != "unet":
        expected = 12 if bottleneck == "dense" else 12 * (size[0] // 2**depth) * (size[1] // 2**depth)
        assert output.latent.shape[1] == expected


def test_vae_samples_in_training_and_is_deterministic_at_inference():
    model = build_model(ModelConfig(architecture="vae", depth=2, base_channels=4, latent_dim=8), 1, (16, 16))
    images = torch.rand(4, 1, 16, 16)
    model.eval()
    assert torch.equal(model(images).reconstruction, model(images).reconstruction)
    model.train()
    assert not torch.equal(model(images).reconstruction, model(images).reconstruction)


def test_kl_divergence_matches_hand_computed_value():
    mu = torch.tensor([[0.5, -1.0], [0.0, 2.0]])
    logvar = torch.tensor([[0.0, math.log(4.0)], [math.log(0.25), 0.0]])
    # KL of N(mu, s^2) to N(0, 1) per dimension: 0.5 * (s^2 + mu^2 - 1 - ln s^2)
    sample_1 = 0.5 * (1 + 0.25 - 1 - 0) + 0.5 * (4 + 1 - 1 - math.log(4.0))
    sample_2 = 0.5 * (0.25 + 0 - 1 - math.log(0.25)) + 0.5 * (1 + 4 - 1 - 0)
    assert kl_divergence(mu, logvar).item() == pytest.approx((sample_1 + sample_2) / 2, rel=1e-6)
    assert kl_divergence(torch.zeros(3, 5), torch.zeros(3, 5)).item() == 0.0


def _train_unet(corruption: str, steps: int = 300) -> AutoencoderModule:
    L.seed_everything(0, verbose=False)
    train = normal_set(stripes(256, 32, 32, seed=0)[..., None], [str(i) for i in range(256)])
    config = build_config(
        {
            "data": {"kind": "folder", "root": "unused", "image_size": 32, "channels": 1},
            "model": {"architecture": "unet", "depth": 3, "base_channels": 16},
            "train": {"corruption": corruption, "lr": 3e-3},
        }
    )
    module = AutoencoderModule(config.model_dump(mode="json"))
    trainer = L.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(module, DataLoader(ImageSetDataset(train), batch_size=32, shuffle=True, drop_last=True))
    return module.eval()


def _patch_errors(module: AutoencoderModule) -> tuple[float, float]:
    """Squared reconstruction error inside an unseen patch (flat and vertical stripes) and outside it."""
    images = torch.from_numpy(stripes(16, 32, 32, seed=1)).float()[:, None] / 255.0
    inside = torch.zeros_like(images, dtype=torch.bool)
    inside[:, :, 12:22, 12:22] = True
    vertical = 0.5 + 0.35 * torch.sin(2 * torch.pi * torch.arange(10) / 8.0)
    images[:8, :, 12:22, 12:22] = 0.95
    images[8:, :, 12:22, 12:22] = vertical.expand(10, 10)
    with torch.no_grad():
        error = (module(images).reconstruction - images) ** 2
    return error[inside].mean().item(), error[~inside].mean().item()


@pytest.mark.slow
def test_unet_trained_with_corruption_does_not_pass_anomalies_through():
    repaired_inside, repaired_outside = _patch_errors(_train_unet("synthetic"))
    identity_inside, _ = _patch_errors(_train_unet("none"))
    # Measured at 300 steps: inside/outside about 85-145x; inside 3-5x the uncorrupted U-Net's.
    assert repaired_inside > 20 * repaired_outside
    assert repaired_inside > 2 * identity_inside
