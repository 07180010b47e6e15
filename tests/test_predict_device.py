"""Prediction on the device: uint8 batches normalised there, views sharing forward passes, autocast and
channels-last, the ``device`` option; on a CUDA GPU (skipped elsewhere) the same probabilities as on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lesion.data.transforms import EvalPreset, SquarePreset
from lesion.evaluate.predict import predict
from lesion.train.module import LesionClassifier

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def module(trained_run) -> LesionClassifier:
    return LesionClassifier.load_from_checkpoint(trained_run / "checkpoints" / "best.ckpt")


def loader(module: LesionClassifier, crops: int, handed_over: bool, n: int = 10) -> DataLoader:
    """``n`` random images preprocessed for ``crops`` (whole squares for multi-crop), as floats or uint8 pixels."""
    hp = module.hparams
    preset = SquarePreset(hp.mean, hp.std) if crops > 1 else EvalPreset(hp.image_size, hp.mean, hp.std)
    preset = preset.handed_over() if handed_over else preset
    side = hp.image_size + 8 if crops > 1 else 45
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(n)]
    return DataLoader([(preset(image), -1) for image in images], batch_size=4)


@pytest.mark.parametrize("flips, crops", [(False, 1), (True, 1), (False, 4), (True, 4)])
def test_uint8_batches_and_views_sharing_passes_give_the_probabilities_of_normalised_batches(module, flips, crops):
    expected, _ = predict(module, loader(module, crops, handed_over=False), flips, crops)
    for per_forward in (None, 4 * 32):  # one view per pass (the CPU's default); all views of a batch in one pass
        got, _ = predict(module, loader(module, crops, handed_over=True), flips, crops, images_per_forward=per_forward)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_autocast_and_channels_last_predict_within_tolerance_of_float32(module):
    expected, _ = predict(module, loader(module, 1, handed_over=True))
    for precision in ("bf16", "fp16"):
        got, _ = predict(module, loader(module, 1, handed_over=True), precision=precision, channels_last=True)
        assert np.abs(got - expected).max() < 0.05, precision
        assert got.dtype == expected.dtype and np.allclose(got.sum(1), 1, atol=1e-4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible")
@pytest.mark.parametrize("command", ["evaluate.py", "demo.py"])
def test_a_gpu_that_is_not_there_is_refused_in_one_line_before_anything_is_written(trained_run, run_cli, tmp_path,
                                                                                  command):
    out = tmp_path / "out"
    extra = [f"out={out}"] if command == "evaluate.py" else []
    result = run_cli(command, f"ckpt={trained_run / 'checkpoints' / 'best.ckpt'}", "device=cuda", *extra, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        "lesion: error: device: cuda is not there: torch sees 0 CUDA GPU(s) "
        f"(torch {torch.__version__}, CUDA {torch.version.cuda or 'not built in'}) — use device=auto or device=cpu, "
        "or run where the GPU is visible (CUDA_VISIBLE_DEVICES)"]
    assert not out.exists()


def test_a_device_that_is_not_a_device_is_refused(trained_run, run_cli, tmp_path):
    result = run_cli("evaluate.py", f"ckpt={trained_run / 'checkpoints' / 'best.ckpt'}", "device=gpu0",
                     f"out={tmp_path / 'out'}", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "lesion: error: device: is 'gpu0', not auto, cpu, cuda or cuda:N — use device=auto (a GPU when one is "
        "visible), device=cpu, or device=cuda / cuda:N"]


@CUDA
def test_a_checkpoint_loads_onto_the_device_map_location_names(trained_run):
    module = LesionClassifier.load_from_checkpoint(trained_run / "checkpoints" / "best.ckpt", map_location="cuda")
    assert {p.device.type for p in module.parameters()} == {"cuda"}
    assert {b.device.type for b in module.buffers()} <= {"cuda"}


@CUDA
@pytest.mark.slow
def test_evaluation_on_the_gpu_reports_the_probabilities_of_the_cpu(trained_run, run_cli, tmp_path, same_probabilities):
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    for device in ("cpu", "cuda"):  # float32 on the GPU too: no TF32 convolutions
        run_cli("evaluate.py", f"ckpt={ckpt}", f"device={device}", "tta.flips=true", "tta.crops=4", "gradcam.n=4",
                "plots=false", f"out={tmp_path / device}", env={"NVIDIA_TF32_OVERRIDE": "0"})
    classes = list(LesionClassifier.load_from_checkpoint(ckpt).hparams.classes)
    same_probabilities(tmp_path / "cpu" / "predictions.csv", tmp_path / "cuda" / "predictions.csv", classes, atol=1e-4)
    cams = [np.load(sorted((tmp_path / d / "gradcam").glob("*_gradcam_raw.npy"))[0]) for d in ("cpu", "cuda")]
    np.testing.assert_allclose(*cams, atol=1e-3)
