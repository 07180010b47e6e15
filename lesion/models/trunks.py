"""The ResNet trunks a :class:`~lesion.models.backbone.Backbone` can be: their names and freezable stages.

Plain names, without torch, so that the options (:mod:`lesion.options`) are checked before torch is imported.
"""

NAMES = ("resnet18", "resnet34", "resnet50")
# Freezable stages in input order; the stem (conv1 + bn1) counts as one.
STAGES = (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))
