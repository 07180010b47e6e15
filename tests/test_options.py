"""Every option is checked, typed and ranged, before any work: one `lesion: error:` line, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lesion.errors import LesionError
from lesion.options import check_evaluate, check_train

REPO = Path(__file__).resolve().parents[1]


def composed(name: str, overrides: list[str]) -> dict:
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose(name, overrides=overrides)
    OmegaConf.set_struct(cfg, False)
    if "run_dir" in cfg:
        cfg.run_dir = "run"  # a Hydra runtime value, unset outside a job
    if name == "evaluate":
        cfg.out = "x"
    return OmegaConf.to_container(cfg, resolve=True)


# override → the option the error must name
REFUSED_TRAIN = {
    "dataset.image_size=-8": "dataset.image_size: -8 is out of range",
    "dataset.image_size=abc": "dataset.image_size: is 'abc', not an integer",
    "dataset.batch_size=0": "dataset.batch_size: 0 is out of range",
    "dataset.num_workers=-1": "dataset.num_workers: -1 is out of range",
    "dataset.val_fraction=1.5": "dataset.val_fraction: 1.5 is out of range",
    "dataset.val_fraction=0": "dataset.val_fraction: 0 is out of range",
    "dataset.fold=6/5": "dataset.fold: '6/5' is not k/K",
    "dataset.fold=garbage": "dataset.fold: 'garbage' is not k/K",
    "dataset.split_by=person": "dataset.split_by: 'person' is not one of auto, lesion, patient, image",
    "dataset.cache_size=100": "dataset.cache_size: 100 px is smaller than dataset.image_size=224",
    "dataset.max_pixels=0": "dataset.max_pixels: 0 is out of range",
    "optimizer.lr=-1": "optimizer.lr: -1 is out of range",
    "optimizer.lr=0": "optimizer.lr: 0 is out of range",
    "optimizer.weight_decay=-0.1": "optimizer.weight_decay: -0.1 is out of range",
    "optimizer.name=lbfgs": "optimizer.name: 'lbfgs' is not one of adamw, adam, sgd",
    "scheduler.name=step": "scheduler.name: 'step' is not one of cosine",
    "model.dropout=1.0": "model.dropout: 1.0 is out of range",
    "model.frozen_stages=6": "model.frozen_stages: 6 is out of range",
    "model.backbone=vgg16": "model.backbone: 'vgg16' is not one of resnet18, resnet34, resnet50",
    "model.hidden_size=0": "model.hidden_size: 0 is out of range",
    "model.rd_ratio=0": "model.rd_ratio: 0 is out of range",
    "model.name=timm": "model.name: 'timm' is not one of baseline, barata",
    "loss=focal loss.gamma=-1": "loss.gamma: -1 is out of range",
    "loss.weight=[1,2]": "loss.weight: has 2 entries for 7 classes",
    "loss.weight=[1,-2,1,1,1,1,1]": "loss.weight: -2 is out of range",
    "loss.weight=uniform": "loss.weight: 'uniform' is not one of inverse_frequency, effective_number",
    "balance=downsample balance.downsample.class=XX": "balance.downsample.class: unknown class 'XX'",
    "balance.downsample.fraction=0": "balance.downsample.fraction: 0 is out of range",
    "balance.augment.target=-1": "balance.augment.target: -1 is out of range",
    "balance.class_weight=sqrt": "balance.class_weight: 'sqrt' is not one of",
    "balance=smote_tomek balance.smote_tomek.views=0": "balance.smote_tomek.views: 0 is out of range",
    "balance=smote_tomek balance.smote_tomek.head_epochs=0": "balance.smote_tomek.head_epochs: 0 is out of range",
    "balance=smote_tomek balance.smote_tomek.k_neighbors=0": "balance.smote_tomek.k_neighbors: 0 is out of range",
    "trainer.max_epochs=0": "trainer.max_epochs: 0 is out of range",
    "trainer.limit_train_batches=-1": "trainer.limit_train_batches: -1 is neither a share in [0, 1] nor",
    "trainer.precision=8": "trainer.precision: '8' is not one of",
    "trainer.limit_val_batches=1.5": "trainer.limit_val_batches: 1.5 is neither a share in [0, 1] nor a whole number",
    "balance=class_weight loss=weighted_ce": "loss.weight: is set and balance.class_weight is set too",
    "balance=sampler loss=weighted_ce": "balance.sampler: a weighted sampler together with class weights",
    "balance=sampler balance.class_weight=inverse_frequency": "balance.sampler: a weighted sampler together with",
    "balance.backbone_ckpt=a.ckpt": "balance.backbone_ckpt: only gives the SMOTE-Tomek embeddings a backbone",
    "seed=-1": "seed: -1 is out of range",
    "patience=0": "patience: 0 is out of range",
    "channels_last=maybe": "channels_last: is 'maybe', not true or false",
    "+callbacks.extra=3": "callbacks.extra: is 3, not options with a _target_ class",
    "+logger.extra={save_dir:x}": "logger.extra: is a mapping, not options with a _target_ class",
    # Options that used to be silently ignored together.
    "balance=smote_tomek balance.smote_tomek.finetune=true balance.backbone_ckpt=a.ckpt":
        "balance.backbone_ckpt: is set together with balance.smote_tomek.finetune=true",
    "balance=smote_tomek ckpt_path=last": "ckpt_path: resumes a fine-tuning stage, and balance.smote_tomek.finetune=false has none",
}


@pytest.mark.parametrize("overrides", sorted(REFUSED_TRAIN))
def test_bad_training_option_is_refused_naming_it(overrides):
    with pytest.raises(LesionError) as error:
        check_train(composed("train", overrides.split()))
    assert str(error.value).startswith(REFUSED_TRAIN[overrides]), str(error.value)
    assert " — " in str(error.value)  # says what to do


EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))
TRAINERS = sorted(p.stem for p in (REPO / "conf" / "trainer").glob("*.yaml"))


@pytest.mark.parametrize("overrides", [
    *([f"experiment={name}", f"trainer={trainer}"] for name in EXPERIMENTS for trainer in TRAINERS),
    ["loss=focal", "loss.alpha=inverse_frequency"], ["optimizer.name=sgd", "+optimizer.momentum=0.9"],
    ["dataset.fold=2/5"], ["scheduler=null"], ["trainer.limit_train_batches=3"], ["trainer.precision=16"],
    ["callbacks=none", "logger=none"], ["logger=csv"], ["callbacks.early_stopping=null"], ["patience=null"],
], ids=str)
def test_shipped_configs_are_accepted(overrides):
    check_train(composed("train", overrides))


REFUSED_EVALUATE = {
    "split=train": "split: 'train' is not one of val, test",
    "bootstrap=0": "bootstrap: 0 is out of range",
    "batch_size=0": "batch_size: 0 is out of range",
    "gradcam.n=-2": "gradcam.n: -2 is out of range",
    "gradcam.layer=layer5": "gradcam.layer: 'layer5' is not one of layer1, layer2, layer3, layer4",
    "tta=maybe": "tta: is 'maybe', not true, false or flips/crops options",
    "split=val calibrate=true": "calibrate: fits the temperature on the validation split, which split=val then reports on",
    "dataset=isic2018 dataset.batch_size=0": "dataset.batch_size: 0 is out of range",
}


@pytest.mark.parametrize("overrides", sorted(REFUSED_EVALUATE))
def test_bad_evaluation_option_is_refused_naming_it(overrides):
    with pytest.raises(LesionError) as error:
        check_evaluate(composed("evaluate", ["ckpt=a.ckpt", *overrides.split()]))
    assert str(error.value).startswith(REFUSED_EVALUATE[overrides]), str(error.value)


@pytest.mark.parametrize("overrides", [
    ["dataset.image_size=-8"], ["dataset.batch_size=0"], ["optimizer.lr=-1"], ["dataset.fold=garbage"],
])
def test_cli_refusal_is_one_line_exit_2_and_leaves_no_run_directory(run_cli, tmp_path, overrides):
    run_dir = tmp_path / "run"
    result = run_cli("train.py", "experiment=quickstart", *overrides, f"hydra.run.dir={run_dir}", check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"lesion: error: {overrides[0].split('=')[0]}: "), result.stderr
    assert "HYDRA_FULL_ERROR" not in result.stderr and "Traceback" not in result.stderr
    assert not run_dir.exists()


def test_refused_resume_leaves_the_run_directory_as_it_was(run_cli, trained_run):
    before = {p: p.stat().st_mtime_ns for p in trained_run.rglob("*")}
    result = run_cli("train.py", "dataset=synthetic2018", "model=barata", "model.hierarchical=true", "loss=focal",
                     "loss.alpha=inverse_frequency", "trainer=cpu", "model.backbone=resnet34", "model.weights=none",
                     "dataset.image_size=32", "dataset.batch_size=4", "dataset.num_workers=0",
                     "dataset.synthetic_n=30", "trainer.max_epochs=3", "ckpt_path=last",
                     f"hydra.run.dir={trained_run}", check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        f"lesion: error: ckpt_path: {trained_run / 'checkpoints' / 'last.ckpt'} was trained with "
        "model.backbone=resnet18 (this run: resnet34) — resume with the overrides of the run that wrote it"]
    assert {p: p.stat().st_mtime_ns for p in trained_run.rglob("*")} == before


def test_lightning_refusal_is_one_line_before_any_work(run_cli, tmp_path):
    result = run_cli("train.py", "experiment=quickstart", "+trainer.gradient_clip_algorithm=sideways",
                     "trainer.fast_dev_run=true", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert not (tmp_path / "run").exists()
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("lesion: error: trainer: Lightning refuses these options ("), errors
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("overrides, refusal", [
    (["callbacks.best_checkpoint.mode=sideways"], "callbacks.best_checkpoint: Lightning refuses these options ("),
    (["logger=none"], "logger: is empty, and the learning-rate monitor (callbacks.lr_monitor) needs a logger"),
], ids=str)
def test_callback_and_logger_refusals_are_one_line_before_any_work(run_cli, tmp_path, overrides, refusal):
    result = run_cli("train.py", "experiment=quickstart", *overrides, "trainer.fast_dev_run=true",
                     f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"lesion: error: {refusal}"), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_schema_names_exactly_the_registered_builders():
    from lesion.train.losses import LOSSES
    from lesion.models.registry import NETS
    from lesion.train.optim import OPTIMIZERS
    from lesion.options import MODELS, OPTIMIZER_SECTIONS, losses

    assert set(MODELS) == set(NETS)
    assert set(losses(resolved=False)) == set(losses(resolved=True)) == set(LOSSES)
    assert set(OPTIMIZER_SECTIONS) == set(OPTIMIZERS)


# Every way to give the loss class weights, and every balancing that trains the head on SMOTE-Tomek rows.
CLASS_WEIGHTS = {
    "loss=weighted_ce": "loss.weight",
    "loss.weight=[1,2,1,1,1,1,1]": "loss.weight",
    "loss=focal loss.alpha=inverse_frequency": "loss.alpha",
    "balance.class_weight=effective_number": "balance.class_weight",
}


@pytest.mark.parametrize("balance", ["smote_tomek", "hybrid"])
@pytest.mark.parametrize("weights", sorted(CLASS_WEIGHTS))
def test_smote_tomek_with_class_weights_is_refused_as_correcting_twice(balance, weights):
    """The head stage trains on rows SMOTE-Tomek balanced; weights from the counts before it would correct again."""
    overrides = [f"balance={balance}", "dataset=isic2018", *weights.split()]
    with pytest.raises(LesionError) as error:
        check_train(composed("train", overrides))
    source = CLASS_WEIGHTS[weights]
    assert str(error.value).startswith(f"balance.smote_tomek: SMOTE-Tomek together with class weights ({source}) "
                                       "corrects the imbalance twice — "), str(error.value)
    check_train(composed("train", [*overrides, "balance.smote_tomek.enabled=false"]))
