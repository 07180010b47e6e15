"""Read ISIC 2017 Part 3 / ISIC 2018 Task 3 splits from their official files.

Each split's images are read from the official ``.zip`` or from the extracted folder, without
extracting anything to disk. Images are selected by the ids of the ground-truth CSV, never by
globbing, so the superpixel PNGs and metadata CSVs inside the ISIC 2017 archives are ignored.

Files as other systems and people make them are read as the official ones: zips with any inner
folder or none, backslash member names (old Windows tools), macOS's ``__MACOSX/`` and ``._*``
AppleDouble members and ``.DS_Store`` files (never taken as images); CSVs with a UTF-8 byte-order
mark, CRLF line ends, spaces around headers and cells, and empty rows. What cannot be read
unambiguously (an id with two images, a label cell that is empty or not 0/1, a broken link or a
folder in place of an image) is one :class:`~lesion.errors.LesionError`.
"""

from __future__ import annotations

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

from lesion.data.images import DECODE_ERRORS, DEFAULT_MAX_PIXELS, TooManyPixels, decode, is_image_name
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


def _read_csv(path: Path, what: str) -> pd.DataFrame:
    """Every cell of a CSV as stripped text (``""`` when empty), indexed by line number.

    Reads what spreadsheets save: a UTF-8 byte-order mark, CRLF line ends, spaces around headers
    and cells, empty or comma-only rows anywhere (dropped; later rows keep their line numbers).
    """
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False, encoding="utf-8-sig")
    except (OSError, ValueError, pd.errors.ParserError) as error:  # UnicodeDecodeError is a ValueError
        raise LesionError(path, f"cannot be read as CSV ({error})", f"use the official {what}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    twice = frame.columns[frame.columns.duplicated()]
    if len(twice):
        raise LesionError(path, f"column {twice[0]} appears more than once", "keep one column of each name")
    frame = frame.apply(lambda column: column.str.strip())
    frame.index = frame.index + 2  # line 1 is the header
    return frame[(frame != "").any(axis=1)]


def read_labels(layout: Layout, csv_path: Path) -> tuple[list[str], np.ndarray]:
    """Parse an official ground-truth CSV into ids and class indices, validating every cell."""
    frame = _read_csv(csv_path, f"{layout.name} ground-truth CSV")
    needed = [layout.id_column, *layout.label_columns]
    missing = [c for c in needed if c not in frame.columns]
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


def _parts(name: str) -> tuple[str, ...]:
    """Folders and file name of a zip member or relative path; old Windows zips use backslashes."""
    return PurePosixPath(name.replace("\\", "/")).parts


def _image_id(name: str) -> str | None:
    """The ISIC id whose image ``name`` (zip member or relative path) may hold, else ``None``.

    Any inner folder, or none, is accepted, but nothing inside a hidden folder or macOS's
    ``__MACOSX`` (resource forks of the zipped files) is an image.
    """
    parts = _parts(name)
    if not parts or not is_image_name(parts[-1]) or any(p.startswith(".") or p == "__MACOSX" for p in parts[:-1]):
        return None
    return PurePosixPath(parts[-1]).stem


def _index(names: Iterable[str]) -> dict[str, list[str]]:
    """ISIC id → every name in ``names`` that may hold its image."""
    index = defaultdict(list)
    for name in names:
        image_id = _image_id(name)
        if image_id is not None:
            index[image_id].append(name)
    return dict(index)


def _index_folder(folder: Path) -> dict[str, list[str]]:
    """ISIC id → relative paths below ``folder`` that may hold its image.

    A folder named like an image stands for an id only when no file does, so that it is reported
    as a folder rather than as a missing image (and a NAS's thumbnail folders are harmless).
    """
    files, folders = [], []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath).relative_to(folder)
        files += [str(here / name) for name in filenames]  # includes broken links: reported in _members
        folders += [str(here / name) for name in dirnames]
    index = _index(files)
    for image_id, names in _index(folders).items():
        index.setdefault(image_id, names)
    return index


def _index_zip(path: Path) -> dict[str, list[str]]:
    """ISIC id → member names of the zip ``path`` that may hold its image."""
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
    return _index(n for n in names if not n.endswith(("/", "\\")))


def _index_archive(root: Path, stem: str) -> tuple[Path, dict[str, list[str]]] | None:
    """The split's images from ``<root>/<stem>`` (folder, preferred) or ``<root>/<stem>.zip``,
    with their index."""
    folder, archive = root / stem, root / f"{stem}.zip"
    if folder.is_dir():
        return folder, _index_folder(folder)
    if archive.is_file():
        return archive, _index_zip(archive)
    return None


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


def _members(path: Path, index: dict[str, list[str]], ids: list[str], csv_path: Path) -> dict[str, str]:
    """The one name holding each listed id's image (files checked in a folder archive)."""
    missing = [i for i in ids if i not in index]
    if missing:
        raise LesionError(path, f"no image for id {missing[0]} listed in {csv_path.name} ({len(missing)} missing in all)",
                          "use the matching image archive or remove those rows from the CSV")
    twice = next((i for i in ids if len(index[i]) > 1), None)
    if twice is not None:
        raise LesionError(path, f"holds {len(index[twice])} images for id {twice} ({', '.join(sorted(index[twice]))})",
                          "keep one image per id")
    members = {i: index[i][0] for i in ids}
    if path.is_dir():
        for member in members.values():
            _check_file(path / member)
    unlisted = len(index) - len(ids)
    if unlisted:
        log.info("%s: %d images have no row in %s and are ignored", path, unlisted, csv_path.name)
    return members


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
            a CSV id without an image or with two, or a broken link or folder in place of an image.
    """
    layout = LAYOUTS[layout] if isinstance(layout, str) else layout
    root = Path(root).expanduser()
    if not root.is_dir():
        raise LesionError(root, "dataset folder not found",
                          f"download the {layout.name} files into it or set dataset.root=DIR")
    files = layout.splits[split]
    csv_path = _find(root, files.csv)
    archive = _index_archive(root, files.images)
    if csv_path is None and archive is None and split != "train":
        return None
    if csv_path is None:
        raise LesionError(root / files.csv, "ground-truth CSV not found",
                          f"download the official {layout.name} {split} ground truth into {root}")
    if archive is None:
        raise LesionError(root / f"{files.images}.zip", "image archive not found (neither the zip nor the extracted folder)",
                          f"download the official {layout.name} {split} images into {root}")
    ids, labels = read_labels(layout, csv_path)
    path, index = archive
    return SplitTable(layout, split, ids, labels, ImageArchive(path, _members(path, index, ids, csv_path)), csv_path)


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
        frame = _read_csv(path, "lesion groupings CSV")
        missing = [c for c in (grouping.id_column, grouping.group_column) if c not in frame.columns]
        if missing:
            raise LesionError(path, f"missing column(s) {', '.join(missing)}",
                              f"use a CSV with columns {grouping.id_column},{grouping.group_column}")
        lesion_of = {i: g for i, g in zip(frame[grouping.id_column], frame[grouping.group_column]) if g}
        unknown = [i for i in ids if i not in lesion_of]
        if unknown:
            log.warning("%s: %d images have no lesion id; each counts as its own lesion", path, len(unknown))
        log.info("lesion groupings from %s", path)
        return np.array([lesion_of.get(i, f"image:{i}") for i in ids], dtype=object)
    return None
