"""Backbone loading, channel attention, LSTM decoder and the pooled-head equality of LesionNet."""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision
from torch.nn import functional as F

from lesion.data.layouts import ISIC2018
from lesion.errors import LesionError
from lesion.models.attention import ChannelAttention
from lesion.models.backbone import Backbone
from lesion.models.decoder import LSTMDecoder
from lesion.models.net import LesionNet
from lesion.models.registry import barata_net, baseline_net, build_backbone

TAXONOMY = ISIC2018.taxonomy()
K = ISIC2018.num_classes
MEL, BCC = ISIC2018.classes.index("MEL"), ISIC2018.classes.index("BCC")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _net(kind: str) -> LesionNet:
    if kind == "baseline":
        return baseline_net(K, TAXONOMY, backbone="resnet18", weights="none")
    return barata_net(
        K, TAXONOMY, backbone="resnet18", weights="none", hierarchical=kind == "hierarchical", hidden_size=32,
        embed_dim=8,
    )


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize(("name", "channels"), [("resnet18", 512), ("resnet34", 512), ("resnet50", 2048)])
def test_backbone_shapes(name, channels):
    backbone = Backbone(name).eval()
    with torch.no_grad():
        fmap = backbone(torch.randn(2, 3, 32, 32))
    assert backbone.channels == channels
    assert fmap.shape == (2, channels, 1, 1)
    assert backbone.target_layer is backbone.layer4
    assert backbone.mean == pytest.approx(IMAGENET_MEAN) and backbone.std == pytest.approx(IMAGENET_STD)
    assert all(type(v) is float for v in backbone.mean + backbone.std)


def test_unknown_backbone():
    with pytest.raises(LesionError) as err:
        Backbone("vgg16")
    assert str(err.value).startswith("model.backbone:") and "resnet50" in str(err.value)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_frozen_stages_keep_batchnorm_statistics_whatever_the_flags(training):
    backbone = Backbone("resnet18", frozen_stages=2)
    # Lightning restores modes flag by flag (module.training = …), never through train().
    for module in backbone.modules():
        module.training = training
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    x = torch.randn(4, 3, 64, 64) * 3 + 1  # far from the running statistics (mean 0, var 1)
    stem = torch.nn.Sequential(backbone.conv1, backbone.bn1)
    h = torch.randn(4, 64, 16, 16) * 3 + 1
    with torch.no_grad():
        outputs = [stem(x), backbone.layer1(h), backbone.layer2(h)]
        backbone(x)
        changed = {k.split(".")[0] for k, v in backbone.state_dict().items() if not torch.equal(v, before[k])}
        backbone.eval()
        reference = [stem(x), backbone.layer1(h), backbone.layer2(h)]
    assert changed == ({"layer2", "layer3", "layer4"} if training else set())
    assert torch.equal(outputs[0], reference[0]) and torch.equal(outputs[1], reference[1])
    assert torch.equal(outputs[2], reference[2]) is not training  # layer2 trains: batch statistics
    assert not any(p.requires_grad for m in (backbone.conv1, backbone.bn1, backbone.layer1) for p in m.parameters())
    assert all(p.requires_grad for m in (backbone.layer2, backbone.layer4) for p in m.parameters())


def test_frozen_stages_keep_the_state_dict_of_a_plain_trunk():
    frozen, plain = Backbone("resnet18", frozen_stages=5), Backbone("resnet18")
    assert list(frozen.state_dict()) == list(plain.state_dict())  # checkpoints load whatever the freezing
    plain.load_state_dict(frozen.state_dict())
    assert [n for n, _ in frozen.named_parameters()] == [n for n, _ in plain.named_parameters()]


def test_weights_from_trunk_and_full_resnet_files(tmp_path):
    x = torch.randn(2, 3, 32, 32)
    source = Backbone("resnet18").eval()
    torch.save(source.state_dict(), tmp_path / "trunk.pth")
    resnet = torchvision.models.resnet18()
    torch.save(resnet.state_dict(), tmp_path / "full.pth")

    with torch.no_grad():
        loaded = build_backbone("resnet18", weights=str(tmp_path / "trunk.pth")).eval()
        assert torch.equal(loaded(x), source(x))
        full = build_backbone("resnet18", weights=str(tmp_path / "full.pth")).eval()
        assert torch.equal(full.layer4[1].conv2.weight, resnet.layer4[1].conv2.weight)


def test_weights_file_errors(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(LesionError) as err:
        build_backbone("resnet18", weights=str(missing))
    assert str(err.value).startswith(f"{missing}:")

    other = tmp_path / "resnet34.pth"
    torch.save(Backbone("resnet34").state_dict(), other)
    with pytest.raises(LesionError, match="unexpected") as err:
        build_backbone("resnet18", weights=str(other))
    assert str(err.value).startswith(f"{other}:")

    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(LesionError, match="cannot be read") as err:
        build_backbone("resnet18", weights=str(junk))
    assert str(err.value).startswith(f"{junk}:")


def _no_network(url, dst, *args, **kwargs):
    raise URLError("no network in tests")


def test_imagenet_offline_and_uncached(tmp_path, monkeypatch):
    # Patch the download itself so the test never reaches the network, online or not.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    with pytest.raises(LesionError) as err:
        build_backbone("resnet18", weights="imagenet")
    assert str(err.value).startswith(f"{tmp_path / 'hub' / 'checkpoints' / url.rsplit('/', 1)[1]}:")
    assert f"download {url}" in str(err.value)


def test_imagenet_from_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    resnet = torchvision.models.resnet18()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(resnet.state_dict(), tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[1])
    backbone = build_backbone("resnet18", weights="imagenet")
    assert torch.equal(backbone.conv1.weight, resnet.conv1.weight)


def test_channel_attention_pooled_is_exact():
    attention = ChannelAttention(64)
    x = torch.randn(3, 64, 5, 5)
    y = attention(x)
    avg, mx = attention.pooled(x.mean((2, 3)), x.amax((2, 3)))
    assert torch.allclose(avg, y.mean((2, 3)), atol=1e-6)
    assert torch.allclose(mx, y.amax((2, 3)), atol=1e-6)


@pytest.mark.parametrize("kind", ["baseline", "flat", "hierarchical"])
def test_head_from_pooled_equals_forward(kind):
    net = _net(kind).eval()
    x = torch.randn(3, 3, 64, 64)  # 64 px → 2×2 feature map, so pooling is not the identity
    with torch.no_grad():
        assert net.forward_features(x).shape[2:] == (2, 2)
        logits = net(x)
        pooled = net.head_from_pooled(*net.embed(x))
    assert logits.shape == (3, K)
    assert torch.allclose(pooled, logits, atol=1e-5)


@pytest.mark.parametrize(("kind", "sizes"), [("baseline", [K]), ("flat", [K]), ("hierarchical", [2, 2, K])])
def test_steps_and_gradients_reach_backbone(kind, sizes):
    net = _net(kind).train()
    targets = torch.tensor([MEL, BCC])
    steps = net.step_logits(torch.randn(2, 3, 32, 32), targets)
    assert [s.shape for s in steps] == [(2, n) for n in sizes]
    loss = torch.stack([F.cross_entropy(s, t) for s, t in zip(steps, net.step_targets(targets))]).mean()
    loss.backward()
    assert net.backbone.conv1.weight.grad is not None and net.backbone.conv1.weight.grad.abs().sum() > 0


def test_step_targets_follow_taxonomy():
    targets = torch.tensor([MEL, BCC])
    hierarchical = _net("hierarchical").step_targets(targets)
    assert [t.tolist() for t in torch.stack(hierarchical, 1)] == [[1, 1, MEL], [0, 1, BCC]]
    assert [t.tolist() for t in _net("flat").step_targets(targets)] == [[MEL, BCC]]


def _fed_tokens(decoder: LSTMDecoder, avg, mx, targets=None) -> tuple[list[list[int]], list[torch.Tensor]]:
    tokens = []
    handle = decoder.embed.register_forward_hook(lambda module, args, out: tokens.append(args[0].tolist()))
    try:
        steps = decoder.steps_from_pooled(avg, mx, targets)
    finally:
        handle.remove()
    return tokens, steps


def test_teacher_forcing_feeds_target_path():
    decoder = LSTMDecoder(16, TAXONOMY, hidden_size=32, embed_dim=8).eval()
    avg, mx = torch.randn(2, 16), torch.randn(2, 16)
    with torch.no_grad():
        forced, forced_steps = _fed_tokens(decoder, avg, mx, torch.tensor([MEL, BCC]))
        greedy, greedy_steps = _fed_tokens(decoder, avg, mx)
    # Embedding rows: 0 start, 1-2 melanocytic {no, yes}, 3-4 malignant {no, yes}.
    assert forced == [[0, 0], [2, 1], [4, 4]]  # MEL = [1, 1, ·], BCC = [0, 1, ·]
    assert greedy[1] == (1 + greedy_steps[0].argmax(1)).tolist()
    assert greedy[2] == (3 + greedy_steps[1].argmax(1)).tolist()
    assert torch.equal(forced_steps[0], greedy_steps[0])  # step 0 sees only the start token


def test_flat_decoding_ignores_targets():
    decoder = LSTMDecoder(16, [[k] for k in range(K)], hidden_size=32, embed_dim=8).eval()
    avg, mx = torch.randn(2, 16), torch.randn(2, 16)
    with torch.no_grad():
        forced = decoder.steps_from_pooled(avg, mx, torch.tensor([MEL, BCC]))
        greedy = decoder.steps_from_pooled(avg, mx)
    assert len(forced) == 1 and torch.equal(forced[0], greedy[0])
    assert torch.equal(decoder(avg, mx), greedy[0])


@pytest.mark.parametrize("targets", [None, torch.tensor([MEL, BCC, 4])])
def test_decoder_map_path_equals_pooled_path(targets):
    decoder = LSTMDecoder(16, TAXONOMY, hidden_size=32, embed_dim=8).eval()
    fmap = torch.randn(3, 16, 3, 3)
    with torch.no_grad():
        from_map = decoder.steps(fmap, targets)
        from_pooled = decoder.steps_from_pooled(fmap.mean((2, 3)), fmap.amax((2, 3)), targets)
    for a, b in zip(from_map, from_pooled, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_barata_net_rejects_mismatched_taxonomy():
    with pytest.raises(LesionError) as err:
        barata_net(K + 1, TAXONOMY, backbone="resnet18", weights="none")
    assert str(err.value).startswith("model.taxonomy:")


def test_channels_last_and_compile_options_keep_the_checkpoint_format():
    from omegaconf import OmegaConf

    from lesion.train.module import LesionClassifier

    conf = OmegaConf.to_container(OmegaConf.load(Path(__file__).resolve().parents[1] / "conf/model/barata.yaml"))
    conf.update(backbone="resnet18", weights="none", hidden_size=32, embed_dim=8)
    settings = dict(model=conf, loss={"name": "ce", "weight": None}, optimizer={"name": "adam", "lr": 1e-3,
                    "weight_decay": 0.0}, scheduler=None, classes=list(ISIC2018.classes), taxonomy=TAXONOMY, image_size=32)
    plain = LesionClassifier(**settings)
    fast = LesionClassifier(**settings, channels_last=True, compile=True)
    assert next(p for p in fast.net.backbone.parameters() if p.dim() == 4).is_contiguous(memory_format=torch.channels_last)
    assert not next(p for p in plain.net.backbone.parameters() if p.dim() == 4).is_contiguous(
        memory_format=torch.channels_last)
    assert fast.net.backbone._compiled_call_impl is not None and plain.net.backbone._compiled_call_impl is None
    assert list(fast.state_dict()) == list(plain.state_dict())  # checkpoints load either way
    assert dict(fast.hparams) == dict(plain.hparams)  # runtime switches are not hyper-parameters


PURE_MODULES = ("attention", "backbone", "decoder", "heads", "net")


@pytest.mark.parametrize("name", PURE_MODULES)
def test_nn_module_files_import_no_lightning_hydra_or_file_access(name):
    import ast

    tree = ast.parse((Path(__file__).resolve().parents[1] / "lesion" / "models" / f"{name}.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"pytorch_lightning", "lightning", "lightning_fabric", "hydra", "omegaconf", "os", "pathlib",
                           "shutil", "io"}, imported
    called = {node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
              for node in ast.walk(tree) if isinstance(node, ast.Call)}
    assert not called & {"open", "load", "save", "get_state_dict", "read_bytes", "read_text"}, called
