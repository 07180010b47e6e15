"""Patient metadata of a split's images: age in years, sex, anatomic site and skin tone, from each layout's files.

ISIC 2017: the ``<images>_metadata.csv`` inside each image archive (age, sex); ISIC 2018: the
HAM10000 metadata CSV when present; ISIC 2019: ``ISIC_2019_{Training,Test}_Metadata.csv``;
ISIC 2020: the ground-truth CSV; HAM10000: its metadata CSV; ISIC 2024: ``{train,test}-metadata.csv``;
PAD-UFES-20: ``metadata.csv`` (the only official layout with a skin tone)
(see ``Layout.metadata``).

Missing values stay explicit, never 0: an empty cell or a word such as ``unknown`` is a missing
value (NaN age, ``None`` sex, site or skin tone). A value outside the layout's vocabulary (sex: female/male;
site: ``Layout.sites``, after the file's ``MetadataFile.site_words``; skin tone: :func:`skin_type`) or an
age outside 0–120 is warned about, once per value, and read as missing. An image without a row has every
value missing (counted in the log).

Skin tone is the Fitzpatrick skin type, written ``I``–``VI`` whatever the file's spelling (PAD-UFES-20's
``fitspatrick`` 1–6, often ``3.0``; the ISIC archive's ``fitzpatrick_skin_type`` ``I``–``VI``; a
user's column, ``dataset.skin_tone_column``). Any other value is read as missing, as an unknown sex
is, not refused: one mistyped cell should not stop a run whose model never reads skin tone (it is for
the subgroup report and the data analysis), and the report counts the missing ones.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import pandas as pd

from lesion.data.layouts import ISIC_ARCHIVE_METADATA, LAYOUTS, Layout, MetadataFile
from lesion.data.images import image_id_of
from lesion.data.readers import archive_file, read_csv
from lesion.errors import LesionError

log = logging.getLogger(__name__)

SEXES = ("female", "male")
MISSING_WORDS = frozenset({"", "unknown", "unk", "nan", "na", "n/a", "none", "missing", "null"})  # unk: PAD-UFES-20's
COLUMNS = ("age", "sex", "site")
SKIN_TYPES = ("I", "II", "III", "IV", "V", "VI")  # Fitzpatrick, in order
# A Fitzpatrick type as files write it: an optional "fitzpatrick", "type" or "FST" (SCIN's FST3), then the
# Roman numeral or the number (PAD-UFES-20 writes 3.0).
_SKIN_TYPE = re.compile(r"(?:fitzpatrick[\s_-]*)?(?:(?:type|fst)[\s_-]*)?"
                        r"(?:(?P<roman>i{1,3}|iv|vi?)|(?P<number>0*[1-6](?:\.0*)?))",
                        re.IGNORECASE | re.ASCII)  # ASCII: no dotless ı or dotted İ for i


def skin_type(value: object) -> str | None:
    """The Fitzpatrick skin type ``I``–``VI`` a cell names (``"3"``, ``"3.0"``, ``"III"``, ``"type iii"``,
    ``"FST3"``), else ``None`` (a missing value, or a value that is not a skin type)."""
    text = value.strip() if isinstance(value, str) else str(value) if isinstance(value, (int, float)) else ""
    found = _SKIN_TYPE.fullmatch(text)
    if found is None:
        return None
    if found["roman"]:
        return found["roman"].upper()
    return SKIN_TYPES[int(float(found["number"])) - 1]


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
    """Age, sex, site and skin tone of every image in ``ids`` (in order), or ``None`` when the split has no
    metadata file.

    Returns:
        A frame indexed by image id with columns ``age`` (float years, NaN when missing), ``sex``,
        ``site`` (a vocabulary word or ``None``) and, where the file has a skin tone, ``skin_tone``
        (``I``–``VI`` or ``None``).
    """
    layout = LAYOUTS[layout] if isinstance(layout, str) else layout
    root = Path(root).expanduser()
    found = _source(layout, root, split)
    if found is None:
        return None
    meta, frame, where = found
    return metadata_table(frame, meta, layout.sites, where, ids)


def read_metadata_csv(path: str | Path, ids: list[str], sites: tuple[str, ...]) -> pd.DataFrame:
    """The metadata of images ``ids`` from a user's CSV with columns ``image,age,sex[,site][,skin_tone]``, or
    from an official metadata file as published (e.g. ISIC 2024's ``test-metadata.csv``, an ISIC archive
    export), known by its columns: the file whose columns it has most of.

    ``image`` names an image by its file name, with or without its extension. Read and cleaned
    as an official metadata file is, with ``sites`` (the model's) as the site vocabulary.
    """
    frame = read_csv(path, "metadata CSV (columns image,age,sex[,site][,skin_tone])")
    files = [ISIC_ARCHIVE_METADATA, *(m for layout in LAYOUTS.values() for files in layout.metadata.values()
                                      for m in files)]
    official = [m for m in files if all(c in frame.columns for c in _named_columns(m))]
    # An ISIC archive export has every column of ISIC 2024's metadata files, and its skin tone besides.
    meta = max(official, key=lambda m: len(_named_columns(m)), default=None) or MetadataFile(
        str(path), "image", "age", "sex", "site" if "site" in frame.columns and sites else None,
        "skin_tone" if "skin_tone" in frame.columns else None)
    return metadata_table(frame, meta, sites, str(path), ids)


def _named_columns(meta: MetadataFile) -> list[str]:
    """The columns a metadata file names: its id column and those of age, sex, site and skin tone it has."""
    return [c for c in (meta.id_column, meta.age, meta.sex, meta.site, meta.skin_tone) if c]


def _text(value: object) -> str:
    """A cell as lower-case text without surrounding spaces (``""`` for a cell that is not text: no row)."""
    return value.strip().lower() if isinstance(value, str) else ""


def metadata_table(frame: pd.DataFrame, meta: MetadataFile, sites: tuple[str, ...], where: str,
                   ids: list[str]) -> pd.DataFrame:
    """Age, sex, site (and skin tone, where the file has one) of images ``ids`` from a metadata CSV read as
    text cells (module docstring; the columns of :func:`read_metadata`).

    Args:
        frame: the CSV (``lesion.data.readers.read_csv``).
        meta: its columns.
        sites: the site vocabulary.
        where: the file, for errors and warnings.
        ids: the images, in order; the id column names them as any CSV may
            (:func:`lesion.data.images.image_id_of`).
    """
    columns = _named_columns(meta)
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

    def unknown(column: str, value: object, vocabulary: tuple[str, ...]) -> None:
        """Warn, once per value, of a value outside the vocabulary (it is read as missing)."""
        if (column, _text(value)) not in warned:
            warned.add((column, _text(value)))
            log.warning("%s: %s value '%s' is not one of %s; read as missing", where, column, value, ", ".join(vocabulary))

    def word(column: str, value: object, vocabulary: tuple[str, ...], synonyms: dict[str, str]) -> str | None:
        text = synonyms.get(_text(value), _text(value))
        if text in MISSING_WORDS:
            return None
        if text in vocabulary:
            return text
        unknown(column, value, vocabulary)
        return None

    def tone(value: object) -> str | None:
        found = skin_type(value)
        if found is None and _text(value) not in MISSING_WORDS:
            unknown("skin tone", value, SKIN_TYPES)
        return found

    def age(value: object) -> float:
        text = _text(value)
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
    sexes = [word("sex", v, SEXES, {}) for v in rows[meta.sex]] if meta.sex else [None] * len(ids)
    places = [word("site", v, sites, meta.site_words) for v in rows[meta.site]] if meta.site else [None] * len(ids)
    ages = [age(v) for v in rows[meta.age]] if meta.age else [math.nan] * len(ids)
    table = pd.DataFrame({"age": pd.Series(ages, index=index, dtype="float64"),
                          "sex": pd.Series(sexes, index=index, dtype=object),
                          "site": pd.Series(places, index=index, dtype=object)})
    if meta.skin_tone:
        table["skin_tone"] = pd.Series([tone(v) for v in rows[meta.skin_tone]], index=index, dtype=object)
    return table
