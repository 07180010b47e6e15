"""Interrupted training: SIGTERM saves last.ckpt and exits 143; after SIGKILL, a resume repeats and loses no epoch."""

from __future__ import annotations

import os
import shlex
import signal
import sys
from pathlib import Path

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from lesion.train.callbacks import EXIT_STATUS, AtomicCheckpointIO, Interruption, resume_command

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 2  # interrupted in epoch 1, the last
STEPS = 7  # 30 training images in batches of 4
TRAIN = ["dataset=synthetic2018", "dataset.synthetic_n=30", "model.backbone=resnet18", "model.weights=none",
         "model.hidden_size=16", "model.embed_dim=8", "dataset.image_size=32", "dataset.batch_size=4",
         "dataset.num_workers=0", "trainer=cpu", f"trainer.max_epochs={EPOCHS}"]

# Imported by the interpreter at start-up (sitecustomize): the process signals itself when the chosen
# step of the chosen epoch begins, so the interruption lands at the same point on every run.
HOOK = '''
import os
import signal

from lesion.train.module import LesionClassifier

original = LesionClassifier.{step}


def step(self, batch, batch_idx):
    if (self.current_epoch, batch_idx) == ({epoch}, {batch}) and not self.trainer.sanity_checking:
        os.kill(os.getpid(), signal.{signal})
    return original(self, batch, batch_idx)


LesionClassifier.{step} = step
'''


def signal_at(folder: Path, step: str, epoch: int, batch: int, sig: str) -> dict[str, str]:
    """Environment for a ``train.py`` run that sends itself ``sig`` at the start of ``step`` ``batch`` of ``epoch``."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(HOOK.format(step=step, epoch=epoch, batch=batch, signal=sig))
    # The hook imports lesion before train.py's folder is on sys.path.
    path = [str(folder), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(path)}


def validated_epochs(run_dir: Path) -> list[int]:
    """Epochs with a ``val/bacc`` row, over the first run's log and every resumed part's."""
    logs = [run_dir / "logs" / "metrics.csv", *sorted((run_dir / "logs").glob("resume_*/metrics.csv"))]
    epochs = []
    for log in logs:
        table = pd.read_csv(log)
        epochs += table.loc[table["val/bacc"].notna(), "epoch"].tolist()
    return epochs


def last_step(run_dir: Path) -> int:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]


def assert_resumes_to_the_end(run_cli, run_dir: Path, overrides: list[str]) -> None:
    run_cli("train.py", *overrides)
    assert (run_dir / "test_metrics.json").is_file()
    assert validated_epochs(run_dir) == list(range(EPOCHS))  # each epoch validated once, in order
    assert last_step(run_dir) == EPOCHS * STEPS  # no training step lost or repeated


@pytest.mark.slow
def test_sigkill_mid_epoch_resumes_without_losing_or_repeating_an_epoch(run_cli, tmp_path):
    run_dir = tmp_path / "run"
    killed = run_cli("train.py", *TRAIN, f"hydra.run.dir={run_dir}", check=False,
                     env=signal_at(tmp_path / "hook", "training_step", epoch=1, batch=3, sig="SIGKILL"))
    assert killed.returncode == -signal.SIGKILL
    # On disk: epoch 0's checkpoint and the logs up to it; epoch 1's three steps died with the process.
    assert last_step(run_dir) == STEPS
    assert validated_epochs(run_dir) == [0]
    assert_resumes_to_the_end(run_cli, run_dir, [*TRAIN, "ckpt_path=last", f"hydra.run.dir={run_dir}"])


@pytest.mark.slow
@pytest.mark.parametrize(("step", "saved_step", "says"), [
    ("training_step", STEPS + 3, "saved"),  # epoch 1 stops after its batch 2: the progress so far is saved
    # Lightning cannot resume half-way through validation: epoch 0's checkpoint stays.
    ("validation_step", STEPS, "outside training steps, nothing saved; resume from"),
], ids=["mid-epoch", "mid-validation"])
def test_sigterm_saves_last_checkpoint_and_exits_143(step, saved_step, says, run_cli, tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("train.py", *TRAIN, f"hydra.run.dir={run_dir}", check=False,
                     env=signal_at(tmp_path / "hook", step, epoch=1, batch=0 if step == "validation_step" else 2,
                                   sig="SIGTERM"))
    assert result.returncode == EXIT_STATUS, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "lesion: error" not in result.stderr
    lines = [line for line in (run_dir / "train.log").read_text().splitlines() if "SIGTERM" in line]
    assert len(lines) == 1 and f"{says} {run_dir / 'checkpoints' / 'last.ckpt'} — resume with: " in lines[0], lines
    assert last_step(run_dir) == saved_step  # loads with weights_only=True
    assert sorted(p.name for p in run_dir.rglob("*") if p.is_file() and "ckpt" in p.name) == ["best.ckpt", "last.ckpt"]
    assert not list(run_dir.rglob("*.tmp")) and not (run_dir / "test_metrics.json").exists()
    # The logged command resumes the run.
    command = shlex.split(lines[0].split("resume with: ", 1)[1])
    assert command[:2] == ["python", "train.py"] and command[-2:] == ["ckpt_path=last", f"hydra.run.dir={run_dir}"]
    assert_resumes_to_the_end(run_cli, run_dir, command[2:])


def test_checkpoint_write_cut_short_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 7}, path)

    def cut_short(checkpoint, file):
        Path(file).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", cut_short)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({"global_step": 8}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"global_step": 7}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_interruption_makes_checkpoint_writes_atomic_and_clears_a_killed_saves_temporary_file(tmp_path):
    (tmp_path / "best.ckpt").write_bytes(b"kept")
    (tmp_path / ".last.ckpt.k3j2.tmp").write_bytes(b"cut short by SIGKILL")
    callback = Interruption(tmp_path)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[callback])
    callback.setup(trainer, None, "fit")
    assert type(trainer.strategy.checkpoint_io) is AtomicCheckpointIO
    assert [p.name for p in tmp_path.iterdir()] == ["best.ckpt"]


@pytest.mark.parametrize("argv0, command", [("/clone/train.py", "python train.py"),
                                            ("/venv/bin/lesion-train", "lesion-train")])
def test_resume_command_outside_hydra_names_the_checkpoint_and_the_command_that_ran(argv0, command, tmp_path,
                                                                                     monkeypatch):
    monkeypatch.setattr(sys, "argv", [argv0, "experiment=quickstart"])
    run_dir = tmp_path / "run dir"
    assert resume_command(run_dir, run_dir / "checkpoints" / "last.ckpt") == (
        f"{command} <same overrides> ckpt_path=last hydra.run.dir='{run_dir}'")
    finetune = run_dir / "checkpoints" / "finetune" / "last.ckpt"
    assert resume_command(run_dir, finetune) == (
        f"{command} <same overrides> ckpt_path='{finetune}' hydra.run.dir='{run_dir}'")
