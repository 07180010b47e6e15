"""Synthetic data: fake lesion images in the exact official file layouts (ISIC 2017–2020, HAM10000, ISIC 2024,
PAD-UFES-20).

Lets the whole pipeline (loader, cache, balancing, training, evaluation, Grad-CAM) run offline
and in seconds, on data whose answer is known.

What matches the real challenges:
    * file names, zip structure and CSV headers/values of every split (from ``layouts.py``):
      a zip ``<images>.zip`` whose top folder of the same name holds ``ISIC_<7 digits>.jpg``;
      ISIC 2017 zips also hold ``*_superpixels.png`` and ``<images>_metadata.csv``, ISIC 2018 zips
      ``ATTRIBUTION.txt`` and ``LICENSE.txt`` — present, as in the official archives, so that a
      loader is forced to ignore them;
    * the training-set class imbalance (e.g. ISIC 2018: NV ≈ 67 %, DF ≈ 1 %; ISIC 2020: melanoma
      ≈ 1.8 %; ISIC 2019's UNK has no image), scaled to ``n``; val and test get the same
      proportions (the real ones differ a little);
    * ISIC 2019: about a third of the training ids carry the ``_downsampled`` suffix, and the
      metadata CSV (``image,age_approx,anatom_site_general,lesion_id,sex``) groups some images
      into one lesion; ISIC 2020: images in the zip's ``train/`` folder, the v2 ground truth with
      every official column, several images per patient, and a duplicates list whose pairs are
      byte-identical copies; HAM10000: the images split over its two parts and the metadata CSV
      (``lesion_id,image_id,dx,dx_type,age,sex,localization``) with several images per lesion;
      ISIC 2024: ``train-image.hdf5`` / ``test-image.hdf5`` (one dataset of JPEG bytes per
      ``isic_id``), ``train-metadata.csv`` with every official column in order, ``test-metadata.csv``
      without the label and the training-only columns (``Layout.training_only``), several images
      per patient (age and sex per patient), and small square crops (100–150 px); PAD-UFES-20: PNG
      images ``PAT_<patient>_<lesion>_<n>.png`` spread over ``images/imgs_part_1`` … ``imgs_part_3``
      and ``metadata.csv`` with its 26 columns in order, several lesions per patient and images per
      lesion, the patient's columns (background, habits, age, gender, Fitzpatrick type) shared by
      their images and missing together for about a third of the patients, as in the real file;
    * JPEG (PAD-UFES-20: PNG), RGB, varying non-square sizes.

What is layout only:
    * the pixels: a skin-coloured background with noise and one procedurally drawn lesion whose
      class is chosen to be learnable from colour, shape (round / elongated / irregular border)
      and texture (dots, streaks, uniform). They look nothing like real lesions beyond that;
    * superpixel PNGs (8×8, a fixed grid), metadata (random age, sex, site, skin type; some missing,
      as in the real files), attribution/licence texts;
    * ISIC 2024's share of malignant images (``malignant_share``, default 10 %: the real 0.098 %
      would leave a small copy without malignant images to validate or test on) and its signal,
      split between pixels and table: a malignant image is drawn as a melanoma with probability
      0.7, else as a benign lesion, and independently its lesion measurements (``clin_size_long_diam_mm``
      and the ``tbp_lv_*`` colour, border and contrast columns) are those of a malignant lesion with
      probability 0.7, else of a benign one. The other ``tbp_lv_*`` columns are plausible noise.

Two files are not part of the official layout: ``synthetic_lesions.csv``
(``split,image_id,label,cx,cy,radius``, the lesion centre and mean radius in pixels of the written
image, ground truth for Grad-CAM checks) and ``.synthetic.json`` (the parameters; written last,
it marks the dataset complete).

The same ``(layout, n, seed, image_size)`` gives byte-identical files. Usage::

    python -m lesion.data.synthetic --layout isic2018 --out data/synthetic2018 --n 120 --seed 0
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import os
import shutil
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from lesion.data.layouts import LAYOUTS, SPLITS, Layout
from lesion.errors import LesionError, exit_with

VERSION = 1  # bump when the drawing changes, so that ensure_synthetic refuses stale datasets
MARKER = ".synthetic.json"
LESIONS_CSV = "synthetic_lesions.csv"

# Training-set class counts of the real challenges; val/test reuse the proportions.
TRAIN_COUNTS = {
    "isic2017": {"NV": 1372, "SK": 254, "MEL": 374},
    "isic2018": {"MEL": 1113, "NV": 6705, "BCC": 514, "AKIEC": 327, "BKL": 1099, "DF": 115, "VASC": 142},
    "isic2019": {"MEL": 4522, "NV": 12875, "BCC": 3323, "AK": 867, "BKL": 2624, "DF": 239, "VASC": 253, "SCC": 628,
                 "UNK": 0},
    "isic2020": {"benign": 32542, "melanoma": 584},
    "ham10000": {"MEL": 1113, "NV": 6705, "BCC": 514, "AKIEC": 327, "BKL": 1099, "DF": 115, "VASC": 142},
    "pad_ufes20": {"ACK": 730, "BCC": 845, "MEL": 52, "NEV": 244, "SCC": 192, "SEK": 235},
}
# Share of the malignant class of two-class layouts when none is asked for (else TRAIN_COUNTS's).
DEFAULT_MALIGNANT_SHARE = {"isic2024": 0.1}
SPLIT_SHARE = {"train": 1.0, "val": 1 / 4, "test": 1 / 3}  # split size relative to n
MIN_PER_CLASS = {"train": 3, "val": 1, "test": 1}  # 3 lets stratified k-fold / SMOTE k=2 work

DEFAULT_WIDTH, DEFAULT_HEIGHT = (80, 112), (60, 84)  # inclusive ranges, 4:3-ish like dermoscopy
SQUARE_SIDES = {"isic2024": (100, 150)}  # inclusive range of the side of square crops, by layout
# Layouts whose official images come as one HDF5 file per split (JPEG bytes per id), not a zip.
HDF5_IMAGES = frozenset({"isic2024"})
# Layouts whose official images are PNG files in a folder, spread over these sub-folders, not a zip.
FOLDER_PARTS = {"pad_ufes20": ("imgs_part_1", "imgs_part_2", "imgs_part_3")}
# Share of the malignant images of a layout that show their class in the pixels (the others are
# drawn as its benign class), and share that show it in the lesion measurements of the table.
PIXEL_SIGNAL = {"isic2024": 0.7}
TABLE_SIGNAL = 0.7
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # earliest zip date: no time-dependent bytes
_SKIN = np.array([232.0, 190.0, 165.0])


@dataclass(frozen=True)
class _Look:
    """How one class is drawn. Sizes are fractions of the lesion radius unless noted."""

    colour: tuple[int, int, int]
    texture_colour: tuple[int, int, int]
    core: float  # brightness factor of an off-centre core (<1 darker, >1 lighter)
    elongation: float  # minor / major axis
    irregularity: float  # amplitude of the border's low harmonics
    size: float  # mean radius as a fraction of the image's short side
    dots: int  # dots / globules scattered inside the lesion
    dot_size: float
    streaks: int  # radial lines (streaks, vessels, fissures)


# Every texture colour is darker than skin, so a lesion centre is darker than the skin around it.
_LOOKS = {
    "NV": _Look((140, 90, 60), (110, 70, 45), 0.85, 0.92, 0.04, 0.25, 0, 0.0, 0),
    "MEL": _Look((70, 45, 40), (70, 85, 120), 0.6, 0.8, 0.28, 0.28, 8, 0.12, 6),
    "SK": _Look((165, 125, 85), (205, 180, 150), 0.95, 0.6, 0.08, 0.25, 12, 0.07, 0),
    "BCC": _Look((200, 130, 130), (150, 30, 40), 1.0, 0.85, 0.12, 0.24, 0, 0.0, 8),
    "AKIEC": _Look((195, 105, 90), (210, 175, 160), 0.95, 0.75, 0.2, 0.24, 20, 0.05, 0),
    "BKL": _Look((175, 135, 95), (130, 95, 65), 0.95, 0.55, 0.1, 0.25, 0, 0.0, 10),
    "DF": _Look((120, 85, 95), (100, 70, 80), 1.25, 0.95, 0.05, 0.17, 0, 0.0, 0),
    "VASC": _Look((150, 40, 60), (90, 20, 50), 0.9, 0.9, 0.05, 0.22, 8, 0.13, 0),
    "SCC": _Look((205, 150, 120), (180, 60, 50), 1.1, 0.8, 0.25, 0.26, 6, 0.09, 4),
}
# Classes drawn as another class's look: the same diagnosis under another name.
_SAME_LOOK = {"AK": "AKIEC", "ACK": "AKIEC", "NEV": "NV", "SEK": "SK", "benign": "NV", "melanoma": "MEL",
              "malignant": "MEL"}


@dataclass(frozen=True)
class _Lesion:
    """Where one lesion lies: centre and semi-axes in pixels, rotation in radians."""

    cx: float
    cy: float
    a: float
    b: float
    angle: float

    @property
    def radius(self) -> float:
        return float(np.sqrt(self.a * self.b))

    def to_pixels(self, u: np.ndarray, v: np.ndarray) -> list[tuple[float, float]]:
        """Map points of the unit disk (u, v) onto the rotated ellipse, as PIL (x, y) pairs."""
        x, y = u * self.a, v * self.b
        c, s = np.cos(self.angle), np.sin(self.angle)
        return list(zip((self.cx + c * x - s * y).tolist(), (self.cy + s * x + c * y).tolist()))


def _layout(name: str) -> Layout:
    if name not in LAYOUTS:
        raise LesionError("layout", f"unknown layout {name!r}", f"use one of {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


def _class_counts(weights: dict[str, int], total: int, minimum: int) -> dict[str, int]:
    """Split ``total`` in proportion to ``weights`` by largest remainder; raise small classes (not
    those of weight 0, which stay empty) to ``minimum`` at the expense of the majority class."""
    quotas = {c: total * w / sum(weights.values()) for c, w in weights.items()}
    counts = {c: int(q) for c, q in quotas.items()}
    by_remainder = sorted(weights, key=lambda c: counts[c] - quotas[c])  # stable: ties keep order
    for c in by_remainder[: total - sum(counts.values())]:
        counts[c] += 1
    deficit = sum(max(0, minimum - k) for c, k in counts.items() if weights[c])
    counts = {c: max(k, minimum) if weights[c] else 0 for c, k in counts.items()}
    counts[max(weights, key=weights.get)] -= deficit
    return counts


def _malignant_share(spec: Layout, malignant_share: float | None) -> float | None:
    """The share of the malignant class to write: the one asked for, or the layout's default (``None``:
    the real class proportions). Only two-class layouts have one class to set."""
    if malignant_share is None:
        return DEFAULT_MALIGNANT_SHARE.get(spec.name)
    if spec.num_classes != 2 or not 0 < malignant_share < 1:
        raise LesionError("malignant_share", f"{malignant_share} is not a share in (0, 1) of a two-class layout's "
                          f"malignant class ({spec.name}: {', '.join(spec.classes)})",
                          "use a share such as 0.05 with isic2020 or isic2024, or leave it out")
    return malignant_share


def split_counts(layout: str, n: int, malignant_share: float | None = None) -> dict[str, dict[str, int]]:
    """Per split, per class (in ``Layout.classes`` order), the image counts ``write_synthetic`` uses.

    Args:
        layout: a name of :data:`~lesion.data.layouts.LAYOUTS`.
        n: number of training images.
        malignant_share: share of the second class of a two-class layout (ISIC 2020's melanoma,
            ISIC 2024's malignant); ``None``: the layout's default (:data:`DEFAULT_MALIGNANT_SHARE`,
            else the real proportions). Every class keeps its minimum count.

    Returns:
        ``{split: {class: count}}``.
    """
    spec = _layout(layout)
    share = _malignant_share(spec, malignant_share)
    weights = ({c: TRAIN_COUNTS[spec.name][c] for c in spec.classes} if share is None
               else dict(zip(spec.classes, (1 - share, share))))
    present = sum(1 for w in weights.values() if w)
    need = present * MIN_PER_CLASS["train"]
    if n < need:
        raise LesionError("n", f"{n} is too small for {layout}", f"use n >= {need}")
    counts = {}
    for split in (s for s in SPLITS if s in spec.splits):
        total = max(round(n * SPLIT_SHARE[split]), present * MIN_PER_CLASS[split])
        counts[split] = _class_counts(weights, total, MIN_PER_CLASS[split])
    return counts


def _outline(lesion: _Lesion, irregularity: float, rng: np.random.Generator) -> list[tuple[float, float]]:
    """Border polygon: an ellipse whose radius is modulated by random low harmonics."""
    t = np.linspace(0.0, 2 * np.pi, 64, endpoint=False)
    harmonics = np.arange(2, 6)
    amplitude = rng.standard_normal(len(harmonics)) / harmonics
    phase = rng.uniform(0, 2 * np.pi, len(harmonics))
    wobble = (amplitude[:, None] * np.cos(harmonics[:, None] * t + phase[:, None])).sum(0)
    rho = np.clip(1 + irregularity * wobble, 0.4, None)
    return lesion.to_pixels(rho * np.cos(t), rho * np.sin(t))


def _draw(look: _Look, size: tuple[int, int], rng: np.random.Generator) -> tuple[Image.Image, _Lesion]:
    """One RGB image of skin with one lesion drawn in ``look``; returns it and the lesion."""
    w, h = size
    short = min(w, h)
    elongation = np.clip(look.elongation + rng.normal(0, 0.06), 0.4, 1.0)
    radius = look.size * short * rng.uniform(0.8, 1.2)
    lesion = _Lesion(
        cx=w * rng.uniform(0.35, 0.65),
        cy=h * rng.uniform(0.35, 0.65),
        a=radius / np.sqrt(elongation),
        b=radius * np.sqrt(elongation),
        angle=rng.uniform(0, np.pi),
    )
    # Skin: per-image tone, a smooth low-frequency shading, and (below) pixel noise.
    tone = _SKIN + rng.normal(0, 6) + rng.normal(0, 4, 3)
    shading = Image.fromarray(rng.normal(0, 5, (3, 4)).astype(np.float32), "F").resize(size, Image.BILINEAR)
    image = Image.fromarray(np.clip(tone + np.asarray(shading)[..., None], 0, 255).astype(np.uint8), "RGB")

    shift = rng.normal(0, 12)  # common brightness shift so that colour alone is not a lookup table
    colour = np.asarray(look.colour) + shift + rng.normal(0, 10, 3)
    blur = ImageFilter.GaussianBlur(max(0.6, 0.08 * radius))

    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).polygon(_outline(lesion, look.irregularity, rng), fill=255)
    mask = mask.filter(blur)
    image = Image.composite(_solid(colour, size), image, mask)

    # An off-centre core (darker for most, lighter for DF's central patch) breaks radial symmetry.
    core = _Lesion(
        lesion.cx + rng.normal(0, 0.15) * radius,
        lesion.cy + rng.normal(0, 0.15) * radius,
        lesion.a * 0.5,
        lesion.b * 0.5,
        lesion.angle,
    )
    core_mask = Image.new("L", size, 0)
    ImageDraw.Draw(core_mask).polygon(_outline(core, look.irregularity, rng), fill=200)
    core_mask = ImageChops.multiply(core_mask.filter(ImageFilter.GaussianBlur(0.2 * radius)), mask)
    image = Image.composite(_solid(colour * look.core, size), image, core_mask)

    texture = Image.new("L", size, 0)
    pen = ImageDraw.Draw(texture)
    r_dot = max(1.0, look.dot_size * radius)
    dist, phi = 0.75 * np.sqrt(rng.uniform(size=look.dots)), rng.uniform(0, 2 * np.pi, look.dots)
    for x, y in lesion.to_pixels(dist * np.cos(phi), dist * np.sin(phi)):
        pen.ellipse((x - r_dot, y - r_dot, x + r_dot, y + r_dot), fill=255)
    start, end = rng.uniform(0.1, 0.45, look.streaks), rng.uniform(0.6, 0.95, look.streaks)
    phi = rng.uniform(0, 2 * np.pi, look.streaks)
    ends = zip(
        lesion.to_pixels(start * np.cos(phi), start * np.sin(phi)),
        lesion.to_pixels(end * np.cos(phi), end * np.sin(phi)),
    )
    for p, q in ends:
        pen.line((p, q), fill=255, width=max(1, round(0.07 * radius)))
    texture = ImageChops.multiply(texture.filter(ImageFilter.GaussianBlur(0.5)), mask)
    texture_colour = np.asarray(look.texture_colour) + shift + rng.normal(0, 6, 3)
    image = Image.composite(_solid(texture_colour, size), image, texture)

    noisy = np.asarray(image, np.float32) + rng.normal(0, 4, (h, w, 3)).astype(np.float32)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB"), lesion


def _solid(colour: np.ndarray, size: tuple[int, int]) -> Image.Image:
    return Image.new("RGB", size, tuple(int(v) for v in np.clip(np.round(colour), 0, 255)))


def _zip_info(name: str, compress: int = zipfile.ZIP_STORED) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = compress
    info.create_system = 3  # unix, whatever the host, so bytes match across platforms
    info.external_attr = (0o40755 << 16 | 0x10) if name.endswith("/") else 0o644 << 16
    return info


def _csv_text(header: list[str], rows: list[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _superpixels_png() -> bytes:
    """An 8×8 grid of 16 superpixels, index encoded in R + 256·G as in the official PNGs."""
    index = np.repeat(np.repeat(np.arange(16, dtype=np.uint8).reshape(4, 4), 2, 0), 2, 1)
    rgb = np.stack([index, np.zeros_like(index), np.zeros_like(index)], -1)
    buffer = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _isic2017_side_files(stem: str, ids: list[str], rng: np.random.Generator) -> dict[str, bytes]:
    ages = rng.choice([*range(15, 90, 5), "unknown"], len(ids))
    sexes = rng.choice(["female", "male", "unknown"], len(ids))
    metadata = _csv_text(["image_id", "age_approximate", "sex"], [list(row) for row in zip(ids, ages, sexes)])
    png = _superpixels_png()
    return {**{f"{i}_superpixels.png": png for i in ids}, f"{stem}_metadata.csv": metadata.encode()}


def _isic2018_side_files(stem: str, ids: list[str], rng: np.random.Generator) -> dict[str, bytes]:
    note = b"Synthetic images made by lesion.data.synthetic: no patient data, not derived from ISIC images.\n"
    return {"ATTRIBUTION.txt": note, "LICENSE.txt": b"CC0-1.0: synthetic data, no rights reserved.\n"}


# Members of the official zips that are not lesion images, by layout: name inside the top folder -> bytes.
_SIDE_FILES = {"isic2017": _isic2017_side_files, "isic2018": _isic2018_side_files}
# Folder inside the zip that holds the images, when it is not the zip's own name.
_INNER_FOLDER = {"isic2020": "train"}


def _write_split(
    spec: Layout,
    split: str,
    labels: list[str],
    first_id: int,
    folder: Path,
    image_size: tuple[int, int] | None,
    rng: np.random.Generator,
    metadata_signal: float = 0.0,
) -> tuple[list[str], list[list]]:
    """Write one split's image archives and CSVs; return its ids and its rows for ``synthetic_lesions.csv``."""
    files = spec.splits[split]
    ids = _ids(spec, split, first_id, labels, rng)
    side = _SIDE_FILES.get(spec.name, lambda *args: {})(files.images[0], ids, rng)
    lesions, parts = [], np.array_split(np.arange(len(ids)), len(files.images))
    for stem, rows in zip(files.images, parts):
        with _image_archive(spec, folder, stem, side) as add:
            for k in rows:
                image_id, label = ids[k], labels[k]
                image, lesion = _draw(_look(spec, label, rng), _size(spec, image_size, rng), rng)
                add(image_id, image)
                where = (f"{v:.1f}" for v in (lesion.cx, lesion.cy, lesion.radius))
                lesions.append([split, image_id, label, *where])
    if spec.label_columns:  # one-hot; the implicit class (ISIC 2017 NV) is the all-zero row
        columns = list(spec.label_columns)
        rows = [[i, *(f"{float(spec.label_columns[c] == y):.1f}" for c in columns)] for i, y in zip(ids, labels)]
        (folder / files.csv[0]).write_text(_csv_text([spec.id_column, *columns], rows))
    for name, text in _TABLES.get(spec.name, lambda *args: {})(spec, split, ids, labels, rng, metadata_signal).items():
        (folder / name).write_text(text)
    return ids, lesions


def _encoded(image: Image.Image, file_format: str) -> bytes:
    """The bytes of ``image`` as a JPEG (quality 90) or PNG file."""
    buffer = io.BytesIO()
    image.save(buffer, format=file_format, **({"quality": 90} if file_format == "JPEG" else {}))
    return buffer.getvalue()


@contextmanager
def _image_archive(spec: Layout, folder: Path, stem: str,
                   side: dict[str, bytes]) -> Iterator[Callable[[str, Image.Image], None]]:
    """Write the image archive ``stem`` as the layout ships it; yields ``add(image_id, image)``.

    A zip whose inner folder holds ``<id>.jpg`` and, last, the ``side`` files; (:data:`HDF5_IMAGES`)
    an HDF5 file with one scalar byte-string dataset of JPEG bytes per id, as ISIC 2024's; or
    (:data:`FOLDER_PARTS`) a folder whose sub-folders hold ``<id>.png`` in turn, as PAD-UFES-20's.
    """
    if spec.name in HDF5_IMAGES:
        import h5py  # only for the layouts that need it

        with h5py.File(folder / f"{stem}.hdf5", "w") as archive:
            yield lambda image_id, image: archive.create_dataset(image_id, data=np.bytes_(_encoded(image, "JPEG")))
        return
    if spec.name in FOLDER_PARTS:
        parts = [folder / stem / part for part in FOLDER_PARTS[spec.name]]
        for part in parts:
            part.mkdir(parents=True)
        written = itertools.count()
        yield lambda image_id, image: (parts[next(written) % len(parts)] / f"{image_id}.png").write_bytes(
            _encoded(image, "PNG"))
        return
    inner = _INNER_FOLDER.get(spec.name, stem)
    with zipfile.ZipFile(folder / f"{stem}.zip", "w") as archive:
        archive.writestr(_zip_info(f"{inner}/"), b"")
        yield lambda image_id, image: archive.writestr(_zip_info(f"{inner}/{image_id}.jpg"), _encoded(image, "JPEG"))
        for name, data in side.items():
            compress = zipfile.ZIP_STORED if name.endswith(".png") else zipfile.ZIP_DEFLATED
            archive.writestr(_zip_info(f"{inner}/{name}", compress), data)


def _size(spec: Layout, image_size: tuple[int, int] | None, rng: np.random.Generator) -> tuple[int, int]:
    """``(width, height)`` of the next image: ``image_size``, a square crop (:data:`SQUARE_SIDES`), or 4:3-ish."""
    if image_size:
        return tuple(image_size)
    if spec.name in SQUARE_SIDES:
        low, high = SQUARE_SIDES[spec.name]
        side = int(rng.integers(low, high + 1))
        return side, side
    return (int(rng.integers(DEFAULT_WIDTH[0], DEFAULT_WIDTH[1] + 1)),
            int(rng.integers(DEFAULT_HEIGHT[0], DEFAULT_HEIGHT[1] + 1)))


def _look(spec: Layout, label: str, rng: np.random.Generator) -> _Look:
    """How an image of class ``label`` is drawn: its class's look, but for a layout with a partial pixel
    signal (:data:`PIXEL_SIGNAL`) a malignant image shows it only with that probability (else benign)."""
    shown = PIXEL_SIGNAL.get(spec.name)
    if shown is not None and label == spec.classes[1] and rng.random() >= shown:
        label = spec.classes[0]
    return _LOOKS[_SAME_LOOK.get(label, label)]


def _ids(spec: Layout, split: str, first_id: int, labels: list[str], rng: np.random.Generator) -> list[str]:
    """The ids of images of ``labels``, numbered from ``first_id``: ISIC ids (about a third of ISIC 2019's
    training ids carry the ``_downsampled`` suffix), or PAD-UFES-20's (:func:`_pad_ufes20_ids`)."""
    if spec.name == "pad_ufes20":
        return _pad_ufes20_ids(labels, first_id, rng)
    n = len(labels)
    ids = [f"ISIC_{first_id + k:07d}" for k in range(n)]
    if spec.name == "isic2019" and split == "train":
        ids = [f"{i}_downsampled" if shrunk else i for i, shrunk in zip(ids, rng.random(n) < 1 / 3)]
    return ids


def _group_numbers(n: int, mean_size: float, rng: np.random.Generator) -> np.ndarray:
    """Group numbers 0, 1, … of ``n`` images in order, groups of 1 + Poisson(``mean_size`` − 1) images."""
    out, k = [], 0
    while len(out) < n:
        out += [k] * (1 + int(rng.poisson(mean_size - 1)))
        k += 1
    return np.array(out[:n], dtype=np.int64)


def _groups(prefix: str, n: int, mean_size: float, rng: np.random.Generator, first: int = 0) -> list[str]:
    """Group ids for ``n`` images in order, groups of 1 + Poisson(``mean_size`` − 1) images, numbered from
    ``first``."""
    return [f"{prefix}_{first + k:07d}" for k in _group_numbers(n, mean_size, rng)]


def _pad_ufes20_ids(labels: list[str], first_id: int, rng: np.random.Generator) -> list[str]:
    """``PAT_<patient>_<lesion>_<n>`` per image, numbered from ``first_id``: a lesion has 1 + Poisson(0.4)
    images (the real 1.4), all of its diagnosis; a patient 1 + Poisson(0.5) lesions (the real 1.2: more,
    so that a small copy has patients of several images), of any diagnoses; ``n`` counts the images."""
    n = len(labels)
    lesion_of, lesions = np.empty(n, dtype=np.int64), 0
    for label in sorted(set(labels)):
        rows = [k for k, y in enumerate(labels) if y == label]
        numbers = _group_numbers(len(rows), 1.4, rng)
        lesion_of[rows] = lesions + numbers
        lesions += int(numbers.max()) + 1
    patient_of_lesion = np.empty(lesions, dtype=np.int64)
    patient_of_lesion[rng.permutation(lesions)] = _group_numbers(lesions, 1.5, rng)  # diagnoses mixed
    return [f"PAT_{first_id + patient_of_lesion[lesion]}_{first_id + lesion}_{first_id + k}"
            for k, lesion in enumerate(lesion_of)]


def _ages(n: int, rng: np.random.Generator, missing: float = 0.02) -> list[str]:
    ages = rng.choice(np.arange(0, 90, 5), n, p=_AGE_WEIGHTS)
    return ["" if gone else f"{a:.1f}" for a, gone in zip(ages, rng.random(n) < missing)]


def _choice(values: tuple[str, ...], weights: tuple[float, ...], n: int, rng: np.random.Generator) -> list[str]:
    return rng.choice(values, n, p=np.asarray(weights) / sum(weights)).tolist()


_AGE_WEIGHTS = np.array([1, 1, 2, 3, 5, 7, 8, 9, 10, 10, 10, 9, 8, 7, 5, 3, 1, 1], dtype=float)
_AGE_WEIGHTS /= _AGE_WEIGHTS.sum()
_SEXES, _SEX_WEIGHTS = ("male", "female", ""), (52, 46, 2)
_SITES_2019 = ("anterior torso", "upper extremity", "posterior torso", "lower extremity", "head/neck",
               "palms/soles", "oral/genital", "lateral torso", "")
_SITE_WEIGHTS_2019 = (27, 18, 13, 20, 12, 2, 1, 1, 6)
_SITES_2020 = ("torso", "lower extremity", "upper extremity", "head/neck", "palms/soles", "oral/genital", "")
_SITE_WEIGHTS_2020 = (51, 25, 15, 5, 1, 0.4, 2.6)
_BENIGN_2020 = ("unknown", "nevus", "seborrheic keratosis", "lentigo NOS", "lichenoid keratosis", "solar lentigo")
_BENIGN_WEIGHTS_2020 = (82, 16, 0.4, 0.1, 0.1, 0.02)
_SITES_HAM = ("back", "lower extremity", "trunk", "upper extremity", "abdomen", "face", "chest", "foot", "unknown",
              "neck", "scalp", "hand", "ear", "genital", "acral")
_SITE_WEIGHTS_HAM = (22, 21, 14, 11, 10, 7, 4, 3, 2, 2, 1, 1, 0.6, 0.5, 0.1)


def _isic2019_tables(spec: Layout, split: str, ids: list[str], labels: list[str], rng: np.random.Generator,
                     signal: float) -> dict:
    n = len(ids)
    sites = _tied_sites(_choice(_SITES_2019, _SITE_WEIGHTS_2019, n, rng), labels, spec, signal, rng)
    sexes = _choice(_SEXES, _SEX_WEIGHTS, n, rng)
    ages = _ages(n, rng)
    if split == "train":
        lesions = _groups("BCN", n, 1.3, rng)
        rows = [list(row) for row in zip(ids, ages, sites, lesions, sexes)]
        return {"ISIC_2019_Training_Metadata.csv": _csv_text(["image", "age_approx", "anatom_site_general",
                                                              "lesion_id", "sex"], rows)}
    rows = [list(row) for row in zip(ids, ages, sites, sexes)]
    return {"ISIC_2019_Test_Metadata.csv": _csv_text(["image", "age_approx", "anatom_site_general", "sex"], rows)}


def _isic2020_tables(spec: Layout, split: str, ids: list[str], labels: list[str], rng: np.random.Generator,
                     signal: float) -> dict:
    n = len(ids)
    patients = _groups("IP", n, 4.0, rng)
    sexes = _choice(("male", "female", ""), (51, 48.8, 0.2), n, rng)
    ages = _ages(n, rng, missing=0.002)
    sites = _tied_sites(_choice(_SITES_2020, _SITE_WEIGHTS_2020, n, rng), labels, spec, signal, rng)
    benign = _choice(_BENIGN_2020, _BENIGN_WEIGHTS_2020, n, rng)
    rows = [[i, p, f"IL_{k:07d}", sex, age, site, "melanoma" if y == "melanoma" else b,
             "malignant" if y == "melanoma" else "benign", int(y == "melanoma")]
            for k, (i, p, sex, age, site, b, y) in enumerate(zip(ids, patients, sexes, ages, sites, benign, labels))]
    header = ["image_name", "patient_id", "lesion_id", "sex", "age_approx", "anatom_site_general_challenge",
              "diagnosis", "benign_malignant", "target"]
    return {name: _csv_text(header, rows) for name in spec.splits["train"].csv}


def _ham10000_tables(spec: Layout, split: str, ids: list[str], labels: list[str], rng: np.random.Generator,
                     signal: float) -> dict:
    n = len(ids)
    order = np.argsort(np.array(labels), kind="stable")  # a lesion's images share its diagnosis
    lesion_of = dict(zip(order.tolist(), _groups("HAM", n, 1.5, rng)))
    dx_type = _choice(("histo", "follow_up", "consensus", "confocal"), (53, 37, 9, 1), n, rng)
    sexes = _choice(("male", "female", "unknown"), (54, 45.5, 0.5), n, rng)
    ages = _ages(n, rng, missing=0.006)
    sites = _tied_sites(_choice(_SITES_HAM, _SITE_WEIGHTS_HAM, n, rng), labels, spec, signal, rng)
    dx = {c: v for v, c in spec.label_values.items()}
    rows = [[lesion_of[k], ids[k], dx[labels[k]], dx_type[k], ages[k], sexes[k], sites[k]] for k in range(n)]
    header = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
    return {spec.splits["train"].csv[0]: _csv_text(header, rows)}


def _tied_sites(sites: list[str], labels: list[str], spec: Layout, signal: float, rng: np.random.Generator,
                words: tuple[str, ...] | None = None) -> list[str]:
    """``sites`` with a share ``signal`` of the images moved to their class's own site (metadata that
    predicts the class), one of ``words`` (the file's site words; default ``spec.sites``); unchanged,
    drawing nothing, when ``signal`` is 0."""
    if not signal:
        return sites
    words = words or spec.sites
    own = {c: words[k % len(words)] for k, c in enumerate(spec.classes)}
    tied = rng.random(len(sites)) < signal
    return [own[y] if t else s for s, y, t in zip(sites, labels, tied)]


_SITES_2024 = ("posterior torso", "lower extremity", "anterior torso", "upper extremity", "head/neck", "")
_SITE_WEIGHTS_2024 = (30.4, 25.7, 21.9, 17.6, 3.0, 1.4)  # the real training images' shares (%)
# TBP's body map: per anatomic site, tbp_lv_location_simple -> its tbp_lv_location values.
_BODY_MAP_2024 = {
    "posterior torso": {"Torso Back": ("Torso Back Top Third", "Torso Back Middle Third", "Torso Back Bottom Third")},
    "anterior torso": {"Torso Front": ("Torso Front Top Half", "Torso Front Bottom Half")},
    "lower extremity": {f"{side} Leg": (f"{side} Leg - Upper", f"{side} Leg - Lower") for side in ("Left", "Right")},
    "upper extremity": {f"{side} Arm": (f"{side} Arm - Upper", f"{side} Arm - Lower") for side in ("Left", "Right")},
    "head/neck": {"Head & Neck": ("Head & Neck",)},
    "": {"Unknown": ("Unknown",)},
}
_MALIGNANT_2024 = (
    "Malignant::Malignant adnexal epithelial proliferations - Follicular::Basal cell carcinoma::"
    "Basal cell carcinoma, Nodular",
    "Malignant::Malignant adnexal epithelial proliferations - Follicular::Basal cell carcinoma",
    "Malignant::Malignant epidermal proliferations::Squamous cell carcinoma in situ",
    "Malignant::Malignant melanocytic proliferations (Melanoma)::Melanoma Invasive",
    "Malignant::Malignant melanocytic proliferations (Melanoma)::Melanoma in situ",
)
_MALIGNANT_WEIGHTS_2024 = (25, 25, 20, 15, 15)
# Diagnoses of the few benign lesions tagged with a lesion_id (about 5 %); the other benign ones are "Benign".
_BENIGN_2024 = ("Benign::Benign melanocytic proliferations::Nevus",
                "Benign::Benign melanocytic proliferations::Nevus::Nevus, NOS, Junctional",
                "Benign::Benign epidermal proliferations::Lichen planus like keratosis")
_BENIGN_TAGGED_2024 = 0.05


def _isic2024_tables(spec: Layout, split: str, ids: list[str], labels: list[str], rng: np.random.Generator,
                     signal: float) -> dict:
    """``train-metadata.csv`` (every column of ``Layout.columns``) or ``test-metadata.csv`` (without the
    training-only columns): patients with several images and one age and sex each."""
    n = len(ids)
    first = int(ids[0].removeprefix("ISIC_"))  # numbering patients from the split's first id: none in two splits
    patients = _groups("IP", n, 8.0, rng, first)
    _, patient_of = np.unique(patients, return_inverse=True)
    ages = np.array(_ages(patient_of.max() + 1, rng, missing=0.007))[patient_of]
    sexes = np.array(_choice(("male", "female", ""), (51, 46, 3), patient_of.max() + 1, rng))[patient_of]
    sites = _tied_sites(_choice(_SITES_2024, _SITE_WEIGHTS_2024, n, rng), labels, spec, signal, rng)
    malignant = np.array([y == spec.classes[1] for y in labels])
    shown = malignant & (rng.random(n) < TABLE_SIGNAL)
    columns = {"isic_id": ids, "target": malignant.astype(int).tolist(), "patient_id": patients, "age_approx": ages,
               "sex": sexes, "anatom_site_general": sites, "image_type": ["TBP tile: close-up"] * n,
               "tbp_tile_type": _choice(("3D: XP", "3D: white"), (71, 29), n, rng),
               **_tbp_measurements(shown, sites, rng), **_diagnoses(malignant, first, rng),
               "attribution": ["lesion.data.synthetic: no patient data"] * n, "copyright_license": ["CC-0"] * n}
    header = [c for c in spec.columns if split == "train" or c not in spec.training_only]
    rows = [[columns[c][k] for c in header] for k in range(n)]
    return {spec.splits[split].csv[0]: _csv_text(header, rows)}


def _tbp_measurements(shown: np.ndarray, sites: list[str], rng: np.random.Generator) -> dict[str, list[str]]:
    """The clinical size and the ``tbp_lv_*`` columns of lesions, those of ``shown`` drawn as malignant
    (larger, more irregular in border and colour, more contrast, less nevus-like) and the rest as benign."""
    n, worse = len(shown), shown.astype(float)
    long = np.exp(rng.normal(np.log(3.5), 0.35, n)) * (1 + 0.8 * worse)
    minor = long * rng.uniform(0.55, 0.95, n)
    border = np.clip(rng.normal(3.0, 1.5, n) + 3.0 * worse, 0, 10)
    colour = np.clip(rng.normal(2.5, 1.5, n) + 3.0 * worse, 0, 10)
    area = np.pi / 4 * long * minor
    perimeter = np.pi * np.sqrt((long**2 + minor**2) / 2) * (1 + 0.04 * border)
    a, a_ext = rng.normal(19.5, 4.0, n) + 2.0 * worse, rng.normal(14.5, 3.0, n)
    b, b_ext = rng.normal(28.0, 5.0, n), rng.normal(26.0, 4.0, n)
    lightness, lightness_ext = rng.normal(42.0, 8.0, n) - 5.0 * worse, rng.normal(55.0, 8.0, n)
    location_simple = [str(rng.choice(list(_BODY_MAP_2024[site]))) for site in sites]
    location = [str(rng.choice(_BODY_MAP_2024[site][simple])) for site, simple in zip(sites, location_simple)]
    values = {
        "clin_size_long_diam_mm": long, "tbp_lv_A": a, "tbp_lv_Aext": a_ext, "tbp_lv_B": b, "tbp_lv_Bext": b_ext,
        "tbp_lv_C": np.hypot(a, b), "tbp_lv_Cext": np.hypot(a_ext, b_ext),
        "tbp_lv_H": np.degrees(np.arctan2(b, a)), "tbp_lv_Hext": np.degrees(np.arctan2(b_ext, a_ext)),
        "tbp_lv_L": lightness, "tbp_lv_Lext": lightness_ext, "tbp_lv_areaMM2": area,
        "tbp_lv_area_perim_ratio": perimeter**2 / area,
        "tbp_lv_color_std_mean": rng.gamma(2.0, 0.5, n) + 1.5 * worse,
        "tbp_lv_deltaA": a - a_ext, "tbp_lv_deltaB": b - b_ext, "tbp_lv_deltaL": lightness - lightness_ext,
        "tbp_lv_deltaLB": np.hypot(lightness - lightness_ext, b - b_ext),
        "tbp_lv_deltaLBnorm": 5.5 + rng.gamma(2.0, 1.5, n) + 5.0 * worse,
        "tbp_lv_eccentricity": np.sqrt(1 - (minor / long) ** 2), "tbp_lv_minorAxisMM": minor,
        "tbp_lv_nevi_confidence": 100 * np.where(shown, rng.beta(1.0, 3.0, n), rng.beta(3.0, 1.2, n)),
        "tbp_lv_norm_border": border, "tbp_lv_norm_color": colour, "tbp_lv_perimeterMM": perimeter,
        "tbp_lv_radial_color_std_max": rng.gamma(2.0, 0.4, n) + 1.0 * worse,
        "tbp_lv_stdL": rng.normal(2.0, 0.6, n) + 0.8 * worse, "tbp_lv_stdLExt": rng.normal(1.5, 0.4, n),
        "tbp_lv_symm_2axis": np.clip(rng.uniform(0.15, 0.7, n) + 0.15 * worse, 0, 1),
        "tbp_lv_x": rng.uniform(-250, 250, n), "tbp_lv_y": rng.uniform(-100, 1800, n),
        "tbp_lv_z": rng.uniform(-150, 150, n), "tbp_lv_dnn_lesion_confidence": 100 * rng.beta(5.0, 1.0, n),
    }
    return {**{name: [f"{v:.4f}" for v in column] for name, column in values.items()},
            "tbp_lv_symm_2axis_angle": (5 * rng.integers(0, 36, n)).tolist(),
            "tbp_lv_location": location, "tbp_lv_location_simple": location_simple}


def _diagnoses(malignant: np.ndarray, first: int, rng: np.random.Generator) -> dict[str, list[str]]:
    """The training-only diagnosis columns: ``iddx_full`` and its levels ``iddx_1``–``iddx_5``, a
    ``lesion_id`` for every malignant and a few benign (tagged) lesions, melanoma thickness and mitoses."""
    n = len(malignant)
    tagged = malignant | (rng.random(n) < _BENIGN_TAGGED_2024)
    full = np.where(malignant, _choice(_MALIGNANT_2024, _MALIGNANT_WEIGHTS_2024, n, rng),
                    np.where(tagged, _choice(_BENIGN_2024, (1, 1, 1), n, rng), "Benign")).tolist()
    levels = [(d.split("::") + [""] * 5)[:5] for d in full]
    invasive = np.array([d.endswith("Melanoma Invasive") for d in full])
    thickness, mitoses = rng.uniform(0.2, 1.5, n), rng.choice(["<1/mm^2", "1/mm^2", "2/mm^2"], n)
    return {"lesion_id": [f"IL_{first + k:07d}" if t else "" for k, t in enumerate(tagged)], "iddx_full": full,
            **{f"iddx_{j + 1}": [level[j] for level in levels] for j in range(5)},
            "mel_mitotic_index": [str(m) if i else "" for m, i in zip(mitoses, invasive)],
            "mel_thick_mm": [f"{t:.2f}" if i else "" for t, i in zip(thickness, invasive)]}


# PAD-UFES-20's regions and their shares of the real images (%), and its other categories.
_REGIONS_PAD = ("FACE", "FOREARM", "CHEST", "BACK", "ARM", "NOSE", "HAND", "NECK", "THIGH", "EAR", "ABDOMEN", "LIP",
                "SCALP", "FOOT")
_REGION_WEIGHTS_PAD = (24.8, 17.1, 12.2, 10.8, 8.4, 6.9, 5.5, 4.0, 3.2, 3.2, 1.6, 1.0, 0.8, 0.7)
_ANCESTRIES_PAD = ("POMERANIA", "GERMANY", "BRAZIL", "ITALY", "NETHERLANDS", "POLAND", "PORTUGAL", "UNK")
_ANCESTRY_WEIGHTS_PAD = (30, 25, 20, 12, 4, 3, 3, 3)
_SKIN_TYPE_WEIGHTS_PAD = (9, 52, 33, 5, 0.7, 0.3)  # Fitzpatrick 1–6 (%)
_BACKGROUND_MISSING_PAD = 0.35  # share of patients whose background, habits, gender and skin type are not recorded
_CANCERS_PAD = frozenset({"BCC", "MEL", "SCC"})  # always biopsied


def _pad_ufes20_tables(spec: Layout, split: str, ids: list[str], labels: list[str], rng: np.random.Generator,
                       signal: float) -> dict:
    """``metadata.csv``: every column of ``Layout.columns`` in order. The patient's columns are shared by its
    images and recorded for about two patients in three (age always); a lesion's by its images."""
    n = len(ids)
    patients, lesions = [f"PAT_{i.split('_')[1]}" for i in ids], [i.split("_")[2] for i in ids]
    _, patient_of = np.unique(patients, return_inverse=True)
    lesion_numbers, first_image, lesion_of = np.unique(lesions, return_index=True, return_inverse=True)
    n_patients, n_lesions = patient_of.max() + 1, len(lesion_numbers)
    recorded = (rng.random(n_patients) >= _BACKGROUND_MISSING_PAD)[patient_of]

    def recorded_only(values) -> list[str]:
        return [str(v) if known else "" for v, known in zip(values, recorded)]

    def flags(size: int, share: float) -> np.ndarray:
        return np.where(rng.random(size) < share, "True", "False")

    patient = {
        **{name: flags(n_patients, share) for name, share in (
            ("smoke", 0.15), ("drink", 0.25), ("pesticide", 0.3), ("skin_cancer_history", 0.4),
            ("cancer_history", 0.5), ("has_piped_water", 0.85), ("has_sewage_system", 0.75))},
        "background_father": _choice(_ANCESTRIES_PAD, _ANCESTRY_WEIGHTS_PAD, n_patients, rng),
        "background_mother": _choice(_ANCESTRIES_PAD, _ANCESTRY_WEIGHTS_PAD, n_patients, rng),
        "gender": _choice(("FEMALE", "MALE"), (52, 48), n_patients, rng),
        "fitspatrick": [f"{t:.1f}" for t in rng.choice(np.arange(1, 7), n_patients,
                                                        p=np.asarray(_SKIN_TYPE_WEIGHTS_PAD) / 100)],
    }
    columns = {name: recorded_only(np.asarray(values)[patient_of]) for name, values in patient.items()}
    columns["age"] = np.clip(rng.normal(60, 15, n_patients), 6, 94).astype(int)[patient_of].tolist()
    lesion_labels = [labels[k] for k in first_image]
    regions = _tied_sites(_choice(_REGIONS_PAD, _REGION_WEIGHTS_PAD, n_lesions, rng), lesion_labels, spec, signal, rng,
                          _REGIONS_PAD)
    diameter = np.round(np.exp(rng.normal(np.log(8), 0.5, n_lesions)))
    lesion = {"region": regions, "diameter_1": [f"{d:.1f}" for d in diameter],
              "diameter_2": [f"{d:.1f}" for d in np.maximum(1, np.round(diameter * rng.uniform(0.5, 1, n_lesions)))],
              **{name: _choice(("True", "False", "UNK"), (40, 55, 5), n_lesions, rng)
                 for name in ("itch", "grew", "hurt", "changed", "bleed", "elevation")},
              "biopsed": ["True" if y in _CANCERS_PAD or rng.random() < 0.2 else "False" for y in lesion_labels]}
    columns.update({name: np.asarray(values)[lesion_of].tolist() for name, values in lesion.items()})
    for name in ("diameter_1", "diameter_2"):  # measured at the visits that recorded the patient's background
        columns[name] = recorded_only(columns[name])
    columns.update(patient_id=patients, lesion_id=lesions, diagnostic=labels, img_id=[f"{i}.png" for i in ids])
    rows = [[columns[c][k] for c in spec.columns] for k in range(n)]
    return {spec.splits[split].csv[0]: _csv_text(list(spec.columns), rows)}


# The CSVs a layout has besides one-hot ground truth, by layout: name -> text.
_TABLES = {"isic2019": _isic2019_tables, "isic2020": _isic2020_tables, "ham10000": _ham10000_tables,
           "isic2024": _isic2024_tables, "pad_ufes20": _pad_ufes20_tables}


def _write_duplicates(spec: Layout, folder: Path, ids: list[str], labels: list[str], rng: np.random.Generator) -> None:
    """List a few pairs of benign images as duplicates and make the second of each a copy of the first."""
    benign = [k for k, y in enumerate(labels) if y == spec.classes[0]]
    pairs = rng.choice(benign, size=(max(1, len(ids) // 30), 2), replace=False) if len(benign) >= 4 else []
    stem, inner = spec.splits["train"].images[0], _INNER_FOLDER.get(spec.name, spec.splits["train"].images[0])
    archive = folder / f"{stem}.zip"
    with zipfile.ZipFile(archive) as source:
        members = {info.filename: source.read(info) for info in source.infolist()}
    for a, b in pairs:
        members[f"{inner}/{ids[b]}.jpg"] = members[f"{inner}/{ids[a]}.jpg"]
    with zipfile.ZipFile(archive, "w") as rewritten:
        for name, data in members.items():
            rewritten.writestr(_zip_info(name), data)
    rows = [[ids[a], ids[b]] for a, b in pairs]
    (folder / spec.duplicates.file).write_text(_csv_text(list(spec.duplicates.columns), rows))


def _params(layout: str, n: int, seed: int, image_size: tuple[int, int] | None, metadata_signal: float = 0.0,
            malignant_share: float | None = None) -> dict:
    size = list(image_size) if image_size else None  # JSON has no tuples
    # Markers of datasets made without these stay as they were.
    signal = {"metadata_signal": metadata_signal} if metadata_signal else {}
    share = _malignant_share(_layout(layout), malignant_share)
    shares = {} if share is None else {"malignant_share": share}
    return {"layout": layout, "n": n, "seed": seed, "image_size": size, "version": VERSION, **signal, **shares}


def _read_marker(root: Path) -> dict | None:
    marker = root / MARKER
    return json.loads(marker.read_text()) if marker.is_file() else None


def _is_taken(path: Path) -> bool:
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def write_synthetic(
    layout: str,
    out: str | Path,
    n: int = 120,
    seed: int = 0,
    image_size: tuple[int, int] | None = None,
    metadata_signal: float = 0.0,
    malignant_share: float | None = None,
) -> Path:
    """Write a complete synthetic dataset in the official layout of ``layout`` into ``out``.

    Writes into a hidden sibling folder and renames it to ``out`` when complete, so an interrupted
    run never leaves a dataset that looks complete.

    Args:
        layout: a name of :data:`~lesion.data.layouts.LAYOUTS`.
        out: target folder; must not exist or be empty.
        n: number of training images; val gets about n/4, test about n/3.
        seed: seed of every random choice; equal arguments give byte-identical files.
        image_size: ``(width, height)`` of every image; ``None`` varies it per image
            (width 80–112, height 60–84; ISIC 2024: squares of side 100–150).
        metadata_signal: share of the images whose anatomic site is their class's own (ISIC
            2019/2020, HAM10000, ISIC 2024; PAD-UFES-20: of the lesions), so that patient metadata
            predicts the class; 0 leaves the site independent of the class.
        malignant_share: share of the malignant class of a two-class layout (see :func:`split_counts`).

    Returns:
        ``out``.
    """
    spec = _layout(layout)
    if not 0 <= metadata_signal <= 1 or (metadata_signal and spec.name not in _TABLES):
        raise LesionError("metadata_signal", f"{metadata_signal} is not a share in [0, 1] of a layout with sites",
                          "use 0, or a share with isic2019, isic2020 or ham10000")
    out = Path(out)
    taken = LesionError(out, "already exists and is not empty", "choose another --out or delete it")
    if _is_taken(out):
        raise taken
    if image_size is not None and min(image_size) < 16:
        raise LesionError("image_size", f"{tuple(image_size)} is too small", "use width and height >= 16")
    counts = split_counts(layout, n, malignant_share)
    rng = np.random.default_rng(seed)

    tmp = out.absolute().parent / f".{out.absolute().name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)  # a crashed earlier run that had our pid
    tmp.mkdir(parents=True)
    try:
        lesions, first_id = [], 0
        for split in counts:
            labels = [c for c, k in counts[split].items() for _ in range(k)]
            labels = [labels[k] for k in rng.permutation(len(labels))]  # interleave classes like real ids
            ids, rows = _write_split(spec, split, labels, first_id, tmp, image_size, rng, metadata_signal)
            lesions += rows
            first_id += len(labels)
            if spec.duplicates is not None and split == "train":
                _write_duplicates(spec, tmp, ids, labels, rng)
        header = ["split", "image_id", "label", "cx", "cy", "radius"]
        (tmp / LESIONS_CSV).write_text(_csv_text(header, lesions))
        params = _params(layout, n, seed, image_size, metadata_signal, malignant_share)
        (tmp / MARKER).write_text(json.dumps(params, indent=2) + "\n")
        try:
            os.replace(tmp, out)
        except OSError:
            if _is_taken(out):  # another process finished first
                raise taken from None
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def ensure_synthetic(layout: str, root: str | Path, n: int = 120, seed: int = 0) -> Path:
    """Return ``root`` holding a synthetic dataset with these parameters, writing it if absent.

    Safe when several processes call it at once: the first rename wins, the others use its result.

    Args:
        layout: a name of :data:`~lesion.data.layouts.LAYOUTS`.
        root: dataset folder.
        n: number of training images.
        seed: random seed.

    Returns:
        ``root``.
    """
    _layout(layout)
    root = Path(root)
    wanted = _params(layout, n, seed, None)
    found = _read_marker(root)
    if found is None:
        try:
            return write_synthetic(layout, root, n, seed)
        except LesionError:
            found = _read_marker(root)  # lost a race: the winner's dataset may be what we want
            if found is None:
                raise
    if found != wanted:
        raise LesionError(
            root,
            f"holds a synthetic dataset made with {found}, not {wanted}",
            "delete it or pick another dataset root",
        )
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lesion.data.synthetic",
        description="Write a synthetic dataset in an official file layout (ISIC 2017–2020, HAM10000, ISIC 2024, "
                    "PAD-UFES-20).",
    )
    parser.add_argument("--layout", required=True, choices=sorted(LAYOUTS))
    parser.add_argument("--out", required=True, type=Path, help="target folder (must not exist or be empty)")
    parser.add_argument("--n", type=int, default=120, help="number of training images (default: 120)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("W", "H"), help="fixed image size")
    parser.add_argument("--metadata-signal", type=float, default=0.0, metavar="SHARE",
                        help="share of images whose site is their class's own (default: 0, independent)")
    parser.add_argument("--malignant-share", type=float, metavar="SHARE",
                        help="share of the malignant class of isic2020 or isic2024 (default: the real share; "
                             f"isic2024: {DEFAULT_MALIGNANT_SHARE['isic2024']})")
    args = parser.parse_args(argv)
    try:
        out = write_synthetic(args.layout, args.out, args.n, args.seed, args.image_size, args.metadata_signal,
                              args.malignant_share)
        train = split_counts(args.layout, args.n, args.malignant_share)["train"]
    except LesionError as error:
        exit_with(error)
    print(f"{out}: {args.layout} synthetic, train " + " ".join(f"{c}={k}" for c, k in train.items()))


if __name__ == "__main__":
    main()
