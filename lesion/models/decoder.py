"""LSTM decoder with per-step channel attention, flat or along the lesion taxonomy.

Barata et al., "Explainable skin lesion diagnosis using taxonomies", Pattern Recognition 110
(2021); reference TensorFlow code ``catarina-barata/skin-hierarchy``. The class is decoded as a
short "sentence" of label tokens, one per taxonomy level (melanocytic? → malignant? → class), or
in a single step for flat classification:

- ``h0 = tanh(W_h · dropout(f))``, ``c0 = tanh(W_c · dropout(f))`` with ``f = avgpool(F)``, or
  ``f = [avgpool(F); m]`` with the metadata features ``m`` of a net fed patient metadata;
- step t: ``β_t = StateChannelAttention(avg F, max F, h_{t-1})``, context ``= avgpool(F ⊙ β_t)``,
  LSTM input ``= [context; embedding(previous token)]`` (a start token at step 0);
- step logits ``= Linear_t(dropout(h_t))``, one classifier per level; the last level is the class.

The previous token is the target's (teacher forcing) when targets are given, else the argmax of
the previous step (greedy). The loss is meant to be the mean of the per-step cross-entropies
against ``step_targets``.

Caveats: the last step is not constrained to the branch chosen by the earlier steps (a
"non-melanocytic" first step may still end in MEL); the class distribution is the last step's
softmax alone. Differences from the reference code: learned token embeddings (not fixed GloVe
vectors), one output layer per level (not one over the whole vocabulary), no spatial soft
attention, no recurrent input dropout and no cosine "path" loss.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lesion.models.attention import StateChannelAttention


class LSTMDecoder(nn.Module):
    """Decode per-level label logits from a feature map or from its pooled vectors.

    Args:
        channels: C, channels of the feature map.
        paths: K rows of L ints, ``paths[k][t]`` = token of class k at level t; the last column is
            the class index k. Flat: ``[[k] for k in range(K)]``; hierarchical:
            ``Layout.taxonomy()``. Level t has ``max(paths[:, t]) + 1`` tokens.
        hidden_size: LSTM hidden size.
        embed_dim: size of the label-token embeddings.
        rd_ratio: reduction ratio of the state-conditioned channel attention.
        dropout: dropout on ``f`` before the initial-state layers and on ``h_t`` before each
            classifier.
        metadata_width: M, width of the metadata features joined to ``f`` (0: none).
    """

    def __init__(
        self,
        channels: int,
        paths: list[list[int]],
        hidden_size: int = 512,
        embed_dim: int = 128,
        rd_ratio: float = 1 / 16,
        dropout: float = 0.5,
        metadata_width: int = 0,
    ):
        super().__init__()
        paths_t = torch.as_tensor(paths, dtype=torch.long)  # K×L
        level_sizes = (paths_t.amax(0) + 1).tolist()
        # Embedding rows: 0 = start token, then the tokens of each level but the last (never fed
        # back), so equal token indices at different levels get different rows.
        # A copy, not a view of the cumulative sum: torch.export cannot save a buffer that is part of
        # another tensor's storage (an empty part, as in flat decoding, fails).
        offsets = torch.tensor([1, *level_sizes[:-1]]).cumsum(0)[:-1].clone()
        self.register_buffer("paths", paths_t, persistent=False)
        self.register_buffer("offsets", offsets, persistent=False)
        self.drop = nn.Dropout(dropout)
        self.init_h = nn.Linear(channels + metadata_width, hidden_size)
        self.init_c = nn.Linear(channels + metadata_width, hidden_size)
        self.attention = StateChannelAttention(channels, hidden_size, rd_ratio)
        self.embed = nn.Embedding(1 + sum(level_sizes[:-1]), embed_dim)
        self.cell = nn.LSTMCell(channels + embed_dim, hidden_size)
        self.heads = nn.ModuleList(nn.Linear(hidden_size, n) for n in level_sizes)

    def steps(self, fmap: torch.Tensor, targets: torch.Tensor | None = None,
              metadata: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Per-step logits from the feature map, attending on the map itself.

        Args:
            fmap: F, B×C×h×w.
            targets: B class indices for teacher forcing, or ``None`` for greedy decoding.
            metadata: B×M metadata features for the initial state, or ``None``.

        Returns:
            L tensors, step t of shape B×(size of level t); the last is B×K.
        """
        def context(beta: torch.Tensor) -> torch.Tensor:
            return (fmap * beta[..., None, None]).mean((2, 3))

        return self._decode(fmap.mean((2, 3)), fmap.amax((2, 3)), context, targets, metadata)

    def steps_from_pooled(self, avg: torch.Tensor, mx: torch.Tensor, targets: torch.Tensor | None = None,
                          metadata: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Same as ``steps`` from ``avg = F.mean((2, 3))`` and ``mx = F.amax((2, 3))`` (B×C each).

        Exact because ``avgpool(F ⊙ β) = avgpool(F) ⊙ β``.
        """
        return self._decode(avg, mx, lambda beta: avg * beta, targets, metadata)

    def step_targets(self, targets: torch.Tensor) -> list[torch.Tensor]:
        """Args: targets: B class indices. Returns: L tensors of B target tokens, one per step."""
        return list(self.paths[targets].unbind(1))

    def forward(self, avg: torch.Tensor, mx: torch.Tensor) -> torch.Tensor:
        """Args: avg, mx: B×C pooled features. Returns: B×K class logits (greedy last step)."""
        return self.steps_from_pooled(avg, mx)[-1]

    def _decode(
        self,
        avg: torch.Tensor,
        mx: torch.Tensor,
        context: Callable[[torch.Tensor], torch.Tensor],
        targets: torch.Tensor | None,
        metadata: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Run the L steps; ``context(β)`` (B×C → B×C) is the attended, pooled feature map."""
        f = avg if metadata is None else torch.cat([avg, metadata], 1)
        h = torch.tanh(self.init_h(self.drop(f)))
        c = torch.tanh(self.init_c(self.drop(f)))
        token = torch.zeros(avg.shape[0], dtype=torch.long, device=avg.device)  # start token
        logits: list[torch.Tensor] = []
        for t, head in enumerate(self.heads):
            if t:
                previous = self.paths[targets, t - 1] if targets is not None else logits[-1].argmax(1)
                token = self.offsets[t - 1] + previous
            beta = self.attention(avg, mx, h)
            h, c = self.cell(torch.cat([context(beta), self.embed(token)], 1), (h, c))
            logits.append(head(self.drop(h)))
        return logits
