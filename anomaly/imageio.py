"""Image decoding with Pillow and NumPy only: shared by training data and the torch-free service."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from anomaly.errors import AnomalyError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})
# The Pillow formats behind those suffixes (PPM reads PGM too); any other format is refused before it is decoded.
ACCEPTED_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP", "PPM")
PIL_MODE_FOR_CHANNELS = {1: "L", 3: "RGB"}
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
# Pixels a 16-bit image is turned into 8-bit at a time, so the conversion never holds a float copy of a large image.
CONVERSION_BAND_PIXELS = 2**20
# Without a configured limit an image may have as many pixels as Pillow's own decompression-bomb error allows. Pillow's
# check is switched off below so that the configured limit (ANOMALY_MAX_IMAGE_PIXELS) is the one enforced and quoted,
# above Pillow's default or below it.
DEFAULT_MAX_PIXELS = 2 * 89_478_485
Image.MAX_IMAGE_PIXELS = None


def is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def image_files(folder: Path) -> list[Path]:
    """The image files directly in `folder`, in name order."""
    return sorted(path for path in folder.iterdir() if is_image_file(path))


class ImageTooLargeError(AnomalyError):
    """The image has more pixels than allowed: refused before its pixels are decoded."""


class UnsupportedFormatError(AnomalyError):
    """A readable image in a format outside ACCEPTED_FORMATS: refused before its pixels are decoded."""


@contextmanager
def _reading(name: str) -> Iterator[None]:
    """Turn Pillow's many failure types into one-line AnomalyErrors that name the image."""
    try:
        yield
    except FileNotFoundError:
        raise AnomalyError(f"image file not found: {name}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        reason = "not a readable image" if isinstance(error, UnidentifiedImageError) else str(error)
        raise AnomalyError(f"cannot read image {name}: {reason}") from None


def _identify(source: Path | BinaryIO, name: str) -> None:
    """Raise UnsupportedFormatError if Pillow knows `source` in a format it is not accepted in (it reads the header
    only); return if it is not an image at all."""
    if not isinstance(source, Path):
        source.seek(0)
    try:
        with warnings.catch_warnings(), Image.open(source) as image:
            warnings.simplefilter("ignore")
            found = image.format
    except Exception:  # any failure here means: not an image Pillow knows
        return
    raise UnsupportedFormatError(
        f"image {name} is {found}, which is not accepted; send one of {', '.join(ACCEPTED_FORMATS)}"
    )


def open_image(source: Path | bytes | BinaryIO, name: str, max_pixels: int | None = None) -> Image.Image:
    """Open from the header only: the format must be accepted and the pixel count within `max_pixels` (or
    DEFAULT_MAX_PIXELS) before any pixel is decoded, so a small file that declares a huge image never allocates it."""
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    if not isinstance(source, Path):
        if source.seek(0, io.SEEK_END) == 0:
            raise AnomalyError(f"image {name} is empty (0 bytes)")
        source.seek(0)
    with _reading(name):
        try:
            image = Image.open(source, formats=ACCEPTED_FORMATS)
        except UnidentifiedImageError:
            _identify(source, name)
            raise
    width, height = image.size
    limit = max_pixels or DEFAULT_MAX_PIXELS
    if width * height > limit:
        raise ImageTooLargeError(f"image {name} is {width}x{height} pixels, above the limit of {limit:,} pixels")
    return image


def decoding_bytes(image: Image.Image, channels: int) -> int:
    """Memory that decoding an opened image to `channels` takes at its peak: Pillow's pixels (a byte per pixel for
    8-bit grey, 2 for 16-bit, 4 for anything with colour or 32-bit) plus the 8-bit copy that conversion makes."""
    stored = 1 if image.mode in ("1", "L", "P") else 2 if image.mode.startswith("I;16") else 4
    return image.size[0] * image.size[1] * (stored + (1 if channels == 1 else 4))


def read_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file's header, without decoding its pixels."""
    with _reading(str(path)), Image.open(path) as image:
        width, height = image.size
    return height, width


def sixteen_to_eight_bit(image: Image.Image) -> Image.Image:
    """A 16-bit image to 8-bit by one fixed rule, value / 257 rounded (the inverse of the usual 8-to-16-bit scaling,
    x * 257), so the same scene scores the same in either depth and a dark exposure stays dark. 32-bit integer
    images are read the same way, clipped to 0..255. Converted a band of rows at a time."""
    width, height = image.size
    converted = np.empty((height, width), dtype=np.uint8)
    rows = max(1, CONVERSION_BAND_PIXELS // max(width, 1))
    for top in range(0, height, rows):
        band = np.asarray(image.crop((0, top, width, min(height, top + rows))), dtype=np.float32)
        converted[top : top + rows] = np.clip(np.rint(band / 257.0), 0, 255)
    return Image.fromarray(converted, mode="L")


def to_mode(image: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow mode (RGBA, P, 16-bit, ...) to 8-bit grayscale or RGB."""
    if image.mode in SIXTEEN_BIT_MODES:
        image = sixteen_to_eight_bit(image)
    return image.convert(PIL_MODE_FOR_CHANNELS[channels])


def _conform(image: Image.Image, channels: int, size: tuple[int, int] | None) -> np.ndarray:
    image = to_mode(image, channels)
    if size is not None and image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def finish_decoding(image: Image.Image, name: str, channels: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an opened image fully (truncated files fail here, not later in a batch) to uint8 (H, W, C), converted to
    `channels` and resized bilinearly to `size` (H, W)."""
    with _reading(name), image:
        image.load()
        return _conform(image, channels, size)


def decode_image(
    source: Path | bytes | BinaryIO,
    channels: int,
    size: tuple[int, int] | None = None,
    name: str | None = None,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Decode to uint8 (H, W, C), converted to `channels` and resized bilinearly to `size` (H, W)."""
    label = name or (str(source) if isinstance(source, Path) else "<bytes>")
    return finish_decoding(open_image(source, label, max_pixels), label, channels, size)


def conform_array(image: np.ndarray, channels: int, size: tuple[int, int] | None) -> np.ndarray:
    """Bring an in-memory uint8 image (H, W) or (H, W, C) to `channels` and `size`, as decode_image does."""
    squeezed = image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image
    return _conform(Image.fromarray(np.ascontiguousarray(squeezed)), channels, size)


def load_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Read a ground-truth mask as bool (H, W), resized with nearest neighbour to keep it binary."""
    with _reading(str(path)), open_image(path, str(path)) as opened:
        image = opened.convert("L")
    if image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.Resampling.NEAREST)
    return np.asarray(image) > 127
