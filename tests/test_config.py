from pathlib import Path

import pytest

from anomaly.config import build_config, flatten, load_config, parse_override
from anomaly.errors import AnomalyError

BASE = {"data": {"kind": "folder", "root": "somewhere", "image_size": 32}, "model": {"depth": 3}}


def test_overrides_are_parsed_as_yaml_values():
    config = build_config(BASE, ["model.depth=2", "data.image_size=[16, 24]", "data.augment.hflip=true", "train.lr=0.01"])
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


def test_patch_level_must_be_within_the_encoder():
    assert build_config(BASE, ["scoring.latent=patch_knn", "scoring.patch_level=3"]).scoring.patch_level == 3
    with pytest.raises(AnomalyError, match=r"scoring\.patch_level 4 needs model\.depth >= 4, got 3"):
        build_config(BASE, ["scoring.latent=patch_knn", "scoring.patch_level=4"])
    for option in ("scoring.patch_position_normalise=true", "scoring.heatmap=patch_distance", "scoring.patch_line_length=3",
                   "scoring.patch_intensity_weight=0.5", "scoring.patch_bank=position"):
        with pytest.raises(AnomalyError, match=r"scoring\.heatmap=patch_distance need scoring\.latent=patch_knn"):
            build_config(BASE, [option])
    with pytest.raises(AnomalyError, match=r"scoring\.patch_line_length must be odd \(a run centred on a position\), got 4"):
        build_config(BASE, ["scoring.latent=patch_knn", "scoring.patch_line_length=4"])
    with pytest.raises(AnomalyError, match=r"scoring\.patch_intensity_weight needs scoring\.patch_position_normalise=true"):
        build_config(BASE, ["scoring.latent=patch_knn", "scoring.patch_intensity_weight=0.5"])
    position_bank = ["scoring.latent=patch_knn", "scoring.patch_bank=position"]
    with pytest.raises(AnomalyError, match=r"scoring\.patch_bank=position needs scoring\.patch_position_normalise=true"):
        build_config(BASE, position_bank)
    position_bank.append("scoring.patch_position_normalise=true")
    assert build_config(BASE, position_bank).scoring.patch_bank_radius == 2
    with pytest.raises(AnomalyError, match=r"scoring\.patch_intensity_weight > 0 needs scoring\.patch_bank=random"):
        build_config(BASE, [*position_bank, "scoring.patch_intensity_weight=0.5"])
    capped = ["scoring.latent=patch_knn", "scoring.patch_line_length=5", "scoring.patch_line_cap=3.5"]
    assert build_config(BASE, [*capped, "scoring.patch_position_normalise=true"]).scoring.patch_line_cap == 3.5
    for missing in (capped, [*capped[:1], "scoring.patch_position_normalise=true", capped[2]]):
        with pytest.raises(AnomalyError, match=r"scoring\.patch_line_cap needs scoring\.patch_position_normalise=true"):
            build_config(BASE, missing)


def test_auto_combination_needs_synthetic_validation():
    assert build_config(BASE, ["scoring.combine=auto", "data.synthetic_validation=true"]).scoring.combine == "auto"
    with pytest.raises(AnomalyError, match=r"scoring\.combine=auto needs data\.synthetic_validation=true"):
        build_config(BASE, ["scoring.combine=auto"])


def test_auto_patch_level_needs_patch_knn_validation_and_two_encoder_blocks():
    patch = ["scoring.latent=patch_knn", "scoring.patch_level=auto"]
    assert build_config(BASE, [*patch, "data.synthetic_validation=true"]).scoring.patch_level == "auto"
    for missing in (patch, ["scoring.patch_level=auto", "data.synthetic_validation=true"]):
        with pytest.raises(AnomalyError, match=r"scoring\.patch_level=auto needs scoring\.latent=patch_knn and data\.synthetic_validation=true"):
            build_config(BASE, missing)
    with pytest.raises(AnomalyError, match=r"scoring\.patch_level auto needs model\.depth >= 2, got 1"):
        build_config(BASE, [*patch, "data.synthetic_validation=true", "model.depth=1"])
    for wrong in ("deep", "0"):
        with pytest.raises(AnomalyError, match=rf"scoring\.patch_level: .*must be a positive integer or 'auto', got '?{wrong}'?$"):
            build_config(BASE, [f"scoring.patch_level={wrong}"])


def test_auto_patch_level_candidates_keep_the_line_run_in_pixels():
    scoring = build_config(BASE, ["scoring.latent=patch_knn", "scoring.patch_level=auto", "scoring.patch_line_length=17",
                                  "data.synthetic_validation=true"]).scoring
    assert (scoring.at_patch_level(2).patch_level, scoring.at_patch_level(2).patch_line_length) == (2, 17)
    assert (scoring.at_patch_level(1).patch_level, scoring.at_patch_level(1).patch_line_length) == (1, 33)
    assert scoring.patch_level == "auto"  # the candidates are copies


def test_image_size_must_be_divisible_by_depth():
    with pytest.raises(AnomalyError, match=r"data\.image_size 30x32 is not divisible by 2\*\*model\.depth = 8"):
        build_config(BASE, ["data.image_size=[30, 32]"])


def test_image_size_auto_is_left_for_the_data_to_resolve():
    assert build_config(BASE, ["data.image_size=auto"]).data.image_size == "auto"
    with pytest.raises(AnomalyError, match=r"data\.image_size: must be \[height, width\], one integer or 'auto', got 'large'$"):
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
