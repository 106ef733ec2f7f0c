from pathlib import Path

import pytest

from anomaly.config import build_config, flatten, ignored_settings_warning, load_config, parse_override
from anomaly.errors import AnomalyError

BASE = {"data": {"kind": "folder", "root": "somewhere", "image_size": 32}, "model": {"depth": 3}}


def test_overrides_are_parsed_as_yaml_values():
    config = build_config(
        BASE, ["model.depth=2", "data.image_size=[16, 24]", "data.augment.hflip=true", "train.lr=0.01"]
    )
    assert config.model.depth == 2
    assert config.data.image_size == (16, 24)
    assert config.data.augment.hflip is True
    assert config.train.lr == pytest.approx(0.01)


def test_unknown_nested_key_is_named():
    with pytest.raises(AnomalyError, match=r"unknown key 'model\.widht'"):
        build_config(BASE, ["model.widht=3"])


def test_unknown_section_is_named():
    with pytest.raises(AnomalyError, match=r"unknown key 'modle'"):
        build_config({**BASE, "modle": {"depth": 3}})


def test_bad_value_names_the_key():
    with pytest.raises(AnomalyError, match=r"data\.batch_size: Input should be greater than or equal to 1"):
        build_config(BASE, ["data.batch_size=0"])


def test_bad_choice_names_the_key():
    with pytest.raises(AnomalyError, match=r"model\.architecture: Input should be 'ae', 'vae' or 'unet'"):
        build_config(BASE, ["model.architecture=gan"])


PATCHES = ["scoring.latent.kind=patches"]


def test_patch_level_must_be_within_the_encoder():
    assert build_config(BASE, [*PATCHES, "scoring.latent.level=3"]).scoring.latent.level == 3
    with pytest.raises(AnomalyError, match=r"scoring\.latent\.level 4 needs model\.depth >= 4, got 3"):
        build_config(BASE, [*PATCHES, "scoring.latent.level=4"])
    for wrong in ("deep", "0"):
        with pytest.raises(
            AnomalyError, match=rf"scoring\.latent\.level: .*must be a positive integer or 'auto', got '?{wrong}'?$"
        ):
            build_config(BASE, [*PATCHES, f"scoring.latent.level={wrong}"])


def test_patch_settings_exist_only_for_patches():
    for option in ("level=2", "aligned=false", "bank_size=10", "line_length=9", "line_cap=3.5"):
        with pytest.raises(
            AnomalyError,
            match=rf"unknown key 'scoring\.latent\.{option.split('=')[0]}' \(not a setting of "
            rf"scoring\.latent\.kind=code",
        ):
            build_config(BASE, [f"scoring.latent.{option}"])
    with pytest.raises(AnomalyError, match=r"unknown key 'scoring\.latent\.round_trip'$"):
        build_config(BASE, [*PATCHES, "scoring.latent.round_trip=true"])
    with pytest.raises(AnomalyError, match=r"scoring\.latent: kind must be 'code' or 'patches'"):
        build_config(BASE, ["scoring.latent.kind=pixels"])


def test_a_new_latent_kind_starts_its_section_afresh():
    patches = build_config(BASE, [*PATCHES, "scoring.latent.bank_size=7"]).model_dump(mode="json")
    assert build_config(
        patches, ["scoring.latent.kind=code", "scoring.latent.round_trip=true"]
    ).scoring.latent.round_trip
    assert (
        build_config(patches, ["scoring.latent.kind=patches"]).scoring.latent.bank_size == 7
    )  # the same kind keeps its settings


def test_line_cap_needs_aligned_parts_and_banks_default_by_kind():
    capped = [*PATCHES, "scoring.latent.line_length=20", "scoring.latent.line_cap=3.5"]
    assert build_config(BASE, capped).scoring.latent.line_cap == 3.5
    with pytest.raises(AnomalyError, match=r"scoring\.latent: line_cap needs aligned=true"):
        build_config(BASE, [*capped, "scoring.latent.aligned=false"])
    assert build_config(BASE, PATCHES).scoring.latent.bank_vectors == 96
    assert build_config(BASE, [*PATCHES, "scoring.latent.aligned=false"]).scoring.latent.bank_vectors == 4096
    assert build_config(BASE, [*PATCHES, "scoring.latent.bank_size=7"]).scoring.latent.bank_vectors == 7


def test_auto_choices_need_synthetic_validation_and_two_encoder_blocks():
    assert build_config(BASE, ["scoring.combine=auto", "data.synthetic_validation=true"]).scoring.combine == "auto"
    with pytest.raises(AnomalyError, match=r"scoring\.combine=auto needs data\.synthetic_validation=true"):
        build_config(BASE, ["scoring.combine=auto"])
    auto = [*PATCHES, "scoring.latent.level=auto"]
    assert build_config(BASE, [*auto, "data.synthetic_validation=true"]).scoring.latent.level == "auto"
    with pytest.raises(
        AnomalyError, match=r"scoring\.combine and scoring\.latent\.level=auto need data\.synthetic_validation=true"
    ):
        build_config(BASE, [*auto, "scoring.combine=auto"])
    with pytest.raises(AnomalyError, match=r"scoring\.latent\.level auto needs model\.depth >= 2, got 1"):
        build_config(BASE, [*auto, "data.synthetic_validation=true", "model.depth=1"])


def test_line_runs_keep_their_length_in_pixels_at_every_level():
    patches = build_config(BASE, [*PATCHES, "scoring.latent.line_length=68"]).scoring.latent
    assert [patches.positions_in_run(level) for level in (1, 2, 3)] == [33, 17, 9]  # odd: centred on a position
    assert build_config(BASE, PATCHES).scoring.latent.positions_in_run(2) == 1


def test_resolved_scoring_writes_in_what_fitting_chose():
    scoring = build_config(
        BASE, [*PATCHES, "scoring.latent.level=auto", "scoring.combine=auto", "data.synthetic_validation=true"]
    ).scoring
    resolved = scoring.resolved(level=2).resolved(combine="latent")
    assert resolved.model_dump(mode="json")["latent"] == {
        "kind": "patches",
        "level": 2,
        "aligned": True,
        "bank_size": 96,
        "line_length": 1,
        "line_cap": None,
    }
    assert resolved.combine == "latent" and scoring.latent.level == "auto"  # a copy


def test_scoring_has_at_most_twelve_settings():
    from anomaly.config import CodeDistance, PatchDistance, ReconstructionSignal, ScoringConfig

    nested = {"reconstruction", "latent"}
    settings = [
        *ReconstructionSignal.model_fields,
        *CodeDistance.model_fields,
        *(name for name in PatchDistance.model_fields if name != "kind"),
        *(name for name in ScoringConfig.model_fields if name not in nested),
    ]
    assert len(settings) <= 12, settings


def test_image_size_must_be_divisible_by_depth():
    with pytest.raises(AnomalyError, match=r"data\.image_size 30x32 is not divisible by 2\*\*model\.depth = 8"):
        build_config(BASE, ["data.image_size=[30, 32]"])


def test_image_size_auto_is_left_for_the_data_to_resolve():
    assert build_config(BASE, ["data.image_size=auto"]).data.image_size == "auto"
    with pytest.raises(
        AnomalyError, match=r"data\.image_size: must be \[height, width\], one integer or 'auto', got 'large'$"
    ):
        build_config(BASE, ["data.image_size=large"])


def test_folder_needs_root_and_torchvision_needs_class():
    with pytest.raises(AnomalyError, match="data.root is required"):
        build_config({"data": {"kind": "folder"}})
    with pytest.raises(AnomalyError, match="data.normal_class is required"):
        build_config({"data": {"kind": "mnist"}})


def test_override_into_a_value_is_refused():
    with pytest.raises(AnomalyError, match=r"override model\.depth\.x: model\.depth is not a section"):
        build_config(BASE, ["model.depth.x=1"])
    with pytest.raises(AnomalyError, match="must look like key.sub=value"):
        parse_override("=3")


def test_load_config_errors(tmp_path: Path):
    with pytest.raises(AnomalyError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("data:\n  kind: [folder\n")
    with pytest.raises(AnomalyError, match="is not valid YAML at line"):
        load_config(broken)


def test_shipped_pipeline_configs_validate():
    configs = sorted((Path(__file__).parents[1] / "pipelines").glob("*.yaml"))
    assert {path.stem for path in configs} >= {"mnist", "folder", "elpv"}
    for path in configs:
        load_config(path)


def test_flatten_gives_scalar_params_only():
    flat = flatten(build_config(BASE))
    assert flat["model.depth"] == 3
    assert flat["data.image_size"] == "[32, 32]"
    assert flat["loss.terms.mse"] == 1.0
    assert all(isinstance(value, (str, int, float, bool)) for value in flat.values())


def test_configuration_reference_in_docs_is_current():
    """docs/configuration.md is generated from the pydantic descriptions; regenerate it when a field changes."""
    from anomaly.config_reference import render_reference

    documented = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    assert documented == render_reference(), "run: uv run python -m anomaly.config_reference > docs/configuration.md"


# The folder default's resolved scoring on KolektorSDD as a detector file before the nesting stored it.
FLAT_SCORING = {
    "map": "squared",
    "smoothing_sigma": 2.0,
    "reduction": "topk",
    "topk_fraction": 0.01,
    "latent": "patch_knn",
    "latent_vector": "code",
    "knn_k": 1,
    "knn_bank_size": 4096,
    "patch_level": 3,
    "patch_standardise": True,
    "patch_intensity_weight": 0.0,
    "patch_position_normalise": True,
    "patch_bank": "position",
    "patch_bank_radius": 2,
    "patch_bank_per_position": 96,
    "patch_line_length": 9,
    "patch_line_cap": 3.5,
    "heatmap": "patch_distance",
    "combine": "latent",
    "tail_fraction": 0.1,
    "target_fpr": 0.01,
    "pixel_sample_size": 20000,
}


def test_stored_flat_scoring_is_upgraded_to_the_same_detector_or_refused():
    from anomaly.config import Config, upgrade_stored_config

    stored = {**BASE, "model": {"encoder": "efficientnet_lite0"}, "scoring": FLAT_SCORING}
    upgraded = Config.model_validate(upgrade_stored_config(stored)).scoring
    assert upgraded.latent.model_dump() == {
        "kind": "patches",
        "level": 3,
        "aligned": True,
        "bank_size": 96,
        "line_length": 72,
        "line_cap": 3.5,
    }
    assert upgraded.latent.positions_in_run(3) == 9 and upgraded.combine == "latent"  # the same 9 positions at stride 8
    code = {**FLAT_SCORING, "latent": "mahalanobis", "latent_vector": "code_and_round_trip", "reduction": "mean"}
    upgraded = Config.model_validate(upgrade_stored_config({**BASE, "scoring": code})).scoring
    assert upgraded.latent.round_trip and upgraded.reconstruction.top_fraction == 1.0
    assert upgrade_stored_config(build_config(BASE).model_dump(mode="json"))["scoring"]["latent"] == {
        "kind": "code",
        "round_trip": False,
    }
    for removed in (
        {"latent": "knn"},
        {"combine": "min_p"},
        {"patch_intensity_weight": 0.5},
        {"heatmap": "reconstruction"},
    ):
        with pytest.raises(AnomalyError, match="written by an older anomaly with"):
            upgrade_stored_config({**BASE, "scoring": {**FLAT_SCORING, **removed}})


def test_own_encoder_settings_set_with_a_pretrained_encoder_are_named_in_one_warning():
    pretrained = {
        "data": {"kind": "folder", "root": "somewhere", "image_size": 64},
        "model": {"encoder": "efficientnet_lite0"},
    }
    assert ignored_settings_warning(build_config(pretrained)) is None
    assert ignored_settings_warning(build_config(BASE)) is None  # the own encoder reads them
    warned = ignored_settings_warning(
        build_config(pretrained, ["model.depth=5", "model.bottleneck=spatial", "model.latent_dim=64"])
    )
    assert warned == (
        "model.depth, model.bottleneck apply to model.encoder=own only and are ignored with "
        "model.encoder=efficientnet_lite0"
    )
    for name in ("folder", "elpv"):  # the shipped defaults set none of them
        assert ignored_settings_warning(load_config(Path("pipelines") / f"{name}.yaml", ["data.root=x"])) is None


def test_line_runs_auto_brings_its_own_cap_and_needs_validation():
    patches = [*PATCHES, "data.synthetic_validation=true", "scoring.latent.line_length=auto"]
    latent = build_config(BASE, patches).scoring.latent
    assert latent.line_runs == ((1, None), (68, 3.5))
    assert build_config(BASE, [*PATCHES, "scoring.latent.line_length=20"]).scoring.latent.line_runs == ((20, None),)
    with pytest.raises(AnomalyError, match="line_length=auto needs aligned=true and brings its own line_cap"):
        build_config(BASE, [*patches, "scoring.latent.line_cap=2.0"])
    with pytest.raises(AnomalyError, match="scoring.latent.line_length=auto needs data.synthetic_validation=true"):
        build_config(BASE, [*PATCHES, "scoring.latent.line_length=auto"])
    resolved = build_config(BASE, patches).scoring.resolved(level=2, line_run=(68, 3.5))
    assert (resolved.latent.line_length, resolved.latent.line_cap) == (68, 3.5)
