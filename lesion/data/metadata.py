"""Patient metadata of a split's images: age in years, sex and anatomic site, from each layout's files.

ISIC 2017: the ``<images>_metadata.csv`` inside each image archive (age, sex); ISIC 2018: the
HAM10000 metadata CSV when present; ISIC 2019: ``ISIC_2019_{Training,Test}_Metadata.csv``;
ISIC 2020: the ground-truth CSV; HAM10000: its metadata CSV; ISIC 2024: ``{train,test}-metadata.csv``
(see ``Layout.metadata``).

Missing values stay explicit, never 0: an empty cell or a word such as ``unknown`` is a missing
value (NaN age, ``None`` sex or site). A value outside the layout's vocabulary (sex: female/male;
site: ``Layout.sites``) or an age outside 0–120 is warned about, once per value, and read as
missing. An image without a row has every value missing (counted in the log).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd

from lesion.data.layouts import LAYOUTS, Layout, MetadataFile
from lesion.data.images import image_id_of
from lesion.data.readers import archive_file, read_csv
from lesion.errors import LesionError

log = logging.getLogger(__name__)

SEXES = ("female", "male")
MISSING_WORDS = frozenset({"", "unknown", "nan", "na", "n/a", "none", "missing", "null"})
COLUMNS = ("age", "sex", "site")


def _source(layout: Layout, root: Path, split: str) -> tuple[MetadataFile, pd.DataFrame, str] | None:
    """The first of the split's metadata files present, read as text cells, with where it was read."""
    for meta in layout.metadata.get(split, ()):
        if meta.in_images:
            data = archive_file(root, layout.splits[split].images[0], meta.file)
            if data is not None:
                where = f"{root / layout.splits[split].images[0]}:{meta.file}"
                return meta, read_csv(where, f"{layout.name} metadata CSV", data), where
        elif (root / meta.file).is_file():
            return meta, read_csv(root / meta.file, f"{layout.name} metadata CSV"), str(root / meta.file)
    return None


def read_metadata(layout: str | Layout, root: str | Path, split: str, ids: list[str]) -> pd.DataFrame | None:
    """Age, sex and site of every image in ``ids`` (in order), or ``None`` when the split has no metadata file.

    Returns:
        A frame indexed by image id with columns ``age`` (float years, NaN when missing), ``sex``
        and ``site`` (a vocabulary word or ``None``).
    """
    layout = LAYOUTS[layout] if isinstance(layout, str) else layout
    root = Path(root).expanduser()
    found = _source(layout, root, split)
    if found is None:
        return None
    meta, frame, where = found
    return metadata_table(frame, meta, layout.sites, where, ids)


def read_metadata_csv(path: str | Path, ids: list[str], sites: tuple[str, ...]) -> pd.DataFrame:
    """The metadata of images ``ids`` from a user's CSV with columns ``image,age,sex[,site]``, or from
    an official metadata file as published (e.g. ISIC 2024's ``test-metadata.csv``), known by its columns.

    ``image`` names an image by its file name, with or without its extension. Read and cleaned
    as an official metadata file is, with ``sites`` (the model's) as the site vocabulary.
    """
    frame = read_csv(path, "metadata CSV (columns image,age,sex[,site])")
    official = (m for layout in LAYOUTS.values() for files in layout.metadata.values() for m in files
                if all(c in frame.columns for c in (m.id_column, m.age, m.sex, m.site) if c))
    meta = next(official, None) or MetadataFile(str(path), "image", "age", "sex",
                                                "site" if "site" in frame.columns and sites else None)
    return metadata_table(frame, meta, sites, str(path), ids)


def metadata_table(frame: pd.DataFrame, meta: MetadataFile, sites: tuple[str, ...], where: str,
                   ids: list[str]) -> pd.DataFrame:
    """Age, sex and site of images ``ids`` from a metadata CSV read as text cells (module docstring).

    Args:
        frame: the CSV (``lesion.data.readers.read_csv``).
        meta: its columns.
        sites: the site vocabulary.
        where: the file, for errors and warnings.
        ids: the images, in order; the id column names them as any CSV may
            (:func:`lesion.data.images.image_id_of`).
    """
    columns = [c for c in (meta.id_column, meta.age, meta.sex, meta.site) if c]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise LesionError(where, f"missing column(s) {', '.join(missing)}", f"use a file with columns {','.join(columns)}")
    frame = frame.assign(**{meta.id_column: [image_id_of(v) for v in frame[meta.id_column]]})
    rows = frame.drop_duplicates(meta.id_column).set_index(meta.id_column)
    absent = [i for i in ids if i not in rows.index]
    if absent:
        log.warning("%s: %d of %d images have no metadata row; their values are missing", where, len(absent), len(ids))
    rows = rows.reindex(ids)
    warned: set[tuple[str, str]] = set()

    def word(column: str, value: object, vocabulary: tuple[str, ...]) -> str | None:
        text = "" if not isinstance(value, str) else value.strip().lower()
        if text in MISSING_WORDS:
            return None
        if text in vocabulary:
            return text
        if (column, text) not in warned:
            warned.add((column, text))
            log.warning("%s: %s value '%s' is not one of %s; read as missing", where, column, value, ", ".join(vocabulary))
        return None

    def age(value: object) -> float:
        text = "" if not isinstance(value, str) else value.strip().lower()
        if text in MISSING_WORDS:
            return math.nan
        try:
            years = float(text)
        except ValueError:
            years = math.nan
        if not 0 <= years <= 120:
            if ("age", text) not in warned:
                warned.add(("age", text))
                log.warning("%s: age '%s' is not a number of years in 0–120; read as missing", where, value)
            return math.nan
        return years

    sites = tuple(s.lower() for s in sites)
    index = pd.Index(ids, name="image")
    sexes = [word("sex", v, SEXES) for v in rows[meta.sex]] if meta.sex else [None] * len(ids)
    places = [word("site", v, sites) for v in rows[meta.site]] if meta.site else [None] * len(ids)
    ages = [age(v) for v in rows[meta.age]] if meta.age else [math.nan] * len(ids)
    return pd.DataFrame({"age": pd.Series(ages, index=index, dtype="float64"),
                         "sex": pd.Series(sexes, index=index, dtype=object),
                         "site": pd.Series(places, index=index, dtype=object)})
