"""The data a checkpoint is evaluated on, rebuilt as its training made it, and checked against what training recorded.

Used by ``evaluate.py`` and ``stack.py``: a hold-out or fold is made again from the checkpoint's split record (seed,
fraction, fold, grouping), and a validation split or test hold-out that is not the one training used (by the digest
of its image ids) is refused, since it may hold training images.
"""

from __future__ import annotations

from pathlib import Path

from lesion.data.datamodule import IsicDataModule
from lesion.data.images import DEFAULT_MAX_PIXELS
from lesion.errors import LesionError
from lesion.options import DATASET


def checkpoint_datamodule(hp, options: dict) -> IsicDataModule:
    """The DataModule to evaluate on: the checkpoint's dataset, or ``dataset=NAME``'s, with overrides.

    Without ``dataset=NAME`` the checkpoint's dataset config is used with the ``dataset.*`` values
    given (e.g. ``dataset.root`` when the data moved), except what decides where files are written
    or how large an image may be (``synthetic``, ``cache_dir``, ``max_pixels``): those are this
    command's (its ``dataset.*`` values or the defaults), never the checkpoint's. Hold-out and fold
    splits are made as training made them (seed, fraction, fold, grouping from the checkpoint's
    split record); the input size and the colour constancy are the checkpoint's.
    """
    stored = {**(hp.dataset or {}), **_FROM_THIS_COMMAND} if hp.dataset else {}
    given = options.get("dataset") or {}
    if given.get("layout") is None and "layout" not in stored:
        raise LesionError("dataset", "the checkpoint records no training dataset", "pass dataset=NAME dataset.root=DIR")
    if given.get("layout") is None:
        dataset = {**stored, **{k: v for k, v in given.items() if v is not None}}
    else:
        dataset = dict(given)
    dataset.pop("seed", None)
    split = hp.split or {}
    seed = split.get("seed", (hp.dataset or {}).get("seed", 0))
    if split.get("validation") in ("holdout", "fold") or split.get("test") == "holdout":
        dataset.update(val_fraction=split["val_fraction"], fold=split["fold"], split_by=split["grouped_by"])
    # The test split as training made it: its hold-out, or (records without one) the validation split.
    dataset["test_fraction"] = split.get("test_fraction") if split.get("test") == "holdout" else None
    dataset.update(image_size=hp.image_size, batch_size=options["batch_size"], num_workers=options["num_workers"])
    dataset["extra"] = []  # external data only ever joined the training split, which evaluation does not use
    dataset["color_constancy"] = (hp.dataset or {}).get("color_constancy")  # the model's preprocessing
    DATASET.check("dataset", dataset)
    return IsicDataModule(**dataset, mean=hp.mean, std=hp.std, seed=seed, metadata_encoding=hp.metadata)


# Where files are written and the image-size guard: chosen by whoever runs evaluate.py (its
# dataset.* values, else these defaults), never by the checkpoint.
_FROM_THIS_COMMAND = {"synthetic": False, "synthetic_n": 240, "synthetic_seed": 0, "cache_dir": None,
                      "max_pixels": DEFAULT_MAX_PIXELS}


def check_validation_split(trained: dict | None, rebuilt: dict, ckpt: Path) -> None:
    """Refuse to report on a validation split other than the one training validated on."""
    if trained is None:
        if rebuilt["validation"] != "official":
            raise LesionError(ckpt, "does not record how its validation split was made, so the split rebuilt "
                              "here may hold training images", "evaluate split=test on a dataset with a test split, "
                              "or retrain with this version of lesion")
        return
    if trained["validation"] == rebuilt["validation"] == "official":
        return
    if trained["val_ids_sha256"] != rebuilt["val_ids_sha256"]:
        raise LesionError("split", f"the validation split made here ({rebuilt['val_images']} images, "
                          f"{rebuilt['validation']}) is not the one {ckpt} was validated on "
                          f"({trained['val_images']} images, {trained['validation']}, seed {trained['seed']})",
                          "evaluate on the training run's own data (dataset.root=<its folder>) or on a test split; "
                          "a hold-out made by an older lesion differs: retrain")


def check_test_split(trained: dict | None, rebuilt: dict, ckpt: Path) -> None:
    """Refuse to report on a test hold-out other than the one training held out (it may hold training images)."""
    if trained is None or trained.get("test") != "holdout" or trained["test_ids_sha256"] != rebuilt["test_ids_sha256"]:
        made = f"{trained['test_images']} images" if trained and trained.get("test") == "holdout" else "none"
        raise LesionError("split", f"the test hold-out made here ({rebuilt['test_images']} images) is not the one "
                          f"{ckpt} held out ({made})", "evaluate on the training run's own data (dataset.root=<its "
                          "folder>) or on a dataset with an official test split; a hold-out made by an older lesion "
                          "differs: retrain")
