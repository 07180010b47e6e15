"""Decode any image file into upright 8-bit RGB.

Handles what real collections contain: EXIF orientation, grayscale, palette, RGBA/LA (alpha
dropped), CMYK, and 16-bit grayscale PNGs (scaled to 8 bits rather than clipped).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
# What a bad or hostile file raises while decoding (DecompressionBombError: too many pixels).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


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


def decode(data: bytes, min_size: int | None = None) -> Image.Image:
    """Decode encoded image bytes as upright 8-bit RGB.

    Args:
        data: the file's bytes.
        min_size: when given, large JPEGs are decoded at a reduced DCT scale whose shorter side
            is still at least ``min_size`` (PIL ``draft``), which is many times faster.

    Raises:
        OSError, SyntaxError, ValueError: the bytes are not a decodable image.
        PIL.Image.DecompressionBombError: the image has over twice ``PIL.Image.MAX_IMAGE_PIXELS``.
    """
    image = Image.open(io.BytesIO(data))
    if min_size is not None:
        image.draft("RGB", _draft_size(image.size, min_size))
    return to_rgb(image)
