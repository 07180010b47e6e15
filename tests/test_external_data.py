"""External training data (dataset.extra): classes mapped by name, shared images and validation/test lesions
removed, counts per source; validation and test stay the primary dataset's."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from lesion.data.datamodule import IsicDataModule
from lesion.data.external import canonical_id, class_mapping
from lesion.data.layouts import LAYOUTS
from lesion.data.readers import read_split
from lesion.data.synthetic import write_synthetic

ISIC2018, ISIC2019 = LAYOUTS["isic2018"], LAYOUTS["isic2019"]
TINY = ["trainer=cpu", "model.backbone=resnet18", "model.weights=none", "dataset.image_size=32",
        "dataset.batch_size=4", "dataset.num_workers=0"]


def test_classes_map_by_name_and_alias():
    mapping = class_mapping(ISIC2019.classes, ISIC2018.classes)
    named = {ISIC2019.classes[k]: None if v is None else ISIC2018.classes[v] for k, v in mapping.items()}
    assert named == {"MEL": "MEL", "NV": "NV", "BCC": "BCC", "AK": "AKIEC", "BKL": "BKL", "DF": "DF",
                     "VASC": "VASC", "SCC": None, "UNK": None}
    assert class_mapping(LAYOUTS["isic2020"].classes, ISIC2019.classes) == {0: None, 1: ISIC2019.classes.index("MEL")}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Synthetic ISIC 2018 (primary) and ISIC 2019 (extra), whose ids overlap as the real archives' do, with one
    ISIC 2019 image planted on the lesion of an ISIC 2018 validation image."""
    base = tmp_path_factory.mktemp("external")
    primary = write_synthetic("isic2018", base / "isic2018", n=60, seed=0)
    extra = write_synthetic("isic2019", base / "isic2019", n=150, seed=1)
    meta = pd.read_csv(extra / "ISIC_2019_Training_Metadata.csv", dtype=str, keep_default_na=False)
    val_id = read_split("isic2018", primary, "val").ids[0]
    row = meta.index[meta["image"].map(canonical_id) == val_id][0]
    every = {i for s in ("train", "val", "test") for i in read_split("isic2018", primary, s).ids}
    planted = meta.index[~meta["image"].map(canonical_id).isin(every)][0]
    meta.loc[planted, "lesion_id"] = meta.loc[row, "lesion_id"]
    meta.to_csv(extra / "ISIC_2019_Training_Metadata.csv", index=False)
    return primary, extra, meta.loc[planted, "image"]


def setup(primary, extra=()):
    data = IsicDataModule("isic2018", str(primary), image_size=32, num_workers=0, extra=list(extra))
    data.setup("fit")
    return data


def test_added_images_share_no_image_and_no_lesion_with_validation_or_test(sources):
    primary, extra, planted = sources
    alone = setup(primary)
    data = setup(primary, [{"layout": "isic2019", "root": str(extra)}])
    assert data.split == alone.split  # validation and test: the same images, by digest
    assert data.val_set.ids == alone.val_set.ids and data.test_set.ids == alone.test_set.ids
    n = len(alone.train_set.table)
    added_rows = data.train_set.indices[data.train_set.indices >= n]
    added = [data.train_set.table.ids[r] for r in added_rows]
    assert added and data.train_set.ids[:len(alone.train_set)] == alone.train_set.ids

    primary_ids = {canonical_id(i) for s in ("train", "val", "test") for i in read_split("isic2018", primary, s).ids}
    assert not {canonical_id(i) for i in added} & primary_ids
    extra_table = read_split("isic2019", extra, "train")
    suffixed = [i for i in extra_table.ids if i.endswith("_downsampled") and canonical_id(i) in primary_ids]
    assert suffixed and not set(suffixed) & set(added)  # the same image under ISIC 2019's suffixed id

    lesion = pd.read_csv(extra / "ISIC_2019_Training_Metadata.csv", dtype=str).set_index("image")["lesion_id"]
    held = {lesion[i] for i in lesion.index if canonical_id(i) in {*data.val_set.ids, *data.test_set.ids}}
    assert planted not in added and not {lesion[i] for i in added} & held

    report = data.sources["isic2019"]
    assert report["dropped_validation_or_test_lesion"] == 1
    labels = dict(zip(extra_table.ids, extra_table.labels))
    scc = sum(ISIC2019.classes[y] == "SCC" for y in extra_table.labels)
    assert report["dropped_no_counterpart"] == {"SCC": scc}
    assert sum(report["added"].values()) == len(added)
    assert report["dropped_same_image"] + len(added) + scc + 1 == len(extra_table)
    # AK images are AKIEC in the training set; the other labels keep their names.
    for row, image_id in zip(added_rows, added):
        assert ISIC2018.classes[data.train_set.table.labels[row]] == {"AK": "AKIEC"}.get(
            ISIC2019.classes[labels[image_id]], ISIC2019.classes[labels[image_id]])
    assert data.sources["isic2018"]["train"] == alone.class_counts(alone.train_set)


def test_training_with_external_data_reports_sources_and_evaluates_without_them(sources, run_cli, tmp_path):
    primary, extra, _ = sources
    copy = shutil.copytree(extra, tmp_path / "isic2019")
    run_dir = tmp_path / "run"
    run_cli("train.py", "dataset=isic2018", f"dataset.root={primary}", f"dataset.extra=[{{layout:isic2019,root:{copy}}}]",
            "balance=class_weight", "trainer.max_epochs=1", *TINY, f"hydra.run.dir={run_dir}")
    report = json.loads((run_dir / "balance.json").read_text())
    assert set(report["sources"]) == {"isic2018", "isic2019"}
    assert sum(report["sources"]["isic2019"]["added"].values()) > 0
    trained = json.loads((run_dir / "test_metrics.json").read_text())
    shutil.rmtree(copy)  # evaluation reads validation and test only: the extra archive is not needed
    out = tmp_path / "evaluation"
    run_cli("evaluate.py", f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}", f"out={out}", "gradcam.n=0",
            "num_workers=0", "bootstrap=10")
    assert json.loads((out / "metrics.json").read_text())["confusion"] == trained["confusion"]


@pytest.mark.parametrize(("extra", "more", "message"), [
    ("[{layout:isic2019,root:/no/such/folder}]", [], "dataset.extra[0].root: /no/such/folder is not a folder"),
    ("[{layout:isic2030,root:/tmp}]", [], "dataset.extra[0].layout: 'isic2030' is not one of"),
    ("isic2019", [], "dataset.extra: is 'isic2019', not a list"),
    ("[{layout:isic2019,root:/tmp}]", ["dataset=synthetic2019", "model.metadata=true"],
     "model.metadata: is not available with dataset.extra"),
])
def test_bad_extra_is_refused_before_any_work(run_cli, tmp_path, extra, more, message):
    result = run_cli("train.py", f"dataset.extra={extra}", *more, f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"lesion: error: {message}"), result.stderr[-800:]
    assert not (tmp_path / "run").exists()
