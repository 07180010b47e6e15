"""LightningModule: loss, optimisation and metrics around a built :class:`LesionNet`."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn

from lesion.errors import LesionError
from lesion.metrics import LesionMetrics
from lesion.models.net import LesionNet

log = logging.getLogger(__name__)

STAGES = ("train", "val", "test")


def build_net(model: dict, classes: Sequence[str], taxonomy: list[list[int]], **overrides) -> LesionNet:
    """Instantiate the net described by a ``model`` config (``_target_`` + ``_partial_``).

    Args:
        model: the model config as a plain dict.
        classes: class names; their number sets the output size.
        taxonomy: per class, its token at every decoding level.
        overrides: config entries to replace (e.g. ``weights="none"`` when loading a checkpoint).

    ``model.channels_last`` stores the weights channels-last; ``model.compile`` compiles the
    backbone with ``torch.compile`` (on its first call).
    """
    model = {**model, **overrides}
    channels_last, compile_backbone = model.pop("channels_last", False), model.pop("compile", False)
    net = instantiate(model)(num_classes=len(classes), taxonomy=taxonomy)
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
        loss: loss config with class weights resolved to lists.
        optimizer: optimizer config (``_partial_: true``).
        scheduler: LR scheduler config (``_partial_: true``) or ``None``.
        classes: class names in output order.
        taxonomy: per class, its token at every decoding level.
        mean, std: input normalisation.
        image_size: side of the square input.
        dataset: the dataset config of the training run (so evaluation can default to it).
    """

    def __init__(self, net: LesionNet, model: dict, loss: dict, optimizer: dict, scheduler: dict | None,
                 classes: list[str], taxonomy: list[list[int]], mean: list[float], std: list[float],
                 image_size: int, dataset: dict | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.loss_fn = instantiate(loss)
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
        optimizer = instantiate(self.hparams.optimizer)(params=self.parameters())
        if self.hparams.scheduler is None:
            return optimizer
        scheduler = instantiate(self.hparams.scheduler)(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


# What a checkpoint may ask to instantiate: a checkpoint is data and must not choose the code
# that runs (hparams hold ``_target_`` strings).
ALLOWED_TARGETS = {
    "model": ("lesion.models.net.baseline_net", "lesion.models.net.barata_net"),
    "loss": ("lesion.losses.WeightedCrossEntropy", "lesion.losses.FocalLoss"),
    "optimizer": ("torch.optim.",),
    "scheduler": ("torch.optim.lr_scheduler.",),
    "dataset": ("lesion.data.datamodule.IsicDataModule",),
}


def _check_targets(hparams: dict, path: Path) -> None:
    for key, allowed in ALLOWED_TARGETS.items():
        target = (hparams.get(key) or {}).get("_target_")
        if target is not None and not any(target == a or (a.endswith(".") and target.startswith(a)) for a in allowed):
            raise LesionError(path, f"names a {key} '{target}' that lesion does not build",
                              "use a checkpoint written by lesion's train.py")


def _read_checkpoint(path: Path, map_location: str | torch.device, trust: bool) -> dict:
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
    """Rebuild a :class:`LesionClassifier` from a checkpoint alone.

    The file is read with ``weights_only=True``; only with ``trust`` is a file that this refuses
    (one pickling other objects, e.g. from another tool) read with ``weights_only=False``. Either
    way only the model, loss, optimizer and dataset targets in :data:`ALLOWED_TARGETS` are
    instantiated.
    """
    path = Path(path)
    if not path.is_file():
        raise LesionError(path, "checkpoint not found", "pass ckpt=<run dir>/checkpoints/best.ckpt of a training run")
    try:
        checkpoint = _read_checkpoint(path, map_location, trust)
        hparams = checkpoint["hyper_parameters"]
        _check_targets(hparams, path)
        net = build_net(hparams["model"], hparams["classes"], hparams["taxonomy"], weights="none", compile=False)
        module = LesionClassifier(net=net, **hparams)
        module.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError, TypeError, OSError, EOFError, AttributeError, IndexError,
            pickle.UnpicklingError) as error:
        if isinstance(error, pickle.UnpicklingError):
            reason = "not a readable PyTorch checkpoint file"
        else:
            reason = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]}"
        raise LesionError(path, f"is not a usable lesion checkpoint ({reason})",
                          "pass a checkpoint written by lesion's train.py") from None
    return module.eval()
