"""Image decoding with Pillow and NumPy only: shared by training data and the torch-free service."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from anomaly.errors import AnomalyError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})
PIL_MODE_FOR_CHANNELS = {1: "L", 3: "RGB"}


def is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


class ImageTooLargeError(AnomalyError):
    """The image has more pixels than allowed: refused before its pixels are decoded."""


@contextmanager
def _reading(name: str) -> Iterator[None]:
    """Turn Pillow's many failure types into one-line AnomalyErrors that name the image."""
    try:
        yield
    except FileNotFoundError:
        raise AnomalyError(f"image file not found: {name}") from None
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(f"image {name} is too large: {error}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        reason = "not a readable image" if isinstance(error, UnidentifiedImageError) else str(error)
        raise AnomalyError(f"cannot read image {name}: {reason}") from None


def _open(source: Path | bytes, name: str, max_pixels: int | None = None) -> Image.Image:
    """Open and fully decode, so truncated files fail here rather than later in a batch.

    The pixel count is checked from the header, before decoding, so a small file that
    declares a huge image (a decompression bomb) never allocates its pixels.
    """
    if isinstance(source, bytes) and not source:
        raise AnomalyError(f"image {name} is empty (0 bytes)")
    with _reading(name):
        with warnings.catch_warnings():
            if max_pixels is not None:  # checked just below, with a clearer error
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        width, height = image.size
        if max_pixels is not None and width * height > max_pixels:
            raise ImageTooLargeError(f"image {name} is {width}x{height} pixels, above the limit of {max_pixels} pixels")
        image.load()
    return image


def read_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file's header, without decoding its pixels."""
    with _reading(str(path)), Image.open(path) as image:
        width, height = image.size
    return height, width


def to_mode(image: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow mode (RGBA, P, 16-bit, ...) to 8-bit grayscale or RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        high = array.max() if array.max() > 0 else 1.0
        image = Image.fromarray((array / high * 255.0).round().astype(np.uint8), mode="L")
    return image.convert(PIL_MODE_FOR_CHANNELS[channels])


def _conform(image: Image.Image, channels: int, size: tuple[int, int] | None) -> np.ndarray:
    image = to_mode(image, channels)
    if size is not None and image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def decode_image(
    source: Path | bytes,
    channels: int,
    size: tuple[int, int] | None = None,
    name: str | None = None,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Decode to uint8 (H, W, C), converted to `channels` and resized bilinearly to `size` (H, W)."""
    label = name or (str(source) if isinstance(source, Path) else "<bytes>")
    return _conform(_open(source, label, max_pixels), channels, size)


def conform_array(image: np.ndarray, channels: int, size: tuple[int, int] | None) -> np.ndarray:
    """Bring an in-memory uint8 image (H, W) or (H, W, C) to `channels` and `size`, as decode_image does."""
    squeezed = image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image
    return _conform(Image.fromarray(np.ascontiguousarray(squeezed)), channels, size)


def load_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Read a ground-truth mask as bool (H, W), resized with nearest neighbour to keep it binary."""
    image = _open(path, str(path)).convert("L")
    if image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.Resampling.NEAREST)
    return np.asarray(image) > 127
