"""ONNX / TorchScript export (export.py), and evaluate.py runtime=onnx: the exported graph gives the
torch model's probabilities on real images, and the file carries the preprocessing."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

import lesion.export.run as export_run
from lesion.data.transforms import EvalPreset
from lesion.data.unlabelled import FolderImages
from lesion.errors import LesionError
from lesion.export.graph import ProbabilityGraph
from lesion.export.onnx import OnnxRuntimeGraph, onnx_bytes, read_record
from lesion.export.preprocessing import ensemble_record, preprocessing_record
from lesion.export.torchscript import load_torchscript
from lesion.models.registry import barata_net, baseline_net
from lesion.train.module import LesionClassifier

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
TINY = ("trainer=cpu", "model.backbone=resnet18", "model.weights=none", "dataset=synthetic2018", "dataset.image_size=32",
        "dataset.batch_size=4", "dataset.num_workers=0", "dataset.synthetic_n=30", "trainer.max_epochs=1")


@pytest.fixture(scope="module")
def baseline_run(run_cli, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("baseline")
    run_cli("train.py", *TINY, "model=baseline", f"hydra.run.dir={run_dir}")
    return run_dir


@pytest.fixture(params=["baseline", "barata"])
def checkpoint(request, baseline_run, trained_run) -> Path:
    """best.ckpt of the linear head, or of the hierarchical Barata head (LSTM decoder)."""
    return (baseline_run if request.param == "baseline" else trained_run) / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="module")
def real_images(uda1_images) -> Path:
    """20 real UDA-1 validation images as a folder, at their own sizes."""
    return uda1_images("val", 20)


@pytest.fixture(scope="module")
def predictions(run_cli, real_images, tmp_path_factory):
    """``predictions(ckpt, *options)``: evaluate.py's predictions.csv on the real images (each evaluation once)."""
    made: dict[tuple, pd.DataFrame] = {}

    def evaluate(ckpt: Path, *options: str) -> pd.DataFrame:
        if (ckpt, options) not in made:
            out = tmp_path_factory.mktemp("eval")
            run_cli("evaluate.py", f"ckpt={ckpt}", f"images={real_images}", f"out={out}", "gradcam.n=0",
                    "num_workers=0", *options)
            made[ckpt, options] = pd.read_csv(out / "predictions.csv").set_index("image")
        return made[ckpt, options]

    return evaluate


@pytest.fixture(scope="module")
def exported(run_cli, tmp_path_factory):
    """``exported(ckpt, format)``: export.py's file of a checkpoint (each export once)."""
    made: dict[tuple, Path] = {}

    def export(ckpt: Path, form: str = "onnx") -> Path:
        if (ckpt, form) not in made:
            out = tmp_path_factory.mktemp("export") / ("model.onnx" if form == "onnx" else "model.pt")
            run_cli("export.py", f"ckpt={ckpt}", f"format={form}", f"out={out}")
            made[ckpt, form] = out
        return made[ckpt, form]

    return export


def _inputs(images: Path, hparams) -> tuple[list[str], torch.Tensor]:
    """The folder's images preprocessed as evaluate.py does, as one batch."""
    record = preprocessing_record(hparams)
    folder = FolderImages.in_folder(images, EvalPreset(record["input_size"], record["mean"], record["std"]), record["cache_size"])
    return folder.ids, torch.stack([folder[i][0] for i in range(len(folder))])


@pytest.mark.parametrize("head, views", [("baseline", ()), ("barata", ()), ("barata", ("tta.crops=4",))],
                         ids=["baseline", "barata", "barata-crops4"])
def test_onnx_runtime_gives_the_torch_probabilities_on_real_images(head, views, baseline_run, trained_run, predictions):
    checkpoint = (baseline_run if head == "baseline" else trained_run) / "checkpoints" / "best.ckpt"
    torch_side, onnx_side = predictions(checkpoint, *views), predictions(checkpoint, *views, "runtime=onnx")
    assert len(torch_side) == 20
    difference = np.abs(onnx_side[CLASSES].to_numpy() - torch_side[CLASSES].to_numpy()).max()
    print(f"max |Δ probability| onnx vs torch on 20 real images ({checkpoint.parent.parent.name}, {views}): "
          f"{difference:.2e}")
    assert difference <= 1e-4
    assert (onnx_side["prediction"] == torch_side["prediction"]).all()


def test_exported_files_carry_the_preprocessing_and_take_any_batch(checkpoint, real_images, predictions, exported):
    expected = predictions(checkpoint)
    module = LesionClassifier.load_from_checkpoint(checkpoint)
    ids, batch = _inputs(real_images, module.hparams)
    onnx_file, script_file = exported(checkpoint), exported(checkpoint, "torchscript")

    record = read_record(onnx_file.read_bytes())
    hp = module.hparams
    assert record["classes"] == CLASSES == list(hp.classes)
    assert (record["mean"], record["std"]) == (list(hp.mean), list(hp.std))
    assert (record["input_size"], record["cache_size"], record["color_constancy"]) == (32, 41, None)
    assert record["lesion_version"] == __import__("lesion").__version__
    assert record["model"] == hp.model["name"] and record["inputs"] == ["image"]
    graph = OnnxRuntimeGraph(onnx_file.read_bytes())
    assert [d.dim_param for d in onnx.load(onnx_file).graph.input[0].type.tensor_type.shape.dim][0] == "batch"
    script, script_record = load_torchscript(script_file.read_bytes())
    assert script_record == record
    want = expected.loc[ids, CLASSES].to_numpy()
    for run in (graph, script):
        with torch.no_grad():
            whole = run(batch).numpy()
            one_by_one = np.concatenate([run(batch[i:i + 1]).numpy() for i in range(3)])
        assert np.abs(whole - want).max() <= 1e-4
        assert np.abs(one_by_one - want[:3]).max() <= 1e-4


def _beside(model: Path) -> dict:
    """The JSON record written beside an exported model (``model.onnx`` → ``model.onnx.json``)."""
    return json.loads(model.with_name(model.name + ".json").read_text())


def test_every_export_writes_its_record_as_json_beside_it(checkpoint, exported):
    onnx_file, script_file = exported(checkpoint), exported(checkpoint, "torchscript")
    inside_onnx, (_, inside_script) = read_record(onnx_file.read_bytes()), load_torchscript(script_file.read_bytes())
    for model, inside in ((onnx_file, inside_onnx), (script_file, inside_script)):
        beside = _beside(model)
        assert sorted(beside) == sorted(inside)
        for key in inside:
            assert beside[key] == inside[key], key
    assert sorted(p.name for p in onnx_file.parent.iterdir()) == ["model.onnx", "model.onnx.json"]


def test_the_export_docs_list_every_key_of_the_record():
    """docs/export.md's table of the record's keys: the keys of one model's record and of an ensemble's."""
    page = (REPO / "docs" / "export.md").read_text()
    listed = re.findall(r"^\| `([a-z_]+)` \|", page, re.M)
    hparams = {"model": {"name": "baseline", "backbone": "resnet18"}, "classes": CLASSES, "mean": [0.5] * 3,
               "std": [0.2] * 3, "image_size": 32, "dataset": {}, "metadata": None}
    one = preprocessing_record(hparams)
    assert len(listed) == len(set(listed))
    assert set(listed) == set(one) | set(ensemble_record([one, one], ["a.ckpt", "b.ckpt"]))
    assert "ONNXRUNTIME_NODE_INSTALL=skip" in page and "```js" in page


def test_an_ensemble_exports_as_one_graph_of_the_mean_probability(baseline_run, trained_run, real_images, predictions,
                                                                  run_cli, tmp_path):
    members = [baseline_run / "checkpoints" / "best.ckpt", trained_run / "checkpoints" / "best.ckpt"]
    each = [predictions(m) for m in members]
    out = tmp_path / "ensemble.onnx"
    run_cli("export.py", f"ckpt=[{members[0]},{members[1]}]", f"out={out}")
    record = read_record(out.read_bytes())
    assert record["ensemble"] == {"method": "mean", "members": 2} and record["model"] == ["baseline", "barata"]
    assert _beside(out) == record
    ids, batch = _inputs(real_images, LesionClassifier.load_from_checkpoint(members[0]).hparams)
    mean = np.mean([table.loc[ids, CLASSES].to_numpy() for table in each], axis=0)
    assert np.abs(OnnxRuntimeGraph(out.read_bytes())(batch).numpy() - mean).max() <= 1e-4


@pytest.mark.parametrize("head", ["baseline", "hierarchical"])
def test_a_metadata_net_exports_with_a_metadata_input(head):
    torch.manual_seed(0)
    taxonomy = [[0, 0, 0], [0, 1, 1], [1, 0, 2]]
    if head == "baseline":
        net = baseline_net(3, taxonomy, backbone="resnet18", weights="none", metadata_features=6)
    else:
        net = barata_net(3, taxonomy, backbone="resnet18", weights="none", hierarchical=True, hidden_size=16,
                         embed_dim=4, metadata_features=6)
    graph = ProbabilityGraph([net]).eval()
    exported = OnnxRuntimeGraph(onnx_bytes(graph, {"inputs": ["image", "metadata"]}, 32))
    assert exported.inputs == ["image", "metadata"]
    x, meta = torch.randn(3, 3, 32, 32), torch.randn(3, 6)
    with torch.no_grad():
        want, other = graph(x, meta), graph(x, meta.flip(0))
    assert torch.allclose(exported(x, meta), want, atol=1e-5)
    assert (want - other).abs().max() > 1e-4  # the metadata input reaches the output


def test_members_that_preprocess_differently_are_refused():
    hparams = {"model": {"name": "baseline", "backbone": "resnet18"}, "classes": CLASSES, "mean": [0.5] * 3,
               "std": [0.2] * 3, "image_size": 32, "dataset": {}, "metadata": None}
    records = [preprocessing_record(hparams), preprocessing_record({**hparams, "image_size": 64})]
    with pytest.raises(LesionError, match="b.ckpt differs from a.ckpt in input_size, cache_size"):
        ensemble_record(records, ["a.ckpt", "b.ckpt"])


@pytest.mark.parametrize("options, message", [
    (["format=tflite"], "format: 'tflite' is not one of onnx, torchscript"),
    (["out={tmp}"], "is a folder"),
    (["ckpt=[{ckpt},{ckpt}]"], "is named twice"),
    (["ckpt=[{ckpt},{other}]"], "out: is needed for an ensemble"),
    (["opset=9"], "opset"),
    (["out={ckpt}"], "is the checkpoint being exported"),
])
def test_refusals_write_nothing(options, message, baseline_run, trained_run, run_cli, tmp_path):
    ckpt, other = baseline_run / "checkpoints" / "best.ckpt", trained_run / "checkpoints" / "best.ckpt"
    before = sorted(p.name for p in ckpt.parent.iterdir())
    given = [o.format(tmp=tmp_path, ckpt=ckpt, other=other) for o in options]
    if not any(o.startswith("ckpt=") for o in given):
        given.insert(0, f"ckpt={ckpt}")
    result = run_cli("export.py", *given, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("lesion: error: ") and message in result.stderr
    assert sorted(p.name for p in ckpt.parent.iterdir()) == before and not any(tmp_path.iterdir())


def test_a_record_file_that_is_a_folder_is_refused_before_anything_is_written(baseline_run, run_cli, tmp_path):
    (tmp_path / "model.onnx.json").mkdir()
    result = run_cli("export.py", f"ckpt={baseline_run / 'checkpoints' / 'best.ckpt'}", f"out={tmp_path / 'model.onnx'}",
                     check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("lesion: error: out: ") and "model.onnx.json is a folder" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx.json"] and not any((tmp_path / "model.onnx.json").iterdir())


def test_docs_snippet_runs_an_exported_model_with_onnxruntime_pil_and_numpy(baseline_run, real_images, predictions,
                                                                               exported, tmp_path, monkeypatch):
    snippet = re.search(r"<!-- onnx-snippet -->\s*```python\n(.*?)```", (REPO / "docs" / "export.md").read_text(), re.S).group(1)
    assert len(snippet.strip().splitlines()) <= 12
    ckpt = baseline_run / "checkpoints" / "best.ckpt"
    expected = predictions(ckpt)
    (tmp_path / "model.onnx").symlink_to(exported(ckpt))
    monkeypatch.chdir(tmp_path)
    worst = 0.0
    for image in sorted(real_images.iterdir())[:5]:
        (tmp_path / "lesion.jpg").write_bytes(image.read_bytes())
        namespace: dict = {}
        exec(compile(snippet, "docs snippet", "exec"), namespace)  # noqa: S102 — the docs' own code
        worst = max(worst, float(np.abs(namespace["probs"] - expected.loc[image.stem, CLASSES].to_numpy()).max()))
    print(f"docs/export.md snippet vs evaluate.py: max |Δ probability| {worst:.4f} on 5 real images")
    assert worst <= 0.02  # PIL's bilinear resize in place of lesion's (albumentations); the page says so


NODE_MODULES = Path(os.environ.get("LESION_NODE_MODULES", "/nonexistent"))


@pytest.mark.skipif(shutil.which("node") is None or not all((NODE_MODULES / name).is_dir()
                                                            for name in ("onnxruntime-node", "sharp")),
                    reason="needs node and LESION_NODE_MODULES=<a node_modules folder with onnxruntime-node and "
                           "sharp>, installed as docs/export.md says")
def test_the_docs_javascript_example_runs_an_exported_model_with_onnxruntime_node(baseline_run, real_images, predictions,
                                                                                   exported, tmp_path):
    snippet = re.search(r"```js\n(.*?)```", (REPO / "docs" / "export.md").read_text(), re.S).group(1)
    (tmp_path / "classify.mjs").write_text(snippet)
    (tmp_path / "node_modules").symlink_to(NODE_MODULES)
    ckpt = baseline_run / "checkpoints" / "best.ckpt"
    model, expected = exported(ckpt), predictions(ckpt)
    worst = 0.0
    for image in sorted(real_images.iterdir())[:5]:
        shown = subprocess.run(["node", "classify.mjs", str(model), str(image)], cwd=tmp_path, capture_output=True,
                               text=True, timeout=120, check=True).stdout
        probs = json.loads(shown)
        assert list(probs) == CLASSES
        worst = max(worst, float(np.abs(np.array(list(probs.values())) - expected.loc[image.stem, CLASSES].to_numpy()).max()))
    print(f"docs/export.md JavaScript vs evaluate.py: max |Δ probability| {worst:.4f} on 5 real images")
    assert worst <= 0.02  # sharp's resizes and whole-pixel crop in place of lesion's; the page says so


def test_a_graph_that_does_not_reproduce_the_model_is_never_written(baseline_run, monkeypatch, tmp_path):
    class Drifting(OnnxRuntimeGraph):
        def __call__(self, image, metadata=None):
            return super().__call__(image, metadata) + 2e-4  # just over the tolerance

    monkeypatch.setattr(export_run, "OnnxRuntimeGraph", Drifting)
    out = tmp_path / "model.onnx"
    with initialize_config_dir(str(REPO / "conf"), version_base=None):
        cfg = compose("export", overrides=[f"ckpt={baseline_run / 'checkpoints' / 'best.ckpt'}", f"out={out}"])
    with pytest.raises(LesionError, match="differ from the model's by 2.0.e-04 .over 1e-04., so no file was written"):
        export_run.run(cfg)
    assert not any(tmp_path.iterdir())
