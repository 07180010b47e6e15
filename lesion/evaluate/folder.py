"""Images to predict (a folder, or an HDF5 file such as ISIC 2024's ``test-image.hdf5``), prepared as a checkpoint says."""

from __future__ import annotations

from pathlib import Path

from lesion.data.cache import square_size
from lesion.data.metadata import read_metadata_csv
from lesion.data.metadata_features import MetadataEncoding
from lesion.data.transforms import EvalPreset
from lesion.data.unlabelled import FolderImages
from lesion.errors import LesionError
from lesion.train.module import LesionClassifier


def folder_images(hp, folder: str | Path) -> FolderImages:
    """The images of a folder (or an HDF5 image archive), decoded and preprocessed as a checkpoint's
    hyper-parameters ``hp`` say (input size, cache size, colour constancy, normalisation)."""
    size = square_size(hp.image_size, (hp.dataset or {}).get("cache_size"))
    return FolderImages.in_folder(Path(folder).expanduser(), EvalPreset(hp.image_size, hp.mean, hp.std), size,
                                  (hp.dataset or {}).get("color_constancy"))


def model_inputs(module: LesionClassifier, checkpoint: str | Path, images: str | Path,
                 metadata: str | Path | None) -> FolderImages:
    """:func:`folder_images` of ``images`` for ``module``, with their patient metadata encoded as its checkpoint
    says when it is a metadata net.

    Args:
        module: the model that will predict them.
        checkpoint: its file, for messages.
        images: a folder of images, or an HDF5 file of them.
        metadata: a CSV of their age, sex and site (``image,age,sex[,site]``, or an official metadata file);
            required when ``module`` takes metadata.

    Raises:
        LesionError: no images there, or a metadata net without ``metadata``.
    """
    found = folder_images(module.hparams, images)
    if module.uses_metadata and metadata is None:
        raise LesionError("metadata", f"{checkpoint} was trained with patient metadata, and no metadata CSV is given",
                          "pass metadata=<a CSV with columns image,age,sex,site for these images>")
    if module.uses_metadata:
        encoding = MetadataEncoding.from_dict(module.hparams.metadata)
        found.metadata = encoding.encode(read_metadata_csv(Path(metadata).expanduser(), found.ids, encoding.sites))
    return found
