"""Colour constancy (dataset.color_constancy=shades_of_gray): what it computes, and the same pixels on every path
that decodes an image for a model (cache, no cache, folder inference, evaluation from the checkpoint)."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import torch

from lesion.data.cache import SquareImages, cache_key
from lesion.data.color import SHADES_OF_GRAY_P, shades_of_gray
from lesion.data.datamodule import IsicDataModule
from lesion.data.readers import read_split
from lesion.data.transforms import EvalPreset
from lesion.data.unlabelled import FolderImages

TINY = ["trainer=cpu", "model.backbone=resnet18", "model.weights=none", "dataset.image_size=32",
        "dataset.batch_size=4", "dataset.num_workers=0"]


def p_means(image: np.ndarray) -> np.ndarray:
    return np.power(np.mean(np.power(image.astype(np.float64), SHADES_OF_GRAY_P), axis=(0, 1)), 1 / SHADES_OF_GRAY_P)


def skin(seed: int = 0) -> np.ndarray:
    """A smooth skin-coloured test image with a darker blob, values well inside 0–255."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:64, :64]
    blob = np.exp(-((x - 30) ** 2 + (y - 34) ** 2) / 200.0)[..., None]
    base = np.array([190.0, 140.0, 120.0]) * (1 - 0.5 * blob) + rng.normal(0, 3, (64, 64, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


def test_shades_of_gray_makes_the_light_grey():
    corrected = shades_of_gray(skin())
    assert corrected.dtype == np.uint8 and corrected.shape == (64, 64, 3)
    means = p_means(corrected)
    assert means.max() - means.min() < 1.0  # equal p-norm means: a grey illuminant
    assert np.ptp(p_means(skin())) > 30  # the input's light was not grey


def test_shades_of_gray_removes_a_colour_cast():
    image = skin(1)
    cast = np.clip(image * np.array([0.8, 1.0, 1.15]), 0, 255).astype(np.uint8)  # another light
    assert np.abs(cast.astype(int) - image).mean() > 10
    # What remains of the cast is one brightness factor for all channels (the light's strength).
    corrected, reference = (shades_of_gray(x).astype(float) for x in (cast, image))
    assert np.abs(corrected / corrected.mean() - reference / reference.mean()).mean() < 0.01
    assert np.abs(cast / cast.mean() - image / image.mean()).mean() > 0.1


def test_a_black_channel_is_left_black():
    image = skin()
    image[..., 2] = 0
    assert (shades_of_gray(image)[..., 2] == 0).all()


def test_the_same_pixels_from_cache_decoding_and_folder_inference(synthetic_root, tmp_path):
    root = synthetic_root("isic2018")
    data = IsicDataModule("isic2018", str(root), image_size=32, num_workers=0, color_constancy="shades_of_gray",
                          cache_dir=str(tmp_path / "cache"))
    data.setup("fit")
    squares = data.test_set.images
    squares.build()
    cached = squares[0]
    table = read_split("isic2018", root, "test")
    decoded = SquareImages(table, squares.size, None, squares.max_pixels, "shades_of_gray")[0]
    plain = SquareImages(table, squares.size, None, squares.max_pixels)[0]
    with zipfile.ZipFile(root / "ISIC2018_Task3_Test_Input.zip") as archive:
        archive.extractall(tmp_path)
    folder = FolderImages.in_folder(tmp_path / "ISIC2018_Task3_Test_Input", EvalPreset(32, data.mean, data.std), squares.size,
                          "shades_of_gray")
    assert folder.ids[0] == table.ids[0]
    assert np.array_equal(cached, decoded) and np.array_equal(cached, folder.square(0))
    assert np.array_equal(cached, shades_of_gray(plain)) and not np.array_equal(cached, plain)
    assert torch.equal(data.test_set[0][0], folder[0][0])  # the network inputs, too
    assert cache_key(table, squares.size, "shades_of_gray") != cache_key(table, squares.size)


def test_the_checkpoint_applies_its_colour_constancy_without_being_told(run_cli, same_probabilities, tmp_path):
    run_dir = tmp_path / "run"
    run_cli("train.py", "dataset=synthetic2018", "dataset.synthetic_n=30", "dataset.color_constancy=shades_of_gray",
            "trainer.max_epochs=1", *TINY, f"hydra.run.dir={run_dir}")
    best = run_dir / "checkpoints" / "best.ckpt"
    stored = torch.load(best, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert stored["dataset"]["color_constancy"] == "shades_of_gray"
    trained = json.loads((run_dir / "test_metrics.json").read_text())
    out = tmp_path / "split"
    # dataset=synthetic2018 names a config without colour constancy: the checkpoint's still applies.
    run_cli("evaluate.py", f"ckpt={best}", "dataset=synthetic2018", "dataset.synthetic_n=30", f"out={out}",
            "gradcam.n=0", "num_workers=0", "bootstrap=10")
    assert json.loads((out / "metrics.json").read_text())["confusion"] == trained["confusion"]
    root = stored["dataset"]["root"]
    with zipfile.ZipFile(f"{root}/ISIC2018_Task3_Test_Input.zip") as archive:
        archive.extractall(tmp_path / "images")
    folder = tmp_path / "folder"
    run_cli("evaluate.py", f"ckpt={best}", f"images={tmp_path / 'images' / 'ISIC2018_Task3_Test_Input'}",
            f"out={folder}", "gradcam.n=0", "num_workers=0")
    same_probabilities(out / "predictions.csv", folder / "predictions.csv", trained["classes"])


def test_an_unknown_method_is_refused_before_any_work(run_cli, tmp_path):
    result = run_cli("train.py", "dataset.color_constancy=grey_world", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        "lesion: error: dataset.color_constancy: 'grey_world' is not one of shades_of_gray")
    assert not (tmp_path / "run").exists()
