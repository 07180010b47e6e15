"""``trainer.deterministic=true``: no op without a deterministic CUDA backward, cuBLAS set up, same run twice.

On CUDA, ``torch.use_deterministic_algorithms(True)`` (what Lightning's ``deterministic=True`` calls)
makes an op without a deterministic implementation raise. There is no GPU here, so the training
step's autograd graph is checked on the CPU for the backward nodes of those ops.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from torchvision.models import resnet18

from lesion.data.metadata_features import MetadataEncoding
from lesion.train.run import build_classifier
from lesion.train.trainer import build_trainer

CONF = Path(__file__).resolve().parents[1] / "conf"

# The backward nodes of the ops that torch 2.14's `torch.use_deterministic_algorithms` documents as
# raising "when attempting to differentiate a CUDA tensor" (or when called on one) under mode=True:
# AvgPool3d, AdaptiveAvgPool2d/3d, AdaptiveMaxPool2d, FractionalMaxPool2d/3d, MaxUnpool1d/2d/3d,
# interpolate (linear, bilinear, bicubic, trilinear), ReflectionPad1d/2d/3d, NLLLoss (its spatial
# form), CTCLoss, EmbeddingBag (mode='max'), put_, median with indices, grid_sample, scatter_reduce (prod).
NONDETERMINISTIC_ON_CUDA = frozenset({
    "AvgPool3DBackward0", "AdaptiveAvgPool2DBackward0", "AdaptiveAvgPool3DBackward0", "AdaptiveMaxPool2DBackward0",
    "FractionalMaxPool2DBackward0", "FractionalMaxPool3DBackward0", "MaxUnpool2DBackward0", "MaxUnpool3DBackward0",
    "UpsampleLinear1DBackward0", "UpsampleBilinear2DBackward0", "UpsampleBicubic2DBackward0",
    "UpsampleTrilinear3DBackward0", "UpsampleBilinear2DAaBackward0", "UpsampleBicubic2DAaBackward0",
    "ReflectionPad1DBackward0", "ReflectionPad2DBackward0", "ReflectionPad3DBackward0", "NllLoss2DBackward0",
    "CtcLossBackward0", "EmbeddingBagBackward0", "PutBackward0", "MedianBackward1", "GridSampler2DBackward0",
    "GridSampler3DBackward0", "ScatterReduceBackward0",
})

MODELS = {
    "baseline": ["model=baseline"],
    "barata": ["model=barata"],
    "barata-hierarchical": ["model=barata", "model.hierarchical=true"],
    "baseline-metadata": ["model=baseline", "model.metadata=true"],
    "barata-hierarchical-metadata": ["model=barata", "model.hierarchical=true", "model.metadata=true"],
}
ENCODING = MetadataEncoding(sexes=("female", "male"), sites=("head/neck", "torso"), age_mean=50.0, age_std=15.0)


def graph_nodes(tensor: torch.Tensor) -> set[str]:
    """Type names of every node of the autograd graph that ``tensor`` was computed by."""
    seen, names, stack = set(), set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(parent for parent, _ in node.next_functions)
    return names


def _classifier(overrides: list[str]):
    with initialize_config_dir(str(CONF), version_base=None):
        cfg = compose("train", overrides=["dataset=synthetic2019", "model.backbone=resnet18", "model.weights=none",
                                          "dataset.image_size=32", *overrides])
    metadata = ENCODING.as_dict() if cfg.model.metadata else None
    return build_classifier(cfg, metadata=metadata)


# Each net with a loss; the three losses cover cross-entropy (ce, weighted_ce) and focal's gather.
STEPS = [("baseline", "ce"), ("barata", "focal"), ("barata-hierarchical", "weighted_ce"), ("baseline-metadata", "focal"),
         ("barata-hierarchical-metadata", "focal")]


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
@pytest.mark.parametrize(("model", "loss"), STEPS)
def test_a_training_step_has_a_deterministic_cuda_backward(model, loss):
    """A training step on images (the fit stage) and on pooled embeddings (the SMOTE-Tomek head stage)."""
    module = _classifier([*MODELS[model], f"loss={loss}"]).train()
    torch.manual_seed(0)
    batch_size = 4
    images = torch.randn(batch_size, 3, 32, 32)
    labels = torch.arange(batch_size) % len(module.hparams.classes)
    metadata = [torch.randn(batch_size, ENCODING.width)] if module.uses_metadata else []
    with torch.no_grad():
        pooled = module.net.embed(images)
    for batch in ((images, *metadata, labels), (*pooled, *metadata, labels)):
        step_loss = module.training_step(batch, 0)
        step_loss.backward()
        nodes = graph_nodes(step_loss)
        assert "AddmmBackward0" in nodes  # the walk did reach the head's layers
        assert nodes.isdisjoint(NONDETERMINISTIC_ON_CUDA), sorted(nodes & NONDETERMINISTIC_ON_CUDA)
    assert "ConvolutionBackward0" in graph_nodes(module.training_step((images, *metadata, labels), 0))


def test_the_check_finds_the_nodes_it_names():
    """The graph walk finds such a node deep in a ResNet, and the names are the ones autograd records."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    net = resnet18(num_classes=3)
    net.avgpool = torch.nn.AdaptiveMaxPool2d(1)
    assert "AdaptiveMaxPool2DBackward0" in graph_nodes(net(x).sum())
    recorded = {
        type(F.adaptive_avg_pool2d(x, 2).grad_fn).__name__,  # to 1×1 it is computed as a mean
        type(F.adaptive_max_pool2d(x, 1).grad_fn).__name__,
        type(F.interpolate(x, scale_factor=2, mode="bilinear").grad_fn).__name__,
        type(F.interpolate(x, scale_factor=2, mode="bilinear", antialias=True).grad_fn).__name__,
        type(F.interpolate(x, scale_factor=2, mode="bicubic").grad_fn).__name__,
        type(F.pad(x, (1, 1, 1, 1), mode="reflect").grad_fn).__name__,
        type(F.grid_sample(x, torch.zeros(2, 4, 4, 2)).grad_fn).__name__,
        type(F.nll_loss(x.log_softmax(1), torch.zeros(2, 32, 32, dtype=torch.long)).grad_fn).__name__,
    }
    assert recorded <= NONDETERMINISTIC_ON_CUDA, sorted(recorded - NONDETERMINISTIC_ON_CUDA)
    assert [name for name in NONDETERMINISTIC_ON_CUDA if not hasattr(torch._C._functions, name)] == []  # no typo


def _trainer_config(tmp_path: Path, deterministic: bool):
    with initialize_config_dir(str(CONF), version_base=None):
        return compose("train", overrides=["trainer=cpu", f"trainer.deterministic={str(deterministic).lower()}",
                                           f"run_dir={tmp_path}"])


@pytest.fixture
def torch_flags():
    """Puts back the process-wide flags that building a deterministic Trainer sets."""
    flags = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    benchmark = torch.backends.cudnn.benchmark
    yield
    torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
    torch.backends.cudnn.benchmark = benchmark


def test_a_deterministic_trainer_sets_up_cublas_and_cudnn_before_cuda_starts(tmp_path, monkeypatch, torch_flags):
    """Lightning does it when the Trainer is built, which a run does before any CUDA work (lesion.train.run):
    cuBLAS reads CUBLAS_WORKSPACE_CONFIG when it first allocates its workspace."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    torch.backends.cudnn.benchmark = True
    build_trainer(_trainer_config(tmp_path, deterministic=True), tmp_path / "checkpoints", "")
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in (":4096:8", ":16:8")  # the values cuBLAS documents as deterministic
    assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark


SMALL = ["trainer=cpu", "model.backbone=resnet18", "model.weights=none", "dataset.image_size=32",
         "dataset.batch_size=4", "dataset.num_workers=0", "dataset.synthetic_n=30", "seed=3",
         "trainer.deterministic=true", "trainer.max_epochs=1", "callbacks.early_stopping=null"]


@pytest.mark.slow
def test_a_deterministic_run_with_the_smote_tomek_head_stage_repeats_exactly(run_cli, tmp_path):
    """Both stages (fit, then the head on resampled embeddings) twice, the first with empty caches, the second
    reading the images and embeddings the first cached: the same weights and metrics."""
    runs = []
    for name in ("first", "second"):
        run_dir = tmp_path / name
        run_cli("train.py", "dataset=synthetic2018", "model=barata", "model.hierarchical=true",
                "balance=smote_tomek", "balance.smote_tomek.finetune=true", "balance.smote_tomek.head_epochs=2",
                *SMALL, f"hydra.run.dir={run_dir}", env={"LESION_CACHE": str(tmp_path / "cache")})
        state = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
        runs.append((state, (run_dir / "test_metrics.json").read_text()))
    (first, first_metrics), (second, second_metrics) = runs
    assert first.keys() == second.keys()
    assert [key for key in first if not torch.equal(first[key], second[key])] == []
    assert first_metrics == second_metrics
