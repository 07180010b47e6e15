"""Channel attention: CBAM's channel gate and its LSTM-state-conditioned variant.

``ChannelAttention`` is the channel half of CBAM (Woo et al., "CBAM: Convolutional Block Attention
Module", ECCV 2018): ``w = σ(MLP(avg F) + MLP(max F))`` with one shared MLP, ``F' = F ⊙ w``.

``StateChannelAttention`` is the per-step channel attention of Barata et al., "Explainable skin
lesion diagnosis using taxonomies", Pattern Recognition 110 (2021), as in the authors' reference
code (``catarina-barata/skin-hierarchy``, ``attention_modules.py``):
``β_t = σ(FC(tanh(MLP(avg F) + MLP(max F) + FC(h_{t-1}))))``.

Both read F only through its average- and max-pooled vectors, and their gates are positive, so
``avgpool(F ⊙ w) = avgpool(F) ⊙ w`` and ``maxpool(F ⊙ w) = maxpool(F) ⊙ w``: a head built from
them can be run exactly on pooled embeddings (see ``lesion.models.heads``).

Caveats: pooling uses ``mean``/``amax`` over the spatial dims, not adaptive pooling, whose CUDA
backward is not deterministic. The reference code's MLP is a single ``Linear→ReLU``; ours adds a
second ``Linear`` (CBAM's MLP shape). The reference follows the channel gate with a spatial soft
attention over positions, which is omitted here because it is not exact on pooled embeddings. The
hidden width is ``max(8, int(channels * rd_ratio))`` in both modules, i.e. ``channels/16`` for
ResNet features.
"""

from __future__ import annotations

import torch
from torch import nn


def _mlp(channels: int, rd_channels: int, out_channels: int, act_layer: type[nn.Module]) -> nn.Sequential:
    return nn.Sequential(nn.Linear(channels, rd_channels), act_layer(), nn.Linear(rd_channels, out_channels))


def _rd_channels(channels: int, rd_ratio: float) -> int:
    return max(8, int(channels * rd_ratio))


class ChannelAttention(nn.Module):
    """CBAM channel attention: ``F' = F ⊙ σ(MLP(avg F) + MLP(max F))``.

    Args:
        channels: C, channels of the feature map.
        rd_ratio: hidden width of the shared MLP as a fraction of C.
        act_layer: activation of the MLP.
    """

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, act_layer: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.mlp = _mlp(channels, _rd_channels(channels, rd_ratio), channels, act_layer)

    def weights(self, avg: torch.Tensor, mx: torch.Tensor) -> torch.Tensor:
        """Args: avg, mx: B×C pooled features. Returns: w, B×C channel weights in (0, 1)."""
        return torch.sigmoid(self.mlp(avg) + self.mlp(mx))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: B×C×H×W feature map. Returns: ``x ⊙ w``, B×C×H×W."""
        w = self.weights(x.mean((2, 3)), x.amax((2, 3)))
        return x * w[..., None, None]

    def pooled(self, avg: torch.Tensor, mx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Average- and max-pooled ``forward(x)`` from the pooled ``x`` alone.

        Exact, not an approximation: ``w`` is constant over positions, so it factors out of the
        mean, and ``w ≥ 0`` per channel, so scaling by it commutes with the max.

        Args:
            avg, mx: B×C, ``x.mean((2, 3))`` and ``x.amax((2, 3))``.

        Returns:
            ``(avg ⊙ w, mx ⊙ w)``, each B×C.
        """
        w = self.weights(avg, mx)
        return avg * w, mx * w


class StateChannelAttention(nn.Module):
    """Channel attention conditioned on a recurrent state (Barata et al. 2021).

    ``β = σ(fc_out(tanh(mlp(avg) + mlp(max) + fc_state(state))))``, recomputed at every decoder
    step from the pooled features and the previous LSTM hidden state.

    Args:
        channels: C, channels of the feature map.
        state_size: size of the conditioning state (the LSTM hidden size).
        rd_ratio: hidden width d of the shared MLP as a fraction of C.
        act_layer: activation of the MLP.
    """

    def __init__(
        self, channels: int, state_size: int, rd_ratio: float = 1 / 16, act_layer: type[nn.Module] = nn.ReLU
    ):
        super().__init__()
        rd_channels = _rd_channels(channels, rd_ratio)
        self.mlp = _mlp(channels, rd_channels, rd_channels, act_layer)
        self.fc_state = nn.Linear(state_size, rd_channels)
        self.fc_out = nn.Linear(rd_channels, channels)

    def forward(self, avg: torch.Tensor, mx: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Args: avg, mx: B×C pooled features; state: B×state_size. Returns: β, B×C in (0, 1)."""
        return torch.sigmoid(self.fc_out(torch.tanh(self.mlp(avg) + self.mlp(mx) + self.fc_state(state))))
