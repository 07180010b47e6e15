"""Reading a lesion checkpoint safely: the file is data, checked before anything is built.

Every path from a checkpoint to a model goes through :func:`read_checkpoint`:
``LesionClassifier.load_from_checkpoint``, ``evaluate.py``, resuming (``ckpt_path``) and
``balance.backbone_ckpt``. The file is read with ``torch.load(weights_only=True)`` and its
hyper-parameters must be plain registry-named values (:func:`lesion.options.check_stored`).

A run writes two kinds: ``best.ckpt`` holds the model (weights, hyper-parameters and the module's
own entries), enough to rebuild and evaluate it; ``last.ckpt`` also holds the training state
(optimizer, LR schedule, callbacks, loops) that resuming needs (:func:`holds_training_state`).
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import torch

from lesion.errors import LesionError
from lesion.files import atomic_path
from lesion.options import check_stored

log = logging.getLogger(__name__)


# Checkpoints written before the registry named their builders by import path; each path lesion
# ever wrote maps to its registry name, and no other path is accepted.
LEGACY_TARGETS = {
    "model": {"lesion.models.net.baseline_net": "baseline", "lesion.models.net.barata_net": "barata"},
    "loss": {"lesion.losses.WeightedCrossEntropy": "weighted_ce", "lesion.losses.FocalLoss": "focal"},
    "optimizer": {"torch.optim.AdamW": "adamw", "torch.optim.Adam": "adam", "torch.optim.SGD": "sgd"},
    "scheduler": {"torch.optim.lr_scheduler.CosineAnnealingLR": "cosine"},
    "dataset": {"lesion.data.datamodule.IsicDataModule": None},
}


# Runtime switches that checkpoints once stored with the model (now options of a run, not of a net).
LEGACY_MODEL_SWITCHES = ("channels_last", "compile")


def _translate_legacy(hparams: object, path: Path) -> object:
    """Hyper-parameters of older formats in today's: each section's ``_target_`` mapped to its
    name, and the model's former runtime switches (:data:`LEGACY_MODEL_SWITCHES`) dropped.

    Only a section's own top-level ``_target_`` (and ``_partial_: true``) is translated, and a
    switch only when it is a boolean; anything else, nested targets included, is left for
    :func:`lesion.options.check_stored` to refuse.
    """
    if not isinstance(hparams, dict):
        return hparams
    out = dict(hparams)
    if isinstance(out.get("model"), dict):
        out["model"] = {k: v for k, v in out["model"].items()
                        if not (k in LEGACY_MODEL_SWITCHES and isinstance(v, bool))}
    for key, names in LEGACY_TARGETS.items():
        section = out.get(key)
        if not isinstance(section, dict) or "_target_" not in section:
            continue
        section = dict(section)
        target = section.pop("_target_")
        if not isinstance(target, str) or target not in names:
            raise LesionError(path, f"its {key} names {target!r}, which lesion does not build",
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


def store_entry(path: str | Path, key: str, value: dict) -> None:
    """Add (or replace) the entry ``key`` of a checkpoint file: plain values only, so the file still loads with
    ``weights_only=True``; written atomically (a reader never sees a half-written checkpoint)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint[key] = value
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def holds_training_state(checkpoint: dict) -> bool:
    """Whether a checkpoint's contents can resume training (``last.ckpt``), not only rebuild the model
    (a weights-only checkpoint such as ``best.ckpt``)."""
    return "optimizer_states" in checkpoint


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
