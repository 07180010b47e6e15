"""The typed, ranged schema of every option: one place that refuses bad values before any work.

The same checks read a training config (``train.py``), the configs of ``evaluate.py``,
``export.py`` and ``demo.py`` (each command's options are its own: any other key, such as a
training group added with ``+model=…``, is refused) and the hyper-parameters stored in a
checkpoint. Values must be plain (numbers, strings, booleans, lists of them); a dict where a
value belongs, an unknown key (``_target_``, ``_args_``, ``_partial_`` …) or a name outside the
registries is refused with one line.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.utils import get_object

from lesion.balance.plan import CLASS_WEIGHTINGS, check_weighting
from lesion.data.cache import square_size
from lesion.data.color import METHODS as COLOR_METHODS
from lesion.data.custom import CUSTOM_LAYOUTS, FOLDER, layout_of
from lesion.data.external import source_layout
from lesion.data.layouts import LAYOUTS
from lesion.data.splits import parse_fold
from lesion.errors import LesionError, exit_with
from lesion.evaluate.ensemble import METHODS as ENSEMBLES
from lesion.evaluate.subgroups import ATTRIBUTES
from lesion.files import output_folder
from lesion.models.trunks import NAMES as BACKBONES
from lesion.models.trunks import STAGES as BACKBONE_STAGES
from lesion.train.optim import SCHEDULERS

WEIGHTINGS = tuple(CLASS_WEIGHTINGS)
GRADCAM_LAYERS = ("layer1", "layer2", "layer3", "layer4")
EXPORT_FORMATS = ("onnx", "torchscript")
# What computes evaluate.py's probabilities: the checkpoint's torch net, or the same net exported to ONNX.
RUNTIMES = ("torch", "onnx")


@dataclass(frozen=True)
class Value:
    """One option: its type, range or choices, whether null is allowed, the fix to suggest and its meaning.

    ``kind`` is ``int``, ``float``, ``bool``, ``str``, ``"floats"`` (a list of numbers) or
    ``"fold"`` (``"k/K"``).
    """

    kind: object
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple = ()
    null: bool = False
    also: tuple = ()  # other accepted kinds, e.g. a weighting name where a list is allowed
    hint: str = ""
    doc: str = ""  # what the option means: --help and docs/options.md show it

    def check(self, where: str, value: object) -> object:
        """``value`` if it is valid here, else a :class:`LesionError` naming ``where``."""
        if value is None:
            if self.null:
                return None
            self._refuse(where, "is null")
        for kind in self.also:
            if _is(kind, value):
                return Value(kind, self.lo, self.hi, self.lo_open, self.hi_open, self.choices, hint=self.hint).check(where, value)
        if not _is(self.kind, value):
            self._refuse(where, f"is {_describe(value)}, not {_KIND_NAMES[self.kind]}")
        if self.kind == "strings":
            return [str(v) for v in value]
        if self.kind == "floats":
            for item in value:
                Value(float, self.lo, self.hi, self.lo_open, self.hi_open, hint=self.hint).check(where, item)
            return [float(v) for v in value]
        if self.kind == "fold":
            parse_fold(where, value)
        if self.kind == "batches" and not (_is(int, value) and value >= 0 or 0 <= value <= 1):
            self._refuse(where, f"{value} is neither a share in [0, 1] nor a whole number of batches ≥ 0")
        if self.kind == "batches":
            return value
        if self.choices and value not in self.choices:
            self._refuse(where, f"'{value}' is not one of {', '.join(map(str, self.choices))}")
        if self.kind in (int, float):
            if not math.isfinite(value):
                self._refuse(where, f"is {value}")
            low = self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)
            high = self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi)
            if low or high:
                self._refuse(where, f"{value} is out of range ({self._range()})")
            return float(value) if self.kind is float else value
        return value

    def _range(self) -> str:
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '≥'} {self.lo:g}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '≤'} {self.hi:g}")
        return " and ".join(parts)

    def _refuse(self, where: str, problem: str) -> None:
        expected = self.hint or self._expected()
        raise LesionError(where, problem, f"use {expected}")

    def accepts(self) -> str:
        """What the option takes, in words (e.g. ``an integer ≥ 1 or null``)."""
        return self.hint or self._expected()

    def _expected(self) -> str:
        if self.choices:
            text = "one of " + ", ".join(map(str, self.choices))
        elif self.kind in (int, float):
            text = f"{_KIND_NAMES[self.kind]} {self._range()}".strip()
        else:
            text = _KIND_NAMES[self.kind]
        return text + (" or null" if self.null else "")


_KIND_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
               "floats": "a list of numbers", "strings": "a list of names", "fold": "k/K (e.g. 1/5)",
               "batches": "a number"}


def _is(kind: object, value: object) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    if kind == "floats":
        return isinstance(value, (list, tuple)) and all(_is(float, v) for v in value)
    if kind == "fold":
        return isinstance(value, str)
    if kind == "strings":
        return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    if kind == "batches":
        return _is(float, value)
    raise AssertionError(kind)


def _describe(value: object) -> str:
    if isinstance(value, Mapping):
        return "a mapping" + (f" with _target_ '{value['_target_']}'" if "_target_" in value else "")
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"'{value}'" if isinstance(value, str) else f"{value!r}"


@dataclass(frozen=True)
class Rule:
    """An option of a shape no :class:`Value` or :class:`Section` describes, checked by ``check(where, value)``."""

    check: Callable[[str, object], object]
    accepted: str = ""  # what it takes, in words
    doc: str = ""

    def accepts(self) -> str:
        return self.accepted


def _inside(where: str, key: object) -> str:
    """The name of option ``key`` of ``where`` (``""``: a command's own options)."""
    return f"{where}.{key}" if where else str(key)


@dataclass(frozen=True)
class Section:
    """A mapping of named values and nested sections; ``extra`` lets unknown keys through unchecked.

    Checked with ``where=""``, it is a whole command's options (e.g. :data:`EVALUATE`).
    """

    fields: Mapping[str, Value | Section | Rule | Entries | Choice]
    extra: bool = False
    null: bool = False
    optional: frozenset = field(default_factory=frozenset)
    doc: str = ""

    def check(self, where: str, values: object) -> dict | None:
        """A plain copy of ``values`` with every field checked; unknown keys refused unless ``extra``."""
        if values is None and self.null:
            return None
        if not isinstance(values, Mapping):
            raise LesionError(where, f"is {_describe(values)}, not a group of options",
                              "write it as key: value entries")
        self.refuse_unknown(where, values)
        missing = [k for k in self.fields if k not in values and k not in self.optional]
        if missing:
            raise LesionError(_inside(where, missing[0]), "is missing", "give it a value")
        out = {k: v for k, v in values.items() if k not in self.fields}
        for key, spec in self.fields.items():
            if key in values:
                out[key] = spec.check(_inside(where, key), values[key])
        return out

    def refuse_unknown(self, where: str, keys: Iterable) -> None:
        """Refuse the first of ``keys`` that is not a field (unless ``extra``)."""
        unknown = [k for k in keys if k not in self.fields]
        if unknown and not self.extra:
            raise LesionError(_inside(where, unknown[0]), "is not an option lesion knows here",
                              f"remove it (options: {', '.join(self.fields)})")


@dataclass(frozen=True)
class Entries:
    """A list of sections (e.g. ``dataset.extra``), each checked as ``section``."""

    section: Section
    hint: str = ""
    doc: str = ""

    def check(self, where: str, values: object) -> list[dict]:
        if not isinstance(values, (list, tuple)):
            raise LesionError(where, f"is {_describe(values)}, not a list", f"use {self.hint}")
        return [self.section.check(f"{where}[{k}]", v) for k, v in enumerate(values)]

    def accepts(self) -> str:
        return self.hint


@dataclass(frozen=True)
class Choice:
    """A group of options chosen by its ``name`` entry (``model``, ``loss``, ``optimizer``): one section per name."""

    sections: Mapping[str, Section]
    doc: str = ""

    def check(self, where: str, values: object) -> dict:
        """The section named by ``values["name"]``, checked."""
        if not isinstance(values, Mapping):
            raise LesionError(where, f"is {_describe(values)}, not a group of options", "write it as key: value entries")
        name = Value(str, choices=tuple(self.sections)).check(f"{where}.name", values.get("name"))
        return self.sections[name].check(where, values)


def _number(lo=None, hi=None, *, lo_open=False, hi_open=False, null=False, hint="", doc="") -> Value:
    return Value(float, lo, hi, lo_open, hi_open, null=null, hint=hint, doc=doc)


def _integer(lo=None, hi=None, *, null=False, hint="", doc="") -> Value:
    return Value(int, lo, hi, null=null, hint=hint, doc=doc)


def _flag(doc: str) -> Value:
    return Value(bool, doc=doc)


def _name(doc: str) -> dict[str, Value]:
    return {"name": Value(str, doc=doc)}


_BACKBONE = {
    "backbone": Value(str, choices=BACKBONES, doc="The ResNet trunk (torchvision)."),
    "weights": Value(str, hint="imagenet, none or the path of a .pth file",
                     doc="The trunk's starting weights: imagenet (torchvision's DEFAULT weights, downloaded once into "
                         "TORCH_HOME), none (random), or a .pth state dict."),
    "dropout": _number(0, 1, hi_open=True, doc="Dropout before the classifier."),
    "frozen_stages": _integer(0, len(BACKBONE_STAGES),
                              doc="Backbone stages (stem, layer1 … layer4) kept frozen, in that order: 0 trains all, "
                                  "3 trains layer3 + layer4, 4 only layer4, 5 none (head only)."),
    "metadata": _flag("Fuse patient metadata (age, sex, anatomic site; Gessert et al. 2020): an MLP on the encoded "
                      "metadata, joined to the pooled image features (baseline) or the LSTM's initial state "
                      "(barata). Needs a dataset with metadata."),
    "metadata_hidden": _integer(1, doc="Units of each of the metadata MLP's two layers."),
    "metadata_dropout": _number(0, 1, hi_open=True, doc="Dropout in the metadata MLP."),
}
# Checkpoints written before patient metadata have no metadata options.
_METADATA_KEYS = frozenset({"metadata", "metadata_hidden", "metadata_dropout"})
MODELS = {
    "baseline": Section({**_name("baseline: ResNet trunk → global average pooling → dropout → linear."), **_BACKBONE},
                        optional=_METADATA_KEYS),
    "barata": Section({
        **_name("barata: ResNet trunk → channel attention → LSTM decoder whose initial state comes from the image "
                "(Barata et al., Pattern Recognition 2021)."),
        **_BACKBONE,
        "hierarchical": _flag("Decode the lesion taxonomy (melanocytic or not, then the class) instead of the class "
                              "alone; needs a layout with a taxonomy."),
        "hidden_size": _integer(1, doc="Units of the LSTM decoder's state."),
        "embed_dim": _integer(1, doc="Size of the decoder's embedding of its previous output."),
        "rd_ratio": _number(0, 1, lo_open=True, doc="Channel attention's reduction ratio: the shared MLP's hidden "
                                                    "units are rd_ratio × the trunk's channels."),
    }, optional=_METADATA_KEYS),
}
MODEL = Choice(MODELS, doc="The network (conf/model/): model=barata or model=baseline.")
# A patient-metadata encoding (lesion.data.metadata_features.MetadataEncoding), as a checkpoint stores it.
METADATA_ENCODING = Section({"sexes": Value("strings"), "sites": Value("strings"), "age_mean": _number(0, 120),
                             "age_std": _number(0, lo_open=True)}, null=True)


def _weights(resolved: bool, doc: str) -> Value:
    """Class weights: a list of K numbers ≥ 0, null, or (in a config) a weighting name."""
    return Value("floats", lo=0, null=True, also=() if resolved else (str,), choices=WEIGHTINGS, doc=doc,
                 hint="null, a list of one number ≥ 0 per class" + ("" if resolved else ", or " + " / ".join(WEIGHTINGS)))


def losses(resolved: bool) -> dict[str, Section]:
    """Loss sections by name; ``resolved``: class weights must already be numbers (checkpoints)."""
    weight = _weights(resolved, "Class weights of the loss, in class order, or computed from the training labels "
                                "(inverse_frequency, effective_number); null = none.")
    return {
        "ce": Section({**_name("ce: cross-entropy."), "weight": weight}),
        "weighted_ce": Section({**_name("weighted_ce: cross-entropy with class weights (inverse_frequency by "
                                        "default)."), "weight": weight}),
        "focal": Section({**_name("focal: softmax focal loss (Lin et al. 2017)."),
                          "gamma": _number(0, doc="Focusing parameter: 0 is cross-entropy; larger values weigh "
                                                  "hard examples more."),
                          "alpha": _weights(resolved, "Per-class weights of the focal loss (as weight); null = none.")}),
    }


LOSS = Choice(losses(resolved=False), doc="The training loss (conf/loss/): loss=ce, focal or weighted_ce.")
_ADAM = {"name": Value(str, doc="adamw | adam | sgd."), "lr": _number(0, lo_open=True, doc="Learning rate."),
         "weight_decay": _number(0, doc="Weight decay (decoupled for adamw).")}
OPTIMIZER_SECTIONS = {"adamw": Section(_ADAM), "adam": Section(_ADAM),
                      "sgd": Section({**_ADAM, "momentum": _number(0, 1, hi_open=True, doc="SGD's momentum.")},
                                     optional=frozenset({"momentum"}))}
OPTIMIZER = Choice(OPTIMIZER_SECTIONS, doc="The optimizer: optimizer.name=adamw, adam or sgd.")
SCHEDULER = Section({"name": Value(str, choices=tuple(SCHEDULERS),
                                   doc="cosine: annealed to 0 over each training stage's epochs (the SMOTE-Tomek "
                                       "head stage: its head_epochs).")},
                    null=True, doc="The learning-rate schedule; scheduler=null keeps the rate constant.")

_DATASET = {
    "layout": Value(str, choices=(*LAYOUTS, *CUSTOM_LAYOUTS),
                    doc="How the files are laid out: an official layout (ISIC, HAM10000, PAD-UFES-20), or folder / "
                        "csv for your own images."),
    "root": Value(str, doc="The folder of the dataset's files (the official zips or their extracted folders)."),
    "image_size": _integer(32, hint="an image_size ≥ 32 (pixels; ResNets downsample by 32)",
                           doc="Side of the square the network sees, in pixels."),
    "batch_size": _integer(1, doc="Images per batch (per device)."),
    "num_workers": _integer(0, null=True, doc="DataLoader worker processes per device; null = (cores per GPU, or "
                                              "all cores) − 1, at most 8."),
    "persistent_workers": _flag("Keep the loader workers alive across epochs."),
    "augment_on": Value(str, choices=("auto", "cpu", "device"),
                        doc="Where training's colour jitter and normalisation run: cpu (in the loader workers), device "
                            "(on the GPU, batched; the workers hand over uint8 crops) or auto (device on a GPU)."),
    "val_fraction": _number(0, 1, lo_open=True, hi_open=True,
                            doc="Share of the training split held out for validation where the layout has no "
                                "official validation split."),
    "test_fraction": _number(0, 1, lo_open=True, hi_open=True, null=True,
                             doc="Without a test split on disk: hold out this share for testing first; null = test "
                                 "on validation (warned)."),
    "split_by": Value(str, choices=("auto", "lesion", "patient", "image"),
                      doc="How splits made here group images: auto = by lesion (or patient) when a grouping file is "
                          "present; lesion | patient (the file is required) | image."),
    "fold": Value("fold", null=True, doc="k/K: validate on fold k of a K-fold split of the training split; null = "
                                         "the official (or held-out) validation split."),
    "synthetic": _flag("Generate a synthetic dataset in this layout at root first (tests, demos)."),
    "synthetic_n": _integer(1, doc="Training images of the synthetic dataset."),
    "synthetic_seed": _integer(0, doc="Seed of the synthetic dataset."),
    "cache": _flag("Decode images once into a cache of square crops (short side resized to cache_size, centred), "
                   "rebuilt only when the source files change; false decodes every epoch."),
    "cache_size": _integer(32, null=True, doc="Side of the cached squares; null = 9/7 × image_size (288 for 224); "
                                              "must be ≥ image_size."),
    "cache_dir": Value(str, null=True, doc="Folder of the image cache; null = $LESION_CACHE/images, or "
                                           "~/.cache/lesion/images."),
    "max_pixels": _integer(1, doc="Source images with more pixels are refused (PIL's own default limit, ≈ 179 MP)."),
    "color_constancy": Value(str, choices=tuple(COLOR_METHODS), null=True,
                             doc="Colour constancy of every image (shades_of_gray: Shades of Gray, p = 6, as Gessert et al.), applied to "
                                 "the cached squares; the checkpoint keeps it, so evaluation applies it too."),
    # Your own data (dataset=folder / dataset=csv, lesion.data.custom); absent from the official layouts' configs.
    "classes": Value("strings", null=True, doc="dataset=folder/csv: the class names in output order; null = the "
                                                "sorted labels (csv) or sub-folders (folder)."),
    "csv": Value(str, null=True, doc="dataset=csv: the CSV of image names and labels, relative to root."),
    "images": Value(str, null=True, doc="dataset=csv: the folder or .zip of the images, relative to root "
                                        "(. = root itself)."),
    "image_column": Value(str, doc="dataset=csv: the column naming each image (with or without its extension)."),
    "label_column": Value(str, null=True, doc="dataset=csv: one column of class names (or use label_columns)."),
    "label_columns": Value("strings", null=True, doc="dataset=csv: one-hot columns of 0/1, one per class."),
    "group_column": Value(str, null=True, doc="dataset=csv: a column (e.g. lesion_id or patient_id) whose groups "
                                              "stay on one side of every split made here."),
    "age_column": Value(str, null=True, doc="dataset=csv: the column of ages in years (model.metadata)."),
    "sex_column": Value(str, null=True, doc="dataset=csv: the column of sexes, female/male (model.metadata)."),
    "site_column": Value(str, null=True, doc="dataset=csv: the column of anatomic sites (model.metadata)."),
    "skin_tone_column": Value(str, null=True, doc="dataset=csv: the column of Fitzpatrick skin types (I–VI or 1–6; "
                                                  "other values are missing), for the subgroup report and the data "
                                                  "analysis; null = none."),
    "extra": Entries(Section({"layout": Value(str, choices=(*LAYOUTS, FOLDER)), "root": Value(str)}),
                     hint="[] or a list of {layout: NAME, root: DIR}, e.g. [{layout:isic2019,root:/data/isic2019}]",
                     doc="External training data: other archives' training images (layout folder: one sub-folder per "
                         "class, e.g. DIR/UNK/) added to this training split only, classes mapped by name (AK = AKIEC; "
                         "others dropped), shared images and validation/test lesions removed; counts per source in "
                         "balance.json."),
}
_CUSTOM_KEYS = frozenset({"classes", "csv", "images", "image_column", "label_column", "label_columns", "group_column",
                          "age_column", "sex_column", "site_column", "skin_tone_column"})
# Checkpoints written before test hold-outs (external data, colour constancy, device augmentation)
# have no test_fraction (extra, color_constancy, augment_on).
_LATER_KEYS = frozenset({"test_fraction", "extra", "color_constancy", "augment_on"})
DATASET = Section(_DATASET, optional=_CUSTOM_KEYS | {"extra", "color_constancy", "augment_on"},
                  doc="The data (conf/dataset/): dataset=NAME chooses a layout's file, dataset.KEY=VALUE changes one "
                      "option.")
# The dataset config stored in a checkpoint also records the seed of the splits made from it
# (checkpoints written before the split record have none).
STORED_DATASET = Section({**_DATASET, "seed": _integer(0)}, null=True, optional=_CUSTOM_KEYS | _LATER_KEYS | {"seed"})
SPLIT = Section({
    "validation": Value(str, choices=("official", "holdout", "fold")),
    "seed": _integer(0), "val_fraction": _DATASET["val_fraction"], "fold": Value("fold", null=True),
    "grouped_by": Value(str, choices=("image", "lesion", "patient")), "val_images": _integer(0),
    "val_ids_sha256": Value(str), "test": Value(str, choices=("official", "validation", "holdout")),
    "test_fraction": _DATASET["test_fraction"], "test_images": _integer(0), "test_ids_sha256": Value(str),
}, optional=frozenset({"test_fraction", "test_images", "test_ids_sha256"}))

SMOTE = Section({
    "enabled": _flag("Embed the training set, SMOTE-Tomek the embeddings, train the head on them."),
    "finetune": _flag("First train the whole network for trainer.max_epochs, then embed with it."),
    "head_epochs": _integer(1, doc="Epochs of head training on the resampled embeddings."),
    "k_neighbors": _integer(1, doc="SMOTE neighbours (capped by the smallest class)."),
    "search_dims": _integer(1, null=True, doc="Neighbour search in this many PCA dimensions (interpolation stays in "
                                              "full space); null = exact."),
    "views": _integer(1, doc="Embeddings per training image: 1 = the image itself, V > 1 adds V − 1 augmented views."),
    "cache_dir": Value(str, doc="Folder of the cached embeddings."),
}, doc="SMOTE-Tomek on embeddings (imbalanced-learn), then a head trained on the balanced rows.")
BALANCE = Section({
    "name": Value(str, doc="The recipe's name (conf/balance/: none, augment, downsample, class_weight, sampler, "
                           "smote_tomek, hybrid)."),
    "downsample": Section({
        "class": Value(str, null=True, doc="Class to reduce (e.g. NV); null = off."),
        "fraction": _number(0, 1, lo_open=True, doc="Keep this share of it…"),
        "to": Value(str, null=True, doc="…or, when set, as many images as this class has (e.g. MEL)."),
    }, doc="Majority downsampling of the training split."),
    "augment": Section({"target": _number(0, lo_open=True, null=True,
                                          doc="Minority classes get extra augmented views up to target × the largest "
                                              "class (a target > 1 is a count per class); null = off.")},
                       doc="Targeted augmentation of the minority classes."),
    "class_weight": Value(str, choices=WEIGHTINGS, null=True, doc="Class weights for the loss (weight / focal alpha), "
                                                                  "computed from the training labels; null = none."),
    "sampler": _flag("A WeightedRandomSampler drawing every class equally often."),
    "backbone_ckpt": Value(str, null=True, doc="Backbone weights for the SMOTE-Tomek embeddings: a checkpoint of an "
                                               "earlier run; null = the model's own (ImageNet, none, or fine-tuned first with "
                                               "smote_tomek.finetune)."),
    "smote_tomek": SMOTE,
}, doc="Class balancing of the training split only (conf/balance/); validation and test are never touched.")
def _checked_by_lightning(where: str, value: object) -> object:
    """A Trainer argument whose values Lightning's ``Trainer`` checks itself."""
    return value


def _lightning(doc: str) -> Rule:
    return Rule(_checked_by_lightning, "as Lightning's Trainer takes it", doc)


_BATCHES = Value("batches", null=True, hint="a share in [0, 1], a whole number of batches ≥ 0, or null (all)",
                 doc="A share of each epoch's batches, or a number of them; null = all.")
# Lightning's precision names, and the integers it also accepts.
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "32", "16", "bf16", "64", 32, 16, 64)
TRAINER = Section({
    "accelerator": _lightning("auto, cpu or gpu."),
    "devices": _lightning("Devices per machine: a number, -1 = all, or a list of indices."),
    "strategy": _lightning("Distribution, e.g. ddp (one process per device; trainer=ddp)."),
    "sync_batchnorm": _lightning("Batch-norm statistics over every device of a distributed run."),
    "fast_dev_run": _lightning("true (or N): run 1 (or N) batches of each stage, as a smoke test; no checkpoints."),
    "enable_model_summary": _lightning("Lightning's model summary table (off: a parameters line is logged instead)."),
    "max_epochs": _integer(1, doc="Training epochs (the fine-tuning stage of SMOTE-Tomek recipes)."),
    "max_steps": _integer(-1, doc="Stop after this many optimizer steps; -1 = no limit."),
    "precision": Value(str, choices=PRECISIONS, also=(int,), hint="one of 32-true, 16-mixed, bf16-mixed, 16-true, "
                       "bf16-true, 64-true", doc="Lightning's precision, e.g. 16-mixed or bf16-mixed on GPUs."),
    "log_every_n_steps": _integer(1, doc="Log training metrics every this many steps."),
    "num_nodes": _integer(1, doc="Machines of a distributed run."),
    "limit_train_batches": _BATCHES, "limit_val_batches": _BATCHES, "limit_test_batches": _BATCHES,
    "deterministic": _flag("Deterministic algorithms only (reproducible, slower)."),
}, extra=True, optional=frozenset({"accelerator", "devices", "strategy", "sync_batchnorm", "fast_dev_run",
                                   "enable_model_summary", "max_steps", "precision", "log_every_n_steps", "num_nodes", "limit_train_batches",
                                   "limit_val_batches", "limit_test_batches", "deterministic"}),
    doc="Lightning's Trainer (conf/trainer/: default, cpu, gpu, ddp, ddp_cpu); any other Trainer argument is passed on.")


def _check_classes(where: str, value: object, classes: Sequence[str]) -> None:
    if value is not None and value not in classes:
        raise LesionError(where, f"unknown class '{value}'", f"use one of {', '.join(classes)}")


def _check_objects(group: str, entries: object) -> object:
    """A ``callbacks`` / ``logger`` group: each entry null or options with a ``_target_`` class path."""
    if entries is None:
        return None
    if not isinstance(entries, Mapping):
        raise LesionError(group, f"is {_describe(entries)}, not a group of named entries",
                          f"choose a file of conf/{group}/ ({group}=default) or set {group}.<name>.* entries")
    for name, spec in entries.items():
        if spec is not None and not (isinstance(spec, Mapping) and isinstance(spec.get("_target_"), str)):
            raise LesionError(f"{group}.{name}", f"is {_describe(spec)}, not options with a _target_ class",
                              f"give it a _target_ (see conf/{group}/), or set {group}.{name}=null to leave it out")
    return entries


_OBJECTS = "a file of the group's folder, or named entries each with a _target_ class (null leaves one out)"
TRAIN = Section({
    "dataset": DATASET, "model": MODEL, "loss": LOSS, "optimizer": OPTIMIZER, "scheduler": SCHEDULER,
    "balance": BALANCE, "trainer": TRAINER,
    "seed": _integer(0, null=True, doc="Seed of everything random (splits, weights, augmentation, loaders); null = "
                                       "unseeded."),
    "ckpt_path": Value(str, null=True, doc="Resume: a last.ckpt path (best.ckpt holds weights only), or last together "
                                           "with hydra.run.dir=<the run to resume>."),
    "patience": _integer(1, null=True, hint="a number of epochs ≥ 1, or null (no early stopping)",
                         doc="Early stopping on val/bacc after this many epochs without improvement (callbacks.early_stopping "
                             "reads it); null = off."),
    "channels_last": _flag("Channels-last memory format (faster convolutions on GPU tensor cores); not stored in "
                           "checkpoints."),
    "compile": _flag("torch.compile the backbone (GPUs); not stored in checkpoints."),
    "name": Value(str, null=True, doc="Experiment id shown by python -m lesion.summary (set by experiment files, "
                                      "e.g. G9.3)."),
    "callbacks": Rule(_check_objects, _OBJECTS,
                      "The run's callbacks (conf/callbacks/): checkpoints, early stopping, progress …; "
                      "callbacks.NAME=null leaves one out, callbacks=none all."),
    "logger": Rule(_check_objects, _OBJECTS,
                   "The run's loggers (conf/logger/): csv, tensorboard, mlflow, wandb, many or none; "
                   "logger=[csv,mlflow] lists several."),
}, extra=True, doc="python train.py [experiment=NAME] [GROUP=NAME …] [KEY=VALUE …]: train a classifier (a ResNet trunk "
                   "with channel attention and an LSTM decoder, or a plain head) with the class balancing chosen, then "
                   "test the chosen checkpoint; the run folder gets checkpoints, logs and reports.")


def check_train(cfg: Mapping) -> None:
    """Refuse any bad option of a composed ``conf/train.yaml`` config (a plain dict), before any work."""
    checked = TRAIN.check("", cfg)
    dataset, model, loss, balance = (checked[key] for key in ("dataset", "model", "loss", "balance"))
    square_size(dataset["image_size"], dataset["cache_size"])
    layout = layout_of(dataset)
    classes = layout.classes
    if model.get("hierarchical") and not layout.has_taxonomy:
        raise LesionError("model.hierarchical", f"decodes the lesion taxonomy, and the {layout.name} classes "
                          f"({', '.join(classes)}) have none", "use model.hierarchical=false")
    for k, entry in enumerate(dataset.get("extra") or ()):
        if not Path(entry["root"]).expanduser().is_dir():
            raise LesionError(f"dataset.extra[{k}].root", f"{entry['root']} is not a folder",
                              f"give the folder of the {entry['layout']} files")
        source_layout(entry, classes, f"dataset.extra[{k}]")  # a folder must name one of the classes
    if model.get("metadata") and dataset.get("extra"):
        raise LesionError("model.metadata", "is not available with dataset.extra: the sources encode metadata "
                          "differently (anatomic sites)", "use model.metadata=false, or train without dataset.extra")
    model_inputs = [m for files in layout.metadata.values() for m in files if m.age or m.sex or m.site]
    if model.get("metadata") and not model_inputs:  # skin tone alone is reported, never a model input
        raise LesionError("model.metadata", f"fuses patient metadata, and the {layout.name} layout has none",
                          "use model.metadata=false" + (", or name the CSV's age/sex/site columns "
                                                        "(dataset.age_column, …)" if layout.name == "csv" else ""))
    for key in ("class", "to"):
        _check_classes(f"balance.downsample.{key}", balance["downsample"][key], classes)
    smote = balance["smote_tomek"]
    check_weighting(loss, len(classes), bool(balance["class_weight"]), balance["sampler"], smote["enabled"])
    if balance["backbone_ckpt"] and not smote["enabled"]:
        raise LesionError("balance.backbone_ckpt", "only gives the SMOTE-Tomek embeddings a backbone, and "
                          "balance.smote_tomek.enabled is false", "drop it, or use balance=smote_tomek")
    if smote["enabled"] and smote["finetune"] and balance["backbone_ckpt"]:
        raise LesionError("balance.backbone_ckpt", "is set together with balance.smote_tomek.finetune=true, which "
                          "trains the backbone itself", "use one of them")
    if cfg["ckpt_path"] is not None and smote["enabled"] and not smote["finetune"]:
        raise LesionError("ckpt_path", "resumes a fine-tuning stage, and balance.smote_tomek.finetune=false has none "
                          "(the head stage always runs from its start)", "drop ckpt_path")
    if cfg["logger"]:  # last: the check imports Lightning
        from lesion.train.tracking import check_installed

        for name, spec in cfg["logger"].items():
            if spec is not None:
                check_installed(f"logger.{name}", spec["_target_"])


TTA = Section({"flips": Value(bool), "crops": _integer(1, hint="a square number of crops: 1, 4, 9, 16, …")})


def tta_views(tta: object) -> tuple[bool, int]:
    """``(flips, crops)`` of a checked ``tta`` option: ``true``/``false`` (the flips) or ``{flips, crops}``."""
    return (tta, 1) if isinstance(tta, bool) else (tta["flips"], tta["crops"])


_CHECKPOINTS = "a .ckpt, a glob, a sweep folder, or a list of them"


def _checkpoints(where: str, ckpt: object) -> object:
    """``ckpt``: a checkpoint, a glob, a sweep folder, or a non-empty list of them."""
    ckpt = Value("strings", also=(str,), hint=_CHECKPOINTS).check(where, ckpt)
    if isinstance(ckpt, list) and not ckpt:
        raise LesionError(where, "is an empty list", "name one checkpoint or more")
    return ckpt


def _tta(where: str, tta: object) -> object:
    """``tta``: true / false (the flips), or ``flips`` and ``crops`` (a square number) options."""
    if isinstance(tta, bool):
        return tta
    if not isinstance(tta, Mapping):
        raise LesionError(where, f"is {_describe(tta)}, not true, false or flips/crops options",
                          "use tta=true, or tta.flips=true and/or tta.crops=N")
    tta = TTA.check(where, tta)
    if math.isqrt(tta["crops"]) ** 2 != tta["crops"]:
        raise LesionError(f"{where}.crops", f"{tta['crops']} is not a square number", "use 1, 4, 9, 16, … (a k × k grid)")
    return tta


def _evaluation_dataset(where: str, dataset: object) -> object:
    """``dataset``: a dataset config (``dataset=NAME``), checked in full; else values replacing the
    checkpoint's, checked once joined to it (:mod:`lesion.evaluate.run`)."""
    if isinstance(dataset, Mapping) and dataset.get("layout") is not None:
        return DATASET.check(where, {k: v for k, v in dataset.items() if k != "seed"})
    return dataset


def _output_folder(where: str, value: object) -> Path:
    return output_folder(where, Value(str).check(where, value))


def _device(where: str, device: object) -> object:
    if device not in ("auto", "cpu"):  # always there: torch is imported only to look for the GPU asked for
        from lesion.device import resolve_device

        resolve_device(where, device)
    return device


# ``out`` of evaluate.py and eda.py: a folder, refused where it (or a path above it) is a file.
OUT_FOLDER = Rule(_output_folder, "a folder (made if missing)")
DEVICE = Rule(_device, "auto, cpu, cuda or cuda:N",
              "Where the nets run: auto (a GPU when one is visible, else the CPU), cpu, cuda or cuda:N.")


def _precision(where: str, precision: object) -> str:
    """Prediction's precision (lesion.evaluate.predict.PRECISIONS); ``precision=32`` arrives as a number."""
    if str(precision) not in ("32", "bf16", "fp16") or isinstance(precision, bool):
        raise LesionError(where, f"is {_describe(precision)}, not 32, bf16 or fp16",
                          "use precision=32 (float32), bf16 or fp16 (autocast)")
    return str(precision)


def _subgroups(where: str, value: object) -> str | list[str]:
    """``subgroups``: auto, none, or attribute names of lesion.evaluate.subgroups.ATTRIBUTES, each once."""
    if value in ("auto", "none"):
        return value
    if not (isinstance(value, (list, tuple)) and value and all(v in ATTRIBUTES for v in value)
            and len(set(value)) == len(value)):
        raise LesionError(where, f"is {_describe(value)}, not auto, none or a list of {', '.join(ATTRIBUTES)} (each once)",
                          "use e.g. subgroups=auto or subgroups=[sex,age]")
    return list(value)


def _age_bands(where: str, value: object) -> list[int]:
    """``subgroup_age_bands``: the bands' edges, whole years in 1–120, increasing."""
    if not (isinstance(value, (list, tuple)) and value and all(_is(int, v) and 1 <= v <= 120 for v in value)
            and all(lo < hi for lo, hi in zip(value, value[1:]))):
        raise LesionError(where, f"is {_describe(value)}, not increasing whole years in 1–120",
                          "use e.g. subgroup_age_bands=[30,50,70] (bands <30, 30–49, 50–69, ≥70)")
    return list(value)


_GRADCAM_LAYER = Value(str, choices=GRADCAM_LAYERS,
                       doc="Backbone stage Grad-CAM explains: layer4 (the last; a 7×7 map at 224 px) or layer3 (twice "
                           "as fine, better for small inputs: at 64 px layer4's map is 2×2).")
_TRUST = _flag("Checkpoints are read with torch.load(weights_only=True); true also reads one that this refuses (it "
               "pickles other objects) in full, which can run code from the file: only for trusted files.")
EVALUATE = Section({
    "dataset": Rule(_evaluation_dataset, "dataset=NAME, or dataset.KEY=VALUE",
                    "Without dataset=NAME, the checkpoint's own dataset, with any value given here replacing its "
                    "own (e.g. dataset.root=DIR when the data moved); dataset=NAME evaluates on a file of "
                    "conf/dataset/ instead."),
    "ckpt": Rule(_checkpoints, _CHECKPOINTS,
                 "The checkpoint to evaluate; several (a list, a glob, or a sweep folder: its jobs' "
                 "checkpoints/best.ckpt) are an ensemble, each member preprocessing as its own checkpoint says."),
    "ensemble": Value(str, choices=ENSEMBLES, doc="How members combine: mean (of probabilities) or rank (of per-class "
                                                  "ranks: scores, not probabilities, so calibrate is refused)."),
    "member_columns": _flag("Ensembles: add each member's probabilities to predictions.csv (member_<k>/<class>)."),
    "runtime": Value(str, choices=RUNTIMES, doc="What computes the probabilities: torch (the checkpoint's net) or onnx "
                                                "(the net exported as export.py writes it, run by ONNX Runtime on the "
                                                "CPU; lesion[export]). Grad-CAM always explains the torch net."),
    "trust_checkpoint": _TRUST,
    "split": Value(str, choices=("val", "test"), doc="The labelled split to evaluate."),
    "images": Value(str, null=True, doc="A folder of images, or an .hdf5 file of them (ISIC 2024's test-image.hdf5), "
                                        "to predict without labels (instead of a split)."),
    "ood_images": Value(str, null=True, doc="A folder of images unlike the training data (or an .hdf5 file of them): "
                                            "metrics.json and metrics.txt add how well the out-of-distribution score "
                                            "tells them from the split's images (ood/auroc, ood/fpr95: the share of "
                                            "them scored as in-distribution at 95 % of the split's images)."),
    "unknown_class": Value(str, null=True, doc="A class of the model (ISIC 2019: UNK) that every image flagged unknown "
                                               "by the out-of-distribution threshold is predicted as: in "
                                               "predictions.csv and submission.csv its probability 1 and the others "
                                               "0; every figure of the report is of these predictions. null = the "
                                               "model's own predictions."),
    "metadata": Value(str, null=True, doc="With images=DIR: a CSV of the images' metadata (image,age,sex[,site]; image "
                                          "= the file name, with or without its extension), the input of a model "
                                          "trained with patient metadata and the attributes of the subgroup report."),
    "out": dataclasses.replace(OUT_FOLDER, doc="The folder of the report, predictions, plots and the log."),
    "batch_size": _integer(1, doc="Images per forward pass."),
    "num_workers": _integer(0, null=True, doc="DataLoader worker processes; null = (cores per GPU, or all cores) − 1, "
                                              "at most 8."),
    "device": DEVICE,
    "precision": Rule(_precision, "32, bf16 or fp16",
                      "Prediction's precision: 32 (float32; PyTorch's default TF32 convolutions on Ampere and newer GPUs), or autocast to bf16 / fp16 (faster on GPUs; probabilities "
                      "differ in the 2nd–3rd decimal). Grad-CAM always runs in float32."),
    "channels_last": _flag("Pass images channels-last (faster convolutions on GPU tensor cores)."),
    "tta": Rule(_tta, "true, false, or tta.flips / tta.crops",
                "Test-time augmentation, probabilities averaged over every view: tta.flips = the 8 flips / 90° "
                "rotations; tta.crops = N (1, 4, 9, 16, …) crops of the input size on a √N × √N grid of the cached "
                "square, corners included (1 = the square resized, no crop). Both compose; tta=true is tta.flips=true."),
    "calibrate": _flag("Temperature scaling fitted on the validation split and applied to `split` (calibration.json); "
                       "refused where it would report on the images it was fitted on (split=val, or no test split)."),
    "plots": _flag("Confusion matrix, ROC, reliability, class distribution, subgroups, training curves, "
                   "augmented samples."),
    "bootstrap": _integer(1, hint="bootstrap=1000 (the default) or more for 95 % intervals",
                          doc="Bootstrap resamples for the 95 % confidence intervals of BACC and macro AUC, and of "
                              "every subgroup figure."),
    "seed": _integer(0, doc="Seed of the bootstrap."),
    "subgroups": Rule(_subgroups, f"auto, none or a list of {', '.join(ATTRIBUTES)}",
                      "Report the figures per patient subgroup (subgroups.csv / .json, a section of metrics.txt, "
                      "plots/subgroups.png): auto = every attribute the images' metadata gives (sex, age band, "
                      "anatomic site, skin tone), a list = those (refused where the metadata lacks one), none = no "
                      "report. A missing value is a group of its own. With images=DIR it needs metadata=CSV, and gives "
                      "each group's images and predicted-class shares only (no labels)."),
    "subgroup_min_images": _integer(1, doc="Subgroups with fewer images are reported with their count only."),
    "subgroup_age_bands": Rule(_age_bands, "increasing whole years, e.g. [30,50,70]",
                               "Edges of the age bands of subgroups: [30,50,70] gives <30, 30–49, 50–69 and ≥70."),
    "gradcam": Section({
        "n": _integer(-1, hint="a number of images, -1 = all, 0 = none",
                      doc="Images explained (the first n of the split or folder; -1 = all, 0 = none)."),
        "target": Value(str, null=True, doc="Class whose score is explained (e.g. MEL); null = the predicted class."),
        "layer": _GRADCAM_LAYER,
    }, doc="Grad-CAM maps and their contact sheet."),
}, doc="python evaluate.py ckpt=PATH [dataset=NAME dataset.root=DIR] [split=val|test | images=DIR] [out=DIR]: "
       "metrics with 95 % intervals, predictions, plots and Grad-CAM for a checkpoint or an ensemble.")
EXPORT = Section({
    "ckpt": Rule(_checkpoints, _CHECKPOINTS,
                 "The checkpoint to export; several (a list, a glob, a sweep folder) make a mean ensemble as one graph "
                 "(members must share their classes and preprocessing; rank averaging needs the whole evaluated set, so it "
                 "has no single-image graph)."),
    "format": Value(str, choices=EXPORT_FORMATS, doc="onnx (ONNX Runtime, opset `opset`) or torchscript "
                                                     "(torch.jit.load)."),
    "out": Value(str, null=True, doc="The file to write; null = next to the checkpoint, with .onnx / .pt for its "
                                     "suffix. Its record (classes, mean/std, sizes) goes to <file>.json."),
    "opset": _integer(18, hint="an ONNX opset ≥ 18 (the exporter's oldest)", doc="The ONNX opset."),
    "trust_checkpoint": _TRUST,
}, doc="python export.py ckpt=PATH [format=onnx|torchscript] [out=FILE]: the net, with what a consumer needs to "
       "preprocess as lesion does, as one file.")


def _file_size(where: str, size: object) -> object:
    """``max_file_size``: a size such as ``50mb``, or null (no limit)."""
    if size is not None and not (isinstance(size, str) and re.fullmatch(r"\d+(\.\d+)?\s*[kmgt]?b", size.lower())):
        raise LesionError(where, f"is {_describe(size)}, not a size", "use e.g. 50mb, 2gb, or null (no limit)")
    return size


DEMO = Section({
    "ckpt": Value(str, doc="A .ckpt written by train.py (a model trained without patient metadata)."),
    "host": Value(str, doc="127.0.0.1 serves this machine only; 0.0.0.0 every network interface (warned)."),
    "port": _integer(1, 65535, hint="a TCP port, e.g. 7860", doc="The page's TCP port."),
    "share": _flag("Also Gradio's public *.gradio.live link (anyone with the link can use the model)."),
    "max_file_size": Rule(_file_size, "a size such as 50mb, or null", "Largest upload accepted; null = no limit."),
    "trust_checkpoint": _TRUST, "device": DEVICE,
    "gradcam": Section({"layer": _GRADCAM_LAYER}, doc="The Grad-CAM shown beside each upload."),
}, doc="python demo.py ckpt=PATH [port=7860] [host=127.0.0.1]: a web page to try a model — upload dermoscopy images, "
       "see each one's class probabilities and Grad-CAM, preprocessed and classified as evaluate.py images=DIR does.")


class CommandCheck(Callback):
    """Hydra callback of evaluate.py, eda.py, export.py and demo.py: refuses in one line (exit 2), before Hydra starts
    the job, what it would otherwise trip over with a traceback.

    Args:
        options: the import path of the command's options (a :class:`Section`). Any other key is refused
            before a value is resolved: a training group may interpolate what only training has (``run_dir``).
        out_folder: ``out`` is the run folder Hydra makes: refuse it where a file is in the way.
    """

    def __init__(self, options: str, out_folder: bool = False):
        self.options, self.out_folder = get_object(options), out_folder

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        try:
            self.options.refuse_unknown("", [key for key in config if key != "hydra"])
            if self.out_folder:
                OUT_FOLDER.check("out", config.out)
        except LesionError as error:
            exit_with(error)

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        self.on_run_start(config)


def check_evaluate(cfg: Mapping) -> None:
    """Refuse any bad option of a composed ``conf/evaluate.yaml`` config (a plain dict), or any other key
    (e.g. a training group added with ``+model=…``), before any work."""
    EVALUATE.check("", cfg)
    if cfg["calibrate"] and cfg["split"] == "val":
        raise LesionError("calibrate", "fits the temperature on the validation split, which split=val then reports on",
                          "calibrate with split=test, or evaluate split=val without calibrate")
    if cfg["ood_images"] is not None and cfg["images"] is not None:
        raise LesionError("ood_images", "compares a labelled split's images with other images, and images=DIR "
                          "predicts a folder instead of a split", "drop images=, or drop ood_images=")
    for key in ("ood_images", "unknown_class"):
        if cfg[key] is not None and cfg["runtime"] != "torch":
            raise LesionError(key, f"scores images by the energy of the net's logits, and runtime={cfg['runtime']} "
                              "gives probabilities only", f"drop runtime= (runtime=torch), or drop {key}=")


def check_export(cfg: Mapping) -> None:
    """Refuse any bad option of a composed ``conf/export.yaml`` config (a plain dict), or any other key,
    before any work."""
    EXPORT.check("", cfg)


def check_demo(cfg: Mapping) -> None:
    """Refuse any bad option of a composed ``conf/demo.yaml`` config (a plain dict), or any other key,
    before any work."""
    DEMO.check("", cfg)


STORED_KEYS = ("model", "loss", "optimizer", "scheduler", "classes", "taxonomy", "mean", "std", "image_size",
               "dataset", "split", "metadata")


def check_stored(hparams: object, where: str) -> dict:
    """The hyper-parameters of a checkpoint, checked as plain registry-named values.

    Raises:
        LesionError: naming the checkpoint and the first value that is not allowed.
    """
    def inside(error: LesionError) -> LesionError:
        return LesionError(where, f"holds a value lesion does not accept ({error})",
                           "use a checkpoint written by lesion's train.py")

    try:
        if not isinstance(hparams, Mapping):
            raise LesionError("hyper_parameters", f"is {_describe(hparams)}")
        hparams = dict(hparams)
        out = {
            "model": MODEL.check("model", hparams.get("model")),
            "loss": Choice(losses(resolved=True)).check("loss", hparams.get("loss")),
            "optimizer": OPTIMIZER.check("optimizer", hparams.get("optimizer")),
            "scheduler": SCHEDULER.check("scheduler", hparams.get("scheduler")),
            "classes": _strings("classes", hparams.get("classes")),
            "taxonomy": _taxonomy("taxonomy", hparams.get("taxonomy")),
            "dataset": STORED_DATASET.check("dataset", hparams.get("dataset")),
            "split": None if hparams.get("split") is None else SPLIT.check("split", hparams["split"]),
            "metadata": METADATA_ENCODING.check("metadata", hparams.get("metadata")),
        }
        if bool(out["model"].get("metadata")) != (out["metadata"] is not None):
            raise LesionError("metadata", "does not match model.metadata")
        unknown = [k for k in hparams if k not in STORED_KEYS]
        if unknown:
            raise LesionError(unknown[0], "is not a hyper-parameter lesion stores")
        for key in ("mean", "std"):
            out[key] = Value("floats", hint="3 numbers").check(key, hparams.get(key))
            if len(out[key]) != 3:
                raise LesionError(key, f"has {len(out[key])} entries, not 3")
        out["image_size"] = _DATASET["image_size"].check("image_size", hparams.get("image_size"))
    except LesionError as error:
        raise inside(error) from None
    return out


def _strings(where: str, value: object) -> list[str]:
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        raise LesionError(where, f"is {_describe(value)}, not a list of class names")
    return list(value)


def _taxonomy(where: str, value: object) -> list[list[int]]:
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(row, (list, tuple)) and all(_is(int, v) for v in row) for row in value):
        raise LesionError(where, f"is {_describe(value)}, not a list of lists of integers")
    return [list(row) for row in value]

