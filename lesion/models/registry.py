"""Net builders by name: the only way from a config or a checkpoint to a network.

A config or checkpoint names a net (``model.name``) and gives plain values; it never names the
code that runs. Unknown names are refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lesion.errors import LesionError
from lesion.models.backbone import Backbone
from lesion.models.heads import BarataHead, LinearHead
from lesion.models.metadata import MetadataMLP
from lesion.models.net import LesionNet
from lesion.models.weights import pretrained_state_dict


def build_backbone(name: str = "resnet50", weights: str = "imagenet", frozen_stages: int = 0) -> Backbone:
    """The ResNet trunk ``name`` starting from ``weights`` (``none``, ``imagenet`` or a ``.pth`` path)."""
    source = f"torchvision {name} ImageNet weights" if weights == "imagenet" else weights
    return Backbone(name, frozen_stages, pretrained_state_dict(name, weights), source)


def _metadata_branch(metadata_features: int, metadata_hidden: int, metadata_dropout: float) -> MetadataMLP | None:
    """The MLP on ``metadata_features`` encoded columns, or ``None`` when the net takes no metadata (0)."""
    return MetadataMLP(metadata_features, metadata_hidden, metadata_dropout) if metadata_features else None


def baseline_net(
    num_classes: int,
    taxonomy: list[list[int]],
    backbone: str = "resnet50",
    weights: str = "imagenet",
    dropout: float = 0.5,
    frozen_stages: int = 0,
    metadata_features: int = 0,
    metadata_hidden: int = 64,
    metadata_dropout: float = 0.3,
) -> LesionNet:
    """ResNet + ``LinearHead``, with a metadata branch when ``metadata_features`` > 0.

    ``taxonomy`` is unused; it is accepted so that both builders take the same arguments from
    the caller. ``metadata_*``: see :class:`~lesion.models.metadata.MetadataMLP`.
    """
    trunk = build_backbone(backbone, weights, frozen_stages)
    branch = _metadata_branch(metadata_features, metadata_hidden, metadata_dropout)
    width = branch.hidden if branch else 0
    return LesionNet(trunk, LinearHead(trunk.channels, num_classes, dropout, width), branch)


def barata_net(
    num_classes: int,
    taxonomy: list[list[int]],
    backbone: str = "resnet50",
    weights: str = "imagenet",
    dropout: float = 0.5,
    frozen_stages: int = 0,
    hierarchical: bool = False,
    hidden_size: int = 512,
    embed_dim: int = 128,
    rd_ratio: float = 0.0625,
    metadata_features: int = 0,
    metadata_hidden: int = 64,
    metadata_dropout: float = 0.3,
) -> LesionNet:
    """ResNet + ``BarataHead``, decoding the class in one step or along ``taxonomy``.

    Args:
        num_classes: K.
        taxonomy: K rows ``[level 0 token, …, k]`` (``Layout.taxonomy()``), used if hierarchical.
        hierarchical: decode along the taxonomy (L steps) instead of in one step.
        backbone, weights, frozen_stages: see ``build_backbone``; ``metadata_*``: see
            ``baseline_net``; the rest: see ``BarataHead``.
    """
    rows = [list(row) for row in taxonomy]
    if len(rows) != num_classes or any(len(r) != len(rows[0]) or r[-1] != k for k, r in enumerate(rows)):
        raise LesionError(
            "model.taxonomy",
            f"needs {num_classes} rows of equal length, row k ending in k; got {rows}",
            "leave it to the dataset's taxonomy (Layout.taxonomy())",
        )
    paths = rows if hierarchical else [[k] for k in range(num_classes)]
    trunk = build_backbone(backbone, weights, frozen_stages)
    branch = _metadata_branch(metadata_features, metadata_hidden, metadata_dropout)
    head = BarataHead(trunk.channels, paths, hidden_size, embed_dim, rd_ratio, dropout, branch.hidden if branch else 0)
    return LesionNet(trunk, head, branch)


NETS: dict[str, Callable[..., LesionNet]] = {"baseline": baseline_net, "barata": barata_net}


def build_net(name: str, num_classes: int, taxonomy: Sequence[Sequence[int]], **params) -> LesionNet:
    """The net registered as ``name`` with ``num_classes`` outputs.

    Args:
        name: a key of :data:`NETS`.
        num_classes: K.
        taxonomy: per class, its token at every decoding level (used by hierarchical heads).
        params: the builder's keyword arguments (backbone, weights, dropout, …).
    """
    if not isinstance(name, str) or name not in NETS:
        raise LesionError("model.name", f"unknown model {name!r}", f"use one of {', '.join(NETS)}")
    return NETS[name](num_classes=num_classes, taxonomy=[list(row) for row in taxonomy], **params)
