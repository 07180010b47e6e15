"""A checkpoint is data: it names things from the registries and holds plain values, or it is refused
before anything is built or written."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lesion.errors import LesionError
from lesion.checkpoint import read_checkpoint
from lesion.models.registry import build_net
from lesion.train.module import LesionClassifier


def open_for_writing(victim: Path) -> dict:
    return {"_target_": "builtins.open", "_args_": [str(victim), "w"]}


def copy_onto(victim: Path) -> dict:
    return {"_target_": "shutil.copy", "_args_": [__file__, str(victim)]}


# (section path inside hyper_parameters, payload builder): nested targets at several depths in every section.
FORGERIES = {
    "model.dropout": open_for_writing,
    "model.backbone": copy_onto,
    "model.name": copy_onto,
    "model._target_": lambda victim: "os.system",
    "model._args_": lambda victim: [str(victim), "w"],
    "loss.alpha": open_for_writing,
    "loss.alpha.0": open_for_writing,
    "loss.gamma": copy_onto,
    "loss.name": open_for_writing,
    "optimizer.lr": open_for_writing,
    "optimizer._partial_": lambda victim: True,
    "optimizer.name": copy_onto,
    "scheduler": open_for_writing,
    "scheduler.name": copy_onto,
    "dataset.root": open_for_writing,
    "dataset._target_": lambda victim: "builtins.open",
    "dataset.fold": copy_onto,
    "split.seed": open_for_writing,
    "classes.0": open_for_writing,
    "taxonomy.0": open_for_writing,
    "mean": open_for_writing,
    "image_size": copy_onto,
    "callbacks": open_for_writing,
}


def forge(checkpoint: Path, where: str, payload, dest: Path) -> Path:
    contents = torch.load(checkpoint, map_location="cpu", weights_only=True)
    node = contents["hyper_parameters"]
    *parents, last = where.split(".")
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        node[int(last)] = payload
    else:
        node[last] = payload
    torch.save(contents, dest)
    return dest


@pytest.mark.parametrize("where", sorted(FORGERIES))
def test_forged_value_is_refused_before_anything_runs(trained_run, tmp_path, where):
    victim = tmp_path / "victim.txt"
    forged = forge(trained_run / "checkpoints" / "best.ckpt", where, FORGERIES[where](victim), tmp_path / "forged.ckpt")
    with pytest.raises(LesionError) as error:
        LesionClassifier.load_from_checkpoint(forged)
    assert str(error.value).startswith(f"{forged}: "), str(error.value)
    assert not victim.exists()


@pytest.mark.parametrize("where", ["loss.alpha", "dataset.root", "model._target_", "model.name"])
def test_evaluate_refuses_a_forged_checkpoint_in_one_line_writing_nothing(run_cli, trained_run, tmp_path, where):
    victim = tmp_path / "victim.txt"
    forged = forge(trained_run / "checkpoints" / "best.ckpt", where, FORGERIES[where](victim), tmp_path / "forged.ckpt")
    out = tmp_path / "out"
    # trust_checkpoint=true on a file that pickles another object, so the full (weights_only=False) read runs.
    untrusted = torch.load(forged, map_location="cpu", weights_only=True)
    torch.save({**untrusted, "args": argparse.Namespace(lr=0.1)}, tmp_path / "pickled.ckpt")
    for ckpt, trust in ((forged, "false"), (tmp_path / "pickled.ckpt", "true")):
        result = run_cli("evaluate.py", f"ckpt={ckpt}", f"out={out}", f"trust_checkpoint={trust}", check=False)
        assert result.returncode == 2, result.stderr[-2000:]
        lines = [line for line in result.stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
        assert len(lines) == 1 and lines[0].startswith(f"lesion: error: {ckpt}: "), result.stderr[-2000:]
        assert not victim.exists() and not out.exists()


def test_a_checkpoint_does_not_choose_where_evaluation_writes(run_cli, trained_run, tmp_path):
    contents = torch.load(trained_run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    dataset = contents["hyper_parameters"]["dataset"]
    dataset.update(synthetic=True, root=str(tmp_path / "written-data"), cache_dir=str(tmp_path / "written-cache"))
    torch.save(contents, tmp_path / "forged.ckpt")
    result = run_cli("evaluate.py", f"ckpt={tmp_path / 'forged.ckpt'}", f"out={tmp_path / 'out'}", check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "lesion: error: " in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "written-data").exists() and not (tmp_path / "written-cache").exists()
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_does_not_set_the_pixel_limit(run_cli, trained_run, tmp_path):
    contents = torch.load(trained_run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    contents["hyper_parameters"]["dataset"]["max_pixels"] = 1  # taken from the file, every image would be refused
    torch.save(contents, tmp_path / "forged.ckpt")
    # dataset.cache=false: every image is decoded, and so checked against the limit.
    run_cli("evaluate.py", f"ckpt={tmp_path / 'forged.ckpt'}", f"out={tmp_path / 'out'}", "dataset.cache=false",
            "gradcam.n=0", "plots=false", "num_workers=0")
    assert (tmp_path / "out" / "metrics.json").is_file()


def test_backbone_ckpt_is_checked_like_every_checkpoint(run_cli, trained_run, tmp_path):
    victim = tmp_path / "victim.txt"
    forged = forge(trained_run / "checkpoints" / "best.ckpt", "loss.alpha", open_for_writing(victim), tmp_path / "forged.ckpt")
    run_dir = tmp_path / "run"
    result = run_cli("train.py", "experiment=quickstart", "balance=smote_tomek", f"balance.backbone_ckpt={forged}",
                     f"hydra.run.dir={run_dir}", check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"lesion: error: {forged}: holds a value lesion does not accept")
    assert not victim.exists() and not run_dir.exists()


def to_legacy(hparams: dict) -> dict:
    """Hyper-parameters in the ``_target_`` format checkpoints had before the registry."""
    legacy = copy.deepcopy(hparams)
    legacy["model"] = {"_target_": f"lesion.models.net.{legacy['model'].pop('name')}_net", "_partial_": True, **legacy["model"]}
    name = legacy["loss"].pop("name")
    legacy["loss"] = {"_target_": "lesion.losses.FocalLoss" if name == "focal" else "lesion.losses.WeightedCrossEntropy",
                      **legacy["loss"]}
    legacy["optimizer"] = {"_target_": "torch.optim.AdamW", "_partial_": True,
                           **{k: v for k, v in legacy["optimizer"].items() if k != "name"}}
    legacy["scheduler"] = {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "_partial_": True, "T_max": 2}
    legacy["dataset"] = {"_target_": "lesion.data.datamodule.IsicDataModule", **legacy["dataset"]}
    del legacy["dataset"]["seed"], legacy["split"]
    return legacy


def test_checkpoint_of_the_target_format_loads_through_the_registry(trained_run, tmp_path):
    path = trained_run / "checkpoints" / "best.ckpt"
    contents = torch.load(path, map_location="cpu", weights_only=True)
    contents["hyper_parameters"] = to_legacy(contents["hyper_parameters"])
    legacy = tmp_path / "legacy.ckpt"
    torch.save(contents, legacy)
    _, hparams = read_checkpoint(legacy)
    assert hparams["model"]["name"] == "barata" and hparams["loss"]["name"] == "focal"
    assert hparams["scheduler"] == {"name": "cosine"} and hparams["split"] is None
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(LesionClassifier.load_from_checkpoint(legacy)(x), LesionClassifier.load_from_checkpoint(path)(x))


def test_legacy_target_outside_the_registry_is_refused(trained_run, tmp_path):
    contents = torch.load(trained_run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    contents["hyper_parameters"] = to_legacy(contents["hyper_parameters"])
    contents["hyper_parameters"]["optimizer"]["_target_"] = "shutil.rmtree"
    torch.save(contents, tmp_path / "legacy.ckpt")
    with pytest.raises(LesionError, match="its optimizer names 'shutil.rmtree', which lesion does not build"):
        read_checkpoint(tmp_path / "legacy.ckpt")


def test_checkpoint_with_the_former_model_switches_loads(trained_run, tmp_path):
    """Checkpoints stored ``model.channels_last`` / ``model.compile`` before they became run options."""
    path = trained_run / "checkpoints" / "best.ckpt"
    contents = torch.load(path, map_location="cpu", weights_only=True)
    contents["hyper_parameters"]["model"].update(channels_last=False, compile=True)
    torch.save(contents, tmp_path / "switches.ckpt")
    _, hparams = read_checkpoint(tmp_path / "switches.ckpt")
    assert "channels_last" not in hparams["model"] and "compile" not in hparams["model"]
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(LesionClassifier.load_from_checkpoint(tmp_path / "switches.ckpt")(x),
                           LesionClassifier.load_from_checkpoint(path)(x))
    contents["hyper_parameters"]["model"]["compile"] = open_for_writing(tmp_path / "victim.txt")
    torch.save(contents, tmp_path / "forged.ckpt")
    with pytest.raises(LesionError, match="model.compile: is not an option"):
        read_checkpoint(tmp_path / "forged.ckpt")
    assert not (tmp_path / "victim.txt").exists()


# Where a checkpoint names code from a registry: today's ``name`` entries, and the ``_target_`` of the older format.
REGISTRY_NAMES = ["model.name", "loss.name", "optimizer.name", "scheduler.name"]
LEGACY_TARGETS = ["model._target_", "loss._target_", "optimizer._target_", "scheduler._target_", "dataset._target_"]
# Anything a checkpoint can hold that is not a string: null, booleans, numbers, lists and mappings of them.
NOT_A_NAME = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                          max_leaves=6).filter(lambda value: not isinstance(value, str))


@pytest.mark.parametrize("where", REGISTRY_NAMES + LEGACY_TARGETS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=NOT_A_NAME)
def test_a_registry_name_that_is_not_a_string_is_refused_in_one_line(trained_run, tmp_path, where, value):
    contents = torch.load(trained_run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    hparams = to_legacy(contents["hyper_parameters"]) if where in LEGACY_TARGETS else contents["hyper_parameters"]
    section, key = where.split(".")
    hparams[section][key] = value
    torch.save({"hyper_parameters": hparams, "state_dict": {}}, tmp_path / "forged.ckpt")
    with pytest.raises(LesionError) as error:
        read_checkpoint(tmp_path / "forged.ckpt")
    assert str(error.value).startswith(f"{tmp_path / 'forged.ckpt'}: "), str(error.value)


@settings(max_examples=25, deadline=None)
@given(name=NOT_A_NAME)
def test_the_net_registry_refuses_a_name_that_is_not_a_string(name):
    with pytest.raises(LesionError, match="^model.name: "):
        build_net(name, 3, [[0], [1], [2]], backbone="resnet18", weights="none")
