"""Colour constancy: estimate the light an image was taken under and divide it out.

Dermoscopes, cameras and clinics light lesions differently; Gessert et al. (MethodsX 2020)
normalise every image with Shades of Gray (Finlayson & Trezzi, "Shades of Gray and Colour
Constancy", CIC 2004): the illuminant is the per-channel Minkowski p-norm mean
``e_c = (mean I_c^p)^(1/p)`` (p = 6), and each channel is scaled by ``‖e‖ / (√3 · e_c)``, so the
corrected image's channels have equal p-norm means (a grey light). It is applied to the square a
model sees (:func:`lesion.data.cache.decode_square`), so every path that decodes an image for a
model corrects it the same way.
"""

from __future__ import annotations

import numpy as np

from lesion.errors import LesionError

SHADES_OF_GRAY_P = 6


def shades_of_gray(image: np.ndarray, p: int = SHADES_OF_GRAY_P) -> np.ndarray:
    """Shades-of-Gray colour constancy of an H×W×3 uint8 RGB image (a new uint8 array).

    A channel that is black everywhere is left as it is (it has no light to estimate).
    """
    pixels = image.astype(np.float64)
    illuminant = np.power(np.mean(np.power(pixels, p), axis=(0, 1)), 1 / p)
    norm = float(np.linalg.norm(illuminant))
    gains = np.divide(norm, illuminant * np.sqrt(3), out=np.ones(3), where=illuminant > 0)
    return np.clip(np.rint(pixels * gains), 0, 255).astype(np.uint8)


METHODS = {"shades_of_gray": shades_of_gray}


def correct_colours(image: np.ndarray, method: str | None) -> np.ndarray:
    """``image`` corrected by the colour-constancy ``method`` (a name of :data:`METHODS`), or as it is for ``None``."""
    if method is None:
        return image
    if method not in METHODS:
        raise LesionError("dataset.color_constancy", f"unknown method '{method}'",
                          f"use null or one of {', '.join(METHODS)}")
    return METHODS[method](image)
