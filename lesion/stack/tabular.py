"""The tabular columns of a layout that the images to predict come with, read per image.

Every layout with patient metadata gives age, sex and anatomic site, read and cleaned by
:func:`lesion.data.metadata.read_metadata` (missing values explicit; ISIC 2017 has no site). A
layout that publishes more (ISIC 2024's ``train-metadata.csv``: lesion size, colour, shape and
place measured on the 3D total-body photograph) adds them with a row of :data:`EXTRA_COLUMNS`,
naming its categorical columns and those that are no feature; every other column of its header
(:attr:`Layout.columns`) is numeric, except the image and patient ids, the columns that age, sex
and site come from, and the training-only ones.

A column known only for training images (the label, and what :attr:`Layout.training_only`
names: ISIC 2024's ``lesion_id``, ``iddx_*``, ``mel_*``, ``tbp_lv_dnn_lesion_confidence``) is
never a feature: a model that reads one learns from what the images to predict come without.
:func:`select_columns` is the one way from names to columns, and refuses it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lesion.data.images import image_id_of
from lesion.data.layouts import Layout
from lesion.data.metadata import MISSING_WORDS, read_metadata, read_metadata_csv
from lesion.data.readers import read_csv
from lesion.errors import LesionError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtraColumns:
    """What a layout publishes beyond age, sex and site: its categorical columns, and the columns that are
    available yet no feature; every other column of :attr:`Layout.columns` is numeric."""

    categorical: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()


EXTRA_COLUMNS = {
    # image_type is one value for every image ("TBP tile: close-up"); copyright_license is the licence.
    "isic2024": ExtraColumns(categorical=("tbp_tile_type", "tbp_lv_location", "tbp_lv_location_simple", "attribution"),
                             ignored=("image_type", "copyright_license")),
}
METADATA = ("age", "sex", "site")  # lesion.data.metadata's columns; age numeric, sex and site categories


@dataclass(frozen=True)
class Columns:
    """Tabular columns by kind: numbers, and categories (one-hot encoded as features)."""

    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (*self.numeric, *self.categorical)


def training_only(layout: Layout) -> tuple[str, ...]:
    """The columns of ``layout`` known only for training images: its label(s) and :attr:`Layout.training_only`."""
    label = (layout.label_column,) if layout.label_column else ()
    return tuple(dict.fromkeys((*label, *layout.label_columns, *layout.training_only)))


def available_columns(layout: Layout) -> Columns:
    """Every tabular column of ``layout`` that the images to predict come with (module docstring)."""
    files = [meta for metas in layout.metadata.values() for meta in metas]
    metadata = [name for name in METADATA if any(getattr(meta, name) for meta in files)]
    numeric, categorical = [c for c in metadata if c == "age"], [c for c in metadata if c != "age"]
    extra = EXTRA_COLUMNS.get(layout.name)
    if extra is None:
        return Columns(tuple(numeric), tuple(categorical))
    sources = {getattr(meta, name) for meta in files for name in (*METADATA, "id_column")}
    not_features = {layout.id_column, *training_only(layout), *(g.group_column for g in layout.groupings), *sources,
                    *extra.categorical, *extra.ignored}
    numeric += [c for c in layout.columns if c not in not_features]
    return Columns(tuple(numeric), (*categorical, *extra.categorical))


def select_columns(layout: Layout, names: Sequence[str] | None) -> Columns:
    """The columns ``names`` (``features.columns``) of ``layout``, or every available one for ``None``.

    Raises:
        LesionError: a training-only column (a leak), or one ``layout`` does not have.
    """
    available = available_columns(layout)
    if names is None:
        return available
    leaks = training_only(layout)
    for name in names:
        if name in leaks:
            raise LesionError("features.columns", f"'{name}' is known only for the training images of {layout.name} "
                              f"({', '.join(leaks)}): a model that reads it learns from what the images to predict "
                              "come without", "remove it")
        if name not in available.names:
            raise LesionError("features.columns", f"'{name}' is not a tabular column of {layout.name}",
                              f"use some of: {', '.join(available.names) or '(none: stack image scores alone)'}")
    return Columns(tuple(c for c in available.numeric if c in names),
                   tuple(c for c in available.categorical if c in names))


def _split_csv(layout: Layout, root: Path, split: str) -> tuple[Path, str]:
    """The split's own metadata CSV (ISIC 2024: ``<split>-metadata.csv``) and its id column."""
    for meta in layout.metadata.get(split, ()):
        if not meta.in_images and (root / meta.file).is_file():
            return root / meta.file, meta.id_column
    raise LesionError(root, f"has no metadata CSV for the {split} split "
                      f"({', '.join(m.file for m in layout.metadata.get(split, ())) or 'none for this layout'})",
                      "add it, or leave the columns out (features.columns)")


def _id_column_of(layout: Layout, table: pd.DataFrame, path: Path) -> str:
    """The column of a given metadata CSV that names its images: the layout's own id column, else ``image``."""
    for name in dict.fromkeys((*(m.id_column for metas in layout.metadata.values() for m in metas), "image")):
        if name in table.columns:
            return name
    raise LesionError(path, f"has no image id column ({layout.id_column} or image)",
                      f"use the metadata CSV of these images as {layout.name} publishes it")


def read_tabular(layout: Layout, root: Path, split: str, ids: Sequence[str], columns: Columns,
                 csv: Path | None = None) -> pd.DataFrame:
    """The ``columns`` of images ``ids``, indexed by id: numbers as floats (NaN when missing), categories as
    words (``None`` when missing).

    Args:
        split: the layout's split the images belong to, whose metadata files are read ...
        csv: ... unless the images come with their own metadata CSV (``stack.py metadata=``), columns named
            as the layout's files name them (ISIC 2024's ``test-metadata.csv``).
    """
    frame = pd.DataFrame(index=pd.Index(list(ids), name="image"))
    if not columns.names:
        return frame
    wanted = [c for c in METADATA if c in columns.names]
    if wanted:
        metadata = (read_metadata(layout, root, split, list(ids)) if csv is None
                    else read_metadata_csv(csv, list(ids), layout.sites))
        if metadata is None:
            files = ", ".join(m.file for m in layout.metadata.get(split, ())) or "none for this layout"
            raise LesionError(root, f"has no patient metadata for the {split} images ({files}), which the training "
                              "images have: the trees would learn from values these images lack",
                              "stack without them: features.columns=[]")
        for column in wanted:
            frame[column] = metadata[column].to_numpy()
    extra = [c for c in columns.names if c not in METADATA]
    if extra:
        if csv is None:
            path, id_column = _split_csv(layout, root, split)
            table = read_csv(path, f"{layout.name} metadata CSV")
        else:
            path, table = csv, read_csv(csv, f"{layout.name} metadata CSV")
            id_column = _id_column_of(layout, table, csv)
        missing = [c for c in (id_column, *extra) if c not in table.columns]
        if missing:
            raise LesionError(path, f"missing column(s) {', '.join(missing)}",
                              "use the official file, or leave them out (features.columns)")
        table = table.assign(**{id_column: [image_id_of(v) for v in table[id_column]]})
        table = table.drop_duplicates(id_column).set_index(id_column).reindex(list(ids))
        for column in extra:
            cells = table[column]
            if column in columns.numeric:
                frame[column] = pd.to_numeric(cells, errors="coerce").astype("float64")
            else:
                frame[column] = [None if not isinstance(v, str) or v.lower() in MISSING_WORDS else v for v in cells]
    return frame[list(columns.names)]
