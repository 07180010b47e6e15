"""Read the splits of an official layout (ISIC 2017–2020, HAM10000, ISIC 2024, PAD-UFES-20) from its official files.

Each split's images are read from the official ``.zip``, the official ``.hdf5`` file (ISIC 2024:
one dataset of JPEG bytes per id) or the extracted folder, without extracting anything to disk.
Images are selected by the ids of the ground-truth CSV, never by
globbing, so the superpixel PNGs and metadata CSVs inside the ISIC 2017 archives are ignored; the
files a layout names as not lesion images (``Layout.not_images``) are not even counted.

Every name a CSV gives an image (ground truth, groupings, duplicates; metadata too, in
:mod:`lesion.data.metadata`) becomes an image id by one rule, :func:`lesion.data.images.image_id_of`: with or without
its extension and folders, a name means the same image everywhere.

Files as other systems and people make them are read as the official ones: zips with any inner
folder or none, backslash member names (old Windows tools), macOS's ``__MACOSX/`` and ``._*``
AppleDouble members and ``.DS_Store`` files (never taken as images); CSVs with a UTF-8 byte-order
mark, CRLF line ends, spaces around headers and cells, and empty rows. What cannot be read
unambiguously (an id with two images, a label cell that is empty or not 0/1, a broken link or a
folder in place of an image) is one :class:`~lesion.errors.LesionError`.
"""

from __future__ import annotations

import fnmatch
import io
import logging
import os
import zipfile
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from PIL import Image

from lesion.data.images import (DECODE_ERRORS, DEFAULT_MAX_PIXELS, TooManyPixels, decode, image_id_of, image_ids,
                                is_image_name)
from lesion.data.layouts import LAYOUTS, Grouping, Layout, counts_of
from lesion.errors import LesionError

log = logging.getLogger(__name__)

HDF5_SUFFIX = ".hdf5"


def is_hdf5(path: Path) -> bool:
    """Whether ``path`` names an HDF5 image archive (by its suffix, as the official file is named)."""
    return path.suffix.lower() == HDF5_SUFFIX


class ImageArchive:
    """The images of one split, in a zip, an HDF5 file or a folder, addressed by ISIC id.

    Safe in DataLoader and cache-build workers, pickled or forked: each process opens its own
    zip or HDF5 handle on first use (a forked copy of the parent's zip handle would share its file
    offset, and h5py handles are not fork-safe).

    Args:
        path: the zip file, the HDF5 file (one dataset of image-file bytes per id) or the folder.
        members: ISIC id → member name in the zip, dataset name in the HDF5 file, or file path
            relative to the folder.
    """

    def __init__(self, path: Path, members: dict[str, str]):
        self.path = path
        self.members = members
        self._handle = None  # the open zipfile.ZipFile or h5py.File
        self._handle_pid: int | None = None  # process that opened _handle

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handle": None, "_handle_pid": None}

    def read_bytes(self, image_id: str) -> bytes:
        """Raw file bytes of image ``image_id``."""
        member = self.members[image_id]
        if self.path.is_dir():
            return (self.path / member).read_bytes()
        if self._handle is None or self._handle_pid != os.getpid():
            self._handle, self._handle_pid = _open_archive(self.path), os.getpid()
        if is_hdf5(self.path):
            return _hdf5_bytes(self._handle, member, f"{self.path}:{member}")
        return self._handle.read(member)

    def key_sources(self, ids: list[str]) -> list:
        """What the image cache's key hashes for ``ids``: each file's name, size and mtime (a folder),
        or the archive's with the member names (a zip or an HDF5 file)."""
        if self.path.is_dir():
            stats = {m: os.stat(self.path / m) for m in (self.members[i] for i in ids)}
            return [[m, s.st_size, s.st_mtime_ns] for m, s in stats.items()]
        stat = self.path.stat()
        return [[self.path.name, stat.st_size, stat.st_mtime_ns], [self.members[i] for i in ids]]

    def read(self, image_id: str, min_size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
        """Decode image ``image_id`` as upright 8-bit RGB (see :func:`lesion.data.images.decode`)."""
        where = f"{self.path}:{self.members[image_id]}"
        try:
            data = self.read_bytes(image_id)
        except (OSError, zipfile.BadZipFile) as error:  # gone, unreadable or damaged since read_split
            raise LesionError(where, f"cannot be read ({error})",
                              "check that the disk is connected and the file readable, or re-download the archive") from None
        try:
            return decode(data, min_size, max_pixels)
        except TooManyPixels as error:
            raise LesionError(where, str(error),
                              "raise dataset.max_pixels if the image is genuine, or remove its row from the CSV") from None
        except DECODE_ERRORS as error:
            raise LesionError(where, f"cannot be decoded as an image ({error})",
                              "re-download the archive or remove this id from the CSV") from None


def _open_archive(path: Path):
    """An open handle on the zip or HDF5 file ``path``, for reading."""
    if is_hdf5(path):
        import h5py  # only where HDF5 work starts: other layouts and refusals never load it

        return h5py.File(path, "r")
    return zipfile.ZipFile(path)


def _hdf5_bytes(archive, name: str, where: str) -> bytes:
    """The image-file bytes that dataset ``name`` of the open HDF5 file ``archive`` holds.

    The official files store each image's bytes as a scalar byte string; opaque bytes and a 1-D
    uint8 array of them are read too. Anything else (decoded pixels, numbers, a group) is refused.
    """
    import h5py

    found = archive.get(name)
    if found is None:  # the file changed since its names were read
        raise OSError("no such dataset in the file")
    value = found[()] if isinstance(found, h5py.Dataset) else None
    if isinstance(value, bytes):  # fixed- or variable-length byte string (numpy.bytes_ is bytes)
        return bytes(value)
    if isinstance(value, np.void):
        return value.tobytes()
    if isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim == 1:
        return value.tobytes()
    if value is None:
        held = "a group"
    elif isinstance(value, np.ndarray):
        held = f"a {value.dtype} array of shape {value.shape}"
    else:
        held = f"a {type(value).__name__}"
    raise LesionError(where, f"holds {held}, not the bytes of an image file",
                      "use the official HDF5 file (one dataset of JPEG bytes per isic_id), or the extracted image "
                      "folder")


class ImageParts:
    """The images of one split spread over several archives (HAM10000's two parts), addressed by id.

    Reads as :class:`ImageArchive` does; ``members`` names each image as ``<part>/<member>``.
    """

    def __init__(self, parts: list[ImageArchive]):
        self.parts = parts
        self.path = parts[0].path.parent
        self._part = {i: k for k, part in enumerate(parts) for i in part.members}
        self.members = {i: f"{parts[k].path.name}/{parts[k].members[i]}" for i, k in self._part.items()}

    def read_bytes(self, image_id: str) -> bytes:
        """Raw file bytes of image ``image_id``."""
        return self.parts[self._part[image_id]].read_bytes(image_id)

    def read(self, image_id: str, min_size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
        """Decode image ``image_id`` (see :meth:`ImageArchive.read`)."""
        return self.parts[self._part[image_id]].read(image_id, min_size, max_pixels)

    def key_sources(self, ids: list[str]) -> list:
        """:meth:`ImageArchive.key_sources` of every part, for the ids it holds."""
        return [part.key_sources([i for i in ids if self._part[i] == k]) for k, part in enumerate(self.parts)]


@dataclass
class SplitTable:
    """One split: its image ids, integer labels (index into ``layout.classes``) and images."""

    layout: Layout
    split: str
    ids: list[str]
    labels: np.ndarray
    images: ImageArchive | ImageParts
    csv_path: Path

    def __len__(self) -> int:
        return len(self.ids)

    def class_counts(self) -> dict[str, int]:
        """Number of images of every class, in class order (absent classes count 0)."""
        return counts_of(self.labels, self.layout.classes)


def _find(root: Path, names: str | tuple[str, ...]) -> Path | None:
    """First existing official file of ``names`` (in order of preference): the file, or inside its folder."""
    for name in (names,) if isinstance(names, str) else names:
        stem = Path(name).stem
        for candidate in (root / name, root / stem / name):
            if candidate.is_file():
                return candidate
    return None


def read_csv(path: Path | str, what: str, data: bytes | None = None) -> pd.DataFrame:
    """Every cell of a CSV as stripped text (``""`` when empty), indexed by line number.

    Reads what spreadsheets save: a UTF-8 byte-order mark, CRLF line ends, spaces around headers
    and cells, empty or comma-only rows anywhere (dropped; later rows keep their line numbers).

    Args:
        path: the file, or with ``data`` what names it in errors (e.g. ``archive.zip:member.csv``).
        what: what the file should be, for the fix an error suggests.
        data: the file's bytes when it is not a file of its own (a zip member).
    """
    try:
        frame = pd.read_csv(path if data is None else io.BytesIO(data), dtype=str, keep_default_na=False, skip_blank_lines=False, encoding="utf-8-sig")
    except (OSError, ValueError, pd.errors.ParserError) as error:  # UnicodeDecodeError is a ValueError
        raise LesionError(path, f"cannot be read as CSV ({error})", f"use the official {what}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    twice = frame.columns[frame.columns.duplicated()]
    if len(twice):
        raise LesionError(path, f"column {twice[0]} appears more than once", "keep one column of each name")
    frame = frame.apply(lambda column: column.str.strip())
    frame.index = frame.index + 2  # line 1 is the header
    return frame[(frame != "").any(axis=1)]


def read_labels(layout: Layout, csv_path: Path, header: tuple[str, ...] = ()) -> tuple[list[str], np.ndarray]:
    """Parse an official ground-truth CSV into ids and class indices, validating every cell.

    Args:
        header: every column the file must have besides the id and label columns (the training
            CSV's published header, ``Layout.columns``); a file without one is another layout's.
    """
    frame = read_csv(csv_path, f"{layout.name} ground-truth CSV")
    needed = list(dict.fromkeys([layout.id_column, *(layout.label_columns or [layout.label_column]), *header]))
    missing = [c for c in needed if c not in frame.columns]
    if missing and header:
        raise LesionError(csv_path, f"missing column(s) {', '.join(missing)} of the {len(needed)} that {layout.name} "
                          "publishes", f"use the official {csv_path.name} as downloaded, every column kept")
    if missing:
        raise LesionError(csv_path, f"missing column(s) {', '.join(missing)} (found: {', '.join(map(str, frame.columns))})",
                          f"use the official {layout.name} ground-truth CSV with header {','.join(needed)}")
    if frame.empty:
        raise LesionError(csv_path, "has no rows", "use the official ground-truth CSV (one row per image)")
    ids = frame[layout.id_column]
    if (ids == "").any():
        raise LesionError(csv_path, f"row {ids.index[ids == ''][0]}, column {layout.id_column}: empty cell",
                          "give every row its image id, or delete the row")
    duplicated = ids[ids.duplicated()]
    if len(duplicated):
        raise LesionError(csv_path, f"id {duplicated.iloc[0]} appears more than once",
                          "keep one row per image")
    if layout.label_column is not None:
        return ids.tolist(), _column_labels(layout, frame, csv_path)
    cells = frame[list(layout.label_columns)]
    # Labels may be written 1, 1.0 or True; anything else (empty, soft 0.7, a word) is refused.
    values = cells.apply(lambda column: pd.to_numeric(column.str.lower().replace({"true": "1", "false": "0"}),
                                                      errors="coerce"))
    bad = np.argwhere(~values.isin([0, 1]).to_numpy())
    if len(bad):
        row, col = bad[0]
        text = cells.iat[row, col]
        problem = "empty cell" if text == "" else f"{text!r} is not 0 or 1"
        raise LesionError(csv_path, f"row {cells.index[row]} (id {ids.iat[row]}), column {cells.columns[col]}: {problem}",
                          "write 1 for the image's diagnosis and 0 elsewhere (soft labels are not supported), "
                          "or remove the row")
    onehot = values.to_numpy(dtype=np.int64)
    positives = onehot.sum(axis=1)
    allowed = (0, 1) if layout.implicit_class else (1,)
    wrong = ~np.isin(positives, allowed)
    if wrong.any():
        row = int(np.flatnonzero(wrong)[0])
        raise LesionError(csv_path, f"row {ids.index[row]} (id {ids.iat[row]}) names {positives[row]} classes, expected exactly one",
                          "each image must have exactly one diagnosis; fix or remove the row")
    column_class = [layout.classes.index(c) for c in layout.label_columns.values()]
    labels = np.array([column_class[j] for j in onehot.argmax(axis=1)], dtype=np.int64)
    if layout.implicit_class:
        labels[positives == 0] = layout.classes.index(layout.implicit_class)
    return ids.tolist(), labels


def _column_labels(layout: Layout, frame: pd.DataFrame, csv_path: Path) -> np.ndarray:
    """Class indices from the single label column of ``layout`` (e.g. HAM10000's ``dx``)."""
    values = frame[layout.label_column]
    known = values.isin(list(layout.label_values))
    if not known.all():
        row = values.index[~known][0]
        text = values[row]
        problem = "empty cell" if text == "" else f"{text!r} is not one of {', '.join(layout.label_values)}"
        raise LesionError(csv_path, f"row {row} (id {frame.at[row, layout.id_column]}), column {layout.label_column}: "
                          f"{problem}", "give every image one of those diagnoses, or remove the row")
    return np.array([layout.classes.index(layout.label_values[v]) for v in values], dtype=np.int64)


def _parts(name: str) -> tuple[str, ...]:
    """Folders and file name of a zip member or relative path; old Windows zips use backslashes."""
    return PurePosixPath(name.replace("\\", "/")).parts


def _member_id(name: str, not_images: tuple[str, ...] = ()) -> str | None:
    """The id whose image ``name`` (zip member or relative path) may hold, else ``None``.

    Any inner folder, or none, is accepted, but nothing inside a hidden folder or macOS's
    ``__MACOSX`` (resource forks of the zipped files) is an image, nor a file whose name matches
    one of the layout's ``not_images`` patterns.
    """
    parts = _parts(name)
    if not parts or not is_image_name(parts[-1]) or any(p.startswith(".") or p == "__MACOSX" for p in parts[:-1]):
        return None
    if any(fnmatch.fnmatchcase(parts[-1], pattern) for pattern in not_images):
        return None
    return image_id_of(parts[-1])


def _index(names: Iterable[str], not_images: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Image id → every name in ``names`` that may hold its image."""
    index = defaultdict(list)
    for name in names:
        found = _member_id(name, not_images)
        if found is not None:
            index[found].append(name)
    return dict(index)


def _index_folder(folder: Path, not_images: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Image id → relative paths below ``folder`` that may hold its image.

    A folder named like an image stands for an id only when no file does, so that it is reported
    as a folder rather than as a missing image (and a NAS's thumbnail folders are harmless).
    """
    files, folders = [], []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath).relative_to(folder)
        files += [str(here / name) for name in filenames]  # includes broken links: reported in _members
        folders += [str(here / name) for name in dirnames]
    index = _index(files, not_images)
    for found, names in _index(folders, not_images).items():
        index.setdefault(found, names)
    return index


def _index_zip(path: Path, not_images: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Image id → member names of the zip ``path`` that may hold its image."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile) as error:
        raise LesionError(path, f"is not a readable zip file ({error})",
                          "re-download it, or extract it and delete the zip") from None
    unsafe = [n for n in names if n.startswith(("/", "\\")) or ".." in _parts(n)]
    if unsafe:
        raise LesionError(path, f"holds a member with an absolute or '..' path ({unsafe[0]})",
                          "re-download the official archive; this one is not safe to use")
    return _index((n for n in names if not n.endswith(("/", "\\"))), not_images)


def _index_hdf5(path: Path) -> dict[str, list[str]]:
    """Image id → names of the top-level datasets of the HDF5 file ``path`` that may hold its image."""
    try:
        with _open_archive(path) as archive:
            names = list(archive.keys())
    except OSError as error:  # h5py's for a file that is not HDF5, or damaged
        raise LesionError(path, f"is not a readable HDF5 file ({error})",
                          "re-download it, or use the extracted image folder instead") from None
    index = defaultdict(list)
    for name in names:
        index[image_id_of(name)].append(name)
    return dict(index)


def hdf5_images(path: Path) -> ImageArchive:
    """Every image of the HDF5 file ``path`` (one dataset of image-file bytes per id), by id in sorted order.

    Raises:
        LesionError: the file is not HDF5, or holds two datasets of one id (``a`` and ``a.jpg``).
    """
    index = _index_hdf5(path)
    ids = sorted(index)
    _check_listed(path, index, ids, path)
    return ImageArchive(path, {i: index[i][0] for i in ids})


def _archive_path(root: Path, stem: str) -> Path | None:
    """The split's image archive: ``<root>/<stem>`` (the folder, preferred), ``<root>/<stem>.zip`` or
    ``<root>/<stem>.hdf5``; ``None`` when there is none."""
    folder = root / stem
    if folder.is_dir():
        return folder
    return next((path for path in (root / f"{stem}.zip", root / f"{stem}{HDF5_SUFFIX}") if path.is_file()), None)


def _index_archive(root: Path, stem: str, not_images: tuple[str, ...] = ()) -> tuple[Path, dict[str, list[str]]] | None:
    """The split's image archive (:func:`_archive_path`) with its index (files matching ``not_images`` left out)."""
    path = _archive_path(root, stem)
    if path is None:
        return None
    if path.is_dir():
        return path, _index_folder(path, not_images)
    return path, _index_hdf5(path) if is_hdf5(path) else _index_zip(path, not_images)


def _check_file(path: Path) -> None:
    """Refuse a path that should be an image file but is a folder, a broken link or a device."""
    if path.is_file():  # follows links
        return
    if path.is_dir():
        problem, fix = "is a folder, not an image file", "put the image file in its place or remove its row from the CSV"
    elif path.is_symlink():
        problem = f"is a symbolic link to {os.readlink(path)}, which does not exist"
        fix = "connect the disk it points to, or replace the link with the image file"
    else:
        problem, fix = "is not a regular file", "replace it with the image file"
    raise LesionError(path, problem, fix)


def _members(path: Path, index: dict[str, list[str]], ids: list[str], csv_path: Path,
             part: bool = False) -> dict[str, str]:
    """The one name holding each listed id's image (files checked in a folder archive).

    With ``part``, ``path`` is one part of a split's images (:class:`ImageParts`) and ``ids`` the
    ids it holds: the check over all parts (:func:`_check_listed`) has been made already.
    """
    if not part:
        _check_listed(path, index, ids, csv_path)
    members = {i: index[i][0] for i in ids}
    if path.is_dir():
        for member in members.values():
            _check_file(path / member)
    return members


def _check_listed(path: Path, index: dict[str, list[str]], ids: list[str], csv_path: Path) -> None:
    """Refuse a listed id without an image or with two; log the images no row lists."""
    missing = [i for i in ids if i not in index]
    if missing:
        raise LesionError(path, f"no image for id {missing[0]} listed in {csv_path.name} ({len(missing)} missing in all)",
                          "use the matching image archive or remove those rows from the CSV")
    twice = next((i for i in ids if len(index[i]) > 1), None)
    if twice is not None:
        raise LesionError(path, f"holds {len(index[twice])} images for id {twice} ({', '.join(sorted(index[twice]))})",
                          "keep one image per id")
    unlisted = len(index) - len(ids)
    if unlisted:
        log.info("%s: %d images have no row in %s and are ignored", path, unlisted, csv_path.name)


def dataset_folder(layout: Layout, root: str | Path) -> Path:
    """``root`` as the folder of a dataset in ``layout``; refused when there is no such folder."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise LesionError(root, "dataset folder not found",
                          f"download the {layout.name} files into it or set dataset.root=DIR")
    return root


def read_split(layout: str | Layout, root: str | Path, split: str) -> SplitTable | None:
    """Read one split of an official layout.

    Args:
        layout: a name of :data:`~lesion.data.layouts.LAYOUTS` or a :class:`Layout`.
        root: the folder holding the official zips/folders and ground-truth CSVs.
        split: ``"train"``, ``"val"`` or ``"test"``.

    Returns:
        The split, or ``None`` when the layout has no such split, when neither its images nor
        its CSV exist (e.g. no validation download), or when its images come without the ground
        truth the layout lets them lack (no CSV, or one without the label column: ISIC 2024's
        test split). The training split is required. Images listed in the
        layout's duplicates file are read once (the second of each pair is dropped, counted).

    Raises:
        LesionError: a missing training split, images without a CSV (or the reverse), a bad CSV,
            a CSV id without an image or with two, or a broken link or folder in place of an image.
    """
    layout = LAYOUTS[layout] if isinstance(layout, str) else layout
    root = dataset_folder(layout, root)
    if split not in layout.splits:
        return None
    if layout.source == "folder":
        return _read_class_folders(layout, root)
    files = layout.splits[split]
    csv_path = _find(root, files.csv)
    if csv_path is None and split != "train" and all(_archive_path(root, stem) is None for stem in files.images):
        return None
    if files.labels_optional and (csv_path is None or not _has_labels(layout, csv_path)):
        lacking = f"{files.csv[0]} not found" if csv_path is None else f"{csv_path.name} has no label column"
        log.warning("%s: %s images without ground truth (%s): no labelled %s split", root, split, lacking, split)
        return None
    if csv_path is None:
        raise LesionError(root / files.csv[0], "ground-truth CSV not found",
                          f"download the official {layout.name} {split} ground truth into {root}")
    archives = [a for a in (_index_archive(root, stem, layout.not_images) for stem in files.images) if a is not None]
    if len(archives) < len(files.images):
        missing = next(stem for stem in files.images if _archive_path(root, stem) is None)
        raise LesionError(root / missing, f"image archive not found (neither the extracted folder nor {missing}.zip "
                          f"or {missing}{HDF5_SUFFIX})",
                          f"download the official {layout.name} {split} images into {root}")
    names, labels = read_labels(layout, csv_path, layout.columns if split == "train" else ())
    ids = image_ids(names, csv_path)
    ids, labels = _without_duplicates(layout, root, ids, labels)
    if len(archives) == 1:
        path, index = archives[0]
        images = ImageArchive(path, _members(path, index, ids, csv_path))
    else:
        images = _parts_of(archives, ids, csv_path)
    return SplitTable(layout, split, ids, labels, images, csv_path)


def _has_labels(layout: Layout, csv_path: Path) -> bool:
    """Whether the CSV has the layout's label column(s) (ISIC 2024's test CSV has none)."""
    columns = read_csv(csv_path, f"{layout.name} CSV").columns
    return all(c in columns for c in layout.label_columns or [layout.label_column])


def _read_class_folders(layout: Layout, root: Path) -> SplitTable:
    """The images of ``root/<class>/`` (any depth) as one training split, labelled by folder."""
    index: dict[str, list[str]] = defaultdict(list)
    label_of: dict[str, int] = {}
    for k, cls in enumerate(layout.classes):
        if not (root / cls).is_dir():
            log.warning("%s: no folder for class %s; it has no training images", root, cls)
            continue
        for found, names in _index_folder(root / cls).items():
            index[found] += [f"{cls}/{name}" for name in names]
            label_of[found] = k
    ids = sorted(index)
    _check_listed(root, dict(index), ids, root)
    members = {i: index[i][0] for i in ids}
    for member in members.values():
        _check_file(root / member)
    return SplitTable(layout, "train", ids, np.array([label_of[i] for i in ids], dtype=np.int64),
                      ImageArchive(root, members), root)


def _parts_of(archives: list[tuple[Path, dict[str, list[str]]]], ids: list[str], csv_path: Path) -> ImageParts:
    """The split's images over several archives: each id in exactly one of them."""
    merged: dict[str, list[str]] = defaultdict(list)
    for path, index in archives:
        for found, names in index.items():
            merged[found] += [f"{path.name}/{name}" for name in names]
    _check_listed(archives[0][0].parent, dict(merged), ids, csv_path)  # every id once, over all parts
    parts = []
    for path, index in archives:
        held = [i for i in ids if i in index]
        parts.append(ImageArchive(path, _members(path, index, held, csv_path, part=True)))
    return ImageParts(parts)


def _without_duplicates(layout: Layout, root: Path, ids: list[str], labels: np.ndarray) -> tuple[list[str], np.ndarray]:
    """``ids`` and ``labels`` without the second image of each pair the layout's duplicates file lists."""
    if layout.duplicates is None or (path := _find(root, layout.duplicates.file)) is None:
        return ids, labels
    frame = read_csv(path, f"{layout.name} duplicates CSV")
    missing = [c for c in layout.duplicates.columns if c not in frame.columns]
    if missing:
        raise LesionError(path, f"missing column(s) {', '.join(missing)}",
                          f"use the official duplicates CSV with columns {','.join(layout.duplicates.columns)}")
    first, second = ([image_id_of(n) for n in frame[c]] for c in layout.duplicates.columns)
    listed = set(ids)
    dropped = {b for a, b in zip(first, second) if a in listed and b in listed and a != b}
    keep = [k for k, i in enumerate(ids) if i not in dropped]
    if dropped:
        log.warning("%s: %d duplicate images dropped (the second of each listed pair)", path, len(dropped))
    return [ids[k] for k in keep], labels[keep]


def find_grouping(layout: str | Layout, root: str | Path) -> Grouping | None:
    """The first of the layout's grouping files present in ``root``, else ``None``."""
    layout = LAYOUTS[layout] if isinstance(layout, str) else layout
    return next((g for g in layout.groupings if (Path(root).expanduser() / g.file).is_file()), None)


def read_group_map(layout: str | Layout, root: str | Path) -> tuple[Grouping, dict[str, str]] | None:
    """The layout's grouping file present in ``root`` and its image id (:func:`image_id_of`) → lesion (or
    patient) id, else ``None``. Rows with an empty group cell are left out."""
    grouping = find_grouping(layout, root)
    if grouping is None:
        return None
    path = Path(root).expanduser() / grouping.file
    frame = read_csv(path, f"{grouping.kind} groupings CSV")
    missing = [c for c in (grouping.id_column, grouping.group_column) if c not in frame.columns]
    if missing:
        raise LesionError(path, f"missing column(s) {', '.join(missing)}",
                          f"use a CSV with columns {grouping.id_column},{grouping.group_column}")
    return grouping, {image_id_of(i): g for i, g in zip(frame[grouping.id_column], frame[grouping.group_column]) if g}


def patient_ids(layout: str | Layout, root: str | Path, ids: list[str]) -> np.ndarray | None:
    """The patient of every image in ``ids`` where the layout's grouping file (present in ``root``) groups its images
    by patient (ISIC 2020, ISIC 2024, PAD-UFES-20), else ``None``."""
    grouping = find_grouping(layout, root)
    if grouping is None or grouping.kind != "patient":
        return None
    return read_groups(layout, root, ids, strict=False)


def read_groups(layout: str | Layout, root: str | Path, ids: list[str], strict: bool = True) -> np.ndarray | None:
    """Lesion (or patient) id of every image in ``ids``, from the layout's grouping file (``None`` if absent).

    A few images missing from the file count as groups of their own (warned); when most are
    missing, the file does not describe these images and splitting by it would be a pretence.

    Args:
        strict: refuse a file that gives fewer than half of ``ids`` a group (for splits); else warn
            (for a report on the data, which should show it).

    Raises:
        LesionError: ``strict`` and more than half of ``ids`` have no group in the file.
    """
    found = read_group_map(layout, root)
    if found is None:
        return None
    grouping, lesion_of = found
    path = Path(root).expanduser() / grouping.file
    unknown = [i for i in ids if i not in lesion_of]
    if strict and 2 * len(unknown) > len(ids):
        raise LesionError(path, f"{len(unknown)} of {len(ids)} images have no {grouping.kind} id (e.g. {unknown[0]}) "
                          f"in column {grouping.group_column}",
                          f"give every image (named in column {grouping.id_column} as in the ground truth, with or "
                          f"without its extension) its {grouping.kind} id, or use dataset.split_by=image")
    if unknown:
        log.warning("%s: %d of %d images have no %s id; each counts as its own %s", path, len(unknown), len(ids),
                    grouping.kind, grouping.kind)
    log.info("%s groupings from %s", grouping.kind, path)
    return np.array([lesion_of.get(i, f"image:{i}") for i in ids], dtype=object)


def archive_file(root: str | Path, stem: str, name: str) -> bytes | None:
    """The bytes of a file named ``name`` inside the split archive ``<root>/<stem>`` (folder or zip),
    at any depth but outside hidden and ``__MACOSX`` folders; ``None`` when there is none."""
    folder, archive = Path(root) / stem, Path(root) / f"{stem}.zip"
    if folder.is_dir():
        found = [p for p in folder.rglob(name) if p.is_file() and not any(
            part.startswith(".") or part == "__MACOSX" for part in p.relative_to(folder).parts[:-1])]
        return found[0].read_bytes() if found else None
    if archive.is_file():
        with zipfile.ZipFile(archive) as z:
            members = [m for m in z.namelist() if _parts(m) and _parts(m)[-1] == name
                       and not any(p.startswith(".") or p == "__MACOSX" for p in _parts(m)[:-1])]
            return z.read(members[0]) if members else None
    return None
