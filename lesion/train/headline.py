"""The first line a training run logs: what it trains, on which data, how, and where it writes::

    train G9.3: barata/resnet50 on isic2018 (224 px), balance=hybrid, loss=ce, 30 + 30 head epochs → outputs/train/…
"""

from __future__ import annotations

from collections.abc import Mapping


def _epochs(trainer: Mapping, smote: Mapping) -> str:
    """The stages' epochs: ``30 epochs``; with SMOTE-Tomek ``30 head epochs``, after fine-tuning ``30 + 10 head epochs``."""
    if trainer.get("fast_dev_run"):
        return "fast_dev_run"
    fit, head = trainer["max_epochs"], smote["head_epochs"]
    if not smote["enabled"]:
        return f"{fit} epoch" + "s" * (fit != 1)
    return (f"{fit} + " if smote["finetune"] else "") + f"{head} head epoch" + "s" * (head != 1)


def headline(cfg: Mapping) -> str:
    """The line that says what the training run of ``cfg`` does (see the module docstring).

    Args:
        cfg: the composed ``conf/train.yaml`` config, its options checked (:func:`lesion.options.check_train`).
    """
    model, dataset, balance = cfg["model"], cfg["dataset"], cfg["balance"]
    command = f"train {cfg['name']}" if cfg.get("name") else "train"
    data = ("synthetic " if dataset["synthetic"] else "") + dataset["layout"]
    if dataset.get("fold"):
        data += f" fold {dataset['fold']}"
    line = (f"{command}: {model['name']}/{model['backbone']} on {data} ({dataset['image_size']} px), "
            f"balance={balance['name']}, loss={cfg['loss']['name']}, "
            f"{_epochs(cfg['trainer'], balance['smote_tomek'])} → {cfg['run_dir']}")
    return line + (f", resuming {cfg['ckpt_path']}" if cfg.get("ckpt_path") else "")
