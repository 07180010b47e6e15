"""Decode any image file into upright 8-bit RGB.

Handles what real collections contain: EXIF orientation, grayscale, palette, RGBA/LA (alpha
dropped), CMYK, 16-bit grayscale PNGs (scaled to 8 bits rather than clipped) and 16-bit colour
PNGs (PIL keeps the high byte). The bytes decide the format, not the suffix: a WEBP or PNG named
``.jpg`` decodes as what it is. The names decide which files are images (:func:`is_image_name`)
and the id each one is known by (:func:`image_id_of`, :func:`image_ids`): the same rule for CSV
labels, metadata, groupings, archives and folders of images.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from pathlib import PurePath, PurePosixPath

import numpy as np
from PIL import Image, ImageOps

from lesion.errors import LesionError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
# What a bad or hostile file raises while decoding.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
# Default pixel limit: PIL's own refusal threshold (2 × its warning threshold, ≈ 179 MP).
DEFAULT_MAX_PIXELS = 2 * 89_478_485
_PIL_LIMIT = threading.Lock()  # guards the brief swap of PIL's global limit in _open
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def is_image_name(name: str) -> bool:
    """Whether a file name (without folders) may hold an image: an image suffix, and not hidden.

    Hidden names never hold images: macOS writes an AppleDouble ``._<name>`` next to every file it
    zips or copies to a foreign disk (same suffix, not an image), and ``.DS_Store`` in folders.
    The file's content decides its format, so a WEBP or PNG named ``.jpg`` is still decoded.
    """
    return not name.startswith(".") and PurePath(name).suffix.lower() in IMAGE_SUFFIXES


def image_id_of(name: str) -> str:
    """The image id a name (in a CSV, a zip or a folder) stands for: the file name without folders
    and without its image extension.

    ``NV/ISIC_0000001.jpg``, ``NV\\ISIC_0000001.JPG`` and ``ISIC_0000001`` are all ``ISIC_0000001``;
    a name without an image extension keeps its dots (``ISIC_0000001_downsampled``, ``scan.v2``).
    """
    parts = PurePosixPath(name.replace("\\", "/")).parts  # old Windows zips use backslashes
    file_name = parts[-1] if parts else name
    return PurePosixPath(file_name).stem if is_image_name(file_name) else file_name


def image_ids(names: Sequence[str], where: object) -> list[str]:
    """The image id (:func:`image_id_of`) of each of ``names``, which must all differ.

    An id names one image in every output (a row of ``predictions.csv``, its Grad-CAM files), so
    two names of one id (``a.jpg`` and ``a.png``) are refused.

    Raises:
        LesionError: at ``where``, naming two of ``names`` with the same id.
    """
    seen: dict[str, str] = {}
    for name in names:
        found = image_id_of(name)
        if found in seen:
            raise LesionError(where, f"names {seen[found]} and {name}, one image id ({found})",
                              "give every image a name of its own, or remove one of them")
        seen[found] = name
    return list(seen)


def _draft_size(size: tuple[int, int], min_size: int) -> tuple[int, int]:
    """Requested draft size that keeps the shorter side ≥ ``min_size`` at the image's aspect."""
    w, h = size
    scale = min_size / min(w, h)
    return max(1, int(w * scale)), max(1, int(h * scale))


def to_rgb(image: Image.Image) -> Image.Image:
    """Upright 8-bit RGB version of ``image`` (any mode, EXIF orientation applied)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in _WIDE_MODES:
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    return image.convert("RGB")


class TooManyPixels(ValueError):
    """An image over the configured pixel limit (a decompression bomb or an unexpected scan)."""


def _open(source: io.BytesIO, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open an image lazily, refusing one with more than ``max_pixels`` pixels before decoding it.

    ``max_pixels`` replaces PIL's global limit (``Image.MAX_IMAGE_PIXELS``) for this call.
    """
    with _PIL_LIMIT:
        global_limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            image = Image.open(source)
        except Image.UnidentifiedImageError:  # PIL's own message names the buffer: <_io.BytesIO object at 0x…>
            raise Image.UnidentifiedImageError("not in an image format that PIL reads") from None
        finally:
            Image.MAX_IMAGE_PIXELS = global_limit
    w, h = image.size
    if w * h > max_pixels:
        image.close()
        raise TooManyPixels(f"{w}×{h} = {w * h} pixels, over the limit dataset.max_pixels={max_pixels}")
    return image


def decode(data: bytes, min_size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode encoded image bytes as upright 8-bit RGB.

    Args:
        data: the file's bytes.
        min_size: when given, large JPEGs are decoded at a reduced DCT scale whose shorter side
            is still at least ``min_size`` (PIL ``draft``), which is many times faster.
        max_pixels: larger images are refused before decoding.

    Raises:
        OSError, SyntaxError, ValueError: the bytes are not a decodable image.
        TooManyPixels: the image has more than ``max_pixels`` pixels.
    """
    image = _open(io.BytesIO(data), max_pixels)
    if min_size is not None:
        image.draft("RGB", _draft_size(image.size, min_size))
    return to_rgb(image)
