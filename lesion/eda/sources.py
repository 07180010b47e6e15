"""Sizes of the source images of a split, read from their file headers without decoding pixels.

``PIL.Image.open`` parses only the header; the size reported is the upright one (width and
height swapped for EXIF orientations 5–8, as :func:`lesion.data.images.decode` rotates them).
The file bytes still come through the archive's ``read_bytes`` (a zip member is read whole), so
this costs one read of the split, no decoding.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from lesion.data.images import DECODE_ERRORS
from lesion.errors import LesionError

_ORIENTATION = 0x0112  # EXIF tag
_TRANSPOSED = {5, 6, 7, 8}  # orientations that swap width and height


def header_size(data: bytes) -> tuple[int, int]:
    """Upright (width, height) of an encoded image, from its header."""
    # Size only, nothing decoded: PIL's decompression-bomb check does not apply (the image cache,
    # built before, refuses images over dataset.max_pixels).
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            orientation = image.getexif().get(_ORIENTATION)
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    return (height, width) if orientation in _TRANSPOSED else (width, height)


def source_sizes(images, ids: Sequence[str], desc: str = "image sizes") -> np.ndarray:
    """(width, height) of every listed source image, N×2 int64.

    Args:
        images: the split's image archive (``SplitTable.images``: anything with ``read_bytes(id)``).
        ids: the images, in order.
        desc: progress-bar label.

    Raises:
        LesionError: an image that cannot be read or whose header cannot be parsed.
    """
    sizes = np.zeros((len(ids), 2), dtype=np.int64)
    for row, image_id in enumerate(tqdm(ids, desc=desc, unit="img")):
        try:
            sizes[row] = header_size(images.read_bytes(image_id))
        except (OSError, zipfile.BadZipFile, *DECODE_ERRORS) as error:
            raise LesionError(f"{images.path}:{images.members[image_id]}", f"cannot be read as an image ({error})",
                              "re-download the archive or remove this id from the CSV") from None
    return sizes
