"""The official file layouts: file names, CSV headers, class orders and the taxonomy.

ISIC 2017 Part 3, ISIC 2018 Task 3, ISIC 2019, SIIM-ISIC 2020, HAM10000, ISIC 2024 (SLICE-3D) and
PAD-UFES-20, as their archives name them (sources: the ISIC challenge data pages,
challenge.isic-archive.com/data; the HAM10000 release, Tschandl et al., Sci. Data 5, 180161 (2018),
doi:10.7910/DVN/DBW86T; the ISIC 2024 Kaggle challenge "Skin Cancer Detection with 3D-TBP",
doi:10.34970/2024-slice-3d; PAD-UFES-20, Pacheco et al., Data in Brief 32, 106221 (2020),
doi:10.17632/zr7vgbcyr2.1, CC BY 4.0).

This module is the one source of truth for class names, ``num_classes`` and the lesion
taxonomy (melanocytic vs non-melanocytic, then benign vs malignant, then the class) used by the
hierarchical decoder of Barata et al., "Explainable skin lesion diagnosis using taxonomies",
Pattern Recognition 110 (2021). Caveats: ISIC 2019's AK (actinic keratosis) and SCC count as
malignant, as ISIC 2018's AKIEC does; its UNK ("none of the others", no training image) counts
as non-melanocytic and benign. PAD-UFES-20's NEV is melanocytic; its ACK (actinic keratosis) counts as
benign, as the dataset's authors count it among the skin diseases that are not cancers (its Bowen's
disease, an SCC in situ, is filed under SCC). ISIC 2020's two classes (benign, melanoma) have no taxonomy:
its benign class mixes melanocytic and other lesions; nor do ISIC 2024's (benign, malignant).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "val", "test")


def counts_of(labels: np.ndarray, classes: Sequence[str]) -> dict[str, int]:
    """Images per class (class index per image → ``{class name: count}``, in class order)."""
    return dict(zip(classes, np.bincount(labels, minlength=len(classes)).tolist()))

MALIGNANT = frozenset({"MEL", "BCC", "AKIEC", "AK", "SCC"})
MELANOCYTIC = frozenset({"NV", "NEV", "MEL"})


@dataclass(frozen=True)
class SplitFiles:
    """Official names of one split: its image archives/folders and its ground-truth CSV.

    ``images``: zip stems (== folder names), all read (HAM10000 comes in two parts). ``csv``: the
    candidates in order of preference (ISIC 2020's ``_v2`` first). ``labels_optional``: the
    images may come without ground truth (ISIC 2019's test split before its labels were
    released); the split is then unlabelled and not used.
    """

    images: tuple[str, ...]
    csv: tuple[str, ...]
    labels_optional: bool = False


@dataclass(frozen=True)
class Grouping:
    """A CSV that maps image ids to lesion or patient ids (several images per lesion or patient)."""

    file: str
    id_column: str
    group_column: str
    kind: str = "lesion"  # or "patient"


@dataclass(frozen=True)
class MetadataFile:
    """A CSV of patient metadata: its name, id column and the columns of age, sex, anatomic site and skin tone.

    ``in_images``: the file sits inside the split's image archive (ISIC 2017's ``<images>_metadata.csv``).
    A column is ``None`` where the file has none (ISIC 2017 has no site; only PAD-UFES-20 and ISIC archive
    exports have a skin tone; a user's CSV may lack any). ``site_words``: the file's own site words that
    name a site of the layout's vocabulary (``Layout.sites``) otherwise, lower-case (PAD-UFES-20's
    ``forearm`` → ``upper extremity``).
    """

    file: str
    id_column: str
    age: str | None
    sex: str | None
    site: str | None
    skin_tone: str | None = None
    in_images: bool = False
    site_words: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Duplicates:
    """A CSV listing pairs of images of one lesion published twice: the second of each pair is dropped."""

    file: str
    columns: tuple[str, str]


@dataclass(frozen=True)
class Layout:
    """One dataset's official layout.

    Labels are one-hot or one column: ``label_columns`` maps each one-hot CSV column to a class
    name (``implicit_class`` is the class of a row whose label columns are all 0, ISIC 2017's
    benign nevus); ``label_column`` names a single column whose values ``label_values`` maps to
    class names. ``splits`` lists the splits the layout has (missing ones are made from the
    training split). ``groupings`` are the optional grouping files, in order of preference;
    ``duplicates`` an optional list of images published twice. ``has_taxonomy``: the classes
    have a place in the lesion taxonomy (hierarchical decoding). ``metadata``: per split, the
    patient-metadata files in order of preference; ``sites`` the site names they use
    (after their ``MetadataFile.site_words``). ``not_images``:
    name patterns (``fnmatch``) of image files in the image archives that are not lesion images
    (ISIC 2017's superpixel maps), never taken for an image nor counted. ``source``: ``official`` files,
    or the user's own (``folder`` / ``csv``, built by :mod:`lesion.data.custom`). ``columns``: the
    training CSV's header as published, where the layout describes it (a training CSV that lacks one of
    them is not this layout's, and refused); ``training_only``: those of
    its columns that the images to predict come without (the label among them), so a model that
    reads one learns from what it will never be given.
    """

    name: str
    id_column: str
    classes: tuple[str, ...]
    splits: dict[str, SplitFiles]
    label_columns: dict[str, str] = field(default_factory=dict)
    implicit_class: str | None = None
    label_column: str | None = None
    label_values: dict[str, str] = field(default_factory=dict)
    groupings: tuple[Grouping, ...] = ()
    duplicates: Duplicates | None = None
    has_taxonomy: bool = True
    metadata: dict[str, tuple[MetadataFile, ...]] = field(default_factory=dict)  # split -> candidates
    sites: tuple[str, ...] = ()  # the anatomic sites the metadata names
    not_images: tuple[str, ...] = ()
    source: str = "official"  # "folder": one sub-folder per class; "csv": the user's CSV (lesion.data.custom)
    columns: tuple[str, ...] = ()
    training_only: tuple[str, ...] = ()

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


def _split(images: str | tuple[str, ...], *csv: str, labels_optional: bool = False) -> SplitFiles:
    return SplitFiles((images,) if isinstance(images, str) else images, csv, labels_optional)


ISIC2017 = Layout(
    name="isic2017",
    id_column="image_id",
    classes=("NV", "SK", "MEL"),
    label_columns={"melanoma": "MEL", "seborrheic_keratosis": "SK"},
    implicit_class="NV",
    splits={
        "train": _split("ISIC-2017_Training_Data", "ISIC-2017_Training_Part3_GroundTruth.csv"),
        "val": _split("ISIC-2017_Validation_Data", "ISIC-2017_Validation_Part3_GroundTruth.csv"),
        "test": _split("ISIC-2017_Test_v2_Data", "ISIC-2017_Test_v2_Part3_GroundTruth.csv"),
    },
    metadata={split: (MetadataFile(f"{stem}_metadata.csv", "image_id", "age_approximate", "sex", None, in_images=True),)
              for split, stem in (("train", "ISIC-2017_Training_Data"), ("val", "ISIC-2017_Validation_Data"),
                                  ("test", "ISIC-2017_Test_v2_Data"))},
    not_images=("*_superpixels.png",),  # one superpixel map per lesion image, ISIC_<id>_superpixels.png
)

ISIC2018_CLASSES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
HAM10000_METADATA = ("HAM10000_metadata.csv", "HAM10000_metadata")
HAM10000_SITES = ("abdomen", "acral", "back", "chest", "ear", "face", "foot", "genital", "hand", "lower extremity",
                  "neck", "scalp", "trunk", "upper extremity")
_HAM10000_METADATA_FILES = tuple(MetadataFile(name, "image_id", "age", "sex", "localization") for name in HAM10000_METADATA)

ISIC2018 = Layout(
    name="isic2018",
    id_column="image",
    classes=ISIC2018_CLASSES,
    label_columns={c: c for c in ISIC2018_CLASSES},
    splits={
        "train": _split("ISIC2018_Task3_Training_Input", "ISIC2018_Task3_Training_GroundTruth.csv"),
        "val": _split("ISIC2018_Task3_Validation_Input", "ISIC2018_Task3_Validation_GroundTruth.csv"),
        "test": _split("ISIC2018_Task3_Test_Input", "ISIC2018_Task3_Test_GroundTruth.csv"),
    },
    groupings=(
        Grouping("ISIC2018_Task3_Training_LesionGroupings.csv", "image", "lesion_id"),
        *(Grouping(name, "image_id", "lesion_id") for name in HAM10000_METADATA),
    ),
    metadata={"train": _HAM10000_METADATA_FILES},
    sites=HAM10000_SITES,
)

ISIC2019_CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")

# No official validation split. Many training ids carry a "_downsampled" suffix (images shrunk
# before publication); the suffix is part of the id, in the CSVs and the file names alike.
ISIC2019 = Layout(
    name="isic2019",
    id_column="image",
    classes=ISIC2019_CLASSES,
    label_columns={c: c for c in ISIC2019_CLASSES},
    splits={
        "train": _split("ISIC_2019_Training_Input", "ISIC_2019_Training_GroundTruth.csv"),
        "test": _split("ISIC_2019_Test_Input", "ISIC_2019_Test_GroundTruth.csv", labels_optional=True),
    },
    groupings=(Grouping("ISIC_2019_Training_Metadata.csv", "image", "lesion_id"),),
    metadata={"train": (MetadataFile("ISIC_2019_Training_Metadata.csv", "image", "age_approx", "sex", "anatom_site_general"),),
              "test": (MetadataFile("ISIC_2019_Test_Metadata.csv", "image", "age_approx", "sex", "anatom_site_general"),)},
    sites=("anterior torso", "head/neck", "lateral torso", "lower extremity", "oral/genital", "palms/soles",
           "posterior torso", "upper extremity"),
)

# Training images only (the test images have no public labels); the zip's images are in train/.
ISIC2020 = Layout(
    name="isic2020",
    id_column="image_name",
    classes=("benign", "melanoma"),
    label_column="target",
    label_values={"0": "benign", "1": "melanoma"},
    splits={"train": _split("ISIC_2020_Training_JPEG", "ISIC_2020_Training_GroundTruth_v2.csv",
                            "ISIC_2020_Training_GroundTruth.csv")},
    groupings=tuple(Grouping(name, "image_name", "patient_id", "patient")
                    for name in ("ISIC_2020_Training_GroundTruth_v2.csv", "ISIC_2020_Training_GroundTruth.csv")),
    duplicates=Duplicates("ISIC_2020_Training_Duplicates.csv", ("image_name_1", "image_name_2")),
    has_taxonomy=False,
    metadata={"train": tuple(MetadataFile(name, "image_name", "age_approx", "sex", "anatom_site_general_challenge")
                             for name in ("ISIC_2020_Training_GroundTruth_v2.csv", "ISIC_2020_Training_GroundTruth.csv"))},
    sites=("head/neck", "lower extremity", "oral/genital", "palms/soles", "torso", "upper extremity"),
)

# The ISIC 2018 training images as the HAM10000 release publishes them: two image parts and one
# metadata CSV (also the label source: dx), grouped by lesion.
HAM10000 = Layout(
    name="ham10000",
    id_column="image_id",
    classes=ISIC2018_CLASSES,
    label_column="dx",
    label_values={c.lower(): c for c in ISIC2018_CLASSES},
    splits={"train": _split(("HAM10000_images_part_1", "HAM10000_images_part_2"), *HAM10000_METADATA)},
    groupings=tuple(Grouping(name, "image_id", "lesion_id") for name in HAM10000_METADATA),
    metadata={"train": _HAM10000_METADATA_FILES},
    sites=HAM10000_SITES,
)

# ISIC 2024 (SLICE-3D): 401,059 crops of 3D total-body photographs of 1,042 patients, 393 malignant.
# The training CSV's header as published (55 columns). The test CSV has the same columns without
# the label and the last ten, which describe the diagnosis or are given for training images only.
ISIC2024_COLUMNS = (
    "isic_id", "target", "patient_id", "age_approx", "sex", "anatom_site_general", "clin_size_long_diam_mm",
    "image_type", "tbp_tile_type", "tbp_lv_A", "tbp_lv_Aext", "tbp_lv_B", "tbp_lv_Bext", "tbp_lv_C", "tbp_lv_Cext",
    "tbp_lv_H", "tbp_lv_Hext", "tbp_lv_L", "tbp_lv_Lext", "tbp_lv_areaMM2", "tbp_lv_area_perim_ratio",
    "tbp_lv_color_std_mean", "tbp_lv_deltaA", "tbp_lv_deltaB", "tbp_lv_deltaL", "tbp_lv_deltaLB",
    "tbp_lv_deltaLBnorm", "tbp_lv_eccentricity", "tbp_lv_location", "tbp_lv_location_simple", "tbp_lv_minorAxisMM",
    "tbp_lv_nevi_confidence", "tbp_lv_norm_border", "tbp_lv_norm_color", "tbp_lv_perimeterMM",
    "tbp_lv_radial_color_std_max", "tbp_lv_stdL", "tbp_lv_stdLExt", "tbp_lv_symm_2axis", "tbp_lv_symm_2axis_angle",
    "tbp_lv_x", "tbp_lv_y", "tbp_lv_z", "attribution", "copyright_license",
    "lesion_id", "iddx_full", "iddx_1", "iddx_2", "iddx_3", "iddx_4", "iddx_5", "mel_mitotic_index", "mel_thick_mm",
    "tbp_lv_dnn_lesion_confidence",
)

# Images: one HDF5 file holding each image's JPEG bytes as a dataset named by its isic_id, or the
# folder train-image/image/. The test CSV has no target: its images are predicted (evaluate.py
# images=…/test-image.hdf5), and a patient-grouped hold-out of the training split is the labelled test.
ISIC2024 = Layout(
    name="isic2024",
    id_column="isic_id",
    classes=("benign", "malignant"),
    label_column="target",
    label_values={"0": "benign", "1": "malignant"},
    splits={"train": _split("train-image", "train-metadata.csv"),
            "test": _split("test-image", "test-metadata.csv", labels_optional=True)},
    groupings=(Grouping("train-metadata.csv", "isic_id", "patient_id", "patient"),),
    has_taxonomy=False,
    metadata={split: (MetadataFile(f"{split}-metadata.csv", "isic_id", "age_approx", "sex", "anatom_site_general"),)
              for split in ("train", "test")},
    sites=("anterior torso", "head/neck", "lower extremity", "posterior torso", "upper extremity"),
    columns=ISIC2024_COLUMNS,
    training_only=("target", *ISIC2024_COLUMNS[-10:]),
)

# PAD-UFES-20: 2,298 smartphone images (PNG) of 1,641 lesions of 1,373 patients, with clinical data. The
# metadata CSV's header as published (26 columns); `diagnostic` is the label, `img_id` the image's file
# name. Its regions name sites of HAM10000's vocabulary: ARM and FOREARM the upper extremity, THIGH the
# lower extremity, NOSE and LIP the face; the other nine are HAM10000 words already (FACE → face, …).
PAD_UFES20_COLUMNS = (
    "patient_id", "lesion_id", "smoke", "drink", "background_father", "background_mother", "age", "pesticide",
    "gender", "skin_cancer_history", "cancer_history", "has_piped_water", "has_sewage_system", "fitspatrick",
    "region", "diameter_1", "diameter_2", "diagnostic", "itch", "grew", "hurt", "changed", "bleed", "elevation",
    "img_id", "biopsed",
)
PAD_UFES20_REGIONS = {"arm": "upper extremity", "forearm": "upper extremity", "thigh": "lower extremity",
                      "nose": "face", "lip": "face"}

# Images: the folder images/ (the archive's parts images/imgs_part_1 … imgs_part_3 inside it, or every
# image in it directly) or images.zip. One split; test and validation are patient-grouped hold-outs.
PAD_UFES20 = Layout(
    name="pad_ufes20",
    id_column="img_id",
    classes=("ACK", "BCC", "MEL", "NEV", "SCC", "SEK"),
    label_column="diagnostic",
    label_values={c: c for c in ("ACK", "BCC", "MEL", "NEV", "SCC", "SEK")},
    splits={"train": _split("images", "metadata.csv")},
    groupings=(Grouping("metadata.csv", "img_id", "patient_id", "patient"),),
    metadata={"train": (MetadataFile("metadata.csv", "img_id", "age", "gender", "region", skin_tone="fitspatrick",
                                     site_words=PAD_UFES20_REGIONS),)},
    sites=HAM10000_SITES,
    columns=PAD_UFES20_COLUMNS,
    # biopsed: whether the diagnosis was confirmed by a biopsy, known after it (every cancer is biopsied).
    training_only=("diagnostic", "biopsed"),
)

# The metadata CSV the ISIC archive exports with its images (isic-archive.com), as a user's metadata file:
# recognised by its columns, never a layout of its own.
ISIC_ARCHIVE_METADATA = MetadataFile("metadata.csv", "isic_id", "age_approx", "sex", "anatom_site_general",
                                     skin_tone="fitzpatrick_skin_type")

LAYOUTS: dict[str, Layout] = {layout.name: layout
                              for layout in (ISIC2017, ISIC2018, ISIC2019, ISIC2020, HAM10000, ISIC2024, PAD_UFES20)}
