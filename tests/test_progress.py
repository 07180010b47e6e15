"""One progress line per training epoch, in train.log and on stderr (lesion.train.progress)."""

from __future__ import annotations

import logging
import re
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lesion.train.progress import EpochProgress

SMALL = ["dataset=synthetic2018", "model=baseline", "trainer=cpu", "model.backbone=resnet18", "model.weights=none",
         "dataset.image_size=32", "dataset.batch_size=4", "dataset.num_workers=0", "dataset.synthetic_n=30"]
NUMBER = r"\d+\.\d{4}"


@pytest.mark.slow
def test_a_training_run_logs_one_line_per_epoch_to_its_log_and_to_stderr(run_cli, tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("train.py", *SMALL, "trainer.max_epochs=2", f"hydra.run.dir={run_dir}")
    line = re.compile(rf"\[lesion\.train\.progress\]\[INFO\] - epoch (\d+)/2 · \d+\.\d s · [\d,]+ img/s · "
                      rf"train/loss {NUMBER} · val/bacc {NUMBER}$")
    for where, text in (("train.log", (run_dir / "train.log").read_text()), ("stderr", result.stderr)):
        lines = [row for row in text.splitlines() if "lesion.train.progress" in row]
        epochs = [int(m.group(1)) for m in map(line.search, lines) if m]
        assert epochs == [1, 2] and len(lines) == 2, (where, lines)


@pytest.mark.slow
def test_under_ddp_only_rank_0_logs_the_lines(run_cli, tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("train.py", *SMALL, "trainer=ddp_cpu", "trainer.max_epochs=2", f"hydra.run.dir={run_dir}")
    assert (run_dir / "train_ddp_process_1.log").is_file()  # the second rank ran
    for where, text, count in (("train.log", (run_dir / "train.log").read_text(), 2),
                               ("rank 1's log", (run_dir / "train_ddp_process_1.log").read_text(), 0),
                               ("stderr", result.stderr, 2)):
        assert len([row for row in text.splitlines() if "lesion.train.progress" in row]) == count, (where, text)


class _ClockedModel(pl.LightningModule):
    """Logs ``train/loss`` and ``val/bacc``; a training batch takes 1 s of ``clock``, a validation batch 10 s."""

    def __init__(self, clock: SimpleNamespace):
        super().__init__()
        self.clock = clock
        self.layer = nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        self.clock.now += 1.0
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("train/loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.clock.now += 10.0
        self.log("val/bacc", 0.5)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _loader(n: int, batch_size: int) -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(n, 2), torch.zeros(n)), batch_size=batch_size)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(images=st.integers(1, 9), batch_size=st.integers(1, 4), val_batches=st.integers(1, 2),
       every=st.integers(1, 2), epochs=st.integers(1, 3))
def test_the_line_reports_epoch_time_training_throughput_and_this_epochs_metrics(
        images, batch_size, val_batches, every, epochs, caplog, capsys, monkeypatch):
    """Time: the whole epoch (validation too); img/s: images per second of training; val/bacc only in an
    epoch that validated (no stale value); the line also on stderr; no handler left behind."""
    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr("lesion.train.progress.time", SimpleNamespace(perf_counter=lambda: clock.now))
    caplog.clear()
    capsys.readouterr()
    trainer = pl.Trainer(accelerator="cpu", max_epochs=epochs, check_val_every_n_epoch=every, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[EpochProgress(metrics=["train/loss", "val/loss", "val/bacc"])])
    with caplog.at_level(logging.INFO, logger="lesion.train.progress"):
        trainer.fit(_ClockedModel(clock), _loader(images, batch_size), _loader(val_batches, 1))
    lines = [r.getMessage() for r in caplog.records if r.name == "lesion.train.progress"]
    batches = -(-images // batch_size)
    expected = []
    for epoch in range(1, epochs + 1):
        validated = epoch % every == 0
        seconds = batches + (10 * val_batches if validated else 0)
        expected.append(rf"epoch {epoch}/{epochs} · {seconds:.1f} s · {images / batches:,.0f} img/s · "
                        rf"train/loss {NUMBER}" + (" · val/bacc 0.5000" if validated else "") + "$")
    assert len(lines) == epochs and all(re.match(e, l) for e, l in zip(expected, lines)), (expected, lines)
    assert [row for row in capsys.readouterr().err.splitlines() if " img/s · " in row] == lines
    assert logging.getLogger("lesion.train.progress").handlers == []


def test_a_stage_label_starts_the_line(caplog):
    clock = SimpleNamespace(now=0.0)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[EpochProgress(stage="head")])
    with caplog.at_level(logging.INFO, logger="lesion.train.progress"):
        trainer.fit(_ClockedModel(clock), _loader(4, 2), _loader(1, 1))
    assert [r.getMessage().split(" · ")[0] for r in caplog.records if r.name == "lesion.train.progress"] == ["head epoch 1/1"]
