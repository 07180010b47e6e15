"""evaluate.py trust_checkpoint: what weights_only loading refuses is an error unless trusted; the allow-list holds."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from lesion.data.layouts import LAYOUTS
from lesion.train.module import LesionClassifier

REPO = Path(__file__).resolve().parents[1]
CLASSES = list(LAYOUTS["isic2018"].classes)
REFUSED = "holds Python objects that weights_only loading refuses ("
FIX = ") — pass trust_checkpoint=true only if you trust its source"


@pytest.fixture(scope="module")
def lightning_checkpoint() -> dict:
    """What Lightning saves for a tiny untrained model: ``hyper_parameters`` and ``state_dict``."""
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["model.backbone=resnet18", "model.weights=none", "model.hidden_size=16",
                                          "model.embed_dim=8", "dataset.image_size=32"])
    plain = {key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("model", "loss", "optimizer", "scheduler")}
    taxonomy = LAYOUTS["isic2018"].taxonomy()
    module = LesionClassifier(classes=CLASSES, taxonomy=taxonomy, image_size=32, **plain)
    return {"state_dict": module.state_dict(), "hyper_parameters": copy.deepcopy(dict(module.hparams))}


def from_another_tool(checkpoint: dict, path: Path) -> Path:
    """``checkpoint`` plus the training arguments as an ``argparse.Namespace`` (as torchvision's references save)."""
    torch.save({**checkpoint, "args": argparse.Namespace(lr=0.1, epochs=90)}, path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    return folder


def evaluate(run_cli, ckpt: Path, images: Path, out: Path, *overrides: str):
    return run_cli("evaluate.py", f"ckpt={ckpt}", f"images={images}", f"out={out}", "gradcam.n=0", "num_workers=0",
                   *overrides, check=False)


def test_untrusted_checkpoint_with_foreign_objects_is_a_one_line_error(lightning_checkpoint, images, run_cli,
                                                                       tmp_path):
    ckpt = from_another_tool(lightning_checkpoint, tmp_path / "other.ckpt")
    result = evaluate(run_cli, ckpt, images, tmp_path / "out")
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.startswith("lesion: error:") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    line = result.stderr.strip()
    assert line.startswith(f"lesion: error: {ckpt}: {REFUSED}") and line.endswith(FIX)
    assert "argparse.Namespace" in line  # names what was refused
    assert not (tmp_path / "out").exists()


def test_trusted_checkpoint_with_foreign_objects_loads_with_a_warning(lightning_checkpoint, images, run_cli,
                                                                      tmp_path):
    ckpt = from_another_tool(lightning_checkpoint, tmp_path / "other.ckpt")
    result = evaluate(run_cli, ckpt, images, tmp_path / "out", "trust_checkpoint=true")
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stdout.splitlines() if "weights_only=False" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0] and str(ckpt) in warnings[0]
    predictions = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert predictions["image"].tolist() == ["a", "b"]
    assert predictions[CLASSES].sum(axis=1).round(4).eq(1).all()


def test_trusted_checkpoint_naming_os_system_is_still_refused(lightning_checkpoint, images, run_cli, tmp_path):
    forged = copy.deepcopy(lightning_checkpoint)
    forged["hyper_parameters"]["model"]["_target_"] = "os.system"
    ckpt = from_another_tool(forged, tmp_path / "forged.ckpt")
    result = evaluate(run_cli, ckpt, images, tmp_path / "out", "trust_checkpoint=true")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "weights_only=False" in result.stdout  # it was read by the trusted path, then refused
    assert result.stderr.strip() == (f"lesion: error: {ckpt}: its model names 'os.system', which lesion does not build"
                                     " — use a checkpoint written by lesion's train.py")
    assert not (tmp_path / "out").exists()
