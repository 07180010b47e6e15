"""The typed, ranged schema of every option: one place that refuses bad values before any work.

The same checks read a training config (``train.py``), the configs of ``evaluate.py``,
``export.py`` and ``demo.py`` (each command's options are its own: any other key, such as a
training group added with ``+model=…``, is refused) and the hyper-parameters stored in a
checkpoint. Values must be plain (numbers, strings, booleans, lists of them); a dict where a
value belongs, an unknown key (``_target_``, ``_args_``, ``_partial_`` …) or a name outside the
registries is refused with one line.
"""

from __future__ import annotations

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
from lesion.data.custom import CUSTOM_LAYOUTS, layout_of
from lesion.data.layouts import LAYOUTS
from lesion.data.splits import parse_fold
from lesion.errors import LesionError, exit_with
from lesion.evaluate.ensemble import METHODS as ENSEMBLES
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
    """One option: its type, range or choices, whether null is allowed, and the fix to suggest.

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


def _inside(where: str, key: object) -> str:
    """The name of option ``key`` of ``where`` (``""``: a command's own options)."""
    return f"{where}.{key}" if where else str(key)


@dataclass(frozen=True)
class Section:
    """A mapping of named values and nested sections; ``extra`` lets unknown keys through unchecked.

    Checked with ``where=""``, it is a whole command's options (e.g. :data:`EVALUATE`).
    """

    fields: Mapping[str, Value | Section | Rule]
    extra: bool = False
    null: bool = False
    optional: frozenset = field(default_factory=frozenset)

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

    def check(self, where: str, values: object) -> list[dict]:
        if not isinstance(values, (list, tuple)):
            raise LesionError(where, f"is {_describe(values)}, not a list", f"use {self.hint}")
        return [self.section.check(f"{where}[{k}]", v) for k, v in enumerate(values)]


def _number(lo=None, hi=None, *, lo_open=False, hi_open=False, null=False, hint="") -> Value:
    return Value(float, lo, hi, lo_open, hi_open, null=null, hint=hint)


def _integer(lo=None, hi=None, *, null=False, hint="") -> Value:
    return Value(int, lo, hi, null=null, hint=hint)


_NAME = {"name": Value(str)}
_BACKBONE = {
    "backbone": Value(str, choices=BACKBONES),
    "weights": Value(str, hint="imagenet, none or the path of a .pth file"),
    "dropout": _number(0, 1, hi_open=True),
    "frozen_stages": _integer(0, len(BACKBONE_STAGES)),
    "metadata": Value(bool), "metadata_hidden": _integer(1), "metadata_dropout": _number(0, 1, hi_open=True),
}
# Checkpoints written before patient metadata have no metadata options.
_METADATA_KEYS = frozenset({"metadata", "metadata_hidden", "metadata_dropout"})
MODELS = {
    "baseline": Section({**_NAME, **_BACKBONE}, optional=_METADATA_KEYS),
    "barata": Section({**_NAME, **_BACKBONE, "hierarchical": Value(bool), "hidden_size": _integer(1),
                       "embed_dim": _integer(1), "rd_ratio": _number(0, 1, lo_open=True)}, optional=_METADATA_KEYS),
}
# A patient-metadata encoding (lesion.data.metadata_features.MetadataEncoding), as a checkpoint stores it.
METADATA_ENCODING = Section({"sexes": Value("strings"), "sites": Value("strings"), "age_mean": _number(0, 120),
                             "age_std": _number(0, lo_open=True)}, null=True)


def _weights(resolved: bool) -> Value:
    """Class weights: a list of K numbers ≥ 0, null, or (in a config) a weighting name."""
    return Value("floats", lo=0, null=True, also=() if resolved else (str,), choices=WEIGHTINGS,
                 hint="null, a list of one number ≥ 0 per class" + ("" if resolved else ", or " + " / ".join(WEIGHTINGS)))


def losses(resolved: bool) -> dict[str, Section]:
    """Loss sections by name; ``resolved``: class weights must already be numbers (checkpoints)."""
    weights = _weights(resolved)
    return {"ce": Section({**_NAME, "weight": weights}), "weighted_ce": Section({**_NAME, "weight": weights}),
            "focal": Section({**_NAME, "gamma": _number(0), "alpha": weights})}


_ADAM = {**_NAME, "lr": _number(0, lo_open=True), "weight_decay": _number(0)}
OPTIMIZER_SECTIONS = {"adamw": Section(_ADAM), "adam": Section(_ADAM),
                      "sgd": Section({**_ADAM, "momentum": _number(0, 1, hi_open=True)}, optional=frozenset({"momentum"}))}
SCHEDULER = Section({"name": Value(str, choices=tuple(SCHEDULERS))}, null=True)

_DATASET = {
    "layout": Value(str, choices=(*LAYOUTS, *CUSTOM_LAYOUTS)),
    "root": Value(str),
    "image_size": _integer(32, hint="an image_size ≥ 32 (pixels; ResNets downsample by 32)"),
    "batch_size": _integer(1),
    "num_workers": _integer(0, null=True),
    "persistent_workers": Value(bool),
    "augment_on": Value(str, choices=("auto", "cpu", "device")),
    "val_fraction": _number(0, 1, lo_open=True, hi_open=True),
    "test_fraction": _number(0, 1, lo_open=True, hi_open=True, null=True),
    "split_by": Value(str, choices=("auto", "lesion", "patient", "image")),
    "fold": Value("fold", null=True),
    "synthetic": Value(bool),
    "synthetic_n": _integer(1),
    "synthetic_seed": _integer(0),
    "cache": Value(bool),
    "cache_size": _integer(32, null=True),
    "cache_dir": Value(str, null=True),
    "max_pixels": _integer(1),
    "color_constancy": Value(str, choices=tuple(COLOR_METHODS), null=True),
    # Your own data (dataset=folder / dataset=csv, lesion.data.custom); absent from the official layouts' configs.
    "classes": Value("strings", null=True), "csv": Value(str, null=True), "images": Value(str, null=True),
    "image_column": Value(str), "label_column": Value(str, null=True), "label_columns": Value("strings", null=True),
    "group_column": Value(str, null=True), "age_column": Value(str, null=True), "sex_column": Value(str, null=True),
    "site_column": Value(str, null=True),
    "extra": Entries(Section({"layout": Value(str, choices=tuple(LAYOUTS)), "root": Value(str)}),
                     hint="[] or a list of {layout: NAME, root: DIR}, e.g. [{layout:isic2019,root:/data/isic2019}]"),
}
_CUSTOM_KEYS = frozenset({"classes", "csv", "images", "image_column", "label_column", "label_columns", "group_column",
                          "age_column", "sex_column", "site_column"})
# Checkpoints written before test hold-outs (external data, colour constancy, device augmentation)
# have no test_fraction (extra, color_constancy, augment_on).
_LATER_KEYS = frozenset({"test_fraction", "extra", "color_constancy", "augment_on"})
DATASET = Section(_DATASET, optional=_CUSTOM_KEYS | {"extra", "color_constancy", "augment_on"})
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
    "enabled": Value(bool), "finetune": Value(bool), "head_epochs": _integer(1), "k_neighbors": _integer(1),
    "search_dims": _integer(1, null=True), "views": _integer(1), "cache_dir": Value(str),
})
BALANCE = Section({
    "name": Value(str),
    "downsample": Section({"class": Value(str, null=True), "fraction": _number(0, 1, lo_open=True),
                           "to": Value(str, null=True)}),
    "augment": Section({"target": _number(0, lo_open=True, null=True)}),
    "class_weight": Value(str, choices=WEIGHTINGS, null=True),
    "sampler": Value(bool),
    "backbone_ckpt": Value(str, null=True),
    "smote_tomek": SMOTE,
})
_BATCHES = Value("batches", null=True, hint="a share in [0, 1], a whole number of batches ≥ 0, or null (all)")
# Lightning's precision names, and the integers it also accepts.
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "32", "16", "bf16", "64", 32, 16, 64)
TRAINER = Section({
    "max_epochs": _integer(1), "max_steps": _integer(-1),
    "precision": Value(str, choices=PRECISIONS, also=(int,)),
    "log_every_n_steps": _integer(1), "num_nodes": _integer(1),
    "limit_train_batches": _BATCHES, "limit_val_batches": _BATCHES, "limit_test_batches": _BATCHES,
    "deterministic": Value(bool),
}, extra=True, optional=frozenset({"max_steps", "precision", "log_every_n_steps", "num_nodes", "limit_train_batches",
                                   "limit_val_batches", "limit_test_batches", "deterministic"}))


def _named(where: str, values: object, sections: Mapping[str, Section]) -> dict:
    """Check a section chosen by its ``name`` entry from ``sections``."""
    if not isinstance(values, Mapping):
        raise LesionError(where, f"is {_describe(values)}, not a group of options", "write it as key: value entries")
    name = Value(str, choices=tuple(sections)).check(f"{where}.name", values.get("name"))
    return sections[name].check(where, values)


def _check_classes(where: str, value: object, classes: Sequence[str]) -> None:
    if value is not None and value not in classes:
        raise LesionError(where, f"unknown class '{value}'", f"use one of {', '.join(classes)}")


def _check_objects(group: str, entries: object) -> None:
    """A ``callbacks`` / ``logger`` group: each entry null or options with a ``_target_`` class path; a
    tracker (MLflow, W&B) needs its package."""
    if entries is None:
        return
    if not isinstance(entries, Mapping):
        raise LesionError(group, f"is {_describe(entries)}, not a group of named entries",
                          f"choose a file of conf/{group}/ ({group}=default) or set {group}.<name>.* entries")
    for name, spec in entries.items():
        if spec is not None and not (isinstance(spec, Mapping) and isinstance(spec.get("_target_"), str)):
            raise LesionError(f"{group}.{name}", f"is {_describe(spec)}, not options with a _target_ class",
                              f"give it a _target_ (see conf/{group}/), or set {group}.{name}=null to leave it out")
        if group == "logger" and spec is not None:
            from lesion.train.tracking import check_installed  # imports Lightning: only for a training config

            check_installed(f"{group}.{name}", spec["_target_"])


def check_train(cfg: Mapping) -> None:
    """Refuse any bad option of a composed ``conf/train.yaml`` config (a plain dict), before any work."""
    dataset = DATASET.check("dataset", cfg["dataset"])
    square_size(dataset["image_size"], dataset["cache_size"])
    layout = layout_of(dataset)
    classes = layout.classes
    model = _named("model", cfg["model"], MODELS)
    if model.get("hierarchical") and not layout.has_taxonomy:
        raise LesionError("model.hierarchical", f"decodes the lesion taxonomy, and the {layout.name} classes "
                          f"({', '.join(classes)}) have none", "use model.hierarchical=false")
    for k, entry in enumerate(dataset.get("extra") or ()):
        if not Path(entry["root"]).expanduser().is_dir():
            raise LesionError(f"dataset.extra[{k}].root", f"{entry['root']} is not a folder",
                              f"give the folder of the {entry['layout']} files")
    if model.get("metadata") and dataset.get("extra"):
        raise LesionError("model.metadata", "is not available with dataset.extra: the sources encode metadata "
                          "differently (anatomic sites)", "use model.metadata=false, or train without dataset.extra")
    if model.get("metadata") and not layout.metadata:
        raise LesionError("model.metadata", f"fuses patient metadata, and the {layout.name} layout has none",
                          "use model.metadata=false" + (", or name the CSV's age/sex/site columns "
                                                        "(dataset.age_column, …)" if layout.name == "csv" else ""))
    loss = _named("loss", cfg["loss"], losses(resolved=False))
    _named("optimizer", cfg["optimizer"], OPTIMIZER_SECTIONS)
    SCHEDULER.check("scheduler", cfg["scheduler"])
    balance = BALANCE.check("balance", cfg["balance"])
    for key in ("class", "to"):
        _check_classes(f"balance.downsample.{key}", balance["downsample"][key], classes)
    TRAINER.check("trainer", cfg["trainer"])
    Value(int, 0, null=True).check("seed", cfg["seed"])
    Value(int, 1, null=True, hint="a number of epochs ≥ 1, or null (no early stopping)").check("patience", cfg["patience"])
    Value(str, null=True).check("ckpt_path", cfg["ckpt_path"])
    for key in ("channels_last", "compile"):
        Value(bool).check(key, cfg[key])
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
    for group in ("callbacks", "logger"):  # last: a logger's check imports Lightning
        _check_objects(group, cfg[group])


TTA = Section({"flips": Value(bool), "crops": _integer(1, hint="a square number of crops: 1, 4, 9, 16, …")})


def tta_views(tta: object) -> tuple[bool, int]:
    """``(flips, crops)`` of a checked ``tta`` option: ``true``/``false`` (the flips) or ``{flips, crops}``."""
    return (tta, 1) if isinstance(tta, bool) else (tta["flips"], tta["crops"])


def _checkpoints(where: str, ckpt: object) -> object:
    """``ckpt``: a checkpoint, a glob, a sweep folder, or a non-empty list of them."""
    ckpt = Value("strings", also=(str,), hint="a .ckpt, a glob, a sweep folder, or a list of them").check(where, ckpt)
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
OUT_FOLDER = Rule(_output_folder)
DEVICE = Rule(_device)
def _precision(where: str, precision: object) -> str:
    """Prediction's precision (lesion.evaluate.predict.PRECISIONS); ``precision=32`` arrives as a number."""
    if str(precision) not in ("32", "bf16", "fp16") or isinstance(precision, bool):
        raise LesionError(where, f"is {_describe(precision)}, not 32, bf16 or fp16",
                          "use precision=32 (float32), bf16 or fp16 (autocast)")
    return str(precision)


PRECISION = Rule(_precision)
_GRADCAM_LAYER = Value(str, choices=GRADCAM_LAYERS)
EVALUATE = Section({
    "dataset": Rule(_evaluation_dataset), "ckpt": Rule(_checkpoints), "ensemble": Value(str, choices=ENSEMBLES),
    "member_columns": Value(bool), "runtime": Value(str, choices=RUNTIMES), "trust_checkpoint": Value(bool),
    "split": Value(str, choices=("val", "test")), "images": Value(str, null=True), "metadata": Value(str, null=True),
    "out": OUT_FOLDER, "batch_size": _integer(1), "num_workers": _integer(0, null=True),
    "device": DEVICE, "precision": PRECISION, "channels_last": Value(bool), "tta": Rule(_tta),
    "calibrate": Value(bool), "plots": Value(bool),
    "bootstrap": _integer(1, hint="bootstrap=1000 (the default) or more for 95 % intervals"), "seed": _integer(0),
    "gradcam": Section({"n": _integer(-1, hint="a number of images, -1 = all, 0 = none"),
                        "target": Value(str, null=True), "layer": _GRADCAM_LAYER}),
})
EXPORT = Section({
    "ckpt": Rule(_checkpoints), "format": Value(str, choices=EXPORT_FORMATS), "out": Value(str, null=True),
    "opset": _integer(18, hint="an ONNX opset ≥ 18 (the exporter's oldest)"), "trust_checkpoint": Value(bool),
})


def _file_size(where: str, size: object) -> object:
    """``max_file_size``: a size such as ``50mb``, or null (no limit)."""
    if size is not None and not (isinstance(size, str) and re.fullmatch(r"\d+(\.\d+)?\s*[kmgt]?b", size.lower())):
        raise LesionError(where, f"is {_describe(size)}, not a size", "use e.g. 50mb, 2gb, or null (no limit)")
    return size


DEMO = Section({
    "ckpt": Value(str), "host": Value(str), "port": _integer(1, 65535, hint="a TCP port, e.g. 7860"),
    "share": Value(bool), "max_file_size": Rule(_file_size), "trust_checkpoint": Value(bool), "device": DEVICE,
    "gradcam": Section({"layer": _GRADCAM_LAYER}),
})


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
            "model": _named("model", hparams.get("model"), MODELS),
            "loss": _named("loss", hparams.get("loss"), losses(resolved=True)),
            "optimizer": _named("optimizer", hparams.get("optimizer"), OPTIMIZER_SECTIONS),
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

