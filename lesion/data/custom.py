"""Your own data: ``dataset=folder`` (one sub-folder of images per class) or ``dataset=csv`` (a CSV
naming each image and its label), read with every check the official layouts get.

Both give a training split only: test and validation are seeded hold-outs
(``dataset.test_fraction``, ``dataset.val_fraction``), grouped by ``group_column`` when given. Classes are ``dataset.classes`` when given (their
order is the output order), else the sorted folder names or label values (or the one-hot column
names in CSV order). Image names in the CSV may carry their extension and folders or not; ids are
the file names without them (:func:`lesion.data.images.image_id_of`, for labels, groups and
metadata alike), so two images of one name (``a.jpg``, ``b/a.png``) are refused. A CSV may also name
patient-metadata columns (``age_column``, ``sex_column``, ``site_column``, ``skin_tone_column``); its
site categories are the site values it holds; its skin tones are Fitzpatrick types, as
:func:`lesion.data.metadata.skin_type` reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from lesion.data.images import is_image_name
from lesion.data.layouts import LAYOUTS, Grouping, Layout, MetadataFile, SplitFiles
from lesion.errors import LesionError

FOLDER, CSV = "folder", "csv"
CUSTOM_LAYOUTS = (FOLDER, CSV)


def layout_of(dataset: Mapping) -> Layout:
    """The layout a dataset config names: an official one, or one built from the user's files."""
    name = dataset["layout"]
    if name in LAYOUTS:
        return LAYOUTS[name]
    root = Path(dataset["root"]).expanduser()
    if not root.is_dir():
        raise LesionError(root, "dataset folder not found", "set dataset.root=DIR to the folder that holds your images")
    if name == FOLDER:
        return _folder_layout(root, dataset.get("classes"))
    if name == CSV:
        return _csv_layout(root, dataset)
    raise LesionError("dataset.layout", f"unknown layout '{name}'", f"use one of {', '.join([*LAYOUTS, *CUSTOM_LAYOUTS])}")


def class_folders(root: Path) -> list[str]:
    """The sub-folders of ``root`` that hold images (hidden folders and macOS's ``__MACOSX`` left out)."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX"))
                  and any(is_image_name(f.name) for f in p.rglob("*")))


def _given_classes(classes: object, found: list[str], what: str, where: Path) -> tuple[str, ...]:
    """``dataset.classes`` when given (each ``found`` name must be one of them), else ``found``."""
    if classes is None:
        if len(found) < 2:
            raise LesionError(where, f"holds {len(found)} {what} ({', '.join(found) or 'none'}); a classifier needs two or more",
                              "add the images of at least two classes, or set dataset.classes")
        return tuple(found)
    classes = tuple(classes)
    if len(set(classes)) != len(classes) or len(classes) < 2:
        raise LesionError("dataset.classes", f"{list(classes)} needs two or more distinct names", "list each class once")
    unknown = [c for c in found if c not in classes]
    if unknown:
        raise LesionError(where, f"{what[:-1]} '{unknown[0]}' is not one of dataset.classes ({', '.join(classes)})",
                          "add it to dataset.classes or remove its images")
    return classes


def _folder_layout(root: Path, classes: object) -> Layout:
    found = class_folders(root)
    return Layout(name=FOLDER, id_column="image", classes=_given_classes(classes, found, "class folders", root),
                  splits={"train": SplitFiles((), ())}, has_taxonomy=False, source=FOLDER)


def _csv_layout(root: Path, dataset: Mapping) -> Layout:
    # Imported here (pandas): the options read this module (layout_of) before any work.
    from lesion.data.metadata import MISSING_WORDS
    from lesion.data.readers import read_csv

    if not dataset.get("csv"):
        raise LesionError("dataset.csv", "is not set", "set dataset.csv=<your CSV> (a path, or a name in dataset.root)")
    path = root / dataset["csv"]
    if not path.is_file():
        raise LesionError(path, "CSV not found", "set dataset.csv to an existing file (relative to dataset.root)")
    label, onehot = dataset.get("label_column"), dataset.get("label_columns")
    if (label is None) == (onehot is None):
        raise LesionError("dataset.label_column", "give either label_column (one column of class names) or "
                          "label_columns (one-hot columns), not both or neither", "set one of them, the other null")
    frame = read_csv(path, "CSV")
    for column in [dataset["image_column"], *([label] if label else onehot)]:
        if column not in frame.columns:
            raise LesionError(path, f"has no column {column} (found: {', '.join(map(str, frame.columns))})",
                              "name the columns with dataset.image_column and dataset.label_column(s)")
    for key in ("group_column", "age_column", "sex_column", "site_column", "skin_tone_column"):
        column = dataset.get(key)
        if column is not None and column not in frame.columns:
            raise LesionError(path, f"has no column {column} (dataset.{key})", "name an existing column, or set it to null")
    group = dataset.get("group_column")
    age, sex, site, tone = (dataset.get(f"{key}_column") for key in ("age", "sex", "site", "skin_tone"))
    metadata = ((MetadataFile(str(path), dataset["image_column"], age, sex, site, tone),)
                if age or sex or site or tone else ())
    sites = tuple(sorted({v.lower() for v in frame[site]} - MISSING_WORDS)) if site else ()
    found = sorted(v for v in set(frame[label]) if v) if label else list(onehot)
    classes = _given_classes(dataset.get("classes"), found, "label values" if label else "label columns", path)
    images = str(dataset.get("images") or ".").removesuffix(".zip")
    return Layout(
        name=CSV, id_column=dataset["image_column"], classes=classes, splits={"train": SplitFiles((images,), (str(path),))},
        label_columns={c: c for c in onehot} if onehot else {}, label_column=label,
        label_values={c: c for c in classes} if label else {},
        groupings=(Grouping(str(path), dataset["image_column"], group, "lesion"),) if group else (),
        metadata={"train": metadata} if metadata else {}, sites=sites, has_taxonomy=False, source=CSV,
    )
