"""Unlabelled images to predict (a folder, or an HDF5 image archive), decoded exactly as a split's images are."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from lesion.data.cache import decode_square
from lesion.data.images import DECODE_ERRORS, TooManyPixels, decode, image_id_of, image_ids, is_image_name
from lesion.data.readers import ImageArchive, hdf5_images, is_hdf5
from lesion.data.transforms import EvalPreset
from lesion.errors import LesionError


@dataclass(frozen=True)
class ArchiveImage:
    """One image of an image archive, read as :class:`FolderImages` reads a file: by ``name`` and ``read_bytes()``."""

    archive: ImageArchive
    image_id: str

    @property
    def name(self) -> str:
        return self.image_id

    def read_bytes(self) -> bytes:
        return self.archive.read_bytes(self.image_id)

    def __str__(self) -> str:
        return f"{self.archive.path}:{self.archive.members[self.image_id]}"


class FolderImages(Dataset):
    """Image files to predict (any size and mode), unlabelled: every image of a folder or of an HDF5
    image archive (:meth:`in_folder`, sorted by name), or given files in the given order (e.g. uploads).

    Items are decoded exactly as split images are (:func:`lesion.data.cache.decode_square` at
    ``size``, with the same colour constancy), then ``transform``; :meth:`read` gives the full-resolution original. Items are
    ``(image, -1)``, or ``(image, metadata, -1)`` once :attr:`metadata` holds the images' encoded
    metadata (N×D float32, in :attr:`ids` order).
    """

    def __init__(self, paths: Sequence[Path | ArchiveImage], transform: EvalPreset, size: int,
                 color_constancy: str | None = None):
        self.paths = [p if isinstance(p, ArchiveImage) else Path(p) for p in paths]
        self.transform, self.size, self.color_constancy = transform, size, color_constancy
        self.metadata: np.ndarray | None = None

    @classmethod
    def in_folder(cls, folder: Path, transform: EvalPreset, size: int,
                  color_constancy: str | None = None) -> FolderImages:
        """Every image file directly in ``folder``, sorted by name (two files of one id are refused); or, when
        ``folder`` is an HDF5 file (ISIC 2024's ``test-image.hdf5``), every image it holds, sorted by id."""
        if is_hdf5(folder) and folder.is_file():
            archive = hdf5_images(folder)
            if not archive.members:
                raise LesionError(folder, "holds no images", "pass the HDF5 file of the images to predict")
            return cls([ArchiveImage(archive, i) for i in archive.members], transform, size, color_constancy)
        if not folder.is_dir():
            raise LesionError(folder, "folder not found",
                              "pass images=<a folder of .jpg/.png images, or an .hdf5 file of them>")
        paths = sorted(p for p in folder.iterdir() if is_image_name(p.name) and p.is_file())
        if not paths:
            raise LesionError(folder, "holds no .jpg/.png/.tif/.bmp images", "pass the folder that holds the images")
        image_ids([p.name for p in paths], folder)  # one row and one set of Grad-CAM files per id
        return cls(paths, transform, size, color_constancy)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def ids(self) -> list[str]:
        return [image_id_of(p.name) for p in self.paths]

    def read(self, item: int) -> Image.Image:
        """The original image ``item``, full resolution, as upright 8-bit RGB."""
        return self._decode(item)

    def square(self, item: int) -> np.ndarray:
        """The size×size×3 uint8 square of image ``item``, as a split's cache would hold it."""
        return decode_square(lambda min_size: self._decode(item, min_size), self.size, self.color_constancy)

    def _decode(self, item: int, min_size: int | None = None) -> Image.Image:
        path = self.paths[item]
        try:
            return decode(path.read_bytes(), min_size)
        except TooManyPixels as error:
            raise LesionError(path, str(error), "downscale the image or remove it from the folder") from None
        except DECODE_ERRORS as error:
            raise LesionError(path, f"cannot be decoded as an image ({error})", "remove or replace the file") from None

    def __getitem__(self, item: int) -> tuple:
        image = self.transform(self.square(item))
        return (image, -1) if self.metadata is None else (image, torch.from_numpy(self.metadata[item]), -1)
