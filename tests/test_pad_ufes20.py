"""PAD-UFES-20: its official files (a synthetic copy: PNG images in images/imgs_part_1…3 + metadata.csv), read
flat, in parts and zipped, refused when they are not this layout, split by patient, trained on and evaluated end
to end with a subgroup report by skin tone."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from PIL import Image

from lesion.data.datamodule import IsicDataModule
from lesion.data.layouts import HAM10000_SITES, LAYOUTS
from lesion.data.metadata import read_metadata
from lesion.data.readers import read_groups, read_split
from lesion.data.synthetic import split_counts, write_synthetic
from lesion.errors import LesionError

SPEC = LAYOUTS["pad_ufes20"]
N = 90
# metadata.csv's header as PAD-UFES-20 publishes it (26 columns), typed out so that a misspelt or misplaced
# column in lesion.data.layouts fails.
HEADER = ("patient_id,lesion_id,smoke,drink,background_father,background_mother,age,pesticide,gender,"
          "skin_cancer_history,cancer_history,has_piped_water,has_sewage_system,fitspatrick,region,diameter_1,"
          "diameter_2,diagnostic,itch,grew,hurt,changed,bleed,elevation,img_id,biopsed")
PARTS = ("imgs_part_1", "imgs_part_2", "imgs_part_3")
TINY = ["trainer=cpu", "model.backbone=resnet18", "model.weights=none", "dataset.image_size=32",
        "dataset.batch_size=8", "dataset.num_workers=0", "trainer.max_epochs=1"]


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    return write_synthetic("pad_ufes20", tmp_path_factory.mktemp("pad") / "data", n=N, seed=2)


def published(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)


def flat(root: Path, dest: Path) -> Path:
    """A copy of ``root`` with every image directly in images/ (no part folders)."""
    shutil.copytree(root, dest)
    for part in PARTS:
        for image in (dest / "images" / part).iterdir():
            image.rename(dest / "images" / image.name)
        (dest / "images" / part).rmdir()
    return dest


def zipped(root: Path, dest: Path) -> Path:
    """A copy of ``root`` with images/ (its parts inside) as images.zip."""
    shutil.copytree(root, dest)
    shutil.make_archive(str(dest / "images"), "zip", dest, "images")
    shutil.rmtree(dest / "images")
    return dest


def test_the_official_files(written):
    assert (written / "metadata.csv").read_text().splitlines()[0] == HEADER == ",".join(SPEC.columns)
    images = sorted((written / "images").rglob("*.png"))
    assert {p.parent.name for p in images} == set(PARTS) and all(p.parent.parent.name == "images" for p in images)
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in images)
    frame = published(written)
    assert sorted(frame["img_id"]) == sorted(p.name for p in images)
    # PAT_<patient>_<lesion>_<n>.png, its patient and lesion those of its row.
    named = frame["img_id"].str.extract(r"^(PAT_\d+)_(\d+)_\d+\.png$")
    assert named.notna().all().all()
    assert (named[0] == frame["patient_id"]).all() and (named[1] == frame["lesion_id"]).all()
    assert set(frame["diagnostic"]) == set(SPEC.classes) == {"ACK", "BCC", "MEL", "NEV", "SCC", "SEK"}
    assert Counter(frame["diagnostic"]) == split_counts("pad_ufes20", N)["train"]


def test_several_images_per_patient_and_a_lesion_has_one_diagnosis(written):
    frame = published(written)
    per_patient = frame.groupby("patient_id").size()
    assert per_patient.max() >= 3 and (per_patient > 1).sum() >= len(per_patient) / 4
    assert (frame.groupby("lesion_id")["diagnostic"].nunique() == 1).all()
    assert (frame.groupby("lesion_id")["patient_id"].nunique() == 1).all()
    # A patient's own columns are one value per patient; some patients have no skin type recorded.
    for column in ("age", "gender", "fitspatrick", "smoke", "background_father"):
        assert (frame.groupby("patient_id")[column].nunique() == 1).all(), column
    missing = frame["fitspatrick"] == ""
    assert 0 < missing.mean() < 0.7 and set(frame["fitspatrick"][~missing]) <= {f"{k}.0" for k in range(1, 7)}


@pytest.mark.parametrize("form", ["parts", "flat", "zip"])
def test_the_layout_loads_from_its_files(written, tmp_path, form):
    root = {"parts": lambda: written, "flat": lambda: flat(written, tmp_path / "flat"),
            "zip": lambda: zipped(written, tmp_path / "zip")}[form]()
    table = read_split("pad_ufes20", root, "train")
    frame = published(written)
    assert table.ids == [name.removesuffix(".png") for name in frame["img_id"]]
    assert [SPEC.classes[k] for k in table.labels] == frame["diagnostic"].tolist()
    by_name = {p.name: p for p in (written / "images").rglob("*.png")}
    for k in (0, len(table) // 2, len(table) - 1):  # the bytes of the written file, whichever form
        assert table.images.read_bytes(table.ids[k]) == by_name[f"{table.ids[k]}.png"].read_bytes()
    assert table.images.read(table.ids[0]).mode == "RGB"
    assert read_split("pad_ufes20", root, "val") is None and read_split("pad_ufes20", root, "test") is None
    groups = read_groups("pad_ufes20", root, table.ids)
    assert groups.tolist() == frame["patient_id"].tolist()


def test_metadata_age_sex_site_and_skin_tone(written):
    table = read_split("pad_ufes20", written, "train")
    frame = published(written).set_index(published(written)["img_id"].str.removesuffix(".png")).loc[table.ids]
    meta = read_metadata("pad_ufes20", written, "train", table.ids)
    assert list(meta.columns) == ["age", "sex", "site", "skin_tone"]
    assert meta["age"].tolist() == frame["age"].astype(float).tolist()
    assert meta["sex"].tolist() == [{"FEMALE": "female", "MALE": "male"}.get(g) for g in frame["gender"]]
    # Each region a word of HAM10000's vocabulary: ARM/FOREARM upper extremity, THIGH lower extremity, NOSE/LIP face.
    words = {"ARM": "upper extremity", "FOREARM": "upper extremity", "THIGH": "lower extremity", "NOSE": "face",
             "LIP": "face"}
    assert meta["site"].tolist() == [words.get(r, r.lower()) for r in frame["region"]]
    assert set(meta["site"]) <= set(HAM10000_SITES)
    roman = {"1.0": "I", "2.0": "II", "3.0": "III", "4.0": "IV", "5.0": "V", "6.0": "VI", "": None}
    assert meta["skin_tone"].tolist() == [roman[v] for v in frame["fitspatrick"]]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(1, 8), min_size=4, max_size=16), data=st.data())
def test_no_patient_crosses_train_val_and_test(tmp_path_factory, sizes, data):
    """Generated patients (any number of images, of any diagnoses): every split made here keeps each patient's
    images on one side."""
    root = tmp_path_factory.mktemp("patients")
    n = sum(sizes)
    patients = [f"PAT_{p}" for p, size in enumerate(sizes) for _ in range(size)]
    labels = data.draw(st.lists(st.sampled_from(SPEC.classes), min_size=n, max_size=n))
    ids = [f"{patient}_{k}_{k}" for k, patient in enumerate(patients)]
    frame = pd.DataFrame({c: [""] * n for c in SPEC.columns})
    frame["img_id"], frame["patient_id"], frame["diagnostic"] = [f"{i}.png" for i in ids], patients, labels
    frame.to_csv(root / "metadata.csv", index=False)
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    for k, image_id in enumerate(ids):
        folder = root / "images" / PARTS[k % 3]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{image_id}.png").write_bytes(png.getvalue())
    module = IsicDataModule("pad_ufes20", str(root), image_size=32, num_workers=0, test_fraction=0.2,
                            val_fraction=0.2, cache=False, seed=data.draw(st.integers(0, 3)))
    try:
        module.setup("fit")
    except LesionError as error:  # the test hold-out left one patient, none to validate on: refused, not mixed
        assert "images are of one lesion or patient, so none can be held out" in str(error)
        reject()
    patient_of = dict(zip(ids, patients))
    sides = [{patient_of[i] for i in part.ids} for part in (module.train_set, module.val_set, module.test_set)]
    assert all(sides) and sum(map(len, sides)) == len(set(patients))  # each patient on exactly one side
    assert sorted(module.train_set.ids + module.val_set.ids + module.test_set.ids) == sorted(ids)
    assert module.split["grouped_by"] == "patient"


def damaged(root: Path, dest: Path, how: str) -> str:
    """A copy of ``root`` that is not this layout; returns what the error line must say."""
    shutil.copytree(root, dest)
    frame = published(dest)
    if how == "missing_column":
        frame.drop(columns="smoke").to_csv(dest / "metadata.csv", index=False)
        return "metadata.csv: missing column(s) smoke of the 26 that pad_ufes20 publishes — use the official"
    victim = frame["img_id"].iloc[3]
    next((dest / "images").rglob(victim)).unlink()
    return f"no image for id {victim.removesuffix('.png')} listed in metadata.csv"


@pytest.mark.parametrize("how", ["missing_column", "missing_image"])
def test_a_folder_that_is_not_this_layout_is_one_error_line(run_cli, written, tmp_path, how):
    root = tmp_path / "copy"
    says = damaged(written, root, how)
    run_dir = tmp_path / "run"
    result = run_cli("train.py", "dataset=pad_ufes20", f"dataset.root={root}", *TINY, f"hydra.run.dir={run_dir}",
                     check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert [line for line in lines if line.startswith("lesion: error: ")] == lines[-1:], result.stderr[-3000:]
    assert says in lines[-1] and " — " in lines[-1], lines[-1]
    assert not run_dir.exists()


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_synthetic_copy_is_deterministic_per_seed(tmp_path):
    first, again, other = (tree_hashes(write_synthetic("pad_ufes20", tmp_path / name, n=30, seed=seed))
                           for name, seed in (("a", 7), ("b", 7), ("c", 8)))
    assert first == again and first["metadata.csv"] != other["metadata.csv"]


def test_the_classes_are_learnable_from_the_pixels(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    root = write_synthetic("pad_ufes20", tmp_path / "data", n=240, seed=0, image_size=(48, 36))
    table = read_split("pad_ufes20", root, "train")
    features = []
    for image_id in table.ids:
        image = np.asarray(table.images.read(image_id), dtype=np.float32) / 255
        centre = image[9:27, 12:36].reshape(-1, 3)
        features.append(np.concatenate([centre.mean(0), centre.std(0)]))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))
    predicted = cross_val_predict(model, np.array(features), table.labels, cv=3)
    assert balanced_accuracy_score(table.labels, predicted) > 0.6  # chance 1/6


@pytest.mark.slow
def test_trains_and_evaluates_with_skin_tone_subgroups_end_to_end(run_cli, tmp_path, lesion_cache):
    run_dir = tmp_path / "run"
    run_cli("train.py", "dataset=synthetic_pad_ufes20", "dataset.synthetic_n=120", "model.metadata=true", *TINY,
            f"hydra.run.dir={run_dir}")
    tested = json.loads((run_dir / "test_metrics.json").read_text())
    assert tested["classes"] == list(SPEC.classes)
    out = tmp_path / "evaluated"
    run_cli("evaluate.py", f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}", f"out={out}", "num_workers=0",
            "bootstrap=10", "gradcam.n=0", "subgroup_min_images=3")
    assert json.loads((out / "metrics.json").read_text())["confusion"] == tested["confusion"]
    report = json.loads((out / "subgroups.json").read_text())
    assert "skin_tone" in report["attributes"]
    # The groups are the test images' skin types (missing its own group), counted as the metadata file says.
    predictions = pd.read_csv(out / "predictions.csv")
    root = next(lesion_cache.glob("synthetic-pad-ufes20-n120-s0"))
    assert predictions.columns[0] == "img_id"  # the layout's id column
    tones = read_metadata("pad_ufes20", root, "train", predictions["img_id"].tolist())["skin_tone"].fillna("missing")
    groups = report["attributes"]["skin_tone"]["groups"]
    assert {group: figures["images"] for group, figures in groups.items()} == dict(Counter(tones))
    assert "missing" in groups and set(groups) - {"missing"} <= {"I", "II", "III", "IV", "V", "VI"}
    assert "skin tone" in (out / "metrics.txt").read_text()


def test_eda_reports_skin_tone_per_class_and_split(run_cli, tmp_path, lesion_cache):
    out = tmp_path / "eda"
    run_cli("eda.py", "dataset=synthetic_pad_ufes20", "dataset.synthetic_n=40", "dataset.image_size=32", "workers=1",
            "samples.per_class=0", f"out={out}")
    report = (out / "report.md").read_text()
    text = report.split("## Skin tone\n", 1)[1].split("\n## ", 1)[0]
    by_class, by_split = [[[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()
                           if line.startswith("|") and not line.startswith("|---")]
                          for block in text.split("\n\n") if block.startswith("|")]
    assert by_class[0] == ["class", "images", "I", "II", "III", "IV", "V", "VI", "missing"]
    assert by_split[0] == ["split", *by_class[0][1:]]
    root = next(lesion_cache.glob("synthetic-pad-ufes20-n40-s0"))
    table = read_split("pad_ufes20", root, "train")
    tones = read_metadata("pad_ufes20", root, "train", table.ids)["skin_tone"].fillna("missing")
    labels = [SPEC.classes[k] for k in table.labels]
    expected = {c: Counter(t for t, y in zip(tones, labels) if y == c) for c in SPEC.classes}
    header = by_class[0]
    assert {row[0]: {h: int(v) for h, v in zip(header[2:], row[2:]) if int(v)} for row in by_class[1:]} == \
        {c: dict(counts) for c, counts in expected.items()}
    assert by_split[1] == ["train", str(len(table)), *(str(Counter(tones)[h]) for h in header[2:])]
