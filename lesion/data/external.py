"""External training data: the training images of other archives added to the primary dataset's training split.

``dataset.extra=[{layout: isic2019, root: DIR}, …]``: an official layout, or ``folder`` (one
sub-folder of images per class, :mod:`lesion.data.custom`; e.g. ``DIR/UNK/`` gives ISIC 2019's
"none of the others" class training images, which the archive has none of). Each source's training
split is read and checked as the primary's is; its classes are mapped onto the primary's by name
(:data:`ALIASES` names the same diagnosis under two names, e.g. ISIC 2019's AK and ISIC 2018's
AKIEC), and images of a class with no counterpart are dropped; a folder none of whose sub-folders
names one of the primary's classes is refused. So that nothing the model is validated or tested on
enters its training, an added image is also dropped when

- its ISIC id (without ISIC 2019's ``_downsampled`` suffix) is any primary image's: the archives
  share images (ISIC 2019's training set holds ISIC 2018's), and a shared training image would
  count twice;
- its lesion (or patient) is one of the validation or test images', as the source's or the
  primary's grouping file says. A folder has no grouping file: its images are checked by id only
  (the log says so).

Every count is reported per source (``balance.json``, ``sources``). Validation and test stay the
primary dataset's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from lesion.data.custom import FOLDER, class_folders
from lesion.data.layouts import LAYOUTS, Layout, SplitFiles, counts_of
from lesion.data.readers import (
    ImageArchive,
    ImageParts,
    SplitTable,
    read_group_map,
    read_split,
)
from lesion.errors import LesionError

log = logging.getLogger(__name__)

# Diagnoses that two layouts name differently, both ways.
ALIASES = {"AK": "AKIEC", "AKIEC": "AK", "MEL": "melanoma", "melanoma": "MEL"}
DOWNSAMPLED = "_downsampled"


def canonical_id(image_id: str) -> str:
    """The image's ISIC id: ISIC 2019 names some of its copies ``ISIC_…_downsampled``."""
    return image_id.removesuffix(DOWNSAMPLED)


def class_mapping(source: Sequence[str], primary: Sequence[str]) -> dict[int, int | None]:
    """Source class index → primary class index of the same name (or alias), ``None`` where there is none."""
    index = {name: k for k, name in enumerate(primary)}
    return {k: index.get(name, index.get(ALIASES.get(name, ""))) for k, name in enumerate(source)}


def source_layout(entry: Mapping, primary: Sequence[str], where: str) -> Layout:
    """The layout of a ``dataset.extra`` entry: an official one, or (``folder``) one class per sub-folder of its root.

    Args:
        entry: the entry (``layout``, ``root``).
        primary: the primary dataset's classes.
        where: the entry's name in errors (``dataset.extra[k]``).

    Raises:
        LesionError: a folder none of whose sub-folders names one of ``primary`` (or its alias).
    """
    if entry["layout"] != FOLDER:
        return LAYOUTS[entry["layout"]]
    root = Path(entry["root"]).expanduser()
    found = tuple(class_folders(root))
    if all(target is None for target in class_mapping(found, primary).values()):
        raise LesionError(f"{where}.root", f"{root}'s class folders ({', '.join(found) or 'none'}) name none of the "
                          f"classes ({', '.join(primary)})", f"put each class's images in a sub-folder named after "
                          f"it, e.g. {root / primary[-1]}/")
    # Built here rather than by dataset=folder's layout_of, which needs two classes to train on: a source
    # may add one (UNK/ alone).
    return Layout(name=FOLDER, id_column="image", classes=found, splits={"train": SplitFiles((), ())},
                  has_taxonomy=False, source=FOLDER)


def _archives(images: ImageArchive | ImageParts) -> list[ImageArchive]:
    return list(images.parts) if isinstance(images, ImageParts) else [images]


def _restricted(images: ImageArchive | ImageParts, ids: set[str]) -> list[ImageArchive]:
    """The archives of ``images`` naming only ``ids``, so no dropped copy can shadow a kept image."""
    return [ImageArchive(a.path, {i: m for i, m in a.members.items() if i in ids}) for a in _archives(images)]


def add_external(primary: SplitTable, primary_root: Path, held_out: Sequence[str], held_groups: set[str],
                 every_id: set[str], extra: Sequence[Mapping]) -> tuple[SplitTable, dict]:
    """The primary training table with the kept training images of every source appended after its rows.

    Args:
        primary: the primary dataset's training split (its rows keep their positions).
        primary_root: its folder.
        held_out: ids of the validation and test images.
        held_groups: their lesion (or patient) ids, as far as the primary's grouping file knows them.
        every_id: the ids of every primary image (all splits).
        extra: the ``dataset.extra`` entries (``layout``, ``root``).

    Returns:
        The combined table and, per source (the primary first, with only its root), what was
        added and dropped.
    """
    classes = primary.layout.classes
    taken = {canonical_id(i) for i in every_id}
    held = {canonical_id(i) for i in held_out}
    ids, labels, archives = list(primary.ids), [primary.labels], _archives(primary.images)
    report = {primary.layout.name: {"root": str(primary_root)}}
    for k, entry in enumerate(extra):
        layout = source_layout(entry, classes, f"dataset.extra[{k}]")
        root = Path(entry["root"]).expanduser()
        table = read_split(layout, root, "train")
        mapping = class_mapping(layout.classes, classes)
        groups_found = read_group_map(layout, root)
        if groups_found is None:  # e.g. a folder: its images can be matched to validation/test images by id only
            log.info("dataset.extra[%d] (%s): no lesion or patient grouping file, so its images are kept apart from "
                     "validation and test by image id only", k, root)
        group_of = groups_found[1] if groups_found else {}
        lesions = held_groups | {group_of[i] for i in group_of if canonical_id(i) in held}
        kept, unmapped, same_id, same_group = [], {}, 0, 0
        for image_id, label in zip(table.ids, table.labels):
            target = mapping[int(label)]
            if target is None:
                name = layout.classes[int(label)]
                unmapped[name] = unmapped.get(name, 0) + 1
            elif canonical_id(image_id) in taken:
                same_id += 1
            elif group_of.get(image_id) in lesions:
                same_group += 1
            else:
                kept.append((image_id, target))
                taken.add(canonical_id(image_id))
        name = entry["layout"] if entry["layout"] not in report else f"{entry['layout']} ({root})"
        added = np.array([t for _, t in kept], dtype=np.int64)
        report[name] = {"root": str(root), "added": counts_of(added, classes),
                        "dropped_no_counterpart": unmapped, "dropped_same_image": same_id,
                        "dropped_validation_or_test_lesion": same_group}
        log.info("dataset.extra %s: %d training images added, %d of classes without a counterpart (%s), %d already in "
                 "%s, %d of a validation/test lesion", name, len(kept), sum(unmapped.values()),
                 ", ".join(unmapped) or "none", same_id, primary.layout.name, same_group)
        ids += [i for i, _ in kept]
        labels.append(added)
        archives += _restricted(table.images, {i for i, _ in kept})
    combined = SplitTable(primary.layout, primary.split, ids, np.concatenate(labels), ImageParts(archives),
                          primary.csv_path)
    return combined, report
