"""What a consumer of an exported model needs to feed it the pixels ``evaluate.py`` would.

The record travels inside the exported file (ONNX ``metadata_props``, one JSON value per key;
TorchScript's extra file ``lesion.json``) and beside it as one JSON file (:func:`record_file`), for
runtimes that cannot read custom metadata (onnxruntime-node). Preprocessing, as
:class:`lesion.data.unlabelled.FolderImages` does it: decode to upright RGB → resize the short side
to ``cache_size`` (bicubic) and take the centred square → colour constancy (``color_constancy``,
:mod:`lesion.data.color`) → resize to ``input_size`` → scale to [0, 1], subtract ``mean``, divide by
``std`` (RGB) → 1×3×H×W float32.
A net trained with patient metadata also takes ``metadata``: the encoding of
:class:`lesion.data.metadata_features.MetadataEncoding` described by the record's ``metadata``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lesion import __version__
from lesion.data.cache import square_size
from lesion.errors import LesionError

# What members of one exported ensemble must share: one input for all of them.
SHARED = ("classes", "mean", "std", "input_size", "cache_size", "color_constancy", "metadata")


def record_file(model: Path) -> Path:
    """The JSON file beside an exported model that holds its record: ``model.onnx`` → ``model.onnx.json``."""
    return model.with_name(model.name + ".json")


def preprocessing_record(hparams) -> dict:
    """The record (module docstring) of one checkpoint's hyper-parameters."""
    dataset = hparams.get("dataset") or {}
    return {
        "lesion_version": __version__,
        "model": hparams["model"]["name"],
        "backbone": hparams["model"]["backbone"],
        "classes": list(hparams["classes"]),
        "mean": [float(v) for v in hparams["mean"]],
        "std": [float(v) for v in hparams["std"]],
        "input_size": int(hparams["image_size"]),
        "cache_size": square_size(hparams["image_size"], dataset.get("cache_size")),
        "color_constancy": dataset.get("color_constancy"),
        "metadata": hparams.get("metadata"),
        "inputs": ["image", "metadata"] if hparams.get("metadata") else ["image"],
        "output": "probabilities",
    }


def ensemble_record(records: Sequence[dict], names: Sequence[str]) -> dict:
    """The record of a mean ensemble; refuses members that do not take the same input.

    Args:
        records: each member's :func:`preprocessing_record`.
        names: each member's checkpoint, for the refusal.
    """
    first = records[0]
    for record, name in zip(records[1:], names[1:]):
        differ = [key for key in SHARED if record[key] != first[key]]
        if differ:
            raise LesionError("ckpt", f"{name} differs from {names[0]} in {', '.join(differ)}, so the members "
                              "cannot share one input", "export each checkpoint on its own, or ensemble models "
                              "trained with the same preprocessing")
    if len(records) == 1:
        return dict(first)
    return {**first, "model": [r["model"] for r in records], "backbone": [r["backbone"] for r in records],
            "ensemble": {"method": "mean", "members": len(records)}}
