"""ISIC 2024 (SLICE-3D): its official files (a synthetic copy: HDF5 of JPEG bytes + CSVs), read from the HDF5
file and from the extracted folder, split by patient, trained on and predicted end to end."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from lesion.data import synthetic
from lesion.data.cache import SquareImages
from lesion.data.datamodule import IsicDataModule
from lesion.data.layouts import LAYOUTS
from lesion.data.metadata import read_metadata, read_metadata_csv
from lesion.data.readers import ImageArchive, read_split
from lesion.data.synthetic import split_counts, write_synthetic
from lesion.data.transforms import EvalPreset
from lesion.data.unlabelled import FolderImages
from lesion.errors import LesionError

SPEC = LAYOUTS["isic2024"]
N = 120
# The training CSV's header as the challenge publishes it (55 columns), typed out here so that a
# misspelt or misplaced column in lesion.data.layouts fails; the test CSV lacks the label and the last ten.
TRAIN_HEADER = (
    "isic_id,target,patient_id,age_approx,sex,anatom_site_general,clin_size_long_diam_mm,image_type,tbp_tile_type,"
    "tbp_lv_A,tbp_lv_Aext,tbp_lv_B,tbp_lv_Bext,tbp_lv_C,tbp_lv_Cext,tbp_lv_H,tbp_lv_Hext,tbp_lv_L,tbp_lv_Lext,"
    "tbp_lv_areaMM2,tbp_lv_area_perim_ratio,tbp_lv_color_std_mean,tbp_lv_deltaA,tbp_lv_deltaB,tbp_lv_deltaL,"
    "tbp_lv_deltaLB,tbp_lv_deltaLBnorm,tbp_lv_eccentricity,tbp_lv_location,tbp_lv_location_simple,"
    "tbp_lv_minorAxisMM,tbp_lv_nevi_confidence,tbp_lv_norm_border,tbp_lv_norm_color,tbp_lv_perimeterMM,"
    "tbp_lv_radial_color_std_max,tbp_lv_stdL,tbp_lv_stdLExt,tbp_lv_symm_2axis,tbp_lv_symm_2axis_angle,tbp_lv_x,"
    "tbp_lv_y,tbp_lv_z,attribution,copyright_license,lesion_id,iddx_full,iddx_1,iddx_2,iddx_3,iddx_4,iddx_5,"
    "mel_mitotic_index,mel_thick_mm,tbp_lv_dnn_lesion_confidence")
TRAINING_ONLY = {"target", "lesion_id", "iddx_full", "iddx_1", "iddx_2", "iddx_3", "iddx_4", "iddx_5",
                 "mel_mitotic_index", "mel_thick_mm", "tbp_lv_dnn_lesion_confidence"}
SMALL = ["trainer=cpu", "model.backbone=resnet18", "model.weights=none", "dataset.image_size=32",
         "dataset.batch_size=8", "dataset.num_workers=0", "trainer.max_epochs=1"]


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    return write_synthetic("isic2024", tmp_path_factory.mktemp("isic2024") / "data", n=N, seed=1)


def header(path: Path) -> str:
    return path.read_text().splitlines()[0]


def extracted(root: Path, dest: Path) -> Path:
    """A copy of ``root`` with train-image.hdf5 as the challenge's extracted folder, train-image/image/<id>.jpg."""
    shutil.copytree(root, dest)
    folder = dest / "train-image" / "image"
    folder.mkdir(parents=True)
    with h5py.File(dest / "train-image.hdf5") as archive:
        for image_id in archive:
            (folder / f"{image_id}.jpg").write_bytes(archive[image_id][()])
    (dest / "train-image.hdf5").unlink()
    return dest


def test_official_files_and_columns(written):
    assert {p.name for p in written.iterdir()} == {"train-image.hdf5", "train-metadata.csv", "test-image.hdf5",
                                                   "test-metadata.csv", synthetic.LESIONS_CSV, synthetic.MARKER}
    assert header(written / "train-metadata.csv") == TRAIN_HEADER
    test_header = [c for c in TRAIN_HEADER.split(",") if c not in TRAINING_ONLY]
    assert header(written / "test-metadata.csv") == ",".join(test_header)
    assert set(SPEC.training_only) == TRAINING_ONLY and ",".join(SPEC.columns) == TRAIN_HEADER


@pytest.mark.parametrize("split", ["train", "test"])
def test_one_dataset_of_jpeg_bytes_per_id(written, split):
    ids = pd.read_csv(written / f"{split}-metadata.csv")["isic_id"].tolist()
    with h5py.File(written / f"{split}-image.hdf5") as archive:
        assert sorted(archive) == sorted(ids)
        for image_id in ids:
            dataset = archive[image_id]
            assert dataset.shape == () and dataset.dtype.kind == "S"  # one scalar byte string, as the challenge's
            image = Image.open(io.BytesIO(dataset[()]))
            assert image.format == "JPEG" and image.mode == "RGB"
            assert image.size[0] == image.size[1] and 100 <= image.size[0] <= 150


def test_several_images_per_patient_one_age_and_sex_each(written):
    train, test = (pd.read_csv(written / f"{split}-metadata.csv", dtype=str) for split in ("train", "test"))
    per_patient = train.groupby("patient_id").size()
    assert per_patient.max() > 3 and (per_patient > 1).mean() > 0.5
    for column in ("age_approx", "sex"):
        assert (train.fillna("?").groupby("patient_id")[column].nunique() == 1).all()
    assert not set(train["patient_id"]) & set(test["patient_id"])  # the challenge's test patients are others


@settings(max_examples=25, deadline=None)
@given(n=st.integers(30, 2000), share=st.floats(0.002, 0.5))
def test_the_malignant_share_asked_for(n, share):
    counts = split_counts("isic2024", n, share)
    assert sum(counts["train"].values()) == n
    for split, minimum in (("train", 3), ("test", 1)):
        total, malignant = sum(counts[split].values()), counts[split]["malignant"]
        assert malignant >= minimum and abs(malignant - max(minimum, total * share)) < 1


def test_the_written_share_and_its_record(tmp_path):
    root = write_synthetic("isic2024", tmp_path / "data", n=200, seed=3, malignant_share=0.2)
    assert pd.read_csv(root / "train-metadata.csv")["target"].sum() == 40
    assert json.loads((root / synthetic.MARKER).read_text())["malignant_share"] == 0.2
    lesions = pd.read_csv(root / synthetic.LESIONS_CSV)
    tested = lesions[lesions["split"] == "test"]
    assert (tested["label"] == "malignant").sum() == split_counts("isic2024", 200, 0.2)["test"]["malignant"]


@pytest.mark.parametrize("layout", ["isic2018", "isic2019"])
def test_a_malignant_share_needs_a_two_class_layout(tmp_path, layout):
    with pytest.raises(LesionError, match="two-class layout"):
        write_synthetic(layout, tmp_path / "data", n=60, malignant_share=0.1)
    with pytest.raises(LesionError, match="not a share"):
        write_synthetic("isic2024", tmp_path / "data", n=60, malignant_share=1.0)
    assert list(tmp_path.iterdir()) == []


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    first, again, other = (write_synthetic("isic2024", tmp_path / name, n=30, seed=seed)
                           for name, seed in (("a", 5), ("b", 5), ("c", 6)))
    for name in ("train-image.hdf5", "test-image.hdf5", "train-metadata.csv"):
        assert (first / name).read_bytes() == (again / name).read_bytes()
        assert (first / name).read_bytes() != (other / name).read_bytes()


def test_reads_alike_from_hdf5_and_from_the_extracted_folder(written, tmp_path):
    folder_root = extracted(written, tmp_path / "folder")
    from_hdf5, from_folder = read_split("isic2024", written, "train"), read_split("isic2024", folder_root, "train")
    assert from_hdf5.images.path.name == "train-image.hdf5" and from_folder.images.path.name == "train-image"
    assert from_hdf5.ids == from_folder.ids and len(from_hdf5) == N
    assert np.array_equal(from_hdf5.labels, from_folder.labels)
    assert from_hdf5.class_counts() == split_counts("isic2024", N)["train"]
    assert all(from_hdf5.images.read_bytes(i) == from_folder.images.read_bytes(i) for i in from_hdf5.ids)
    assert np.array_equal(np.asarray(from_hdf5.images.read(from_hdf5.ids[0])),
                          np.asarray(from_folder.images.read(from_folder.ids[0])))


def test_the_test_split_is_unlabelled_and_a_patient_hold_out_tests(written, caplog):
    assert read_split("isic2024", written, "test") is None
    assert "test-metadata.csv has no label column" in caplog.text
    module = IsicDataModule("isic2024", str(written), image_size=32, batch_size=4, num_workers=0, test_fraction=0.15,
                            cache=False, metadata=True)
    module.setup("fit")
    assert module.split["test"] == "holdout" and module.split["grouped_by"] == "patient"
    assert module.train_set[0][1].shape == (module.metadata_encoding.width,)


class _Bytes(Dataset):
    """Each image's bytes, with whether this process opened the HDF5 handle that read them."""

    def __init__(self, archive: ImageArchive, ids: list[str]):
        self.archive, self.ids = archive, ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, bool]:
        data = self.archive.read_bytes(self.ids[item])
        return torch.frombuffer(bytearray(data), dtype=torch.uint8), self.archive._handle_pid == os.getpid()


def test_dataloader_workers_read_the_hdf5_bytes_of_the_main_process(written):
    table = read_split("isic2024", written, "train")
    ids = table.ids[:24]
    expected = [table.images.read_bytes(i) for i in ids]  # the main process holds an open handle when workers fork
    loader = DataLoader(_Bytes(table.images, ids), batch_size=None, num_workers=2)
    got = list(loader)
    assert [bytes(data.numpy()) for data, _ in got] == expected
    assert all(own_handle for _, own_handle in got)


def test_cache_builders_read_the_hdf5_squares_of_the_main_process(written, tmp_path):
    table = read_split("isic2024", written, "train")
    table.images.read_bytes(table.ids[0])  # the main process holds an open handle when the builders fork
    cached = SquareImages(table, 32, tmp_path / "cache", max_pixels=10**9)
    cached.build(workers=2)
    assert cached.path is not None
    assert all(np.array_equal(cached[row], cached.decode(row)) for row in range(len(table)))


def test_metadata_comes_from_the_train_and_test_csvs_alike(written):
    for split in ("train", "test"):
        ids = pd.read_csv(written / f"{split}-metadata.csv", dtype=str)["isic_id"].tolist()
        from_layout = read_metadata("isic2024", written, split, ids)
        from_file = read_metadata_csv(written / f"{split}-metadata.csv", ids, SPEC.sites)  # evaluate.py metadata=
        pd.testing.assert_frame_equal(from_layout, from_file)
        assert from_layout["site"].dropna().isin(SPEC.sites).all() and from_layout["age"].notna().mean() > 0.9


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_no_model_input_is_a_training_only_column(layout):
    spec = LAYOUTS[layout]
    read = {c for files in spec.metadata.values() for m in files for c in (m.id_column, m.age, m.sex, m.site) if c}
    assert not read & set(spec.training_only)
    assert set(spec.training_only) <= set(spec.columns)


def test_the_signal_is_split_between_pixels_and_table(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    root = write_synthetic("isic2024", tmp_path / "data", n=400, seed=0, malignant_share=0.25)
    truth = pd.read_csv(root / synthetic.LESIONS_CSV).set_index("image_id")["label"]
    measured = ["clin_size_long_diam_mm", "tbp_lv_norm_color", "tbp_lv_norm_border", "tbp_lv_deltaLBnorm",
                "tbp_lv_nevi_confidence", "tbp_lv_color_std_mean"]

    def features(split):
        frame = pd.read_csv(root / f"{split}-metadata.csv")
        with h5py.File(root / f"{split}-image.hdf5") as archive:
            images = [np.asarray(Image.open(io.BytesIO(archive[i][()])), np.float32) / 255 for i in frame["isic_id"]]
        centres = [im[im.shape[0] // 4: 3 * im.shape[0] // 4, im.shape[1] // 4: 3 * im.shape[1] // 4].reshape(-1, 3)
                   for im in images]
        pixels = np.array([np.concatenate([c.mean(0), c.std(0)]) for c in centres])
        return pixels, frame[measured].to_numpy(), (truth[frame["isic_id"]] == "malignant").to_numpy()

    (train_pixels, train_table, train_y), (test_pixels, test_table, test_y) = features("train"), features("test")
    auc = {}
    sources = {"pixels": (train_pixels, test_pixels), "table": (train_table, test_table),
               "both": (np.hstack([train_pixels, train_table]), np.hstack([test_pixels, test_table]))}
    for name, (train_x, test_x) in sources.items():
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(train_x, train_y)
        auc[name] = roc_auc_score(test_y, model.predict_proba(test_x)[:, 1])
    print(f"test AUC: {auc}")  # measured: pixels 0.91, table 0.86, both 0.96
    assert auc["pixels"] > 0.7 and auc["table"] > 0.7
    assert auc["both"] > max(auc["pixels"], auc["table"]) + 0.02  # each source alone misses some malignant images


def test_synthetic_cli_sets_the_share_and_refuses_one_it_cannot(run_cli, tmp_path):
    done = run_cli("lesion.data.synthetic", "--layout", "isic2024", "--n", "100", "--malignant-share", "0.3",
                   "--out", str(tmp_path / "data"))
    assert done.stdout.strip().endswith("train benign=70 malignant=30")
    refused = run_cli("lesion.data.synthetic", "--layout", "isic2017", "--n", "30", "--malignant-share", "0.3",
                      "--out", str(tmp_path / "other"), check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith("lesion: error: malignant_share")
    assert not (tmp_path / "other").exists()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(1, 12), min_size=4, max_size=20), data=st.data())
def test_no_patient_crosses_train_val_and_test(tmp_path_factory, sizes, data):
    """Generated patients (any number of images each, malignant ones among them): every split made here keeps
    each patient's images on one side."""
    root = tmp_path_factory.mktemp("patients")
    n = sum(sizes)
    patients = [f"IP_{p:07d}" for p, size in enumerate(sizes) for _ in range(size)]
    malignant = data.draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=n - 1))
    targets = [int(k in malignant) for k in range(n)]
    ids = [f"ISIC_{k:07d}" for k in range(n)]
    frame = pd.DataFrame({c: [""] * n for c in SPEC.columns})
    frame["isic_id"], frame["target"], frame["patient_id"] = ids, targets, patients
    frame.to_csv(root / "train-metadata.csv", index=False)
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8)).save(jpeg, format="JPEG")
    with h5py.File(root / "train-image.hdf5", "w") as archive:
        for image_id in ids:
            archive[image_id] = np.bytes_(jpeg.getvalue())
    module = IsicDataModule("isic2024", str(root), image_size=32, num_workers=0, test_fraction=0.2, val_fraction=0.2,
                            cache=False, seed=data.draw(st.integers(0, 3)))
    module.setup("fit")
    patient_of = dict(zip(ids, patients))
    sides = [{patient_of[i] for i in part.ids} for part in (module.train_set, module.val_set, module.test_set)]
    assert all(sides) and sum(map(len, sides)) == len(set(patients))  # each patient on exactly one side
    assert sorted(module.train_set.ids + module.val_set.ids + module.test_set.ids) == ids


def bad_hdf5(root: Path, how: str) -> str:
    """Damage train-image.hdf5 of a dataset copy; return what the error line must say."""
    path = root / "train-image.hdf5"
    with h5py.File(path, "a") as archive:
        victim = sorted(archive)[5]
        if how == "missing_id":
            del archive[victim]
            return f"no image for id {victim} listed in train-metadata.csv"
        data = archive[victim][()]
        del archive[victim]
        if how == "pixels":
            archive[victim] = np.asarray(Image.open(io.BytesIO(data)))
            return f"train-image.hdf5:{victim}: holds a uint8 array of shape"
        archive[victim] = np.bytes_(b"not a jpeg" + data[200:])
    return f"train-image.hdf5:{victim}: cannot be decoded as an image"


@pytest.mark.parametrize("how", ["not_hdf5", "missing_id", "pixels", "not_jpeg"])
def test_a_bad_hdf5_is_one_error_line(run_cli, written, tmp_path, how):
    root = shutil.copytree(written, tmp_path / "copy")
    if how == "not_hdf5":
        (root / "train-image.hdf5").write_bytes(b"PK\x03\x04 a zip, say, under the HDF5 name")
        says = "train-image.hdf5: is not a readable HDF5 file"
    else:
        says = bad_hdf5(root, how)
    run_dir = tmp_path / "run"
    result = run_cli("train.py", "dataset=isic2024", f"dataset.root={root}", *SMALL, f"hydra.run.dir={run_dir}",
                     check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert [line for line in lines if line.startswith("lesion: error: ")] == lines[-1:], result.stderr[-3000:]
    assert says in lines[-1] and " — " in lines[-1], lines[-1]
    assert not run_dir.exists()


def test_an_hdf5_of_images_is_predicted_as_a_folder_is(written, tmp_path):
    preset = EvalPreset(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    archive = FolderImages.in_folder(written / "test-image.hdf5", preset, 40)
    folder = tmp_path / "images"
    folder.mkdir()
    with h5py.File(written / "test-image.hdf5") as images:
        for image_id in images:
            (folder / f"{image_id}.jpg").write_bytes(images[image_id][()])
    files = FolderImages.in_folder(folder, preset, 40)
    assert archive.ids == files.ids == sorted(pd.read_csv(written / "test-metadata.csv")["isic_id"])
    assert all(torch.equal(archive[k][0], files[k][0]) for k in range(len(files)))
    assert archive.read(0).size == files.read(0).size


def test_an_hdf5_naming_one_id_twice_is_refused(written, tmp_path):
    path = shutil.copy(written / "test-image.hdf5", tmp_path / "test-image.hdf5")
    with h5py.File(path, "a") as archive:
        first = sorted(archive)[0]
        archive[f"{first}.jpg"] = archive[first][()]
    with pytest.raises(LesionError, match=f"holds 2 images for id {first}"):
        FolderImages.in_folder(Path(path), EvalPreset(32, (0.5,) * 3, (0.25,) * 3), 40)


@pytest.mark.slow
def test_trains_tests_and_predicts_the_test_images_end_to_end(run_cli, tmp_path, lesion_cache):
    run_dir = tmp_path / "run"
    run_cli("train.py", "dataset=synthetic2024", "dataset.synthetic_n=80", "model.metadata=true", *SMALL,
            f"hydra.run.dir={run_dir}")
    tested = json.loads((run_dir / "test_metrics.json").read_text())
    assert tested["classes"] == ["benign", "malignant"]
    root = next(lesion_cache.glob("synthetic2024-n80-s0"))
    best = run_dir / "checkpoints" / "best.ckpt"
    evaluated = tmp_path / "evaluated"
    run_cli("evaluate.py", f"ckpt={best}", f"out={evaluated}", "num_workers=0", "bootstrap=10", "gradcam.n=0")
    report = json.loads((evaluated / "metrics.json").read_text())
    assert report["confusion"] == tested["confusion"]
    # The challenge's secondary figure: malignant images among their patient's 15 highest scores, by hand.
    scored = pd.read_csv(evaluated / "predictions.csv")
    patient_of = pd.read_csv(root / "train-metadata.csv").set_index("isic_id")["patient_id"]
    scored["patient"] = scored["isic_id"].map(patient_of)
    scored["rank"] = scored.groupby("patient")["malignant"].rank(method="first", ascending=False)
    malignant = scored[scored["label"] == "malignant"]
    assert report["top15"] == pytest.approx((malignant["rank"] <= 15).mean())
    assert "top-15 per patient" in (evaluated / "metrics.txt").read_text()
    out = tmp_path / "predicted"
    run_cli("evaluate.py", f"ckpt={best}", f"images={root / 'test-image.hdf5'}",
            f"metadata={root / 'test-metadata.csv'}", f"out={out}", "num_workers=2", "gradcam.n=1")
    predictions = pd.read_csv(out / "predictions.csv")
    assert list(predictions.columns[:3]) == ["isic_id", "benign", "malignant"]
    assert predictions["isic_id"].tolist() == sorted(pd.read_csv(root / "test-metadata.csv")["isic_id"])
    assert np.allclose(predictions[["benign", "malignant"]].sum(axis=1), 1, atol=1e-4)
    submission = pd.read_csv(out / "submission.csv")  # the challenge's format: isic_id, target
    assert list(submission.columns) == ["isic_id", "target"]
    assert submission["isic_id"].tolist() == predictions["isic_id"].tolist()
    assert np.array_equal(submission["target"], predictions["malignant"])
    assert list((out / "gradcam").glob("*_gradcam_overlay.png"))
