"""Model families and the factory that builds one from a ModelConfig."""

from __future__ import annotations

from torch import nn

from anomaly.config import ModelConfig
from anomaly.models.ae.torch_model import ConvAutoencoder
from anomaly.models.outputs import AutoencoderOutput, VariationalOutput
from anomaly.models.unet.torch_model import UNetAutoencoder
from anomaly.models.vae.torch_model import VariationalAutoencoder

ARCHITECTURES: dict[str, type[nn.Module]] = {
    "ae": ConvAutoencoder,
    "vae": VariationalAutoencoder,
    "unet": UNetAutoencoder,
}


def build_model(config: ModelConfig, channels: int, image_size: tuple[int, int]) -> nn.Module:
    return ARCHITECTURES[config.architecture](config, channels, image_size)


__all__ = ["ARCHITECTURES", "AutoencoderOutput", "VariationalOutput", "build_model"]
