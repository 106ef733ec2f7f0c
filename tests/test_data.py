from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anomaly.config import AugmentConfig, DataConfig, build_config
from anomaly.data.datamodule import AnomalyDataModule
from anomaly.data.dataset import build_augmentation
from anomaly.data.folder import load_folder, native_folder_size
from anomaly.data.sizing import auto_input_size, resolve_image_size
from anomaly.data.splits import split_normals
from anomaly.data.synthetic import perlin_noise, synthesize_anomalies, synthetic_anomaly_set
from anomaly.errors import AnomalyError
from anomaly.imageio import ImageTooLargeError, UnsupportedFormatError, decode_image, open_image
from tests.conftest import stripes


def test_folder_layout_is_loaded_with_categories_masks_and_resizing(texture_folder: Path):
    source = load_folder(texture_folder, (32, 32), 3)
    assert source.train.images.shape == (24, 32, 32, 3)
    assert source.train.labels.sum() == 0
    test = source.test
    assert test.categories == ["good"] * 4 + ["scratch"] * 4
    assert test.labels.tolist() == [0] * 4 + [1] * 4
    assert test.masks.shape == (8, 32, 32)
    assert not test.masks[:4].any() and all(mask.any() for mask in test.masks[4:])
    assert set(np.unique(test.masks)) <= {False, True}


def test_missing_folder(tmp_path: Path):
    with pytest.raises(AnomalyError, match="data folder not found"):
        load_folder(tmp_path / "nowhere", (32, 32), 1)


def test_empty_train_good(texture_folder: Path):
    for image in (texture_folder / "train" / "good").iterdir():
        image.unlink()
    (texture_folder / "train" / "good" / "notes.txt").write_text("not an image")
    with pytest.raises(AnomalyError, match=r"no training images in .*train/good"):
        load_folder(texture_folder, (32, 32), 1)


def test_mask_without_image(texture_folder: Path):
    (texture_folder / "test" / "scratch" / "002.png").unlink()
    with pytest.raises(AnomalyError, match=r"mask .*002_mask.png has no image"):
        load_folder(texture_folder, (32, 32), 1)


def test_defect_image_without_mask(texture_folder: Path):
    (texture_folder / "ground_truth" / "scratch" / "001_mask.png").unlink()
    with pytest.raises(AnomalyError, match=r"image .*scratch/001.png has no mask"):
        load_folder(texture_folder, (32, 32), 1)


@pytest.mark.parametrize("content", [b"", b"this is not an image", "truncated"])
def test_unreadable_image_is_named(texture_folder: Path, content):
    target = texture_folder / "train" / "good" / "001.png"
    if content == "truncated":
        content = target.read_bytes()[:200]
    target.write_bytes(content)
    with pytest.raises(AnomalyError, match=r"cannot read image .*001.png"):
        load_folder(texture_folder, (32, 32), 1)


@pytest.mark.parametrize("content", [b"", b"this is not an image"])
def test_unreadable_image_is_named_when_sizing_the_input(texture_folder: Path, content):
    (texture_folder / "train" / "good" / "001.png").write_bytes(content)
    with pytest.raises(AnomalyError, match=r"cannot read image .*001.png"):
        native_folder_size(texture_folder)


def test_auto_input_size_keeps_the_aspect_within_the_pixel_budget():
    assert auto_input_size((1259, 500), 32, 640 * 256) == (640, 256)  # KolektorSDD, half its native size
    assert auto_input_size((300, 300), 32, 640 * 256) == (288, 288)  # ELPV, below the budget: not enlarged
    assert auto_input_size((1024, 1024), 16, 640 * 256) == (400, 400)
    assert auto_input_size((28, 28), 4, 640 * 256) == (28, 28)
    assert auto_input_size((2000, 3), 8, 100) == (256, 8)  # a side never rounds to zero


def test_auto_size_of_a_real_folder(shared_datasets: Path):
    folder = {
        "data": {"kind": "folder", "root": str(shared_datasets / "kolektorsdd"), "image_size": "auto"},
        "model": {"depth": 5},
    }
    assert native_folder_size(shared_datasets / "kolektorsdd") == (1259, 500)
    assert resolve_image_size(build_config(folder)).data.image_size == (640, 256)
    halved = build_config(folder, [f"data.max_input_pixels={320 * 128}"])
    assert resolve_image_size(halved).data.image_size == (320, 128)


def test_decode_converts_modes(tmp_path: Path):
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (10, 6), (200, 10, 10, 128)).save(rgba)
    assert decode_image(rgba, 1).shape == (6, 10, 1)
    assert decode_image(rgba, 3, (4, 8)).shape == (4, 8, 3)


def test_sixteen_bit_images_map_to_eight_bit_by_one_fixed_rule(tmp_path: Path):
    """value / 257, whatever the image's own maximum: a dark 16-bit exposure stays as dark as its 8-bit twin."""
    dark = np.random.default_rng(0).integers(0, 40, size=(30, 20), dtype=np.uint8)  # 15% brightness at most
    Image.fromarray(dark).save(tmp_path / "dark8.png")
    Image.fromarray(dark.astype(np.uint16) * 257).save(tmp_path / "dark16.png")
    assert Image.open(tmp_path / "dark16.png").mode == "I;16"
    assert np.array_equal(decode_image(tmp_path / "dark16.png", 1), decode_image(tmp_path / "dark8.png", 1))
    assert np.array_equal(
        decode_image(tmp_path / "dark16.png", 1, (12, 9)), decode_image(tmp_path / "dark8.png", 1, (12, 9))
    )
    Image.fromarray(np.full((5, 5), 40000, dtype=np.uint16)).save(tmp_path / "deep.png")
    assert set(decode_image(tmp_path / "deep.png", 3).ravel().tolist()) == {156}  # 40000 / 257 = 155.6


def test_only_the_listed_formats_are_decoded(tmp_path: Path):
    Image.new("L", (8, 8), 90).save(tmp_path / "grey.gif")
    with pytest.raises(
        UnsupportedFormatError, match=r"image grey.gif is GIF, which is not accepted; send one of PNG, JPEG"
    ):
        decode_image((tmp_path / "grey.gif").read_bytes(), 1, name="grey.gif")
    with pytest.raises(AnomalyError, match="cannot read image junk: not a readable image"):
        decode_image(b"not an image at all", 1, name="junk")
    for suffix in (".png", ".jpg", ".tif", ".bmp", ".webp", ".pgm", ".ppm"):
        Image.new("L" if suffix == ".pgm" else "RGB", (8, 8), 90).save(tmp_path / f"image{suffix}")
        assert decode_image(tmp_path / f"image{suffix}", 1).shape == (8, 8, 1)


def test_the_configured_pixel_limit_is_the_one_enforced_and_quoted(tmp_path: Path):
    Image.new("1", (20_000, 10_000)).save(tmp_path / "wide.png")  # 200 M pixels, above Pillow's own bomb limit
    assert open_image(tmp_path / "wide.png", "wide.png", max_pixels=250_000_000).size == (20_000, 10_000)
    with pytest.raises(
        ImageTooLargeError, match=r"image wide.png is 20000x10000 pixels, above the limit of 199,999,999 pixels"
    ):
        open_image(tmp_path / "wide.png", "wide.png", max_pixels=199_999_999)
    with pytest.raises(ImageTooLargeError, match="above the limit of 178,956,970 pixels"):
        open_image(tmp_path / "wide.png", "wide.png")


def test_split_is_seeded_disjoint_and_complete():
    split = split_normals(100, 0.1, 0.2, seed=3)
    parts = [set(split.train), set(split.val), set(split.calibration)]
    assert [len(part) for part in parts] == [70, 10, 20]
    assert set.union(*parts) == set(range(100)) and sum(map(len, parts)) == 100
    again = split_normals(100, 0.1, 0.2, seed=3)
    assert np.array_equal(again.calibration, split.calibration)
    assert not np.array_equal(split_normals(100, 0.1, 0.2, seed=4).calibration, split.calibration)
    with pytest.raises(AnomalyError, match="need at least 3 normal training images"):
        split_normals(2, 0.1, 0.1, seed=0)


def runs_of_consecutive(indices: np.ndarray) -> list[int]:
    """Lengths of the runs of consecutive integers in sorted `indices`."""
    breaks = np.flatnonzero(np.diff(indices) != 1)
    return np.diff([0, *(breaks + 1), len(indices)]).tolist()


def test_blocks_hold_out_whole_runs_of_consecutive_images():
    """The default scheme holds out runs of neighbouring files (a part's photographs, a session), the random scheme
    single images: with 200 normals in 20 blocks of 10, calibration is two whole blocks."""
    blocks = split_normals(200, 0.1, 0.1, seed=3)
    assert blocks.scheme == "blocks" and runs_of_consecutive(blocks.calibration) in ([10, 10], [20])
    assert all(length % 10 == 0 for length in runs_of_consecutive(blocks.val))
    random = split_normals(200, 0.1, 0.1, seed=3, scheme="random")
    assert max(runs_of_consecutive(random.calibration)) < 5
    assert not np.array_equal(split_normals(200, 0.1, 0.1, seed=4).calibration, blocks.calibration)


def test_a_calibration_folder_replaces_the_calibration_hold_out(texture_folder: Path):
    (texture_folder / "calibration" / "good").mkdir(parents=True)
    for i, image in enumerate(stripes(12, 40, 36, seed=9)):
        Image.fromarray(image).save(texture_folder / "calibration" / "good" / f"c{i:02d}.png")
    datamodule = AnomalyDataModule(DataConfig(root=texture_folder, image_size=(32, 32)))
    datamodule.setup()
    assert len(datamodule.calibration_set) == 12 and all(
        "/calibration/good/" in name for name in datamodule.calibration_set.names
    )
    assert len(datamodule.train_set) + len(datamodule.val_set) == 24  # every training normal is trained on or validates
    assert datamodule.split_record()["calibration"] == datamodule.calibration_set.names
    assert "calibration folder" in datamodule.holdout_description
    for path in (texture_folder / "calibration" / "good").iterdir():
        path.unlink()
    with pytest.raises(
        AnomalyError, match="no images in .*calibration/good: add normal images for calibration, or remove the folder"
    ):
        AnomalyDataModule(DataConfig(root=texture_folder, image_size=(32, 32))).setup()


def test_datamodule_records_splits_and_builds_synthetic_validation(texture_folder: Path):
    datamodule = AnomalyDataModule(
        DataConfig(kind="folder", root=texture_folder, image_size=(32, 32), synthetic_validation=True, batch_size=4)
    )
    datamodule.setup()
    record = datamodule.split_record()
    assert len(record["train"]) + len(record["val"]) + len(record["calibration"]) == 24
    assert not set(record["calibration"]) & set(record["train"])
    batch = next(iter(datamodule.labelled_val_dataloader()))
    assert batch["image"].shape[1:] == (1, 32, 32)
    labelled = [sample["label"] for sample in datamodule.labelled_val_dataloader().dataset]
    assert labelled.count(0) == len(record["val"]) and labelled.count(1) == 3 * len(
        record["val"]
    )  # a blob, a line and a shade each


def test_perlin_noise_and_synthetic_anomalies():
    generator = torch.Generator().manual_seed(0)
    noise = perlin_noise(40, 24, 4, 2, generator)
    assert noise.shape == (40, 24) and noise.abs().max() <= 1.5 and noise.std() > 0.1
    images = torch.rand(6, 1, 32, 32) * 0.1
    corrupted, masks = synthesize_anomalies(images, torch.Generator().manual_seed(1))
    assert masks.shape == (6, 1, 32, 32) and all(mask.sum() > 0 for mask in masks)
    assert torch.allclose(corrupted * (1 - masks), images * (1 - masks))
    assert (corrupted - images).abs()[masks.bool()].mean() > 0.05
    untouched, empty = synthesize_anomalies(images, torch.Generator().manual_seed(1), probability=0.0)
    assert torch.equal(untouched, images) and empty.sum() == 0


def test_line_anomalies_are_thin_faint_strokes_inside_their_masks():
    images = torch.full((8, 1, 256, 256), 0.5)
    corrupted, masks = synthesize_anomalies(images, torch.Generator().manual_seed(2), shape="line")
    coverage = masks.mean(dim=(1, 2, 3))
    assert (coverage > 0).all() and (coverage < 0.02).all()  # thin: at most 2% of the image
    changed = (corrupted - images).abs() > 1e-6
    grown = torch.nn.functional.max_pool2d(masks, 3, stride=1, padding=1) > 0
    assert not (changed & ~grown).any()  # only the line and its one-pixel soft edge change
    steps = (corrupted - images)[masks.bool()].abs()
    assert steps.min() >= 0.1 - 1e-6 and steps.max() <= 0.4 + 1e-6
    signs = {float(torch.sign((corrupted - images)[i][masks[i].bool()].mean())) for i in range(8)}
    assert signs == {-1.0, 1.0}  # darker and brighter lines both occur


def test_shaded_regions_are_large_smooth_intensity_changes_that_keep_the_texture():
    texture = 0.3 + 0.4 * torch.rand(8, 1, 128, 128, generator=torch.Generator().manual_seed(3))
    corrupted, masks = synthesize_anomalies(texture, torch.Generator().manual_seed(4), shape="shade")
    assert (masks.mean(dim=(1, 2, 3)) > 0.005).all()
    changed = (corrupted - texture).abs() > 1e-6
    grown = torch.nn.functional.max_pool2d(masks, 9, stride=1, padding=4) > 0
    assert not (changed & ~grown).any()  # only the region and its soft edge change
    signs = set()
    for image, shaded, mask in zip(texture, corrupted, masks):
        inside = mask.bool() & (torch.nn.functional.avg_pool2d(mask[None], 9, stride=1, padding=4)[0] > 0.999)
        gain = (shaded - image)[inside] / (
            (0.0 if shaded[inside].mean() < image[inside].mean() else 1.0) - image[inside]
        )
        assert (
            0.25 - 1e-4 <= gain.min() and gain.max() <= 0.6 + 1e-4 and gain.std() < 1e-4
        )  # one gain: texture kept, scaled
        signs.add(bool(shaded[inside].mean() > image[inside].mean()))
    assert signs == {False, True}  # darker and brighter regions both occur


def test_synthetic_anomaly_set_is_reproducible_with_a_blob_a_line_and_a_shade_per_normal(texture_folder: Path):
    normals = load_folder(texture_folder, (32, 32), 1).train
    first, second = synthetic_anomaly_set(normals, seed=5), synthetic_anomaly_set(normals, seed=5)
    assert np.array_equal(first.images, second.images) and np.array_equal(first.masks, second.masks)
    count = len(normals)
    assert first.labels.tolist() == [1] * (3 * count) and first.masks.any(axis=(1, 2)).all()
    assert first.categories == ["synthetic_blob"] * count + ["synthetic_line"] * count + ["synthetic_shade"] * count
    blob_area, line_area = first.masks[:count].mean(), first.masks[count : 2 * count].mean()
    assert line_area < blob_area / 2


def test_augmentation_is_off_by_default_and_configurable():
    assert build_augmentation(AugmentConfig()) is None
    flip = build_augmentation(AugmentConfig(hflip=True))
    image = torch.arange(12.0).reshape(1, 3, 4) / 12
    outcomes = {tuple(flip(image).flatten().tolist()) for _ in range(40)}
    assert outcomes == {tuple(image.flatten().tolist()), tuple(image.flip(-1).flatten().tolist())}


def test_mnist_one_class_from_local_files(shared_datasets: Path):
    datamodule = AnomalyDataModule(DataConfig(kind="mnist", root=shared_datasets, normal_class=8, image_size=(32, 32)))
    datamodule.setup()
    total = len(datamodule.train_set) + len(datamodule.val_set) + len(datamodule.calibration_set)
    assert total == 5851  # training images of digit 8
    assert len(datamodule.test_set) == 10_000
    assert (datamodule.test_set.labels == 0).sum() == 974  # test images of digit 8
    assert datamodule.train_set.images.shape[1:] == (32, 32, 1)


def test_mnist_missing_files_hint_download(tmp_path: Path):
    datamodule = AnomalyDataModule(DataConfig(kind="mnist", root=tmp_path, normal_class=1))
    with pytest.raises(AnomalyError, match="mnist not found under .*set data.download=true"):
        datamodule.setup()


def test_kolektorsdd_layout(shared_datasets: Path):
    source = load_folder(shared_datasets / "kolektorsdd", (160, 64), 1)
    assert len(source.train) == 278
    assert source.test.labels.tolist().count(1) == 52 and source.test.labels.tolist().count(0) == 69
    assert source.test.masks[source.test.labels == 1].any(axis=(1, 2)).all()


def test_elpv_split_by_defect_probability():
    datamodule = AnomalyDataModule(DataConfig(kind="elpv", image_size=(32, 32), elpv_module_type="mono"))
    datamodule.setup()
    test = datamodule.test_set
    assert set(test.categories) == {"good", "p>=0.67"}
    normal_names = set(datamodule.split_record()["train"]) | set(datamodule.split_record()["val"])
    assert not normal_names & set(test.names)
    assert 0.1 < test.labels.mean() < 0.9
