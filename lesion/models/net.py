"""LesionNet: a ResNet trunk and a classification head, runnable on images or pooled embeddings.

Two heads: ``LinearHead`` (avgpool → dropout → linear, the baseline) and ``BarataHead`` (CBAM
channel attention, then the LSTM decoder of Barata et al., "Explainable skin lesion diagnosis
using taxonomies", Pattern Recognition 110 (2021), flat or hierarchical).

Both heads read the feature map F only through ``avg = F.mean((2, 3))`` and
``mx = F.amax((2, 3))`` and every attention weight is positive and constant over positions, so
``head_from_pooled(*embed(x)) == forward(x)`` up to float rounding. This makes training the head
on SMOTE-Tomek resampled embeddings exact. A spatial attention over positions would break it.

Heads return per-step logits (one list entry per decoding step; the last entry is the B×K class
logits) and per-step targets, so the loss is the mean of per-step cross-entropies for every head.
"""

from __future__ import annotations

import torch
from torch import nn

from lesion.errors import LesionError
from lesion.models.attention import ChannelAttention
from lesion.models.backbone import Backbone
from lesion.models.decoder import LSTMDecoder


class LinearHead(nn.Module):
    """Baseline head: avgpool → dropout → linear, one step.

    Args:
        channels: C, channels of the feature map.
        num_classes: K.
        dropout: dropout before the linear layer.
    """

    def __init__(self, channels: int, num_classes: int, dropout: float = 0.5):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, avg: torch.Tensor) -> torch.Tensor:
        """Args: avg: B×C average-pooled features. Returns: B×K logits."""
        return self.fc(self.drop(avg))

    def steps(self, fmap: torch.Tensor, targets: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Args: fmap: F, B×C×h×w; targets: unused (one step). Returns: ``[B×K logits]``."""
        return [self(fmap.mean((2, 3)))]

    def steps_from_pooled(
        self, avg: torch.Tensor, mx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """Args: avg, mx: B×C pooled features (mx unused); targets: unused. Returns: ``[B×K]``."""
        return [self(avg)]

    def step_targets(self, targets: torch.Tensor) -> list[torch.Tensor]:
        """Args: targets: B class indices. Returns: ``[targets]``."""
        return [targets]


class BarataHead(nn.Module):
    """CBAM channel attention on F, then the (flat or hierarchical) LSTM decoder.

    Args:
        channels: C, channels of the feature map.
        paths: per-class token path, see ``LSTMDecoder``.
        hidden_size, embed_dim, dropout: see ``LSTMDecoder``.
        rd_ratio: reduction ratio of both channel attentions.
    """

    def __init__(
        self,
        channels: int,
        paths: list[list[int]],
        hidden_size: int = 512,
        embed_dim: int = 128,
        rd_ratio: float = 1 / 16,
        dropout: float = 0.5,
    ):
        super().__init__()
        self.attention = ChannelAttention(channels, rd_ratio)
        self.decoder = LSTMDecoder(channels, paths, hidden_size, embed_dim, rd_ratio, dropout)

    def steps(self, fmap: torch.Tensor, targets: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Args: fmap: F, B×C×h×w; targets: B class indices (teacher forcing) or ``None``.
        Returns: L per-step logits, the last B×K."""
        return self.decoder.steps(self.attention(fmap), targets)

    def steps_from_pooled(
        self, avg: torch.Tensor, mx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """``steps`` from ``avg = F.mean((2, 3))``, ``mx = F.amax((2, 3))`` (B×C each), exactly."""
        return self.decoder.steps_from_pooled(*self.attention.pooled(avg, mx), targets)

    def step_targets(self, targets: torch.Tensor) -> list[torch.Tensor]:
        """Args: targets: B class indices. Returns: L tensors of B target tokens."""
        return self.decoder.step_targets(targets)


class LesionNet(nn.Module):
    """Backbone + head.

    Args:
        backbone: the ResNet trunk giving F (B×C×h×w).
        head: ``LinearHead`` or ``BarataHead`` (anything with ``steps``, ``steps_from_pooled``
            and ``step_targets``).
    """

    def __init__(self, backbone: Backbone, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: B×3×H×W normalised images. Returns: F, B×C×h×w."""
        return self.backbone(x)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: x: B×3×H×W. Returns: ``(F.mean((2, 3)), F.amax((2, 3)))``, B×C each."""
        fmap = self.forward_features(x)
        return fmap.mean((2, 3)), fmap.amax((2, 3))

    def head_from_pooled(self, avg: torch.Tensor, mx: torch.Tensor) -> torch.Tensor:
        """Args: avg, mx: B×C from ``embed``. Returns: B×K class logits, equal to ``forward(x)``."""
        return self.step_logits_from_pooled(avg, mx)[-1]

    def step_logits(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Args: x: B×3×H×W; targets: B class indices (teacher forcing) or ``None`` (greedy).
        Returns: per-step logits, the last B×K."""
        return self.head.steps(self.forward_features(x), targets)

    def step_logits_from_pooled(self, avg: torch.Tensor, mx: torch.Tensor,
                                targets: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Args: avg, mx: B×C from ``embed``; targets: as in ``step_logits``.
        Returns: per-step logits, equal to ``step_logits`` on the images."""
        return self.head.steps_from_pooled(avg, mx, targets)

    def step_targets(self, targets: torch.Tensor) -> list[torch.Tensor]:
        """Args: targets: B class indices. Returns: per-step target tokens, B each."""
        return self.head.step_targets(targets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: B×3×H×W. Returns: B×K class logits (greedy decoding)."""
        return self.step_logits(x)[-1]


def baseline_net(
    num_classes: int,
    taxonomy: list[list[int]],
    backbone: str = "resnet50",
    weights: str = "imagenet",
    dropout: float = 0.5,
    frozen_stages: int = 0,
) -> LesionNet:
    """ResNet + ``LinearHead``. ``taxonomy`` is unused; it is accepted so that both builders take
    the same arguments from the caller."""
    trunk = Backbone(backbone, weights, frozen_stages)
    return LesionNet(trunk, LinearHead(trunk.channels, num_classes, dropout))


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
) -> LesionNet:
    """ResNet + ``BarataHead``, decoding the class in one step or along ``taxonomy``.

    Args:
        num_classes: K.
        taxonomy: K rows ``[level 0 token, …, k]`` (``Layout.taxonomy()``), used if hierarchical.
        hierarchical: decode along the taxonomy (L steps) instead of in one step.
        backbone, weights, frozen_stages: see ``Backbone``; the rest: see ``BarataHead``.
    """
    rows = [list(row) for row in taxonomy]
    if len(rows) != num_classes or any(len(r) != len(rows[0]) or r[-1] != k for k, r in enumerate(rows)):
        raise LesionError(
            "model.taxonomy",
            f"needs {num_classes} rows of equal length, row k ending in k; got {rows}",
            "leave it to the dataset's taxonomy (Layout.taxonomy())",
        )
    paths = rows if hierarchical else [[k] for k in range(num_classes)]
    trunk = Backbone(backbone, weights, frozen_stages)
    return LesionNet(trunk, BarataHead(trunk.channels, paths, hidden_size, embed_dim, rd_ratio, dropout))
