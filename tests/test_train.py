"""The real CLI end to end: every model × loss × dataset, checkpoints, resume, evaluate, errors."""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch

from lesion.data.layouts import LAYOUTS
from lesion.errors import LesionError
from lesion.train.module import LesionClassifier

pytestmark = pytest.mark.slow

SMALL_REAL = ["trainer=cpu", "model.backbone=resnet18", "model.weights=none", "dataset.image_size=32",
              "dataset.batch_size=4", "dataset.num_workers=0"]
SMALL = [*SMALL_REAL, "dataset.synthetic_n=30"]


def metric_keys(classes: list[str]) -> set[str]:
    per_class = {f"{m}/{c}" for m in ("auc", "recall", "precision") for c in classes}
    return {"bacc", "accuracy", "auc_macro", "confusion", "classes"} | per_class


def read_metrics(path: Path) -> dict:
    return json.loads(path.read_text())


def completed_epochs(checkpoint: dict) -> int:
    # last.ckpt is written after each epoch's validation, before the epoch counts as completed.
    return checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]


def test_fast_dev_run_every_model_loss_and_dataset(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    run_cli("train.py", "-m", "model=baseline,barata", "loss=ce,focal,weighted_ce",
            "dataset=synthetic2017,synthetic2018", *SMALL, "trainer.fast_dev_run=true",
            "channels_last=true",  # channels-last weights and batches through fit and test
            f"hydra.sweep.dir={sweep}")
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 12
    seen = set()
    for job in jobs:
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        layout = "isic2017" if "synthetic2017" in overrides else "isic2018"
        metrics = read_metrics(job / "test_metrics.json")
        classes = list(LAYOUTS[layout].classes)
        assert metric_keys(classes) <= set(metrics)
        assert metrics["classes"] == classes
        assert len(metrics["confusion"]) == len(classes)
        seen.add(tuple(line for line in overrides.splitlines() if "=" in line and not line.startswith("- trainer")))
    assert len(seen) == 12


def test_run_directory_holds_checkpoints_logs_and_metrics(trained_run):
    for name in ("checkpoints/best.ckpt", "checkpoints/last.ckpt", "logs/metrics.csv", ".hydra/config.yaml",
                 "test_metrics.json"):
        assert (trained_run / name).is_file(), name
    assert list((trained_run / "logs").glob("events.out.tfevents.*"))
    classes = list(LAYOUTS["isic2018"].classes)
    metrics = read_metrics(trained_run / "test_metrics.json")
    assert metric_keys(classes) <= set(metrics)
    assert sum(map(sum, metrics["confusion"])) == 10  # every test image counted once
    log = pd.read_csv(trained_run / "logs" / "metrics.csv")
    assert log["val/bacc"].notna().sum() == 2


def test_checkpoint_loads_with_weights_only_and_holds_the_final_epoch(trained_run):
    last = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)
    # The final (second) epoch: 30 training images in batches of 4 → 7 steps per epoch, saved
    # whether or not val/bacc improved.
    assert completed_epochs(last) == 2 and last["global_step"] == 14
    hparams = last["hyper_parameters"]
    assert hparams["classes"] == list(LAYOUTS["isic2018"].classes)
    assert hparams["taxonomy"] == LAYOUTS["isic2018"].taxonomy()
    assert isinstance(hparams["loss"]["alpha"], list) and len(hparams["loss"]["alpha"]) == 7
    assert hparams["model"]["hierarchical"] is True
    module = LesionClassifier.load_from_checkpoint(trained_run / "checkpoints" / "last.ckpt")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert module(x).shape == (2, 7)
        steps = module.net.step_logits(x)
    assert [s.shape[1] for s in steps] == [2, 2, 7]
    for key, value in last["state_dict"].items():
        assert torch.equal(module.state_dict()[key], value), key


def test_evaluate_reproduces_the_test_metrics(trained_run, run_cli, tmp_path):
    out = tmp_path / "eval"
    run_cli("evaluate.py", f"ckpt={trained_run / 'checkpoints' / 'best.ckpt'}", "split=test", f"out={out}")
    expected = read_metrics(trained_run / "test_metrics.json")
    got = read_metrics(out / "metrics.json")
    assert got["confusion"] == expected["confusion"]
    assert got["bacc"] == pytest.approx(expected["bacc"], abs=1e-6)
    predictions = pd.read_csv(out / "predictions.csv")
    classes = list(LAYOUTS["isic2018"].classes)
    assert list(predictions.columns) == ["image", *classes, "label", "prediction", "ood_score", "unknown"]
    assert predictions[classes].sum(axis=1).round(4).eq(1).all()
    assert (predictions[classes].idxmax(axis=1) == predictions["prediction"]).all()


def test_resume_from_last_continues_the_run(trained_run, run_cli, tmp_path):
    run_dir = shutil.copytree(trained_run, tmp_path / "resumed")
    run_cli("train.py", "dataset=synthetic2018", "model=barata", "model.hierarchical=true", "loss=focal",
            "loss.alpha=inverse_frequency", *SMALL, "trainer.max_epochs=3", "ckpt_path=last",
            f"hydra.run.dir={run_dir}")
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert completed_epochs(last) == 3 and last["global_step"] == 21
    before = pd.read_csv(run_dir / "logs" / "metrics.csv")  # the first run's history is kept
    assert before["val/bacc"].notna().sum() == 2
    after = pd.read_csv(run_dir / "logs" / "resume_1" / "metrics.csv")
    assert after.loc[after["val/bacc"].notna(), "epoch"].tolist() == [2]


def test_resume_on_other_splits_is_refused_leaving_the_run_as_it_was(trained_run, run_cli, tmp_path):
    """Other data gives other validation and test images: resuming would train on images the run validated on."""
    run_dir = shutil.copytree(trained_run, tmp_path / "resumed")
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    result = run_cli("train.py", "dataset=synthetic2018", "model=barata", "model.hierarchical=true", "loss=focal",
                     "loss.alpha=inverse_frequency", *SMALL_REAL, "dataset.synthetic_n=40", "trainer.max_epochs=3",
                     "ckpt_path=last", f"hydra.run.dir={run_dir}", check=False)
    assert_one_line_error(result, "was trained with another validation split than the one made here")
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def assert_one_line_error(result, fragment: str) -> None:
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("lesion: error:")]
    assert len(lines) == 1 and fragment in lines[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr


def test_missing_dataset_folder_is_one_line_error(run_cli, tmp_path):
    result = run_cli("train.py", "dataset=isic2018", f"dataset.root={tmp_path / 'absent'}", *SMALL_REAL, check=False)
    assert_one_line_error(result, str(tmp_path / "absent"))


def test_bad_csv_is_one_line_error(run_cli, synthetic_root, tmp_path):
    root = shutil.copytree(synthetic_root("isic2017"), tmp_path / "copy")
    csv_path = root / LAYOUTS["isic2017"].splits["train"].csv[0]
    pd.read_csv(csv_path).drop(columns=["melanoma"]).to_csv(csv_path, index=False)
    result = run_cli("train.py", "dataset=isic2017", f"dataset.root={root}", *SMALL_REAL, check=False)
    assert_one_line_error(result, "melanoma")


def test_unreadable_image_inside_a_worker_is_one_line_error(run_cli, synthetic_root, tmp_path):
    root = shutil.copytree(synthetic_root("isic2018"), tmp_path / "copy")
    files = LAYOUTS["isic2018"].splits["train"]
    archive = root / f"{files.images[0]}.zip"
    with zipfile.ZipFile(archive) as z:
        members = {name: z.read(name) for name in z.namelist()}
    victim = sorted(name for name in members if name.endswith(".jpg"))[0]
    members[victim] = b"\xff\xd8 truncated"
    with zipfile.ZipFile(archive, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    result = run_cli("train.py", "dataset=isic2018", f"dataset.root={root}", *SMALL_REAL, "dataset.num_workers=2",
                     "trainer.fast_dev_run=true", "dataset.batch_size=64", check=False)
    assert_one_line_error(result, Path(victim).stem)


def test_missing_checkpoint_is_one_line_error(run_cli, tmp_path):
    result = run_cli("evaluate.py", f"ckpt={tmp_path / 'none.ckpt'}", check=False)
    assert_one_line_error(result, "none.ckpt")


def extracted(uda1: Path, dest: Path) -> Path:
    """The UDA-1 set with every split as an extracted folder (in a temporary folder)."""
    dest.mkdir()
    for item in uda1.iterdir():
        if item.suffix == ".zip":
            with zipfile.ZipFile(item) as z:
                z.extractall(dest)
        elif item.suffix == ".csv":
            shutil.copy(item, dest)
    return dest


@pytest.mark.parametrize("packing", ["zip", "folder"])
def test_trains_on_the_real_uda1_images(packing, uda1, run_cli, tmp_path):
    root = uda1 if packing == "zip" else extracted(uda1, tmp_path / "folders")
    run_dir = tmp_path / "run"
    result = run_cli("train.py", "dataset=isic2017", f"dataset.root={root}", "model=barata", *SMALL_REAL[:4],
                     "dataset.batch_size=16", "dataset.num_workers=2", "trainer.max_epochs=1",
                     "trainer.limit_train_batches=4", f"hydra.run.dir={run_dir}")
    metrics = read_metrics(run_dir / "test_metrics.json")
    assert isinstance(metrics["auc/MEL"], float) and 0 <= metrics["auc/MEL"] <= 1
    assert metrics["auc/SK"] is None and metrics["recall/SK"] is None  # no SK images: undefined
    assert sum(map(sum, metrics["confusion"])) == 139
    assert "no images of class SK" in result.stdout + result.stderr


def test_checkpoint_naming_foreign_code_is_refused(trained_run, tmp_path):
    checkpoint = torch.load(trained_run / "checkpoints" / "best.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["model"]["_target_"] = "os.system"
    forged = tmp_path / "forged.ckpt"
    torch.save(checkpoint, forged)
    with pytest.raises(LesionError, match="os.system"):
        LesionClassifier.load_from_checkpoint(forged)


def test_checkpoint_of_another_class_count_is_a_clear_error(trained_run, tmp_path):
    checkpoint = torch.load(trained_run / "checkpoints" / "best.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["classes"] = ["NV", "SK", "MEL"]
    checkpoint["hyper_parameters"]["taxonomy"] = LAYOUTS["isic2017"].taxonomy()
    other = tmp_path / "other.ckpt"
    torch.save(checkpoint, other)
    with pytest.raises(LesionError, match="not a usable lesion checkpoint"):
        LesionClassifier.load_from_checkpoint(other)
    (tmp_path / "text.ckpt").write_text("hello")
    with pytest.raises(LesionError, match="text.ckpt"):
        LesionClassifier.load_from_checkpoint(tmp_path / "text.ckpt")
    # Damaged pickle bytes are not mistaken for a checkpoint that merely needs trust_checkpoint=true.
    (tmp_path / "noise.ckpt").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(LesionError) as error:
        LesionClassifier.load_from_checkpoint(tmp_path / "noise.ckpt")
    assert str(error.value) == (f"{tmp_path / 'noise.ckpt'}: is not a usable lesion checkpoint (not a readable "
                                "PyTorch checkpoint file) — pass a checkpoint written by lesion's train.py")


def test_two_seeded_runs_give_identical_metrics(run_cli, tmp_path):
    outputs = []
    for name in ("first", "second"):
        run_cli("train.py", "dataset=synthetic2018", "model=barata", *SMALL, "trainer.max_epochs=1", "seed=7",
                "trainer.deterministic=true", f"hydra.run.dir={tmp_path / name}")
        outputs.append((tmp_path / name / "test_metrics.json").read_text())
    assert outputs[0] == outputs[1]


def test_quickstart_balances_every_class_past_a_test_bacc_of_0_70(run_cli, tmp_path):
    """The README's quickstart as a new user runs it: the sampler makes it recall the smallest classes."""
    run_cli("train.py", "experiment=quickstart", f"hydra.run.dir={tmp_path / 'run'}")
    metrics = read_metrics(tmp_path / "run" / "test_metrics.json")
    assert metrics["bacc"] >= 0.70, metrics
    assert all(metrics[f"recall/{c}"] > 0 for c in metrics["classes"]), metrics
    last = (tmp_path / "run" / "train.log").read_text().strip().splitlines()[-1]
    assert re.search(r"validation: bacc \S+ \(epoch \d+\); test: bacc \S+, auc_macro \S+ → .*test_metrics.json$", last)


def test_resume_without_a_run_directory_is_refused(run_cli, tmp_path):
    result = run_cli("train.py", "dataset=synthetic2018", *SMALL, "ckpt_path=last",
                     f"hydra.run.dir={tmp_path / 'fresh'}", check=False)
    assert_one_line_error(result, "ckpt_path=last")
    assert "hydra.run.dir" in result.stderr
