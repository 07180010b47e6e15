"""Real-world input files: archives, CSVs and images as other systems and people make them.

Each kind is either read correctly (ids, labels, pixels) or refused with one clear error line.
"""

from __future__ import annotations

import io
import logging
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lesion.data.cache import SquareImages
from lesion.data.images import DEFAULT_MAX_PIXELS
from lesion.data.readers import read_groups, read_split
from lesion.data.layouts import LAYOUTS
from lesion.data.synthetic import LESIONS_CSV
from lesion.errors import LesionError

SPEC = LAYOUTS["isic2018"]
FILES = SPEC.splits["train"]
# The start of an AppleDouble file (resource fork / Finder info), as macOS writes next to every file.
APPLE_DOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64)


@pytest.fixture
def root(synthetic_root, tmp_path) -> Path:
    """A private copy of the zipped synthetic ISIC 2018 dataset."""
    return shutil.copytree(synthetic_root("isic2018"), tmp_path / "data")


@pytest.fixture
def folders(synthetic_root, as_folders, tmp_path) -> Path:
    """A private copy of the synthetic ISIC 2018 dataset with every zip extracted."""
    return as_folders(synthetic_root("isic2018"), tmp_path / "extracted")


def truth(root: Path) -> tuple[list[str], list[str]]:
    """Training ids and class names from the generator's own record, independent of the CSV reader."""
    frame = pd.read_csv(root / LESIONS_CSV, dtype=str)
    frame = frame[frame["split"] == "train"]
    return frame["image_id"].tolist(), frame["label"].tolist()


def assert_reads_truth(root: Path) -> None:
    table = read_split("isic2018", root, "train")
    ids, labels = truth(root)
    assert table.ids == ids
    assert [SPEC.classes[k] for k in table.labels] == labels
    assert set(table.images.members) == set(ids)


def assert_one_error(info: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(info.value)
    assert " — " in message and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def pixels(table, image_id: str) -> np.ndarray:
    return np.asarray(table.images.read(image_id))


def zip_members(archive: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(archive) as z:
        return {name: z.read(name) for name in z.namelist()}


def write_zip(archive: Path, members: dict[str, bytes]) -> None:
    archive.unlink()
    with zipfile.ZipFile(archive, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def png16(values: np.ndarray) -> bytes:
    """A 16-bit PNG of ``values`` (H×W grey, H×W×3 RGB or H×W×4 RGBA uint16), written by hand
    because PIL cannot write 16-bit colour PNGs."""
    height, width = values.shape[:2]
    channels = 1 if values.ndim == 2 else values.shape[2]
    colour_type = {1: 0, 3: 2, 4: 6}[channels]
    rows = values.astype(">u2").reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)  # filter 0 on every row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


# --- archives made on other systems -------------------------------------------------------------

def test_macos_zip_extras_are_not_images(root, caplog):
    """Finder's "Compress" adds __MACOSX/ with an AppleDouble ._ file per member, and .DS_Store."""
    archive = root / f"{FILES.images[0]}.zip"
    members = zip_members(archive)
    extras = {"__MACOSX/": b"", f"{FILES.images[0]}/.DS_Store": b"\x00\x00\x00\x01Bud1" + bytes(32),
              f"__MACOSX/{FILES.images[0]}/._.DS_Store": APPLE_DOUBLE}
    for name in members:
        folder, _, base = name.rpartition("/")
        if base:
            extras[f"__MACOSX/{folder}/._{base}"] = APPLE_DOUBLE
    write_zip(archive, {**members, **extras})
    with caplog.at_level(logging.INFO, logger="lesion.data.readers"):
        assert_reads_truth(root)
    # Nothing but the CSV's images and the official side files is counted as an image.
    assert "have no row" not in caplog.text
    table = read_split("isic2018", root, "train")
    assert not any("__MACOSX" in m or "/._" in m for m in table.images.members.values())
    assert pixels(table, table.ids[0]).shape[2] == 3


def test_macos_files_in_an_extracted_folder_are_not_images(folders, caplog):
    """A folder copied by macOS onto a non-Apple disk: ._ files next to every image, .DS_Store."""
    split = folders / FILES.images[0]
    for image in list(split.glob("*.jpg")):
        (image.parent / f"._{image.name}").write_bytes(APPLE_DOUBLE)
    (split / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folders / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (split / "__MACOSX" / FILES.images[0]).mkdir(parents=True)
    (split / "__MACOSX" / FILES.images[0] / "._ISIC_0000000.jpg").write_bytes(APPLE_DOUBLE)
    with caplog.at_level(logging.INFO, logger="lesion.data.readers"):
        assert_reads_truth(folders)
    assert "have no row" not in caplog.text


def test_zip_with_windows_separators(root):
    """Old Windows tools store member names with backslashes."""
    archive = root / f"{FILES.images[0]}.zip"
    members = {name.replace("/", "\\"): data for name, data in zip_members(archive).items() if not name.endswith("/")}
    before = read_split("isic2018", root, "train")
    expected = pixels(before, before.ids[0])
    write_zip(archive, members)
    assert_reads_truth(root)
    assert np.array_equal(pixels(read_split("isic2018", root, "train"), before.ids[0]), expected)


# --- CSVs saved by spreadsheets -----------------------------------------------------------------

def _spaced(line: str) -> str:
    return ",".join(f" {cell} " for cell in line.split(","))


SPREADSHEET = {
    "bom": lambda lines: "\ufeff" + "\n".join(lines) + "\n",
    "crlf": lambda lines: "\r\n".join(lines) + "\r\n",
    "spaces": lambda lines: "\n".join(_spaced(line) for line in lines) + "\n",
    "trailing_empty_lines": lambda lines: "\n".join(lines) + "\n\n\n",
    "trailing_comma_rows": lambda lines: "\n".join(lines) + "\n" + ",,,,,,,\n" * 3,
    "all": lambda lines: "\ufeff" + "\r\n".join(_spaced(line) for line in lines) + "\r\n,,,,,,,\r\n\r\n",
}


@pytest.mark.parametrize("kind", list(SPREADSHEET))
def test_ground_truth_csv_saved_by_a_spreadsheet(root, kind):
    csv_path = root / FILES.csv[0]
    lines = csv_path.read_text().splitlines()
    assert lines[1].split(",")[1] in ("1.0", "0.0")  # labels written as floats, as the official CSVs do
    csv_path.write_bytes(SPREADSHEET[kind](lines).encode())
    assert_reads_truth(root)


@pytest.mark.parametrize("kind", ["bom", "crlf", "spaces", "all"])
def test_lesion_groupings_csv_saved_by_a_spreadsheet(root, kind):
    ids, _ = truth(root)
    lesions = [f"HAM_{k // 2:07d}" for k in range(len(ids))]
    lines = ["image,lesion_id", *(f"{i},{g}" for i, g in zip(ids, lesions))]
    (root / SPEC.groupings[0].file).write_bytes(SPREADSHEET[kind](lines).replace(",,,,,,,", ",").encode())
    assert read_groups("isic2018", root, ids).tolist() == lesions


# --- label cells that are not one-hot -----------------------------------------------------------

def _edit_cells(csv_path: Path, row: int, cells: dict[str, str]) -> str:
    """Set cells of data row ``row`` (0-based) as text; return that row's id."""
    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    for column, value in cells.items():
        frame.loc[row, column] = value
    frame.to_csv(csv_path, index=False)
    return frame.loc[row, SPEC.id_column]


@pytest.mark.parametrize("cells,fragments", [
    ({"MEL": ""}, ["column MEL", "empty"]),
    ({"NV": "0.5"}, ["column NV", "'0.5'"]),
    ({"MEL": "0.7", "NV": "0.3"}, ["column MEL", "'0.7'"]),
    ({"BCC": "yes"}, ["column BCC", "'yes'"]),
], ids=["empty", "half", "soft_pair", "word"])
def test_label_cell_that_is_not_0_or_1_names_row_and_column(root, cells, fragments):
    csv_path = root / FILES.csv[0]
    image_id = _edit_cells(csv_path, 4, cells)
    with pytest.raises(LesionError) as info:
        read_split("isic2018", root, "train")
    assert_one_error(info, str(csv_path), "row 6", image_id, *fragments)


def test_empty_id_cell_names_the_row(root):
    csv_path = root / FILES.csv[0]
    _edit_cells(csv_path, 2, {SPEC.id_column: ""})
    with pytest.raises(LesionError) as info:
        read_split("isic2018", root, "train")
    assert_one_error(info, str(csv_path), "row 4", f"column {SPEC.id_column}", "empty")


# --- zips re-made by hand -----------------------------------------------------------------------

@pytest.mark.parametrize("rename", [
    lambda name: name.split("/", 1)[1],  # no inner folder: images at the top level
    lambda name: "my lesion images/" + name.split("/", 1)[1],
    lambda name: "download/ISIC2018/" + name,
], ids=["top_level", "renamed_folder", "nested_deeper"])
def test_zip_remade_by_hand(root, rename):
    archive = root / f"{FILES.images[0]}.zip"
    before = read_split("isic2018", root, "train")
    expected = {i: pixels(before, i) for i in before.ids[:3]}
    members = {rename(name): data for name, data in zip_members(archive).items() if not name.endswith("/")}
    write_zip(archive, members)
    assert_reads_truth(root)
    after = read_split("isic2018", root, "train")
    for image_id, values in expected.items():
        assert np.array_equal(pixels(after, image_id), values)


def test_zip_holding_an_image_twice_is_refused(root):
    """Re-zipped with both the inner folder and a top-level copy: which one is meant is unclear."""
    archive = root / f"{FILES.images[0]}.zip"
    members = zip_members(archive)
    twice = f"{FILES.images[0]}/ISIC_0000003.jpg"
    write_zip(archive, {**members, "ISIC_0000003.jpg": members[twice]})
    with pytest.raises(LesionError) as info:
        read_split("isic2018", root, "train")
    assert_one_error(info, str(archive), "ISIC_0000003", twice)


# --- image formats hiding behind .jpg -----------------------------------------------------------

def _replace_image(folders: Path, image_id: str, data: bytes) -> None:
    (folders / FILES.images[0] / f"{image_id}.jpg").write_bytes(data)


def test_webp_named_jpg(folders):
    values = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    _replace_image(folders, "ISIC_0000001", encoded(Image.fromarray(values), "WEBP", lossless=True))
    table = read_split("isic2018", folders, "train")
    assert np.array_equal(pixels(table, "ISIC_0000001"), values)


@pytest.mark.parametrize("channels", [3, 4], ids=["rgb", "rgba"])
def test_sixteen_bit_colour_png_named_jpg(folders, channels):
    values = np.random.default_rng(1).integers(0, 65536, (20, 30, channels), dtype=np.uint16)
    _replace_image(folders, "ISIC_0000002", png16(values))
    out = pixels(read_split("isic2018", folders, "train"), "ISIC_0000002")
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - np.round(values[..., :3] / 257)).max() <= 1  # scaled, not clipped


def test_sixteen_bit_grey_png_named_jpg(folders):
    values = np.linspace(0, 65535, 20 * 30).reshape(20, 30).astype(np.uint16)
    _replace_image(folders, "ISIC_0000002", png16(values))
    out = pixels(read_split("isic2018", folders, "train"), "ISIC_0000002")
    assert out.shape == (20, 30, 3)
    assert np.abs(out[..., 1].astype(int) - np.round(values / 257)).max() <= 1


# --- tiny and thin images -----------------------------------------------------------------------

@pytest.mark.parametrize("size", [(1, 1), (3, 2), (2, 3), (2000, 3), (3, 2000)])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_tiny_and_thin_images_become_the_centre_square(folders, size, fmt):
    w, h = size
    values = np.zeros((h, w, 3), np.uint8)
    values[...] = (200, 30, 40)
    cx, cy = w // 2, h // 2  # the centre (±20 px along a long side) is green: the square must show it
    values[max(0, cy - 20):cy + 20, max(0, cx - 20):cx + 20] = (30, 180, 60)
    _replace_image(folders, "ISIC_0000004", encoded(Image.fromarray(values), fmt, **({"quality": 95} if fmt == "JPEG" else {})))
    table = read_split("isic2018", folders, "train")
    square = SquareImages(table, 32, None, DEFAULT_MAX_PIXELS).decode(table.ids.index("ISIC_0000004"))
    assert square.shape == (32, 32, 3)
    tolerance = 1 if fmt == "PNG" else 12
    assert np.abs(square.astype(int) - (30, 180, 60)).max() <= tolerance


# --- links and things that are not files -------------------------------------------------------

def test_symlinked_image_is_followed(folders, tmp_path):
    image = folders / FILES.images[0] / "ISIC_0000005.jpg"
    expected = pixels(read_split("isic2018", folders, "train"), "ISIC_0000005")
    elsewhere = tmp_path / "elsewhere" / "lesion.jpg"
    elsewhere.parent.mkdir()
    image.rename(elsewhere)
    image.symlink_to(elsewhere)
    assert_reads_truth(folders)
    assert np.array_equal(pixels(read_split("isic2018", folders, "train"), "ISIC_0000005"), expected)


def test_symlinked_split_folder_is_followed(folders, tmp_path):
    split = folders / FILES.images[0]
    moved = tmp_path / "disk" / FILES.images[0]
    moved.parent.mkdir()
    split.rename(moved)
    split.symlink_to(moved, target_is_directory=True)
    assert_reads_truth(folders)


def test_dangling_symlink_is_a_clear_error(folders, tmp_path):
    image = folders / FILES.images[0] / "ISIC_0000005.jpg"
    image.unlink()
    image.symlink_to(tmp_path / "unplugged-disk" / "ISIC_0000005.jpg")
    with pytest.raises(LesionError) as info:
        read_split("isic2018", folders, "train")
    assert_one_error(info, str(image), "symbolic link", "unplugged-disk")


def test_folder_in_place_of_an_image_is_a_clear_error(folders):
    image = folders / FILES.images[0] / "ISIC_0000006.jpg"
    image.unlink()
    image.mkdir()
    with pytest.raises(LesionError) as info:
        read_split("isic2018", folders, "train")
    assert_one_error(info, str(image), "folder")
