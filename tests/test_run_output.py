"""What a training run prints: its first log line says what it does, and Lightning's notices that say nothing
about the run (an advert, announced defaults, a deprecation inside Lightning, FLOPs never counted) are not there."""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lesion.train.headline import headline
from lesion.train.notices import silence_lightning_notices
from lesion.train.parameter_count import ParameterCount

REPO = Path(__file__).resolve().parents[1]
SMALL = ["dataset=synthetic2018", "model=barata", "trainer=cpu", "model.backbone=resnet18", "model.weights=none",
         "dataset.image_size=32", "dataset.batch_size=4", "dataset.num_workers=0", "dataset.synthetic_n=30",
         "trainer.max_epochs=1"]
NOTICES = {
    "LitLogger advert": "💡 Tip",
    "announced limit_*_batches": "was configured so",
    "LeafSpec deprecation": "LeafSpec",
    "FLOPs never counted": "FLOPs",
    "accelerator list": "GPU available:",
    "Lightning's test table": "Test metric",
}
LOG_LINE = re.compile(r"^\[[^]]+\]\[[^]]+\]\[[A-Z]+\] - (.*)$")


@pytest.fixture(scope="module")
def tiny_run(run_cli, tmp_path_factory):
    """A one-epoch run: its directory, and what it printed (stdout, stderr)."""
    run_dir = tmp_path_factory.mktemp("output") / "run"
    result = run_cli("train.py", *SMALL, f"hydra.run.dir={run_dir}")
    return run_dir, result.stdout, result.stderr


@pytest.mark.slow
def test_a_run_prints_none_of_lightnings_notices(tiny_run):
    _, stdout, stderr = tiny_run
    printed = stdout + stderr
    assert [name for name, text in NOTICES.items() if text in printed] == [], printed[-3000:]


@pytest.mark.slow
def test_the_first_line_a_run_logs_says_what_it_does(tiny_run):
    run_dir, stdout, _ = tiny_run
    want = f"train: barata/resnet18 on synthetic isic2018 (32 px), balance=none, loss=ce, 1 epoch → {run_dir}"
    for where, text in (("stdout", stdout), ("train.log", (run_dir / "train.log").read_text())):
        messages = [m.group(1) for m in map(LOG_LINE.match, text.splitlines()) if m]
        assert messages[:1] == [want], (where, messages[:3])
        assert "stage fit on 1 × cpu" in messages, (where, messages)


def _composed(overrides: list[str]):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=[*overrides, "run_dir=outputs/train/run"])


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml")))
def test_the_headline_of_every_recipe_names_what_it_trains(experiment):
    cfg = _composed([f"experiment={experiment}"])
    line = headline(cfg)
    smote = cfg.balance.smote_tomek
    trained = [] if smote.enabled and not smote.finetune else [cfg.trainer.max_epochs]  # the network's epochs
    epochs = [*trained, *([smote.head_epochs] if smote.enabled else [])]
    assert "\n" not in line and line.startswith(f"train {cfg.name}: " if cfg.name else "train: ")
    for part in (f"{cfg.model.name}/{cfg.model.backbone} ", f" {cfg.dataset.layout} ", f"({cfg.dataset.image_size} px)",
                 f"balance={cfg.balance.name},", f"loss={cfg.loss.name},", *(f"{n} " for n in epochs),
                 "→ outputs/train/run"):
        assert part in line, (part, line)


class _TwoLayers(pl.LightningModule):
    def __init__(self, width: int, frozen: bool):
        super().__init__()
        self.first, self.second = nn.Linear(2, width), nn.Linear(width, 1)
        self.first.requires_grad_(not frozen)

    def training_step(self, batch, batch_idx):
        return self.second(self.first(batch[0])).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.second.parameters(), lr=0.01)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(width=st.integers(1, 240), frozen=st.booleans(), stage=st.sampled_from([None, "head"]))
def test_the_parameter_line_counts_all_and_trainable_parameters(width, frozen, stage, caplog):
    """In place of Lightning's summary table: one line, all parameters and those that train (a frozen part not)."""
    model = _TwoLayers(width, frozen)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[ParameterCount(stage)])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lesion.train.parameter_count"):
        trainer.fit(model, DataLoader(TensorDataset(torch.randn(2, 2)), batch_size=2))
    first, second = 3 * width, width + 1  # Linear(2, width) and Linear(width, 1); under 1000: written in full
    lines = [r.getMessage() for r in caplog.records if r.name == "lesion.train.parameter_count"]
    want = f"parameters: {first + second}, {second if frozen else first + second} trainable"
    assert lines == [f"{stage} {want}" if stage else want]


LEAFSPEC = "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) and treespec.is_leaf()`"


def _warned(message: str, module: str) -> bool:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_lightning_notices()
        warnings.warn_explicit(message, FutureWarning, f"{module.replace('.', '/')}.py", 21, module=module)
    return bool(caught)


def test_only_the_notices_themselves_are_silenced(monkeypatch):
    rank_zero = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    monkeypatch.setattr(rank_zero, "filters", list(rank_zero.filters))  # the filter leaves with the test
    before = len(rank_zero.filters)
    silence_lightning_notices()
    silence_lightning_notices()
    assert len(rank_zero.filters) == before + 1
    advert = "💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger](…)"
    offered = (advert, "GPU available: False, used: False", "TPU available: False, using: 0 TPU cores",
               "💡 Tip: another one", "`Trainer.fit` stopped: `max_epochs=1` reached.", "a GPU available: sentence")
    kept = [message for message in offered
            if rank_zero.filter(logging.makeLogRecord({"name": rank_zero.name, "msg": message}))]
    assert kept == ["💡 Tip: another one", "`Trainer.fit` stopped: `max_epochs=1` reached.", "a GPU available: sentence"]
    assert not _warned(LEAFSPEC, "pytorch_lightning.utilities._pytree")
    assert _warned(LEAFSPEC, "lesion.train.module") and _warned("another deprecation", "pytorch_lightning.utilities._pytree")
