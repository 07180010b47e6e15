"""ResNet trunk: a torchvision ResNet without its pooling and classifier, giving the feature map F.

ResNet: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016. The trunk starts
at random or from a given state dict; where weights come from (ImageNet, a ``.pth`` file) is
:mod:`lesion.models.weights`'.

Caveat: only the normalisation is taken from torchvision's weights, the image size stays the
dataset's choice (torchvision's DEFAULT for resnet50 is ``IMAGENET1K_V2``, whose reference
evaluation resizes to 232 px; for resnet18/34 it is ``IMAGENET1K_V1``).

Frozen stages get no gradient and their BatchNorms become :class:`FrozenBatchNorm2d`, which
always normalises with the stored running statistics and never updates them, whatever the
``training`` flags say: Lightning's loops set and restore those flags module by module, so an
override of ``train()`` cannot keep frozen BatchNorms in eval mode.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models import get_model, get_model_weights

from lesion.errors import LesionError
from lesion.models.trunks import NAMES, STAGES


class FrozenBatchNorm2d(nn.Module):
    """A BatchNorm2d fixed at its current state: ``x`` (B×C×H×W) → same shape, in every mode.

    Normalises with ``running_mean`` / ``running_var`` and applies ``weight`` / ``bias``, as an
    ``nn.BatchNorm2d`` in eval mode does, but ignores ``training`` and never updates its buffers.
    It keeps the BatchNorm's parameters (``requires_grad`` off) and buffers under their names,
    ``num_batches_tracked`` included (torchvision's ``FrozenBatchNorm2d`` drops it), so state dicts
    load with or without freezing. Not being a ``_BatchNorm``, it is left alone by
    ``SyncBatchNorm.convert_sync_batchnorm``.

    Args:
        bn: the affine BatchNorm with running statistics to freeze; its tensors are shared, not copied.
    """

    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__()
        self.num_features, self.eps = bn.num_features, bn.eps
        self.weight, self.bias = bn.weight, bn.bias
        self.weight.requires_grad_(False)
        self.bias.requires_grad_(False)
        self.register_buffer("running_mean", bn.running_mean)
        self.register_buffer("running_var", bn.running_var)
        self.register_buffer("num_batches_tracked", bn.num_batches_tracked)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: B×C×H×W. Returns: B×C×H×W, normalised with the running statistics."""
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=False, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def _frozen(module: nn.Module) -> nn.Module:
    """``module`` without gradients, its BatchNorms replaced by :class:`FrozenBatchNorm2d` (in place)."""
    if isinstance(module, nn.BatchNorm2d):
        return FrozenBatchNorm2d(module)
    for name, child in module.named_children():
        setattr(module, name, _frozen(child))
    return module.requires_grad_(False)


def normalisation(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel input ``(mean, std)`` of backbone ``name``: those of its torchvision weights.

    The same for every ``weights`` setting (``none`` and local files are assumed to continue
    from ImageNet), so the data can be prepared before any net is built.
    """
    preset = get_model_weights(name).DEFAULT.transforms()
    return tuple(float(v) for v in preset.mean), tuple(float(v) for v in preset.std)


class Backbone(nn.Module):
    """Torchvision ResNet trunk: ``x`` (B×3×H×W) → ``F`` (B×C×H/32×W/32).

    The stages keep torchvision's names (``conv1`` … ``layer4``) so that a torchvision ResNet
    state dict loads as is (its ``fc.*`` keys are dropped).

    Args:
        name: ``resnet18``, ``resnet34`` or ``resnet50``.
        frozen_stages: see Attributes.
        state_dict: weights of the full torchvision ResNet (its ``fc.*`` keys are dropped) or of
            this trunk; ``None`` keeps the random initialisation.
        source: where ``state_dict`` comes from, named in a mismatch error.

    Attributes:
        channels: C, the number of feature-map channels (512 for resnet18/34, 2048 for resnet50).
        mean, std: per-channel input normalisation of the weights (ImageNet's, also for ``none``
            and for a local file, which are assumed to continue from ImageNet).
        frozen_stages: how many stages of ``STAGES`` (stem, layer1 … layer4), counted from the
            input, receive no gradient and normalise with fixed running statistics in train and
            eval mode alike (0 = train all, 3 = train layer3 and layer4, 5 = freeze the trunk).
    """

    def __init__(self, name: str = "resnet50", frozen_stages: int = 0, state_dict: Mapping[str, torch.Tensor] | None = None,
                 source: str = "state_dict"):
        super().__init__()
        if name not in NAMES:
            raise LesionError(
                "model.backbone", f"unknown backbone {name!r}", f"use one of {', '.join(NAMES)}"
            )
        resnet = get_model(name, weights=None)
        for key, module in resnet.named_children():
            if key not in ("avgpool", "fc"):
                self.add_module(key, module)
        self.name = name
        self.channels: int = resnet.fc.in_features
        self.mean, self.std = normalisation(name)
        if state_dict is not None:
            self._load(state_dict, source)
        if not 0 <= frozen_stages <= len(STAGES):
            raise LesionError("model.frozen_stages", f"must be 0–{len(STAGES)}, got {frozen_stages}",
                              "0 trains every stage; 4 trains only layer4 (and the head)")
        self.frozen_stages = frozen_stages
        for names in STAGES[:frozen_stages]:
            for name_ in names:
                setattr(self, name_, _frozen(getattr(self, name_)))

    @property
    def target_layer(self) -> nn.Module:
        """The last ResNet stage (``layer4``), whose output is F: the Grad-CAM layer."""
        return self.layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: B×3×H×W normalised images. Returns: F, B×C×h×w (h = H/32, w = W/32)."""
        for stage in self.children():  # torchvision order: conv1, bn1, relu, maxpool, layer1..4
            x = stage(x)
        return x

    def _load(self, state: Mapping[str, torch.Tensor], source: str) -> None:
        """Load a full-ResNet or trunk state dict, naming ``source`` in any mismatch."""
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        own = self.state_dict()
        mismatches = {
            "missing": sorted(own.keys() - state.keys()),
            "unexpected": sorted(state.keys() - own.keys()),
            "wrong-shape": sorted(
                k for k in own.keys() & state.keys()
                if not isinstance(state[k], torch.Tensor) or state[k].shape != own[k].shape
            ),
        }
        if any(mismatches.values()):
            found = "; ".join(f"{len(k)} {what} keys, e.g. {k[0]}" for what, k in mismatches.items() if k)
            raise LesionError(
                source,
                f"is not a {self.name} state dict ({found})",
                f"save the state_dict() of a torchvision {self.name} or of a lesion "
                f"Backbone({self.name!r}), or pass model.weights=imagenet or model.weights=none",
            )
        self.load_state_dict(state)
