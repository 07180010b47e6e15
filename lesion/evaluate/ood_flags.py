"""The out-of-distribution flags of one evaluation: which threshold applies to its scores (the checkpoint's, or one
fitted on the validation split predicted alike), the images it flags, the class they are predicted as
(``unknown_class``), and what ``metrics.json`` / ``metrics.txt`` record of it. The score and threshold
themselves are :mod:`lesion.evaluate.ood`'s."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from omegaconf import DictConfig

from lesion.errors import LesionError
from lesion.evaluate.ood import SCORE, OodThreshold, predicted_as, unknown

if TYPE_CHECKING:
    from lesion.evaluate.run import Member

log = logging.getLogger(__name__)


@dataclass
class OodFlags:
    """The out-of-distribution scores of the reported images (:mod:`lesion.evaluate.ood`), the threshold that
    flags them, if any, and the class flagged images are predicted as (``unknown_class``), if any."""

    scores: np.ndarray
    threshold: OodThreshold | None
    unknown_class: str | None = None
    detection: dict = field(default_factory=dict)  # ood_images: detection_report of these against those

    @property
    def flags(self) -> np.ndarray:
        return unknown(self.scores, self.threshold.threshold)

    def predictions(self, probs: np.ndarray, classes: list[str]) -> np.ndarray:
        """``probs`` with the flagged images predicted as :attr:`unknown_class` (:func:`~lesion.evaluate.ood.predicted_as`);
        as they are without one (refused before any work where there is no threshold: :func:`check_unknown_class`)."""
        if self.unknown_class is None:
            return probs
        return predicted_as(probs, self.flags, classes.index(self.unknown_class))

    def record(self) -> dict:
        """``metrics.json``'s entries: the score, the threshold, how many images it flags, the class they are predicted
        as, and the detection report."""
        flagged = None if self.threshold is None else int(self.flags.sum())
        return {"ood/score": SCORE, "ood/threshold": None if self.threshold is None else self.threshold.threshold,
                "ood/unknown": flagged, "ood/unknown_class": self.unknown_class,
                **self.detection}

    def line(self) -> str:
        """``metrics.txt``'s line."""
        text = f"Out-of-distribution ({SCORE}): "
        text += ("no threshold" if self.threshold is None else
                 f"{self.flags.sum()} of {len(self.scores)} images unknown (score above {self.threshold.threshold:.4f})")
        if self.unknown_class is not None:
            text += f", predicted as {self.unknown_class}"
        if self.detection:
            text += (f"; against ood_images ({self.detection['ood/out_images']} images): detection AUROC "
                     f"{self.detection['ood/auroc']:.4f}, FPR at 95 % TPR {self.detection['ood/fpr95']:.4f}")
        return text


def ensemble_scores(energies: list[np.ndarray]) -> np.ndarray:
    """The out-of-distribution score of each image (:data:`~lesion.evaluate.ood.SCORE`): its energy, the mean of
    the members' (each from its own logits; the temperature of ``calibrate`` leaves them as they are)."""
    return np.mean(energies, axis=0)


def stored_threshold_applies(members: list[Member], views: tuple[bool, int]) -> bool:
    """Whether the scores are made as those the checkpoint's threshold was fitted on: one model, the plain view."""
    return len(members) == 1 and views == (False, 1)


def check_unknown_class(members: list[Member], cfg: DictConfig, stored: bool, fitted: bool) -> None:
    """Refuse ``unknown_class`` where no threshold would flag images: the checkpoint's applies (``stored``) and it
    stores none, or it does not and none is ``fitted`` on the validation split predicted alike."""
    if cfg.unknown_class is None:
        return
    if stored and members[0].module.ood_threshold is None:
        raise LesionError("unknown_class", f"{members[0].path} stores no out-of-distribution threshold (written by an "
                          "older lesion), so no image would be flagged", "retrain with this version of lesion, or drop "
                          "unknown_class")
    if not stored and not fitted:
        raise LesionError("unknown_class", "an ensemble's or test-time views' threshold is fitted on the validation "
                          "split predicted alike, and there is none here (images=DIR, or members validated on other "
                          "images)", "evaluate one model without test-time views on a split, or drop unknown_class")


def flagging_threshold(members: list[Member], stored: bool, val_scores: np.ndarray | None,
                   why_none: str) -> OodThreshold | None:
    """The threshold that flags images as unknown: the checkpoint's when ``stored`` applies, else one fitted on
    the scores of the validation images predicted as the reported ones (``val_scores``); else ``None``, said once
    in the log with ``why_none``."""
    if members[0].graph is not None:
        log.info("runtime=onnx: its graph gives probabilities, not the logits whose energy is the out-of-distribution "
                 "score; the ood_score and unknown columns of predictions.csv are empty")
        return None
    if stored:
        threshold = members[0].module.ood_threshold
        if threshold is None:
            log.info("%s stores no out-of-distribution threshold (written by an older lesion): the unknown column of "
                     "predictions.csv is empty", members[0].path)
        return threshold
    if val_scores is not None:
        threshold = OodThreshold.fitted(val_scores)
        log.info("out-of-distribution threshold %.4f fitted on %d validation images predicted as these", threshold.threshold,
                 threshold.images)
        return threshold
    log.info("no out-of-distribution threshold: %s; the unknown column of predictions.csv is empty", why_none)
    return None
