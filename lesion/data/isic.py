"""Read ISIC 2017 Part 3 / ISIC 2018 Task 3 splits from their official files.

Each split's images are read from the official ``.zip`` or from the extracted folder, without
extracting anything to disk. Images are selected by the ids of the ground-truth CSV, never by
globbing, so the superpixel PNGs and metadata CSVs inside the ISIC 2017 archives are ignored.
"""

from __future__ import annotations

import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from lesion.data.images import DECODE_ERRORS, DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, TooManyPixels, decode
from lesion.data.layouts import LAYOUTS, Layout, counts_of
from lesion.errors import LesionError

log = logging.getLogger(__name__)

class ImageArchive:
    """The images of one split, in a zip or a folder, addressed by ISIC id.

    Safe in DataLoader and cache-build workers, pickled or forked: each process opens its own
    zip handle on first use (a forked copy of the parent's would share its file offset).

    Args:
        path: the zip file or folder.
        members: ISIC id → member name in the zip, or file path relative to the folder.
    """

    def __init__(self, path: Path, members: dict[str, str]):
        self.path = path
        self.members = members
        self._zip: zipfile.ZipFile | None = None
        self._zip_pid: int | None = None  # process that opened _zip

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_zip": None, "_zip_pid": None}

    def read_bytes(self, image_id: str) -> bytes:
        """Raw file bytes of image ``image_id``."""
        member = self.members[image_id]
        if self.path.is_dir():
            return (self.path / member).read_bytes()
        if self._zip is None or self._zip_pid != os.getpid():
            self._zip, self._zip_pid = zipfile.ZipFile(self.path), os.getpid()
        return self._zip.read(member)

    def read(self, image_id: str, min_size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
        """Decode image ``image_id`` as upright 8-bit RGB (see :func:`lesion.data.images.decode`)."""
        try:
            return decode(self.read_bytes(image_id), min_size, max_pixels)
        except TooManyPixels as error:
            raise LesionError(f"{self.path}:{self.members[image_id]}", str(error),
                              "raise dataset.max_pixels if the image is genuine, or remove its row from the CSV") from None
        except DECODE_ERRORS as error:
            raise LesionError(f"{self.path}:{self.members[image_id]}", f"cannot be decoded as an image ({error})",
                              "re-download the archive or remove this id from the CSV") from None


@dataclass
class SplitTable:
    """One split: its image ids, integer labels (index into ``layout.classes``) and images."""

    layout: Layout
    split: str
    ids: list[str]
    labels: np.ndarray
    images: ImageArchive
    csv_path: Path

    def __len__(self) -> int:
        return len(self.ids)

    def class_counts(self) -> dict[str, int]:
        """Number of images of every class, in class order (absent classes count 0)."""
        return counts_of(self.labels, self.layout.classes)


def _find(root: Path, name: str) -> Path | None:
    """First existing candidate for an official file ``name``: the file, or inside its folder."""
    stem = Path(name).stem
    for candidate in (root / name, root / stem / name):
        if candidate.is_file():
            return candidate
    return None


def read_labels(layout: Layout, csv_path: Path) -> tuple[list[str], np.ndarray]:
    """Parse an official ground-truth CSV into ids and class indices, validating every row."""
    try:
        frame = pd.read_csv(csv_path, dtype={layout.id_column: str})
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise LesionError(csv_path, f"cannot be read as CSV ({error})",
                          "use the official ground-truth CSV") from None
    needed = [layout.id_column, *layout.label_columns]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise LesionError(csv_path, f"missing column(s) {', '.join(missing)} (found: {', '.join(map(str, frame.columns))})",
                          f"use the official {layout.name} ground-truth CSV with header {','.join(needed)}")
    ids = frame[layout.id_column].astype(str).str.strip()
    duplicated = ids[ids.duplicated()]
    if len(duplicated):
        raise LesionError(csv_path, f"id {duplicated.iloc[0]} appears more than once",
                          "keep one row per image")
    if frame.empty:
        raise LesionError(csv_path, "has no rows", "use the official ground-truth CSV (one row per image)")
    # Labels may be written 1, 1.0 or True.
    values = frame[list(layout.label_columns)].apply(
        lambda column: pd.to_numeric(column.astype(str).str.strip().str.lower().replace({"true": "1", "false": "0"}),
                                     errors="coerce"))
    bad = values.isna().any(axis=1) | ~values.isin([0, 1]).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise LesionError(csv_path, f"row {row + 2} (id {ids.iloc[row]}): label values must be 0 or 1",
                          "fix the row or use the official ground-truth CSV")
    onehot = values.to_numpy(dtype=np.int64)
    positives = onehot.sum(axis=1)
    allowed = (0, 1) if layout.implicit_class else (1,)
    wrong = ~np.isin(positives, allowed)
    if wrong.any():
        row = int(np.flatnonzero(wrong)[0])
        raise LesionError(csv_path, f"row {row + 2} (id {ids.iloc[row]}) names {positives[row]} classes, expected exactly one",
                          "each image must have exactly one diagnosis; fix or remove the row")
    column_class = [layout.classes.index(c) for c in layout.label_columns.values()]
    labels = np.array([column_class[j] for j in onehot.argmax(axis=1)], dtype=np.int64)
    if layout.implicit_class:
        labels[positives == 0] = layout.classes.index(layout.implicit_class)
    return ids.tolist(), labels


def _index_folder(folder: Path) -> dict[str, str]:
    """ISIC id → relative path of every image file below ``folder``."""
    index = {}
    for dirpath, _, filenames in os.walk(folder):
        for filename in filenames:
            path = Path(dirpath, filename)
            if path.suffix.lower() in IMAGE_SUFFIXES:
                index.setdefault(path.stem, str(path.relative_to(folder)))
    return index


def _index_zip(path: Path) -> dict[str, str]:
    """ISIC id → member name of every image file in the zip ``path``."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile) as error:
        raise LesionError(path, f"is not a readable zip file ({error})",
                          "re-download it, or extract it and delete the zip") from None
    unsafe = [n for n in names if n.startswith(("/", "\\")) or ".." in Path(n).parts]
    if unsafe:
        raise LesionError(path, f"holds a member with an absolute or '..' path ({unsafe[0]})",
                          "re-download the official archive; this one is not safe to use")
    return {Path(n).stem: n for n in names
            if not n.endswith("/") and Path(n).suffix.lower() in IMAGE_SUFFIXES}


def _open_archive(root: Path, stem: str) -> ImageArchive | None:
    """The split's images from ``<root>/<stem>`` (folder, preferred) or ``<root>/<stem>.zip``."""
    folder, archive = root / stem, root / f"{stem}.zip"
    if folder.is_dir():
        return ImageArchive(folder, _index_folder(folder))
    if archive.is_file():
        return ImageArchive(archive, _index_zip(archive))
    return None


def read_split(layout: str | Layout, root: str | Path, split: str) -> SplitTable | None:
    """Read one split of an official ISIC layout.

    Args:
        layout: ``"isic2017"``, ``"isic2018"`` or a :class:`Layout`.
        root: the folder holding the official zips/folders and ground-truth CSVs.
        split: ``"train"``, ``"val"`` or ``"test"``.

    Returns:
        The split, or ``None`` when neither its images nor its CSV exist (e.g. no validation
        download). The training split is required.

    Raises:
        LesionError: a missing training split, images without a CSV (or the reverse), a bad CSV,
            or a CSV id without an image.
    """
    layout = LAYOUTS[layout] if isinstance(layout, str) else layout
    root = Path(root).expanduser()
    if not root.is_dir():
        raise LesionError(root, "dataset folder not found",
                          f"download the {layout.name} files into it or set dataset.root=DIR")
    files = layout.splits[split]
    csv_path = _find(root, files.csv)
    images = _open_archive(root, files.images)
    if csv_path is None and images is None and split != "train":
        return None
    if csv_path is None:
        raise LesionError(root / files.csv, "ground-truth CSV not found",
                          f"download the official {layout.name} {split} ground truth into {root}")
    if images is None:
        raise LesionError(root / f"{files.images}.zip", "image archive not found (neither the zip nor the extracted folder)",
                          f"download the official {layout.name} {split} images into {root}")
    ids, labels = read_labels(layout, csv_path)
    missing = [i for i in ids if i not in images.members]
    if missing:
        raise LesionError(images.path, f"no image for id {missing[0]} listed in {csv_path.name} ({len(missing)} missing in all)",
                          "use the matching image archive or remove those rows from the CSV")
    unlisted = len(images.members) - len(ids)
    if unlisted:
        log.info("%s: %d images have no row in %s and are ignored", images.path, unlisted, csv_path.name)
    images.members = {i: images.members[i] for i in ids}
    return SplitTable(layout, split, ids, labels, images, csv_path)


def read_groups(layout: str | Layout, root: str | Path, ids: list[str]) -> np.ndarray | None:
    """Lesion id of every image in ``ids``, from the layout's grouping file (``None`` if absent).

    Images missing from the file count as lesions of their own (logged).
    """
    layout = LAYOUTS[layout] if isinstance(layout, str) else layout
    root = Path(root).expanduser()
    for grouping in layout.groupings:
        path = root / grouping.file
        if not path.is_file():
            continue
        try:
            frame = pd.read_csv(path, dtype=str)
        except (OSError, ValueError, pd.errors.ParserError) as error:
            raise LesionError(path, f"cannot be read as CSV ({error})", "use the official lesion groupings CSV") from None
        missing = [c for c in (grouping.id_column, grouping.group_column) if c not in frame.columns]
        if missing:
            raise LesionError(path, f"missing column(s) {', '.join(missing)}",
                              f"use a CSV with columns {grouping.id_column},{grouping.group_column}")
        lesion_of = dict(zip(frame[grouping.id_column].str.strip(), frame[grouping.group_column].str.strip()))
        unknown = [i for i in ids if i not in lesion_of]
        if unknown:
            log.warning("%s: %d images have no lesion id; each counts as its own lesion", path, len(unknown))
        log.info("lesion groupings from %s", path)
        return np.array([lesion_of.get(i, f"image:{i}") for i in ids], dtype=object)
    return None
