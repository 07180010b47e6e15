"""Net builders by name: the only way from a config or a checkpoint to a network.

A config or checkpoint names a net (``model.name``) and gives plain values; it never names the
code that runs. Unknown names are refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lesion.errors import LesionError
from lesion.models.net import LesionNet, barata_net, baseline_net

NETS: dict[str, Callable[..., LesionNet]] = {"baseline": baseline_net, "barata": barata_net}


def build_net(name: str, num_classes: int, taxonomy: Sequence[Sequence[int]], **params) -> LesionNet:
    """The net registered as ``name`` with ``num_classes`` outputs.

    Args:
        name: a key of :data:`NETS`.
        num_classes: K.
        taxonomy: per class, its token at every decoding level (used by hierarchical heads).
        params: the builder's keyword arguments (backbone, weights, dropout, …).
    """
    if name not in NETS:
        raise LesionError("model.name", f"unknown model '{name}'", f"use one of {', '.join(NETS)}")
    return NETS[name](num_classes=num_classes, taxonomy=[list(row) for row in taxonomy], **params)
