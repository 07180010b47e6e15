"""Where backbone weights come from: ``none``, ``imagenet`` (torchvision, cached under ``TORCH_HOME``)
or the path of a local ``.pth`` state dict. The file reading of the models package lives here.

Caveat: the download of ``imagenet`` weights goes through ``torch.hub`` without a socket timeout:
on an offline machine name resolution fails at once, behind a firewall that drops packets it
fails only at the TCP connect timeout.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
from torchvision.models import get_model_weights

from lesion.errors import LesionError


def pretrained_state_dict(name: str, weights: str) -> Mapping[str, torch.Tensor] | None:
    """The state dict ``weights`` names for backbone ``name``: ``None`` for ``none``, torchvision's
    DEFAULT ImageNet weights for ``imagenet``, else the tensors of the ``.pth`` file at that path."""
    if weights == "none":
        return None
    if weights == "imagenet":
        return imagenet_state_dict(name)
    return file_state_dict(Path(weights))


def imagenet_state_dict(name: str) -> Mapping[str, torch.Tensor]:
    """Torchvision's DEFAULT ImageNet weights of ``name``, from the hub cache or downloaded there."""
    weights = get_model_weights(name).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
    was_cached = cached.is_file()
    try:
        return weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
    except (OSError, RuntimeError) as err:  # URLError is an OSError, a bad hash a RuntimeError
        if was_cached:
            raise LesionError(
                cached,
                f"the cached ImageNet weights for {name} are unreadable ({err})",
                "delete the file and run again on a machine with internet, or pass model.weights=none",
            ) from err
        raise LesionError(
            cached,
            f"ImageNet weights for {name} are not cached and could not be downloaded",
            f"download {weights.url} to that path on a machine with internet, "
            "or pass model.weights=PATH.pth or model.weights=none",
        ) from err


def file_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    """The state dict stored in ``path`` (tensors only: ``weights_only=True``)."""
    if not path.is_file():
        raise LesionError(
            path,
            "weights file not found",
            "pass model.weights=imagenet, model.weights=none or the path of an existing .pth file",
        )
    fix = "save it with torch.save(model.state_dict(), PATH)"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a foreign file makes torch.load raise almost anything
        raise LesionError(path, f"cannot be read as a torch state dict ({err})", fix) from err
    if not isinstance(state, Mapping):
        raise LesionError(path, f"holds a {type(state).__name__}, not a state dict", fix)
    return state
