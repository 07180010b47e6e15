"""LightningModule: loss, optimisation and metrics around a built :class:`LesionNet`."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from lesion.errors import LesionError
from lesion.losses import build_loss
from lesion.metrics import LesionMetrics
from lesion.models import registry
from lesion.models.net import LesionNet
from lesion.optim import build_optimizer, build_scheduler
from lesion.options import check_stored

log = logging.getLogger(__name__)

STAGES = ("train", "val", "test")


def build_net(model: dict, classes: Sequence[str], taxonomy: list[list[int]], **overrides) -> LesionNet:
    """Build the net a ``model`` config names (``model.name`` through :mod:`lesion.models.registry`).

    Args:
        model: the model config as a plain dict.
        classes: class names; their number sets the output size.
        taxonomy: per class, its token at every decoding level.
        overrides: config entries to replace (e.g. ``weights="none"`` when loading a checkpoint).

    ``model.channels_last`` stores the weights channels-last; ``model.compile`` compiles the
    backbone with ``torch.compile`` (on its first call).
    """
    params = {**model, **overrides}
    name = params.pop("name")
    channels_last, compile_backbone = params.pop("channels_last", False), params.pop("compile", False)
    net = registry.build_net(name, len(classes), taxonomy, **params)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    if compile_backbone:
        net.backbone.compile()  # in place: parameter names, hence checkpoints, are unchanged
    return net


class LesionClassifier(pl.LightningModule):
    """Trains and evaluates a :class:`LesionNet`.

    The final decoding step's loss is the configured one (focal, weighted CE, …); earlier
    taxonomy steps of a hierarchical decoder use plain cross-entropy; the loss is their mean.
    Checkpoints keep every argument but ``net`` as plain containers, so the checkpoint alone
    rebuilds the model (:func:`load_classifier`) with ``torch.load(weights_only=True)``.

    Args:
        net: the built network.
        model: config that built ``net``.
        loss: loss config (``name`` + arguments) with class weights resolved to lists.
        optimizer: optimizer config (``name`` + arguments, :mod:`lesion.optim`).
        scheduler: LR schedule config (``name``) or ``None``; it spans each fit's ``max_epochs``.
        classes: class names in output order.
        taxonomy: per class, its token at every decoding level.
        mean, std: input normalisation.
        image_size: side of the square input.
        dataset: the dataset config of the training run (so evaluation can default to it),
            with the ``seed`` of the splits made from it.
        split: how the validation and test splits were made, with a digest of the validation
            ids (:attr:`lesion.data.datamodule.IsicDataModule.split`), checked by evaluation.
    """

    def __init__(self, net: LesionNet, model: dict, loss: dict, optimizer: dict, scheduler: dict | None,
                 classes: list[str], taxonomy: list[list[int]], mean: list[float], std: list[float],
                 image_size: int, dataset: dict | None = None, split: dict | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.loss_fn = build_loss(loss)
        # Keyed "stage_<name>": a ModuleDict key "train" would clash with nn.Module.train.
        self.metrics = nn.ModuleDict({f"stage_{stage}": LesionMetrics(classes) for stage in STAGES})
        self.results: dict[str, dict] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (B×K) of images (B×3×H×W)."""
        return self.net(x)

    def _step(self, batch: tuple[torch.Tensor, ...], stage: str) -> torch.Tensor:
        """Loss and metrics of a batch of ``(images, y)`` or of pooled embeddings ``(avg, mx, y)``."""
        *inputs, y = batch
        # Teacher forcing only while training; evaluation decodes greedily.
        teacher = y if stage == "train" else None
        if len(inputs) == 1:
            images = inputs[0]
            if self.hparams.model.get("channels_last"):  # batches in the weights' memory format
                images = images.contiguous(memory_format=torch.channels_last)
            steps = self.net.step_logits(images, teacher)
        else:
            steps = self.net.step_logits_from_pooled(*inputs, teacher)
        targets = self.net.step_targets(y)
        losses = [F.cross_entropy(s, t) for s, t in zip(steps[:-1], targets[:-1])]
        losses.append(self.loss_fn(steps[-1], targets[-1]))
        loss = torch.stack(losses).mean()
        self.metrics[f"stage_{stage}"].update(steps[-1].detach().float().softmax(1), y)
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, prog_bar=True,
                 batch_size=len(y), sync_dist=stage != "train")
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def _epoch_end(self, stage: str) -> None:
        results = self.metrics[f"stage_{stage}"].compute()
        self.metrics[f"stage_{stage}"].reset()
        self.results[stage] = results
        scalars = {f"{stage}/{k}": float(v) for k, v in results.items()
                   if isinstance(v, float) and k != "bacc" and not k.startswith("support/")}
        self.log_dict(scalars)
        self.log(f"{stage}/bacc", results["bacc"], prog_bar=True)

    def on_train_epoch_end(self) -> None:
        self._epoch_end("train")

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._epoch_end("val")
        else:
            self.metrics["stage_val"].reset()

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")

    def configure_optimizers(self):
        optimizer = build_optimizer(self.parameters(), dict(self.hparams.optimizer))
        if self.hparams.scheduler is None:
            return optimizer
        # Each fit is one stage (fine-tuning, SMOTE-Tomek head): the schedule spans that stage.
        scheduler = build_scheduler(optimizer, dict(self.hparams.scheduler), self.trainer.max_epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


# Checkpoints written before the registry named their builders by import path; each path lesion
# ever wrote maps to its registry name, and no other path is accepted.
LEGACY_TARGETS = {
    "model": {"lesion.models.net.baseline_net": "baseline", "lesion.models.net.barata_net": "barata"},
    "loss": {"lesion.losses.WeightedCrossEntropy": "weighted_ce", "lesion.losses.FocalLoss": "focal"},
    "optimizer": {"torch.optim.AdamW": "adamw", "torch.optim.Adam": "adam", "torch.optim.SGD": "sgd"},
    "scheduler": {"torch.optim.lr_scheduler.CosineAnnealingLR": "cosine"},
    "dataset": {"lesion.data.datamodule.IsicDataModule": None},
}


def _translate_legacy(hparams: object, path: Path) -> object:
    """Hyper-parameters of the ``_target_`` format, with each section's target mapped to its name.

    Only a section's own top-level ``_target_`` (and ``_partial_: true``) is translated; anything
    else, nested targets included, is left for :func:`lesion.options.check_stored` to refuse.
    """
    if not isinstance(hparams, dict):
        return hparams
    out = dict(hparams)
    for key, names in LEGACY_TARGETS.items():
        section = out.get(key)
        if not isinstance(section, dict) or "_target_" not in section:
            continue
        section = dict(section)
        target = section.pop("_target_")
        if target not in names:
            raise LesionError(path, f"its {key} names '{target}', which lesion does not build",
                              "use a checkpoint written by lesion's train.py")
        if section.get("_partial_") is True:
            del section["_partial_"]
        if key == "scheduler":
            section.pop("T_max", None)  # now the length of each training stage
        if names[target] is not None:
            section = {"name": names[target], **section}
        out[key] = section
    return out


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", trust: bool = False) -> tuple[dict, dict]:
    """A lesion checkpoint's contents and its checked hyper-parameters, before anything is built.

    The file is read with ``torch.load(weights_only=True)``; only with ``trust`` is a file that
    this refuses (one pickling other objects, e.g. from another tool) read with
    ``weights_only=False``. Either way the hyper-parameters must be plain registry-named values
    (:func:`lesion.options.check_stored`): a checkpoint never chooses the code that runs.

    Returns:
        ``(checkpoint, hparams)``.
    """
    path = Path(path)
    if not path.is_file():
        raise LesionError(path, "checkpoint not found", "pass ckpt=<run dir>/checkpoints/best.ckpt of a training run")
    try:
        checkpoint = _torch_load(path, map_location, trust)
    except LesionError:
        raise
    except OSError as error:
        raise LesionError(path, f"cannot be read ({error.strerror or error})", "check the path and its permissions") from None
    except Exception:  # noqa: BLE001 — a damaged or foreign file makes the unpickler raise almost anything
        raise LesionError(path, "is not a usable lesion checkpoint (not a readable PyTorch checkpoint file)",
                          "pass a checkpoint written by lesion's train.py") from None
    if not isinstance(checkpoint, dict) or "hyper_parameters" not in checkpoint or "state_dict" not in checkpoint:
        raise LesionError(path, "is not a usable lesion checkpoint (no hyper_parameters or state_dict)",
                          "pass a checkpoint written by lesion's train.py")
    hparams = check_stored(_translate_legacy(checkpoint["hyper_parameters"], path), str(path))
    return checkpoint, hparams


def _torch_load(path: Path, map_location: str | torch.device, trust: bool) -> object:
    """``torch.load`` with ``weights_only=True``; with ``trust``, a file it refuses is read in full."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" not in str(error):
            raise  # not a refused object: a damaged or foreign file (the caller's generic error)
        if not trust:
            refused = str(error).split("WeightsUnpickler error:", 1)[-1].strip().split(". ")[0]
            raise LesionError(path, f"holds Python objects that weights_only loading refuses ({refused[:200]})",
                              "pass trust_checkpoint=true only if you trust its source") from None
    log.warning("%s: read with weights_only=False (trust_checkpoint=true): unpickling it can run code it names", path)
    return torch.load(path, map_location=map_location, weights_only=False)


def load_classifier(path: str | Path, map_location: str | torch.device = "cpu",
                    trust: bool = False) -> LesionClassifier:
    """Rebuild a :class:`LesionClassifier` from a checkpoint alone (read by :func:`read_checkpoint`)."""
    checkpoint, hparams = read_checkpoint(path, map_location, trust)
    try:
        net = build_net(hparams["model"], hparams["classes"], hparams["taxonomy"], weights="none", compile=False)
        module = LesionClassifier(net=net, **hparams)
        module.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError, TypeError, ValueError) as error:
        reason = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]}"
        raise LesionError(path, f"is not a usable lesion checkpoint ({reason})",
                          "pass a checkpoint written by lesion's train.py") from None
    return module.eval()
