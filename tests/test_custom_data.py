"""Your own data: dataset=folder (a sub-folder per class) and dataset=csv (messy CSVs included),
read, trained and evaluated; on synthetic images and on the real UDA-1 images re-laid here."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lesion.data.custom import layout_of
from lesion.data.datamodule import IsicDataModule
from lesion.data.readers import read_groups, read_split
from lesion.errors import LesionError

SMALL = ["trainer=cpu", "model.backbone=resnet18", "model.weights=none", "dataset.image_size=32",
         "dataset.batch_size=4", "dataset.num_workers=0", "trainer.max_epochs=1"]


def relaid(root: Path, layout: str, dest: Path, per_class: int = 8) -> pd.DataFrame:
    """Up to ``per_class`` training images of each class of an official dataset, copied to ``dest/<class>/``;
    returns ``image,file,diagnosis`` for them."""
    table = read_split(layout, root, "train")
    rows = []
    for k, cls in enumerate(table.layout.classes):
        for image_id in [i for i, y in zip(table.ids, table.labels) if y == k][:per_class]:
            (dest / cls).mkdir(parents=True, exist_ok=True)
            (dest / cls / f"{image_id}.jpg").write_bytes(table.images.read_bytes(image_id))
            rows.append({"image": image_id, "file": f"{cls}/{image_id}.jpg", "diagnosis": cls})
    return pd.DataFrame(rows)


@pytest.fixture
def folder(synthetic_root, tmp_path) -> tuple[Path, pd.DataFrame]:
    root = tmp_path / "mine"
    return root, relaid(synthetic_root("isic2018"), "isic2018", root, per_class=4)


def dataset(layout: str, root: Path, **options) -> dict:
    return {"layout": layout, "root": str(root), "image_column": "image", **options}


def test_folder_classes_are_the_sorted_folder_names_or_the_given_order(folder):
    root, listed = folder
    layout = layout_of(dataset("folder", root))
    assert layout.classes == tuple(sorted(listed["diagnosis"].unique()))
    table = read_split(layout, root, "train")
    assert sorted(table.ids) == sorted(listed["image"]) and table.ids == sorted(table.ids)
    expected = dict(zip(listed["image"], listed["diagnosis"]))
    assert [layout.classes[y] for y in table.labels] == [expected[i] for i in table.ids]
    order = ["VASC", "NV", "MEL", "DF", "BKL", "BCC", "AKIEC", "SCC"]
    given = layout_of(dataset("folder", root, classes=order))
    assert given.classes == tuple(order)
    assert read_split(given, root, "train").class_counts()["SCC"] == 0  # a class without a folder: absent


@pytest.mark.parametrize("change, message", [
    (lambda root: shutil.rmtree(root / "NV") or [shutil.rmtree(p) for p in root.iterdir() if p.name != "MEL"],
     "holds 1 class folders (MEL); a classifier needs two or more"),
    (lambda root: shutil.copy(next((root / "MEL").iterdir()), root / "NV"), "holds 2 images for id"),
], ids=["one class", "one name in two classes"])
def test_folder_problems_are_one_clear_error(folder, change, message):
    root, _ = folder
    change(root)
    with pytest.raises(LesionError, match=re.escape(message)):
        read_split(layout_of(dataset("folder", root)), root, "train")


def test_folder_outside_the_given_classes_is_refused(folder):
    root, _ = folder
    with pytest.raises(LesionError, match="class folder 'VASC' is not one of dataset.classes"):
        layout_of(dataset("folder", root, classes=["MEL", "NV", "BCC", "AKIEC", "BKL", "DF"]))


def write_csv(root: Path, frame: pd.DataFrame, name: str = "labels.csv", text: str | None = None) -> str:
    (root / name).write_text(text if text is not None else frame.to_csv(index=False))
    return name


def test_csv_label_column_with_and_without_extensions(folder):
    root, listed = folder
    frame = listed.assign(image=[f if k % 2 else Path(f).stem for k, f in enumerate(listed["file"])])
    layout = layout_of(dataset("csv", root, csv=write_csv(root, frame), label_column="diagnosis"))
    table = read_split(layout, root, "train")
    assert table.ids == listed["image"].tolist()
    assert [layout.classes[y] for y in table.labels] == listed["diagnosis"].tolist()


def test_csv_one_hot_columns_from_a_spreadsheet(folder):
    root, listed = folder
    classes = sorted(listed["diagnosis"].unique())
    onehot = pd.get_dummies(listed["diagnosis"]).astype(int)[classes]
    frame = pd.concat([listed[["image"]], onehot], axis=1)
    # What a spreadsheet saves: a byte-order mark, CRLF, spaces around cells, an empty row, 1.0 for 1.
    lines = [" image , " + " , ".join(classes)] + [
        " , ".join([row.image, *(f"{v:.1f}" for v in row[1:])]) for row in frame.itertuples(index=False)]
    text = "\ufeff" + "\r\n".join(lines[:3] + [",," * 3] + lines[3:]) + "\r\n"
    name = write_csv(root, frame, text=text)
    layout = layout_of(dataset("csv", root, csv=name, label_columns=classes))
    table = read_split(layout, root, "train")
    assert table.ids == listed["image"].tolist()
    assert [layout.classes[y] for y in table.labels] == listed["diagnosis"].tolist()


@pytest.mark.parametrize("edit, options, message", [
    (lambda f: f.assign(diagnosis=[""] + f["diagnosis"].tolist()[1:]), {}, "row 2 .*column diagnosis: empty cell"),
    (lambda f: f, {"classes": ["MEL", "NV"]}, "label value 'AKIEC' is not one of dataset.classes"),
    (lambda f: pd.concat([f, f.iloc[[0]].assign(image=f["image"][0] + ".png")]), {}, "one image id"),
    (lambda f: pd.concat([f, f.iloc[[0]].assign(image="ISIC_9999999")]), {}, "no image for id ISIC_9999999"),
    (lambda f: f.rename(columns={"diagnosis": "dx"}), {}, "has no column diagnosis"),
    (lambda f: f, {"label_columns": ["MEL", "NV"]}, "give either label_column"),
], ids=["empty label", "unknown class", "two files one id", "missing image", "missing column", "both label kinds"])
def test_messy_csv_is_one_clear_error(folder, edit, options, message):
    root, listed = folder
    frame = edit(listed[["image", "diagnosis"]].copy())
    settings = {"csv": write_csv(root, frame), "label_column": "diagnosis", **options}
    with pytest.raises(LesionError, match=message):
        read_split(layout_of(dataset("csv", root, **settings)), root, "train")


def test_csv_group_column_keeps_groups_on_one_side(folder):
    root, listed = folder
    frame = listed.assign(patient=[f"P{k // 3}" for k in range(len(listed))])
    options = {"csv": write_csv(root, frame), "label_column": "diagnosis", "group_column": "patient"}
    for fraction in (0.15, 0.5):  # a hold-out of the share asked for, however few images each class has
        module = IsicDataModule("csv", str(root), image_size=32, batch_size=4, num_workers=0, val_fraction=fraction,
                                **options)
        module.setup("fit")
        groups = dict(zip(module.train_set.table.ids, read_groups(module.layout, root, module.train_set.table.ids)))
        assert module.split["grouped_by"] == "lesion"
        assert not {groups[i] for i in module.train_set.ids} & {groups[i] for i in module.val_set.ids}
        assert abs(len(module.val_set) - fraction * len(frame)) <= 3


def uda1_relaid(uda1: Path, dest: Path) -> pd.DataFrame:
    """40 real UDA-1 training images (nevus and melanoma) re-laid as class folders, with a CSV of them."""
    table = read_split("isic2017", uda1, "train")
    rows = []
    for k, cls in ((0, "NV"), (2, "MEL")):
        for image_id in [i for i, y in zip(table.ids, table.labels) if y == k][:20]:
            (dest / cls).mkdir(parents=True, exist_ok=True)
            (dest / cls / f"{image_id}.jpg").write_bytes(table.images.read_bytes(image_id))
            rows.append({"image": f"{cls}/{image_id}.jpg", "diagnosis": cls})
    frame = pd.DataFrame(rows)
    frame.to_csv(dest / "labels.csv", index=False)
    return frame


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["folder", "csv"])
def test_real_images_train_and_evaluate_as_your_own_data(uda1, run_cli, tmp_path, kind):
    root = tmp_path / "uda1-relaid"
    listed = uda1_relaid(uda1, root)
    options = [f"dataset.root={root}"] + (["dataset.csv=labels.csv", "dataset.label_column=diagnosis"] if kind == "csv" else [])
    run_dir = tmp_path / "run"
    run_cli("train.py", f"dataset={kind}", *options, *SMALL, f"hydra.run.dir={run_dir}")
    trained = json.loads((run_dir / "test_metrics.json").read_text())
    assert trained["classes"] == ["MEL", "NV"]
    out = tmp_path / "eval"
    run_cli("evaluate.py", f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}", f"out={out}", "gradcam.n=1", "num_workers=0",
            "bootstrap=10")
    evaluated = json.loads((out / "metrics.json").read_text())
    assert evaluated["confusion"] == trained["confusion"]
    predictions = pd.read_csv(out / "predictions.csv")
    assert set(predictions["image"]) <= {Path(n).stem for n in listed["image"]}
    assert np.allclose(predictions[["MEL", "NV"]].sum(axis=1), 1, atol=1e-4)
