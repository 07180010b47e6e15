"""evaluate.py end to end: metrics agree with scikit-learn, plots, Grad-CAM, TTA, calibration, folders."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support, roc_auc_score

from lesion.data.readers import read_split
from lesion.data.layouts import LAYOUTS

pytestmark = pytest.mark.slow

CLASSES = list(LAYOUTS["isic2018"].classes)


def same(value, expected) -> bool:
    if value is None:
        return math.isnan(expected)
    return abs(value - expected) <= 1e-6


@pytest.fixture(scope="module")
def evaluated(trained_run, run_cli, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval")
    run_cli("evaluate.py", f"ckpt={trained_run / 'checkpoints' / 'best.ckpt'}", "split=test", "tta=true",
            "calibrate=true", "gradcam.n=3", "num_workers=0", f"out={out}")
    return out


def test_every_metric_agrees_with_sklearn_on_predictions_csv(evaluated):
    metrics = json.loads((evaluated / "metrics.json").read_text())
    table = pd.read_csv(evaluated / "predictions.csv")
    assert list(table.columns) == ["image", *CLASSES, "label", "prediction", "ood_score", "unknown"]
    y = table["label"].map(CLASSES.index).to_numpy()
    probs = table[CLASSES].to_numpy()
    pred = probs.argmax(1)
    present = sorted(set(y.tolist()))
    assert same(metrics["bacc"], balanced_accuracy_score(y, pred))
    assert same(metrics["accuracy"], float((pred == y).mean()))
    precision, recall, f1, support = precision_recall_fscore_support(y, pred, labels=range(7), zero_division=np.nan)
    cm = confusion_matrix(y, pred, labels=range(7))
    aucs = []
    for k, name in enumerate(CLASSES):
        assert metrics[f"support/{name}"] == support[k]
        assert same(metrics[f"precision/{name}"], precision[k])
        assert same(metrics[f"recall/{name}"], recall[k]) and same(metrics[f"f1/{name}"], f1[k])
        if k in present:
            auc = roc_auc_score(y == k, probs[:, k]) if len(present) > 1 else math.nan
            aucs.append(auc)
            assert same(metrics[f"auc/{name}"], auc)
        else:
            assert metrics[f"recall/{name}"] is None and metrics[f"auc/{name}"] is None
        tn = cm.sum() - cm[k].sum() - cm[:, k].sum() + cm[k, k]
        assert same(metrics[f"specificity/{name}"], tn / (tn + cm[:, k].sum() - cm[k, k]))
    assert same(metrics["auc_macro"], float(np.mean(aucs)))
    assert metrics["confusion"] == cm.tolist()
    lo, hi = metrics["ci/bacc"]
    assert lo <= metrics["bacc"] <= hi
    assert 0 <= metrics["ece"] <= 1


def test_reports_plots_and_gradcam_files(evaluated):
    text = (evaluated / "metrics.txt").read_text()
    assert all(name in text for name in CLASSES)
    temperature = json.loads((evaluated / "calibration.json").read_text())["temperature"]
    assert temperature > 0
    for name in ("confusion", "roc", "reliability", "class_distribution", "training_curves", "augmented_samples"):
        with Image.open(evaluated / "plots" / f"{name}.png") as figure:
            assert min(figure.size) > 200
    stems = pd.read_csv(evaluated / "predictions.csv")["image"].tolist()[:3]
    for stem in stems:
        for suffix in ("raw.png", "raw.npy", "raw_color.png", "overlay.png"):
            assert (evaluated / "gradcam" / f"{stem}_gradcam_{suffix}").is_file()
        cam = np.load(evaluated / "gradcam" / f"{stem}_gradcam_raw.npy")
        assert cam.dtype == np.float32 and cam.min() >= 0 and cam.max() <= 1
    assert (evaluated / "gradcam_sheet.png").is_file()
    assert not list(evaluated.rglob("*.tmp"))


def jpeg_with_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif, quality=95)
    return buffer.getvalue()


def test_folder_inference_handles_every_image_mode(trained_run, run_cli, synthetic_root, tmp_path):
    table = read_split("isic2018", synthetic_root("isic2018"), "test")
    source = table.images.read(table.ids[0])
    folder = tmp_path / "images"
    folder.mkdir()
    source.save(folder / "a_rgb.png")
    source.convert("L").save(folder / "b_gray.png")
    source.convert("RGBA").save(folder / "c_rgba.png")
    source.convert("CMYK").save(folder / "d_cmyk.jpg", quality=95)
    Image.fromarray((np.asarray(source.convert("L"), dtype=np.uint16) * 257)).save(folder / "e_gray16.png")
    (folder / "f_exif.jpg").write_bytes(jpeg_with_orientation(source.transpose(Image.Transpose.ROTATE_90), 6))
    source.convert("P").save(folder / "g_palette.png")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    run_cli("evaluate.py", f"ckpt={trained_run / 'checkpoints' / 'best.ckpt'}", f"images={folder}",
            "gradcam.n=2", "num_workers=0", f"out={out}")
    predictions = pd.read_csv(out / "predictions.csv").set_index("image")
    assert list(predictions.index) == ["a_rgb", "b_gray", "c_rgba", "d_cmyk", "e_gray16", "f_exif", "g_palette"]
    assert np.allclose(predictions[CLASSES].sum(axis=1), 1, atol=1e-4)
    # Lossless variants of the same picture get the same probabilities.
    assert np.allclose(predictions.loc["a_rgb", CLASSES], predictions.loc["c_rgba", CLASSES], atol=1e-5)
    assert np.allclose(predictions.loc["b_gray", CLASSES], predictions.loc["e_gray16", CLASSES], atol=1e-3)
    with Image.open(out / "gradcam" / "a_rgb_gradcam_overlay.png") as overlay:
        assert overlay.size == source.size


def test_folder_with_two_images_of_one_name_is_refused_before_writing(trained_run, run_cli, synthetic_root, tmp_path):
    table = read_split("isic2018", synthetic_root("isic2018"), "test")
    folder = tmp_path / "images"
    folder.mkdir()
    for k, suffix in enumerate((".jpg", ".png")):
        table.images.read(table.ids[k]).save(folder / f"ISIC_0000001{suffix}")  # two pictures, one id
    table.images.read(table.ids[2]).save(folder / "ISIC_0000002.jpg")
    out = tmp_path / "out"
    result = run_cli("evaluate.py", f"ckpt={trained_run / 'checkpoints' / 'best.ckpt'}", f"images={folder}",
                     "gradcam.n=-1", "num_workers=0", f"out={out}", check=False)
    assert result.returncode == 2, result.stderr[-600:]
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"lesion: error: {folder}: names ISIC_0000001.jpg and ISIC_0000001.png, one image id (ISIC_0000001) — ")
    assert "Traceback" not in result.stderr and not out.exists()
