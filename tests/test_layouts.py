"""ISIC 2019, SIIM-ISIC 2020 and HAM10000: their official files (synthetic copies), read from zips and
folders, split by lesion or patient, trained and evaluated end to end."""

from __future__ import annotations

import json
import logging
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lesion.data.datamodule import IsicDataModule
from lesion.data.layouts import LAYOUTS
from lesion.data.readers import read_groups, read_split
from lesion.data.synthetic import split_counts, write_synthetic
from lesion.errors import LesionError
from lesion.options import check_train

REPO = Path(__file__).resolve().parents[1]
NEW = ("isic2019", "isic2020", "ham10000")
N = 90

# The official names (ISIC challenge data pages; HAM10000's Dataverse release), typed out here so a
# misspelt name in lesion.data.layouts fails.
OFFICIAL_FILES = {
    "isic2019": {"ISIC_2019_Training_Input.zip", "ISIC_2019_Training_GroundTruth.csv", "ISIC_2019_Training_Metadata.csv",
                 "ISIC_2019_Test_Input.zip", "ISIC_2019_Test_GroundTruth.csv", "ISIC_2019_Test_Metadata.csv"},
    "isic2020": {"ISIC_2020_Training_JPEG.zip", "ISIC_2020_Training_GroundTruth.csv",
                 "ISIC_2020_Training_GroundTruth_v2.csv", "ISIC_2020_Training_Duplicates.csv"},
    "ham10000": {"HAM10000_images_part_1.zip", "HAM10000_images_part_2.zip", "HAM10000_metadata.csv"},
}
HEADERS = {
    "ISIC_2019_Training_GroundTruth.csv": "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK",
    "ISIC_2019_Training_Metadata.csv": "image,age_approx,anatom_site_general,lesion_id,sex",
    "ISIC_2019_Test_Metadata.csv": "image,age_approx,anatom_site_general,sex",
    "ISIC_2020_Training_GroundTruth_v2.csv": "image_name,patient_id,lesion_id,sex,age_approx,"
                                             "anatom_site_general_challenge,diagnosis,benign_malignant,target",
    "ISIC_2020_Training_Duplicates.csv": "image_name_1,image_name_2",
    "HAM10000_metadata.csv": "lesion_id,image_id,dx,dx_type,age,sex,localization",
}


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Path]:
    return {name: write_synthetic(name, tmp_path_factory.mktemp(name) / "data", n=N, seed=1) for name in NEW}


def extracted(root: Path, dest: Path) -> Path:
    """A copy of ``root`` with each zip extracted into a folder of the zip's name (as archive tools do)."""
    shutil.copytree(root, dest)
    for archive in dest.glob("*.zip"):
        with zipfile.ZipFile(archive) as z:
            z.extractall(dest / archive.stem)
        archive.unlink()
    return dest


@pytest.mark.parametrize("layout", NEW)
def test_official_file_names_and_headers(written, layout):
    root = written[layout]
    assert {p.name for p in root.iterdir() if not p.name.startswith(".")} - {"synthetic_lesions.csv"} == OFFICIAL_FILES[layout]
    for name, header in HEADERS.items():
        if (root / name).is_file():
            assert (root / name).read_text().splitlines()[0] == header


@pytest.mark.parametrize("layout", NEW)
@pytest.mark.parametrize("packing", ["zip", "folder"])
def test_every_split_reads_from_zip_and_folder(written, layout, packing, tmp_path):
    root = written[layout] if packing == "zip" else extracted(written[layout], tmp_path / "folders")
    spec = LAYOUTS[layout]
    dropped = len(pd.read_csv(root / spec.duplicates.file)) if spec.duplicates else 0
    for split, counts in split_counts(layout, N).items():
        table = read_split(layout, root, split)
        assert len(table) == sum(counts.values()) - (dropped if split == "train" else 0)
        assert set(table.images.members) == set(table.ids)
        assert table.images.read(table.ids[-1]).mode == "RGB"
    assert read_split(layout, root, "val") is None  # no official validation split: a hold-out is made


def test_isic2019_downsampled_ids_an_absent_unk_and_a_test_split_without_labels(written, tmp_path, caplog):
    table = read_split("isic2019", written["isic2019"], "train")
    shrunk = [i for i in table.ids if i.endswith("_downsampled")]
    assert 0 < len(shrunk) < len(table)
    assert table.images.read(shrunk[0]).mode == "RGB"
    assert table.class_counts()["UNK"] == 0
    root = shutil.copytree(written["isic2019"], tmp_path / "no-test-labels")
    (root / "ISIC_2019_Test_GroundTruth.csv").unlink()
    with caplog.at_level(logging.WARNING, logger="lesion.data.readers"):
        assert read_split("isic2019", root, "test") is None
    assert "no labelled test split" in caplog.text


def datamodule(layout: str, root: Path, **options) -> IsicDataModule:
    module = IsicDataModule(layout, str(root), image_size=32, batch_size=4, num_workers=0, **options)
    module.setup("fit")
    return module


@pytest.mark.parametrize("layout, kind", [("isic2019", "lesion"), ("isic2020", "patient"), ("ham10000", "lesion")])
def test_hold_out_keeps_every_group_on_one_side(written, layout, kind):
    module = datamodule(layout, written[layout])
    assert module.split["grouped_by"] == kind and module.split["validation"] == "holdout"
    groups = dict(zip(module.train_set.table.ids, read_groups(layout, written[layout], module.train_set.table.ids)))
    assert not {groups[i] for i in module.train_set.ids} & {groups[i] for i in module.val_set.ids}
    sizes = pd.Series(list(groups.values())).value_counts()
    assert sizes.max() > 1  # several images per group: the grouping matters


@pytest.mark.parametrize("layout", ["isic2020", "ham10000"])
def test_without_a_test_split_a_grouped_test_hold_out_is_made_first(written, layout):
    module = datamodule(layout, written[layout], test_fraction=0.2)
    assert module.split["test"] == "holdout" and module.split["test_images"] == len(module.test_set)
    parts = [set(module.train_set.ids), set(module.val_set.ids), set(module.test_set.ids)]
    assert all(parts) and sum(map(len, parts)) == len(set().union(*parts)) == len(module.train_set.table)
    groups = dict(zip(module.train_set.table.ids, read_groups(layout, written[layout], module.train_set.table.ids)))
    held_groups = [{groups[i] for i in part} for part in parts]
    assert not (held_groups[0] & held_groups[2]) and not (held_groups[1] & held_groups[2])
    again = datamodule(layout, written[layout], test_fraction=0.2)
    assert again.split == module.split  # seeded: evaluation rebuilds the same hold-out


def test_isic2020_duplicates_are_dropped_and_counted(written, caplog):
    root = written["isic2020"]
    pairs = pd.read_csv(root / "ISIC_2020_Training_Duplicates.csv")
    assert len(pairs) > 0
    with caplog.at_level(logging.WARNING, logger="lesion.data.readers"):
        table = read_split("isic2020", root, "train")
    assert f"{len(pairs)} duplicate images dropped" in caplog.text
    assert not set(pairs["image_name_2"]) & set(table.ids) and set(pairs["image_name_1"]) <= set(table.ids)
    truth = pd.read_csv(root / "ISIC_2020_Training_GroundTruth_v2.csv")
    assert len(table) == len(truth) - len(pairs)
    assert table.class_counts()["melanoma"] == truth["target"].sum()


def test_isic2020_prefers_the_v2_ground_truth(written, tmp_path):
    root = shutil.copytree(written["isic2020"], tmp_path / "copy")
    (root / "ISIC_2020_Training_GroundTruth.csv").write_text("not,the,file\n")
    assert read_split("isic2020", root, "train").csv_path.name == "ISIC_2020_Training_GroundTruth_v2.csv"


def test_ham10000_image_in_both_parts_is_refused(written, tmp_path):
    root = shutil.copytree(written["ham10000"], tmp_path / "copy")
    with zipfile.ZipFile(root / "HAM10000_images_part_1.zip") as part:
        name = next(n for n in part.namelist() if n.endswith(".jpg"))
        data = part.read(name)
    with zipfile.ZipFile(root / "HAM10000_images_part_2.zip", "a") as part:
        part.writestr(f"HAM10000_images_part_2/{Path(name).name}", data)
    with pytest.raises(LesionError, match=f"holds 2 images for id {Path(name).stem}"):
        read_split("ham10000", root, "train")


def test_ham10000_bad_diagnosis_names_row_and_column(written, tmp_path):
    root = shutil.copytree(written["ham10000"], tmp_path / "copy")
    metadata = root / "HAM10000_metadata.csv"
    lines = metadata.read_text().splitlines()
    lines[3] = lines[3].replace(lines[3].split(",")[2], "melanoma", 1)
    metadata.write_text("\n".join(lines) + "\n")
    with pytest.raises(LesionError, match="row 4 .*column dx: 'melanoma' is not one of mel, nv"):
        read_split("ham10000", root, "train")


def test_hierarchical_decoding_is_refused_where_classes_have_no_taxonomy():
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["dataset=isic2020", "model.hierarchical=true"])
    cfg.run_dir = "run"
    with pytest.raises(LesionError, match="model.hierarchical: decodes the lesion taxonomy, and the isic2020 classes"):
        check_train(OmegaConf.to_container(cfg, resolve=True))


@pytest.mark.slow
def test_each_layout_trains_and_evaluates_end_to_end(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    run_cli("train.py", "-m", "dataset=synthetic2019,synthetic2020,synthetic_ham10000", "dataset.synthetic_n=60",
            "trainer=cpu", "model.backbone=resnet18", "model.weights=none", "dataset.image_size=32",
            "dataset.batch_size=4", "dataset.num_workers=0", "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}")
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 3
    for job in jobs:
        trained = json.loads((job / "test_metrics.json").read_text())
        out = job / "evaluation"
        run_cli("evaluate.py", f"ckpt={job / 'checkpoints' / 'best.ckpt'}", f"out={out}", "gradcam.n=1",
                "num_workers=0", "bootstrap=10")
        evaluated = json.loads((out / "metrics.json").read_text())
        assert evaluated["classes"] == trained["classes"] and evaluated["confusion"] == trained["confusion"]
        predictions = pd.read_csv(out / "predictions.csv")
        assert np.allclose(predictions[trained["classes"]].sum(axis=1), 1, atol=1e-4)
        assert list((out / "gradcam").glob("*_gradcam_overlay.png"))
    # A test hold-out other than the one training made (here: without one of its images) is refused.
    job = next(j for j in jobs if "synthetic2020" in (j / ".hydra" / "overrides.yaml").read_text())
    best = job / "checkpoints" / "best.ckpt"
    stored = torch.load(best, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert stored["split"]["test"] == "holdout"
    tested = pd.read_csv(job / "evaluation" / "predictions.csv")["image_name"].iloc[0]  # ISIC 2020's id column
    copy = shutil.copytree(stored["dataset"]["root"], tmp_path / "fewer")
    for name in ("ISIC_2020_Training_GroundTruth_v2.csv", "ISIC_2020_Training_GroundTruth.csv"):
        lines = (copy / name).read_text().splitlines()
        (copy / name).write_text("\n".join(line for line in lines if not line.startswith(f"{tested},")) + "\n")
    result = run_cli("evaluate.py", f"ckpt={best}", f"dataset.root={copy}", f"out={tmp_path / 'refused'}",
                     "num_workers=0", check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("lesion: error: split: the test hold-out made here")
    assert not (tmp_path / "refused").exists()
