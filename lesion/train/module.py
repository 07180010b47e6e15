"""LightningModule: a :class:`LesionNet` built by registry name, with its loss, optimisation and metrics.

Every argument is a plain value (names, numbers, lists), saved as the checkpoint's
hyper-parameters; :meth:`LesionClassifier.load_from_checkpoint` rebuilds the module from them
through :func:`lesion.checkpoint.read_checkpoint` and :mod:`lesion.models.registry`, so a
checkpoint never chooses the code that runs.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from lesion.balance.plan import resolve_class_weights
from lesion.checkpoint import read_checkpoint
from lesion.data.metadata_features import MetadataEncoding
from lesion.errors import LesionError
from lesion.evaluate.ood import CHECKPOINT_KEY as OOD_KEY
from lesion.evaluate.ood import OodThreshold
from lesion.metrics import LesionMetrics
from lesion.models import registry
from lesion.models.backbone import normalisation
from lesion.options import STORED_KEYS, check_stored
from lesion.train.losses import build_loss
from lesion.train.optim import build_optimizer, build_scheduler

# Checkpoint entry holding the validation BACC of its weights (LesionClassifier.on_save_checkpoint).
VAL_BACC_KEY = "val_bacc"
# ... and, for two classes, its validation pAUC80 (lesion.metrics.partial_auc).
VAL_PAUC_KEY = "val_pauc80"
# Metric sets of the Trainer's stages (not the training stages of lesion.train.run).
METRIC_STAGES = ("train", "val", "test")


class LesionClassifier(pl.LightningModule):
    """Trains and evaluates the net that ``model`` names.

    The final decoding step's loss is the configured one (focal, weighted CE, …); earlier
    taxonomy steps of a hierarchical decoder use plain cross-entropy; the loss is their mean. A
    hierarchical decoder is fed the true coarse labels for the loss (teacher forcing); every
    stage's metrics, ``train/*`` included, are of its greedy predictions.
    Class weights that depend on the training counts (``loss.weight: inverse_frequency``,
    ``balance.class_weight``) are resolved in :meth:`setup` from the DataModule's balance plan
    and saved as numbers, so the checkpoint alone rebuilds the same loss.

    Args:
        model: the model config (``name`` in :mod:`lesion.models.registry` + its arguments).
        loss: loss config (``name`` + arguments); class weights a list, ``None`` or a weighting name.
        optimizer: optimizer config (``name`` + arguments, :mod:`lesion.train.optim`).
        scheduler: LR schedule config (``name``) or ``None``; it spans each fit's ``max_epochs``.
        classes: class names in output order.
        taxonomy: per class, its token at every decoding level.
        image_size: side of the square input.
        mean, std: input normalisation (``None``: the backbone's, :func:`~lesion.models.backbone.normalisation`).
        dataset: the dataset config of the training run (so evaluation can default to it),
            with the ``seed`` of the splits made from it.
        split: how the validation and test splits were made, with a digest of the validation
            ids (:attr:`lesion.data.datamodule.IsicDataModule.split`), checked by evaluation.
        metadata: the patient-metadata encoding (:meth:`MetadataEncoding.as_dict
            <lesion.data.metadata_features.MetadataEncoding.as_dict>`) of a net with
            ``model.metadata: true``, else ``None``.
        load_weights: start the backbone from ``model.weights``; ``False`` starts it at random
            (for weights about to be loaded from a checkpoint). Not a hyper-parameter.
        channels_last: keep weights and batches channels-last (tensor cores). Not a hyper-parameter.
        compile: compile the backbone with ``torch.compile`` on its first call. Not a hyper-parameter.
    """

    def __init__(self, model: dict, loss: dict, optimizer: dict, scheduler: dict | None, classes: list[str],
                 taxonomy: list[list[int]], image_size: int, mean: list[float] | None = None,
                 std: list[float] | None = None, dataset: dict | None = None, split: dict | None = None,
                 metadata: dict | None = None, load_weights: bool = True, channels_last: bool = False,
                 compile: bool = False):
        super().__init__()
        default_mean, default_std = normalisation(model["backbone"])
        mean = list(default_mean if mean is None else mean)
        std = list(default_std if std is None else std)
        self.save_hyperparameters(ignore=["load_weights", "channels_last", "compile"])
        params = {k: v for k, v in model.items() if k not in ("name", "metadata")}
        if not load_weights:
            params["weights"] = "none"
        if model.get("metadata"):
            if metadata is None:
                raise LesionError("model.metadata", "is true, and no metadata encoding was given",
                                  "train on a dataset with patient metadata, or use model.metadata=false")
            params["metadata_features"] = MetadataEncoding.from_dict(metadata).width
        elif metadata is not None:
            raise LesionError("metadata", "is an encoding for a net without metadata (model.metadata is false)",
                              "drop it, or set model.metadata=true")
        self.net = registry.build_net(model["name"], len(classes), taxonomy, **params)
        self.channels_last = channels_last
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        if compile:
            self.net.backbone.compile()  # in place: parameter names, hence checkpoints, are unchanged
        self._configured_loss = dict(loss)
        self.loss_fn = build_loss(_unresolved_as_none(loss))
        # Keyed "stage_<name>": a ModuleDict key "train" would clash with nn.Module.train.
        self.metrics = nn.ModuleDict({f"stage_{stage}": LesionMetrics(classes) for stage in METRIC_STAGES})
        self.results: dict[str, dict] = {}
        # The out-of-distribution threshold fitted when training ended, read with the checkpoint (not a hyper-parameter).
        self.ood_threshold: OodThreshold | None = None

    def setup(self, stage: str) -> None:
        """Resolve the loss's class weights from the training counts of the DataModule's balance plan."""
        plan = getattr(self.trainer.datamodule, "plan", None) if stage == "fit" else None
        configured = self._configured_loss
        if plan is None:
            if stage == "fit" and _unresolved_as_none(configured) != configured:
                key = "alpha" if "alpha" in configured else "weight"
                raise LesionError(f"loss.{key}", f"names the weighting '{configured[key]}', which needs the training "
                                  "counts of a lesion DataModule", "train with lesion's DataModule or pass a list of weights")
            return
        resolved = resolve_class_weights(configured, plan.counts, plan.class_weights,
                                         sampler=plan.sample_weights is not None)
        self.hparams["loss"] = resolved
        self.loss_fn = build_loss(resolved).to(self.device)

    @property
    def uses_metadata(self) -> bool:
        """Whether the net takes encoded patient metadata with each image."""
        return self.net.metadata is not None

    def forward(self, x: torch.Tensor, metadata: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits (B×K) of images (B×3×H×W) and, for a metadata net, their encoded metadata (B×D)."""
        return self.net(x, metadata)

    def predict_step(self, batch: torch.Tensor | tuple | list, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Class probabilities (B×K) of a batch of images, of ``(images, labels)`` or of ``(images, metadata, labels)``."""
        if not isinstance(batch, (tuple, list)):
            return self(batch).float().softmax(1)
        return self(batch[0], batch[1] if self.uses_metadata else None).float().softmax(1)

    def _step(self, batch: tuple[torch.Tensor, ...], stage: str) -> torch.Tensor:
        """Loss and metrics of a batch of images ``(images, [metadata,] y)`` or of pooled embeddings
        ``(avg, mx, [metadata,] y)``; the metadata is there when the net takes it.

        Images pass the backbone once; the head runs on their pooled embeddings, which gives the
        same logits (:class:`~lesion.models.net.LesionNet`) and lets the metrics re-decode cheaply.
        """
        *inputs, y = batch
        metadata = inputs.pop() if self.uses_metadata else None
        if len(inputs) == 1:
            images = inputs[0]
            if self.channels_last:  # batches in the weights' memory format
                images = images.contiguous(memory_format=torch.channels_last)
            inputs = self.net.embed(images)
        avg, mx = inputs
        # Teacher forcing only while training; evaluation decodes greedily.
        teacher = y if stage == "train" else None
        steps = self.net.step_logits_from_pooled(avg, mx, teacher, metadata)
        targets = self.net.step_targets(y)
        losses = [F.cross_entropy(s, t) for s, t in zip(steps[:-1], targets[:-1])]
        losses.append(self.loss_fn(steps[-1], targets[-1]))
        loss = torch.stack(losses).mean()
        predicted = steps[-1].detach()
        if teacher is not None and len(steps) > 1:
            # The metrics are of what the net predicts, not of what it predicts fed the true coarse labels.
            with torch.no_grad():
                predicted = self.net.step_logits_from_pooled(avg, mx, None, metadata)[-1]
        self.metrics[f"stage_{stage}"].update(predicted.float().softmax(1), y)
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

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Store the latest validation BACC (and pAUC80 for two classes), as logged, with the weights: for a
        checkpoint saved after validation, such as ``best.ckpt``, the figures of those very weights."""
        for metric, key in (("val/bacc", VAL_BACC_KEY), ("val/pauc80", VAL_PAUC_KEY)):
            score = self.trainer.callback_metrics.get(metric)
            if score is not None:
                checkpoint[key] = float(score)

    def configure_optimizers(self):
        optimizer = build_optimizer(self.parameters(), dict(self.hparams.optimizer))
        if self.hparams.scheduler is None:
            return optimizer
        # Each fit is one stage (fine-tuning, SMOTE-Tomek head): the schedule spans that stage.
        scheduler = build_scheduler(optimizer, dict(self.hparams.scheduler), self.trainer.max_epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: str | Path, map_location=None, hparams_file: str | None = None,
                             strict: bool | None = None, weights_only: bool | None = None,
                             **kwargs) -> LesionClassifier:
        """Rebuild the module from a checkpoint alone, in eval mode, with its stored out-of-distribution
        threshold (:attr:`ood_threshold`, ``None`` when it stores none).

        Lightning's signature, read safely (:func:`lesion.checkpoint.read_checkpoint`): the file
        with ``torch.load(weights_only=True)`` unless ``weights_only=False`` is passed for a trusted
        file that pickles other objects; its hyper-parameters, and any given here in ``kwargs``,
        checked as plain registry-named values before the net is built.

        Args:
            checkpoint_path: a ``.ckpt`` written by lesion's ``train.py``.
            map_location: where to put the tensors, and the module with them (default the CPU).
            hparams_file: refused: a lesion checkpoint holds its hyper-parameters.
            strict: whether the state dict must match exactly (default ``True``).
            weights_only: ``False`` also reads a trusted file that ``weights_only`` loading refuses.
            kwargs: hyper-parameters to replace, or ``channels_last`` / ``compile``.
        """
        if hparams_file is not None:
            raise LesionError("hparams_file", "is not used: a lesion checkpoint holds its own hyper-parameters",
                              "drop hparams_file")
        runtime = {k: kwargs.pop(k) for k in ("channels_last", "compile") if k in kwargs}
        checkpoint, hparams = read_checkpoint(checkpoint_path, map_location or "cpu", trust=weights_only is False)
        unknown = [k for k in kwargs if k not in STORED_KEYS]
        if unknown:
            raise LesionError(unknown[0], "is not a hyper-parameter of LesionClassifier",
                              f"override one of {', '.join(STORED_KEYS)}")
        if kwargs:
            hparams = check_stored({**hparams, **kwargs}, str(checkpoint_path))
        try:
            module = cls(**hparams, load_weights=False, **runtime)
            module.load_state_dict(checkpoint["state_dict"], strict=True if strict is None else strict)
        except (RuntimeError, KeyError, TypeError, ValueError) as error:
            reason = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]}"
            raise LesionError(checkpoint_path, f"is not a usable lesion checkpoint ({reason})",
                              "pass a checkpoint written by lesion's train.py") from None
        # As Lightning's: the module goes where map_location put the weights (the module was built
        # on the CPU, and load_state_dict copies into its tensors where they are).
        device = next((t.device for t in checkpoint["state_dict"].values() if isinstance(t, torch.Tensor)), None)
        module.ood_threshold = OodThreshold.from_dict(checkpoint.get(OOD_KEY))
        return module.to(device).eval() if device is not None else module.eval()


def _unresolved_as_none(loss: dict) -> dict:
    """``loss`` with a weighting name (resolved later, from the training counts) replaced by ``None``."""
    key = "alpha" if "alpha" in loss else "weight"
    return {**loss, key: None} if isinstance(loss.get(key), str) else dict(loss)
