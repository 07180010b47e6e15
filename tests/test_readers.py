"""Official ISIC layouts: zip and folder, class orders, validation errors, the real UDA-1 set."""

from __future__ import annotations

import logging
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lesion.data.readers import read_split
from lesion.data.layouts import LAYOUTS, SPLITS
from lesion.errors import LesionError


def expected_labels(layout_name: str, csv_path: Path) -> list[str]:
    """Class names of a ground-truth CSV, decoded independently of the reader."""
    frame = pd.read_csv(csv_path)
    if layout_name == "isic2017":
        return ["MEL" if m == 1 else "SK" if s == 1 else "NV"
                for m, s in zip(frame["melanoma"], frame["seborrheic_keratosis"])]
    classes = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    return [classes[i] for i in frame[classes].to_numpy().argmax(1)]


@pytest.mark.parametrize("layout", ["isic2017", "isic2018"])
@pytest.mark.parametrize("packing", ["zip", "folder"])
def test_reads_every_split_with_official_class_order(layout, packing, synthetic_root, as_folders, tmp_path):
    root = synthetic_root(layout)
    if packing == "folder":
        root = as_folders(root, tmp_path / "extracted")
        assert not list(root.glob("*.zip"))
    spec = LAYOUTS[layout]
    for split in SPLITS:
        table = read_split(layout, root, split)
        csv_path = root / spec.splits[split].csv[0]
        assert table.ids == pd.read_csv(csv_path, dtype=str)[spec.id_column].tolist()
        assert [spec.classes[i] for i in table.labels] == expected_labels(layout, csv_path)
        assert all(v > 0 for v in table.class_counts().values())
        # Only lesion images are indexed: no superpixels, metadata or licence files.
        assert set(table.images.members) == set(table.ids)
        image = table.images.read(table.ids[0])
        assert image.mode == "RGB" and min(image.size) > 16


def test_class_orders_are_the_official_ones():
    assert LAYOUTS["isic2017"].classes == ("NV", "SK", "MEL")
    assert LAYOUTS["isic2018"].classes == ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
    # taxonomy rows: [melanocytic, malignant, class]
    tax = dict(zip(LAYOUTS["isic2018"].classes, LAYOUTS["isic2018"].taxonomy()))
    assert tax["MEL"] == [1, 1, 0] and tax["NV"] == [1, 0, 1] and tax["BCC"] == [0, 1, 2] and tax["VASC"] == [0, 0, 6]
    tax17 = dict(zip(LAYOUTS["isic2017"].classes, LAYOUTS["isic2017"].taxonomy()))
    assert tax17 == {"NV": [1, 0, 0], "SK": [0, 0, 1], "MEL": [1, 1, 2]}


def test_zip_is_never_extracted(synthetic_root, tmp_path):
    root = shutil.copytree(synthetic_root("isic2017"), tmp_path / "copy")
    before = sorted(p.name for p in root.iterdir())
    table = read_split("isic2017", root, "train")
    for image_id in table.ids[:5]:
        table.images.read(image_id)
    assert sorted(p.name for p in root.iterdir()) == before


def test_label_values_may_be_integers(synthetic_root, tmp_path):
    root = shutil.copytree(synthetic_root("isic2018"), tmp_path / "copy")
    csv_path = root / LAYOUTS["isic2018"].splits["train"].csv[0]
    frame = pd.read_csv(csv_path)
    classes = list(LAYOUTS["isic2018"].classes)
    frame[classes] = frame[classes].astype(int)
    frame.to_csv(csv_path, index=False)
    assert "1,0" in csv_path.read_text()
    table = read_split("isic2018", root, "train")
    assert table.labels.tolist() == frame[classes].to_numpy().argmax(1).tolist()


def test_missing_validation_split_is_optional(synthetic_root, tmp_path):
    root = shutil.copytree(synthetic_root("isic2018"), tmp_path / "copy")
    files = LAYOUTS["isic2018"].splits["val"]
    (root / files.csv[0]).unlink()
    (root / f"{files.images[0]}.zip").unlink()
    assert read_split("isic2018", root, "val") is None


def corrupt(root: Path, layout: str, how: str) -> str:
    """Damage the training split of a dataset copy; return a fragment the error must contain."""
    spec = LAYOUTS[layout]
    files = spec.splits["train"]
    csv_path, archive = root / files.csv[0], root / f"{files.images[0]}.zip"
    frame = pd.read_csv(csv_path, dtype={spec.id_column: str})
    label_cols = list(spec.label_columns)
    if how == "missing_csv":
        csv_path.unlink()
        return files.csv[0]
    if how == "missing_images":
        archive.unlink()
        return files.images[0]
    if how == "missing_column":
        frame.drop(columns=[label_cols[0]]).to_csv(csv_path, index=False)
        return label_cols[0]
    if how == "id_without_image":
        frame.loc[0, spec.id_column] = "ISIC_9999999"
        frame.to_csv(csv_path, index=False)
        return "ISIC_9999999"
    if how == "two_labels":
        frame.loc[0, label_cols[:2]] = 1.0
        frame.to_csv(csv_path, index=False)
        return f"id {frame.loc[0, spec.id_column]}"
    if how == "zero_labels":  # only an error where no class is implicit (2018)
        frame.loc[0, label_cols] = 0.0
        frame.to_csv(csv_path, index=False)
        return f"id {frame.loc[0, spec.id_column]}"
    raise ValueError(how)


ERROR_CASES = [("isic2017", "missing_csv"), ("isic2018", "missing_images"), ("isic2017", "missing_column"),
               ("isic2018", "id_without_image"), ("isic2017", "two_labels"), ("isic2018", "two_labels"),
               ("isic2018", "zero_labels")]


@pytest.mark.parametrize("layout,how", ERROR_CASES)
def test_bad_input_raises_one_clear_error(layout, how, synthetic_root, tmp_path):
    root = shutil.copytree(synthetic_root(layout), tmp_path / "copy")
    fragment = corrupt(root, layout, how)
    with pytest.raises(LesionError) as info:
        read_split(layout, root, "train")
    message = str(info.value)
    assert fragment in message and " — " in message and "\n" not in message


def test_unreadable_image_names_the_member(synthetic_root, as_folders, tmp_path):
    root = as_folders(synthetic_root("isic2018"), tmp_path / "folders")
    table = read_split("isic2018", root, "train")
    victim = table.images.path / table.images.members[table.ids[3]]
    victim.write_bytes(b"not a jpeg at all")
    with pytest.raises(LesionError, match=table.ids[3]):
        table.images.read(table.ids[3])


def test_missing_root_folder(tmp_path):
    with pytest.raises(LesionError, match="dataset.root"):
        read_split("isic2017", tmp_path / "nowhere", "train")


def test_draft_decoding_keeps_the_requested_short_side(uda1):
    table = read_split("isic2017", uda1, "train")
    sizes = {i: table.images.read(i).size for i in table.ids[:40]}
    big = max(sizes, key=lambda i: min(sizes[i]))
    full = sizes[big]
    drafted = table.images.read(big, min_size=64).size
    assert min(drafted) >= 64 and min(drafted) <= min(full)


def test_reads_the_real_uda1_layout(uda1):
    counts = {s: read_split("isic2017", uda1, s).class_counts() for s in SPLITS}
    assert counts["train"] == {"NV": 261, "SK": 0, "MEL": 105}
    assert counts["val"] == {"NV": 36, "SK": 0, "MEL": 14}
    assert counts["test"] == {"NV": 99, "SK": 0, "MEL": 40}
    table = read_split("isic2017", uda1, "val")
    assert np.asarray(table.images.read(table.ids[0])).shape[2] == 3


def test_labels_written_as_booleans_and_extra_columns_are_accepted(synthetic_root, tmp_path):
    root = shutil.copytree(synthetic_root("isic2017"), tmp_path / "copy")
    csv_path = root / LAYOUTS["isic2017"].splits["train"].csv[0]
    frame = pd.read_csv(csv_path)
    expected = read_split("isic2017", root, "train").labels
    booleans = frame.assign(melanoma=frame["melanoma"].astype(bool), seborrheic_keratosis=frame["seborrheic_keratosis"].astype(bool))
    booleans = booleans[["seborrheic_keratosis", "image_id", "melanoma"]].assign(note="x")  # reordered + extra
    booleans.to_csv(csv_path, index=False)
    assert "True" in csv_path.read_text()
    assert read_split("isic2017", root, "train").labels.tolist() == expected.tolist()


def test_header_only_csv_is_an_error(synthetic_root, tmp_path):
    root = shutil.copytree(synthetic_root("isic2018"), tmp_path / "copy")
    csv_path = root / LAYOUTS["isic2018"].splits["train"].csv[0]
    csv_path.write_text(csv_path.read_text().splitlines()[0] + "\n")
    with pytest.raises(LesionError, match="has no rows"):
        read_split("isic2018", root, "train")


def test_zip_with_a_parent_path_member_is_refused(synthetic_root, tmp_path):
    root = shutil.copytree(synthetic_root("isic2018"), tmp_path / "copy")
    archive = root / f"{LAYOUTS['isic2018'].splits['train'].images[0]}.zip"
    with zipfile.ZipFile(archive, "a") as z:
        z.writestr("../evil.jpg", b"x")
    with pytest.raises(LesionError, match=r"'\.\.' path"):
        read_split("isic2018", root, "train")
    assert not (root.parent / "evil.jpg").exists()


def not_in_csv_messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "lesion.data.readers" and "have no row" in r.getMessage()]


@pytest.mark.parametrize("packing", ["zip", "folder"])
def test_files_the_layout_knows_are_not_lesion_images_are_not_counted(packing, synthetic_root, as_folders, tmp_path,
                                                                      caplog):
    """ISIC 2017's superpixel maps are image files but not lesion images: reading says nothing of them,
    and still counts a lesion image that no row lists."""
    root = synthetic_root("isic2017")
    if packing == "folder":
        root = as_folders(root, tmp_path / "extracted")
    with caplog.at_level(logging.INFO, logger="lesion.data.readers"):
        for split in SPLITS:
            read_split("isic2017", root, split)
    assert not_in_csv_messages(caplog) == []
    folder = root if packing == "folder" else as_folders(root, tmp_path / "extracted")
    stem = LAYOUTS["isic2017"].splits["train"].images[0]
    listed = read_split("isic2017", folder, "train")
    (folder / stem / "ISIC_9999999.jpg").write_bytes(listed.images.read_bytes(listed.ids[0]))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lesion.data.readers"):
        assert read_split("isic2017", folder, "train").ids == listed.ids
    assert [m.split(": ", 1)[1] for m in not_in_csv_messages(caplog)] == [
        "1 images have no row in ISIC-2017_Training_Part3_GroundTruth.csv and are ignored"]


def test_reading_the_real_uda1_archives_logs_nothing(uda1, caplog):
    with caplog.at_level(logging.INFO, logger="lesion.data.readers"):
        tables = [read_split("isic2017", uda1, split) for split in SPLITS]
    assert [len(t) for t in tables] == [366, 50, 139]
    assert [r.getMessage() for r in caplog.records if r.name == "lesion.data.readers"] == []
