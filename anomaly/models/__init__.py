"""Model families and the factory that builds one from a ModelConfig."""

from __future__ import annotations

from torch import nn

from anomaly.config import ModelConfig
from anomaly.models.ae.torch_model import ConvAutoencoder
from anomaly.models.outputs import AutoencoderOutput, VariationalOutput
from anomaly.models.pretrained.torch_model import FeatureAutoencoder
from anomaly.models.unet.torch_model import UNetAutoencoder
from anomaly.models.vae.torch_model import VariationalAutoencoder

ARCHITECTURES: dict[str, type[nn.Module]] = {
    "ae": ConvAutoencoder,
    "vae": VariationalAutoencoder,
    "unet": UNetAutoencoder,
}


def build_model(config: ModelConfig, channels: int, image_size: tuple[int, int]) -> nn.Module:
    """The model, randomly initialised; a pretrained encoder's weights are loaded by `load_pretrained` (training)
    or come with a checkpoint's state dict, so loading a trained model never needs the weights file."""
    if config.pretrained:
        return FeatureAutoencoder(config, channels, image_size)
    return ARCHITECTURES[config.architecture](config, channels, image_size)


__all__ = ["ARCHITECTURES", "AutoencoderOutput", "FeatureAutoencoder", "VariationalOutput", "build_model"]
