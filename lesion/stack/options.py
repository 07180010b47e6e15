"""The options of ``stack.py`` (``conf/stack.yaml`` and its ``conf/stack/`` group), checked before any work as
:mod:`lesion.options` checks those of training and evaluation."""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Mapping
from pathlib import Path

from lesion.errors import LesionError
from lesion.options import DEVICE, OUT_FOLDER, Choice, Rule, Section, Value

# Each tree library: the module it is imported as, and how to install it.
LIBRARIES = {"lightgbm": ("lightgbm", "pip install lightgbm"),
             "xgboost": ("xgboost", "pip install 'lesion[xgboost]'"),
             "catboost": ("catboost", "pip install 'lesion[catboost]'")}
SWEEP_FOLDER = "the folder of a train.py -m 'dataset.fold=1/K,…,K/K' sweep (its hydra.sweep.dir)"

_ROUNDS = Value(int, 1, doc="Boosting rounds (trees per model); no early stopping, which would choose on the "
                            "validation fold the report scores.")
_RATE = Value(float, 0, 1, lo_open=True, doc="Learning rate (shrinkage of each tree).")
_DEPTH = Value(int, 1, 16, doc="Largest depth of a tree.")
_SUBSAMPLE = Value(float, 0, 1, lo_open=True, doc="Share of the training rows each tree sees (drawn anew per tree).")
_COLSAMPLE = Value(float, 0, 1, lo_open=True, doc="Share of the features each tree sees.")
_L2 = Value(float, 0, doc="L2 regularisation of the leaf values.")


def _trees(name: str, doc: str, **own: Value) -> Section:
    return Section({"name": Value(str, doc=doc), "rounds": _ROUNDS, "learning_rate": _RATE, "depth": _DEPTH,
                    "subsample": _SUBSAMPLE, "colsample": _COLSAMPLE, "l2": _L2, **own})


TREES = Choice({
    "lightgbm": _trees("lightgbm", "lightgbm: LightGBM (Ke et al., NeurIPS 2017), leaf-wise trees.",
                       leaves=Value(int, 2, doc="Largest number of leaves of a tree (lightgbm grows leaf-wise)."),
                       min_child_samples=Value(int, 1, doc="Fewest training rows in a leaf.")),
    "xgboost": _trees("xgboost", "xgboost: XGBoost (Chen & Guestrin, KDD 2016), histogram trees (lesion[xgboost]).",
                      min_child_weight=Value(float, 0, doc="Smallest sum of row weights (hessians) in a leaf.")),
    "catboost": _trees("catboost", "catboost: CatBoost (Prokhorenkova et al., NeurIPS 2018), symmetric trees "
                                   "(lesion[catboost])."),
}, doc="The gradient-boosted trees (conf/stack/): stack=lightgbm, xgboost or catboost.")


def _seeds(where: str, seeds: object) -> list[int]:
    """``seeds``: a non-empty list of distinct integers ≥ 0."""
    numbers = isinstance(seeds, (list, tuple)) and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                        for s in seeds)
    if not numbers or not seeds or len(set(seeds)) != len(seeds):
        raise LesionError(where, f"is {seeds!r}, not a list of distinct integers ≥ 0", "use e.g. seeds=[0,1,2]")
    return list(seeds)


def _sweep(where: str, sweep: object) -> str:
    """``sweep``: an existing folder."""
    folder = Path(Value(str).check(where, sweep)).expanduser()
    if not folder.is_dir():
        raise LesionError(where, f"{folder} is not a folder", f"pass {SWEEP_FOLDER}")
    return str(folder)


OPTIONS = Section({
    "sweep": Rule(_sweep, "a folder", "The folder of a K-fold sweep of train.py (train.py -m "
                                      "'dataset.fold=1/K,…,K/K'): one <job>/checkpoints/best.ckpt per fold, each "
                                      "validated on its fold of the training images."),
    "dataset": Section({
        "root": Value(str, null=True, doc="The folder of the fold models' data, where it moved since training; "
                                          "null = as the checkpoints record it."),
        "cache": Value(bool, null=True, doc="Read images from the image cache; null = as the checkpoints record it."),
        "cache_dir": Value(str, null=True, doc="Folder of the image cache; null = $LESION_CACHE/images, or "
                                               "~/.cache/lesion/images."),
        "max_pixels": Value(int, 1, null=True, doc="Source images with more pixels are refused; null = PIL's own "
                                                   "limit (≈ 179 MP)."),
    }, doc="The fold models' own dataset, rebuilt from their checkpoints as evaluate.py does, with any value given "
           "here replacing its own."),
    "features": Section({
        "image": Value(bool, doc="The fold models' scores: out of fold for the training images, their mean over "
                                 "the fold models for the test images."),
        "columns": Value("strings", null=True,
                         doc="The tabular columns (age, sex, site, and for ISIC 2024 the columns of "
                             "train-metadata.csv): null = every column the images to predict come with; [] = none. "
                             "A column known only for training images (the label; ISIC 2024's lesion_id, iddx_*, "
                             "mel_*, tbp_lv_dnn_lesion_confidence) is refused."),
        "patient": Value(bool, doc="Patient-relative features of each numeric feature: minus the patient's mean, "
                                   "divided by the patient's spread, rank among the patient's lesions; and the "
                                   "patient's number of lesions. Needs patient ids (ISIC 2020, ISIC 2024)."),
    }, doc="What the trees read."),
    "images": Value(str, null=True, doc="Images to predict besides the test split, e.g. ISIC 2024's "
                                        "test-image.hdf5 (a folder of images, or an HDF5 file): each fold model "
                                        "scores them, the trees predict them, and submission.csv is theirs."),
    "metadata": Value(str, null=True, doc="The metadata CSV of images= (e.g. test-metadata.csv), columns named as "
                                          "the dataset's own files name them: the tabular features and patient "
                                          "ids of those images."),
    "stack": TREES,
    "seeds": Rule(_seeds, "a list of distinct integers ≥ 0",
                  "Seeds of the trees: each fold's trees are trained once per seed and their probabilities averaged."),
    "out": dataclasses.replace(OUT_FOLDER, doc="The folder of metrics.json, oof.csv, submission.csv, "
                                               "predictions.csv (images=), importances.csv / .png and the log."),
    "batch_size": Value(int, 1, doc="Images per forward pass of the fold models."),
    "num_workers": Value(int, 0, null=True, doc="DataLoader worker processes; null = (cores per GPU, or all cores) "
                                                "− 1, at most 8."),
    "device": DEVICE,
    "trust_checkpoint": Value(bool, doc="Checkpoints are read with torch.load(weights_only=True); true also reads "
                                        "one that this refuses, which can run code from the file: only for "
                                        "trusted files."),
}, doc="python stack.py sweep=SWEEP_DIR [stack=lightgbm|xgboost|catboost] [out=DIR]: gradient-boosted trees on the "
       "K fold models' out-of-fold image scores, the tabular features and patient-relative features, trained on the "
       "image models' own folds; per-fold and overall pAUC (BACC and AUC for more classes), feature importances "
       "and the submission for the test images.")


def check_stack(cfg: Mapping) -> dict:
    """Refuse any bad option of a composed ``conf/stack.yaml`` config (a plain dict), or any other key, and a
    tree library that is not installed, before any work.

    Returns:
        The checked options.
    """
    checked = OPTIONS.check("", cfg)
    features = checked["features"]
    if not features["image"] and features["columns"] == []:
        raise LesionError("features", "leave the trees nothing to read (features.image=false, features.columns=[])",
                          "keep the image scores or some tabular columns")
    if checked["metadata"] is not None and checked["images"] is None:
        raise LesionError("metadata", "is the metadata of images=, and no images= is given",
                          "pass images=<the images it describes>, or drop metadata=")
    for key in ("images", "metadata"):
        if checked[key] is not None and not Path(checked[key]).expanduser().exists():
            raise LesionError(key, f"{checked[key]} does not exist", "pass an existing file or folder")
    if checked["images"] is not None and checked["metadata"] is None and (features["columns"] != [] or features["patient"]):
        raise LesionError("images", "come without their metadata, and the trees read tabular or patient features",
                          "pass metadata=<their CSV, e.g. test-metadata.csv>, or stack image scores alone: "
                          "features.columns=[] features.patient=false")
    module, install = LIBRARIES[checked["stack"]["name"]]
    if importlib.util.find_spec(module) is None:
        raise LesionError("stack.name", f"{checked['stack']['name']} is not installed", install)
    return checked
