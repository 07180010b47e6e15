"""The input pipeline finished on the device gives what the CPU path gives: the same pixels for
evaluation, the same distribution of augmentations for training (orientations: test_orientations)."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ks_2samp

from lesion.data.datamodule import IsicDataModule
from lesion.data.device_augmentation import DeviceAugmentation
from lesion.data.transforms import EvalPreset, SquarePreset, TrainPreset

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SIGNIFICANCE = 0.001


@settings(max_examples=30, deadline=None)
@given(height=st.integers(16, 48), width=st.integers(16, 48), seed=st.integers(0, 2**32 - 1),
       square=st.booleans())
def test_an_evaluation_item_finished_on_the_device_has_the_pixels_of_the_cpu_path(height, width, seed, square):
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    preset = SquarePreset(MEAN, STD) if square else EvalPreset(16, MEAN, STD)
    handed = preset.handed_over()(image)
    assert handed.dtype == torch.uint8 and handed.shape == preset(image).shape
    finished = DeviceAugmentation(MEAN, STD, jitter=False)(handed[None])[0]
    torch.testing.assert_close(finished, preset(image), rtol=0, atol=1e-5)


def skin_like(side: int = 24) -> np.ndarray:
    """A smooth, many-coloured side×side×3 uint8 image: every jitter step changes it measurably."""
    y, x = np.mgrid[0:side, 0:side] / (side - 1)
    return np.stack([150 + 90 * x, 60 + 120 * y, 40 + 60 * (1 - x * y)], axis=-1).round().astype(np.uint8)


def statistics(views: torch.Tensor) -> dict[str, np.ndarray]:
    """Per view (N×3×H×W, normalised): each channel's mean and spread, and the mean spread across channels."""
    pixels = views * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
    found = {f"mean {c}": pixels[:, i].mean((1, 2)) for i, c in enumerate("RGB")}
    found |= {f"spread {c}": pixels[:, i].std((1, 2)) for i, c in enumerate("RGB")}
    found["saturation"] = (pixels.amax(1) - pixels.amin(1)).mean((1, 2))
    return {name: value.numpy() for name, value in found.items()}


def cpu_views(n: int, seed: int) -> torch.Tensor:
    preset = TrainPreset(16, MEAN, STD)
    preset.set_random_seed(seed)
    return torch.stack([preset(skin_like()) for _ in range(n)])


def device_views(n: int, seed: int, jitter: DeviceAugmentation) -> torch.Tensor:
    preset = TrainPreset(16, MEAN, STD).handed_over()
    preset.set_random_seed(seed)
    torch.manual_seed(seed)
    return jitter(torch.stack([preset(skin_like()) for _ in range(n)]))


def test_training_views_finished_on_the_device_have_the_colour_distribution_of_the_cpu_path():
    n = 3000
    cpu = statistics(cpu_views(n, seed=1))
    device = statistics(device_views(n, seed=2, jitter=DeviceAugmentation(MEAN, STD, jitter=True)))
    for name in cpu:
        assert ks_2samp(cpu[name], device[name]).pvalue > SIGNIFICANCE, (
            f"{name}: CPU {np.percentile(cpu[name], [5, 50, 95]).round(3)}, "
            f"device {np.percentile(device[name], [5, 50, 95]).round(3)}")


@pytest.mark.parametrize("changed", [{"brightness": 0.3}, {"saturation": 0.1}, {"p": 1.0}])
def test_the_colour_comparison_tells_a_jitter_of_other_ranges_apart(changed):
    """The comparison above has the power to see a jitter a little off: here the device's is."""
    from kornia.augmentation import ColorJitter

    from lesion.data.transforms import JITTER, JITTER_P

    off = DeviceAugmentation(MEAN, STD, jitter=True)
    off.jitter = ColorJitter(**{**JITTER, "p": JITTER_P, **changed})
    n = 3000
    cpu, device = statistics(cpu_views(n, seed=1)), statistics(device_views(n, seed=2, jitter=off))
    assert min(ks_2samp(cpu[name], device[name]).pvalue for name in cpu) < SIGNIFICANCE


def test_the_device_draws_a_jitter_per_image():
    views = DeviceAugmentation(MEAN, STD, jitter=True)(torch.from_numpy(skin_like()).permute(2, 0, 1)[None].repeat(64, 1, 1, 1))
    means = statistics(views)["mean R"]
    # About 20 % of the images are left as they are (p = 0.8); the others each differ.
    assert len(np.unique(means.round(5))) > 40


class _Recorder(pl.LightningModule):
    """Records, per Trainer stage, the dtype of the images it is given and whether they were jittered."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[str, torch.dtype]] = []

    def _record(self, batch) -> torch.Tensor:
        self.seen.append((self.trainer.state.stage.value, batch[0].dtype))
        return (self.weight * batch[0].float().mean()).sum()

    def training_step(self, batch, batch_idx):
        return self._record(batch)

    def validation_step(self, batch, batch_idx):
        self._record(batch)

    def test_step(self, batch, batch_idx):
        self._record(batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("precision, dtype", [("32-true", torch.float32), ("bf16-true", torch.bfloat16)])
def test_the_trainer_gets_batches_finished_by_the_datamodule_jittered_only_while_training(synthetic_root, tmp_path,
                                                                                          monkeypatch, precision, dtype):
    jittered: list[bool] = []
    finish = DeviceAugmentation.forward

    def spy(self, images):
        jittered.append(self.jitter is not None)
        return finish(self, images)

    monkeypatch.setattr(DeviceAugmentation, "forward", spy)
    dm = IsicDataModule("isic2018", str(synthetic_root("isic2018")), image_size=32, batch_size=8, num_workers=0,
                        cache_dir=str(tmp_path / "cache"), augment_on="device")
    module = _Recorder()
    trainer = pl.Trainer(accelerator="cpu", precision=precision, max_epochs=1, limit_train_batches=2,
                         limit_val_batches=2, limit_test_batches=2, num_sanity_val_steps=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    trainer.test(module, datamodule=dm)
    stages = [stage for stage, _ in module.seen]
    assert stages == ["sanity_check", "train", "train", "validate", "validate", "test", "test"]
    assert {seen for _, seen in module.seen} == {dtype}
    assert jittered == [stage == "train" for stage in stages]
