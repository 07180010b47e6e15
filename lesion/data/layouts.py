"""The official ISIC file layouts: file names, CSV headers, class orders and the taxonomy.

This module is the one source of truth for class names, ``num_classes`` and the lesion
taxonomy (melanocytic vs non-melanocytic, then benign vs malignant, then the class) used by the
hierarchical decoder of Barata et al., "Explainable skin lesion diagnosis using taxonomies",
Pattern Recognition 110 (2021).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "val", "test")


def counts_of(labels: np.ndarray, classes: Sequence[str]) -> dict[str, int]:
    """Images per class (class index per image → ``{class name: count}``, in class order)."""
    return dict(zip(classes, np.bincount(labels, minlength=len(classes)).tolist()))

MALIGNANT = frozenset({"MEL", "BCC", "AKIEC"})
MELANOCYTIC = frozenset({"NV", "MEL"})


@dataclass(frozen=True)
class SplitFiles:
    """Official names of one split: the image archive/folder and the ground-truth CSV."""

    images: str  # zip stem == folder name
    csv: str


@dataclass(frozen=True)
class Grouping:
    """A CSV that maps image ids to lesion ids (several images may show one lesion)."""

    file: str
    id_column: str
    group_column: str


@dataclass(frozen=True)
class Layout:
    """One challenge's official layout.

    ``label_columns`` maps each CSV label column to a class name; ``implicit_class`` is the class
    of a row whose label columns are all 0 (ISIC 2017's benign nevus), else ``None``.
    ``groupings`` are the optional lesion-grouping files, in order of preference.
    """

    name: str
    id_column: str
    classes: tuple[str, ...]
    label_columns: dict[str, str]
    implicit_class: str | None
    splits: dict[str, SplitFiles]
    groupings: tuple[Grouping, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def taxonomy_path(self, cls: str) -> tuple[int, int]:
        """Token indices of ``cls`` at the two coarse taxonomy levels (melanocytic, malignant)."""
        return int(cls in MELANOCYTIC), int(cls in MALIGNANT)

    def taxonomy(self) -> list[list[int]]:
        """Per class, its token at every decoding level: ``[melanocytic, malignant, class index]``.

        Level 0: 0 = non-melanocytic, 1 = melanocytic; level 1: 0 = benign, 1 = malignant.
        """
        return [[*self.taxonomy_path(c), k] for k, c in enumerate(self.classes)]


ISIC2017 = Layout(
    name="isic2017",
    id_column="image_id",
    classes=("NV", "SK", "MEL"),
    label_columns={"melanoma": "MEL", "seborrheic_keratosis": "SK"},
    implicit_class="NV",
    splits={
        "train": SplitFiles("ISIC-2017_Training_Data", "ISIC-2017_Training_Part3_GroundTruth.csv"),
        "val": SplitFiles("ISIC-2017_Validation_Data", "ISIC-2017_Validation_Part3_GroundTruth.csv"),
        "test": SplitFiles("ISIC-2017_Test_v2_Data", "ISIC-2017_Test_v2_Part3_GroundTruth.csv"),
    },
)

ISIC2018 = Layout(
    name="isic2018",
    id_column="image",
    classes=("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"),
    label_columns={c: c for c in ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")},
    implicit_class=None,
    splits={
        "train": SplitFiles("ISIC2018_Task3_Training_Input", "ISIC2018_Task3_Training_GroundTruth.csv"),
        "val": SplitFiles("ISIC2018_Task3_Validation_Input", "ISIC2018_Task3_Validation_GroundTruth.csv"),
        "test": SplitFiles("ISIC2018_Task3_Test_Input", "ISIC2018_Task3_Test_GroundTruth.csv"),
    },
    groupings=(
        Grouping("ISIC2018_Task3_Training_LesionGroupings.csv", "image", "lesion_id"),
        Grouping("HAM10000_metadata.csv", "image_id", "lesion_id"),
        Grouping("HAM10000_metadata", "image_id", "lesion_id"),
    ),
)

LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (ISIC2017, ISIC2018)}
