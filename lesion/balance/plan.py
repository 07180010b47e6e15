"""Class balancing of the training split: downsampling, targeted augmentation, class weights,
a weighted sampler. Each step is a pure function of the training labels.

Steps run in a fixed order — downsample, then augment, then class weights or sampler — and the
per-class counts before and after every step are logged and returned (saved as ``balance.json``
in the run directory). Validation and test splits are never touched. SMOTE-Tomek on embeddings
(``lesion.balance.smote``) runs later, on the balanced set's embeddings.

Effective number of samples: Cui et al., "Class-Balanced Loss Based on Effective Number of
Samples", CVPR 2019.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lesion.data.layouts import counts_of
from lesion.errors import LesionError

log = logging.getLogger(__name__)


def _class_index(classes: Sequence[str], name: str, field_name: str) -> int:
    if name not in classes:
        raise LesionError(field_name, f"unknown class '{name}'", f"use one of {', '.join(classes)}")
    return list(classes).index(name)


def downsample(labels: np.ndarray, cls: int, size: int, seed: int) -> np.ndarray:
    """Keep ``size`` random images of class ``cls`` and every image of the other classes.

    Args:
        labels: class index per training image (N,).
        cls: the class to reduce.
        size: how many of its images to keep (≥ 1).
        seed: seed of the random choice.

    Returns:
        Sorted indices of the kept images.
    """
    rng = np.random.default_rng(seed)
    members = np.flatnonzero(labels == cls)
    kept = rng.choice(members, size=min(size, len(members)), replace=False)
    return np.sort(np.concatenate([np.flatnonzero(labels != cls), kept]))


def augment_plan(labels: np.ndarray, target: float, seed: int) -> np.ndarray:
    """Indices with extra copies of minority images; each copy gets its own random augmentation.

    Args:
        labels: class index per image (N,).
        target: goal per class — a ratio of the largest class if ≤ 1, else an absolute count.
            Classes already at or above the goal are left as they are.
        seed: seed of which images are repeated.

    Returns:
        Indices into ``labels`` (with repeats), originals first, then the extra views.
    """
    counts = np.bincount(labels)
    goal = int(round(target * counts.max())) if target <= 1 else int(target)
    rng = np.random.default_rng(seed)
    extra = []
    for cls, n in enumerate(counts):
        if 0 < n < goal:
            members = np.flatnonzero(labels == cls)
            # Whole rounds over the class first, so every image is repeated about equally often.
            repeats = np.concatenate([rng.permutation(members) for _ in range(-(-(goal - n) // n))])
            extra.append(repeats[: goal - n])
    return np.concatenate([np.arange(len(labels)), *extra]).astype(np.int64)


def inverse_frequency(counts: Sequence[int]) -> list[float]:
    """Class weights ``N / (K · n_c)`` over the K present classes; an absent class gets 0."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.tolist()


def effective_number(counts: Sequence[int], beta: float = 0.999) -> list[float]:
    """Class weights ``(1 - β) / (1 - β^n_c)``, scaled to mean 1 over present classes (Cui et al.)."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = (1 - beta) / (1 - beta ** counts[present])
    weights[present] *= present.sum() / weights[present].sum()
    return weights.tolist()


CLASS_WEIGHTINGS = {"inverse_frequency": inverse_frequency, "effective_number": effective_number}


def named_weights(mode: str, counts: Sequence[int], field_name: str = "balance.class_weight") -> list[float]:
    """Class weights of a named weighting (``inverse_frequency`` or ``effective_number``)."""
    if mode not in CLASS_WEIGHTINGS:
        raise LesionError(field_name, f"unknown class weighting '{mode}'",
                          f"use one of {', '.join(CLASS_WEIGHTINGS)} or a list of {len(counts)} floats")
    return CLASS_WEIGHTINGS[mode](counts)


def sample_weights(labels: np.ndarray) -> np.ndarray:
    """Per-image weights ``1 / n_c`` for a ``WeightedRandomSampler`` (every class equally likely)."""
    counts = np.bincount(labels)
    return 1.0 / counts[labels]


@dataclass
class BalancePlan:
    """The balanced training set.

    ``indices`` index the training split (with repeats for augmented views); ``counts`` are its
    images per class; ``class_weights`` go to the loss; ``sample_weights`` (per entry of
    ``indices``) drive a weighted sampler; ``steps`` records the per-class counts before and
    after every step.
    """

    indices: np.ndarray
    counts: list[int] = field(default_factory=list)
    class_weights: list[float] | None = None
    sample_weights: np.ndarray | None = None
    steps: list[dict] = field(default_factory=list)

    def report(self) -> dict:
        """JSON-ready summary (the content of ``balance.json``)."""
        return {"steps": self.steps, "class_weights": self.class_weights,
                "weighted_sampler": self.sample_weights is not None}


def plan_balance(labels: np.ndarray, classes: Sequence[str], cfg: dict, seed: int) -> BalancePlan:
    """Apply the configured balancing steps to the training labels.

    Args:
        labels: class index per training image (N,).
        classes: class names in class order.
        cfg: the ``balance`` config: ``downsample`` (``{class, fraction, to}``; off while
            ``class`` is null), ``augment`` (``{target}``; off while null), ``class_weight``
            (a weighting name or null), ``sampler`` (bool).
        seed: seed of every random choice.

    Returns:
        The plan, with counts logged before and after every step.
    """
    indices = np.arange(len(labels))
    plan = BalancePlan(indices)

    def record(step: str, before: np.ndarray, after: np.ndarray) -> None:
        entry = {"step": step, "before": counts_of(before, classes), "after": counts_of(after, classes)}
        plan.steps.append(entry)
        log.info("balance %s: %s → %s", step, entry["before"], entry["after"])

    down = cfg.get("downsample") or {}
    if down.get("class"):
        cls = _class_index(classes, down["class"], "balance.downsample.class")
        n = int((labels == cls).sum())
        if down.get("to"):
            size = int((labels == _class_index(classes, down["to"], "balance.downsample.to")).sum())
        else:
            size = int(round(float(down.get("fraction", 0.5)) * n))
        kept = downsample(labels[indices], cls, max(size, 1), seed)
        record("downsample", labels[indices], labels[indices[kept]])
        indices = indices[kept]

    augment = cfg.get("augment") or {}
    if augment.get("target"):
        expanded = augment_plan(labels[indices], float(augment["target"]), seed)
        record("augment", labels[indices], labels[indices[expanded]])
        indices = indices[expanded]

    check_weighting({}, len(classes), bool(cfg.get("class_weight")), bool(cfg.get("sampler")),
                    bool((cfg.get("smote_tomek") or {}).get("enabled")))
    plan.indices = indices
    counts = np.bincount(labels[indices], minlength=len(classes))
    plan.counts = counts.tolist()
    if cfg.get("class_weight"):
        plan.class_weights = named_weights(cfg["class_weight"], counts)
        log.info("balance class weights: %s", dict(zip(classes, np.round(plan.class_weights, 4).tolist())))
    if cfg.get("sampler"):
        plan.sample_weights = sample_weights(labels[indices])
        log.info("balance: weighted sampler, every class drawn with probability 1/%d", int((counts > 0).sum()))
    return plan


def check_weighting(loss_cfg: dict, num_classes: int, class_weight: bool, sampler: bool, smote: bool = False) -> None:
    """Refuse class weights that cannot work: a list of the wrong length, weights given both in the
    loss and by ``balance.class_weight``, or any class weights with a weighted sampler or with
    SMOTE-Tomek (each of these corrects the imbalance twice: SMOTE-Tomek's head trains on balanced
    rows, with weights that would come from the counts before resampling).

    Args:
        loss_cfg: the loss config as a plain dict (``name`` plus arguments).
        num_classes: K.
        class_weight: whether ``balance.class_weight`` plans weights.
        sampler: whether a weighted sampler is in use.
        smote: whether SMOTE-Tomek resamples the head's training rows.
    """
    key = "alpha" if "alpha" in loss_cfg else "weight"
    value = loss_cfg.get(key)
    if class_weight and value is not None:
        raise LesionError(f"loss.{key}", "is set and balance.class_weight is set too",
                          f"use one of them (e.g. loss.{key}=null)")
    if isinstance(value, (list, tuple)) and len(value) != num_classes:
        raise LesionError(f"loss.{key}", f"has {len(value)} entries for {num_classes} classes",
                          "give one weight per class in class order")
    source = "balance.class_weight" if class_weight else f"loss.{key}"
    if sampler and (class_weight or value is not None):
        raise LesionError("balance.sampler", f"a weighted sampler together with class weights ({source}) "
                          "corrects the imbalance twice", f"use balance.sampler or {source}, not both")
    if smote and (class_weight or value is not None):
        raise LesionError("balance.smote_tomek", f"SMOTE-Tomek together with class weights ({source}) corrects the "
                          "imbalance twice", f"use SMOTE-Tomek or {source}, not both (a run weighted without it can "
                          "give SMOTE-Tomek its backbone: balance.backbone_ckpt)")


def resolve_class_weights(loss_cfg: dict, counts: Sequence[int], class_weights: list[float] | None = None,
                          sampler: bool = False) -> dict:
    """Fill in the loss's class weights (``weight``, or ``alpha`` for focal loss).

    A named weighting in the loss config (e.g. ``weight: inverse_frequency``) is computed from the
    training counts; weights from ``balance.class_weight`` are put in place. Giving both, or class
    weights together with a weighted sampler, is refused (:func:`check_weighting`).

    Args:
        loss_cfg: the loss config as a plain dict (``name`` plus arguments).
        counts: training images per class (after balancing).
        class_weights: weights planned by ``balance.class_weight``, if any.
        sampler: whether a weighted sampler is in use.

    Returns:
        A copy of ``loss_cfg`` whose weight entry is a list of floats or ``None``.
    """
    check_weighting(loss_cfg, len(counts), class_weights is not None, sampler)
    key = "alpha" if "alpha" in loss_cfg else "weight"
    resolved = dict(loss_cfg)
    value = resolved.get(key)
    if class_weights is not None:
        value = class_weights
    elif isinstance(value, str):
        value = named_weights(value, counts, f"loss.{key}")
    resolved[key] = None if value is None else [float(v) for v in value]
    return resolved
