"""Lightning's console notices that say nothing about a lesion run, silenced one by one where they come from.

- The advert for Lightning's LitLogger service (``💡 Tip: … litlogger …``), logged at INFO through
  ``pytorch_lightning.utilities.rank_zero`` by every Trainer without a LitLogger; Lightning has no switch for it.
- The accelerators every Trainer lists as it is built (``GPU available: …, used: …``, ``TPU available: …``), which
  would come before a run's own first line; the devices a stage uses are in its ``stage …`` line instead.
- torch's ``FutureWarning`` that ``isinstance(treespec, LeafSpec)`` is deprecated, raised from Lightning's own
  ``pytorch_lightning/utilities/_pytree.py`` (Lightning 2.6 on torch ≥ 2.10) whenever a loop starts: nothing a
  user of lesion can change.

Others are avoided rather than silenced: ``conf/trainer/default.yaml`` leaves ``limit_*_batches`` null, as any
value given is announced, and turns off Lightning's model summary, whose FLOPs stay 0 without an example input.
"""

from __future__ import annotations

import logging
import warnings

_RANK_ZERO_LOGGER = "pytorch_lightning.utilities.rank_zero"


_ACCELERATOR_LINES = ("GPU available: ", "TPU available: ", "HPU available: ")


class _SaysNothingOfTheRun(logging.Filter):
    """Drops the LitLogger advert and the accelerator lines, and only them."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        advert = message.startswith("💡 Tip:") and "litlogger" in message
        return not (advert or message.startswith(_ACCELERATOR_LINES))


_ADVERT = _SaysNothingOfTheRun()


def silence_lightning_notices() -> None:
    """Silence the notices above for this process (warnings and loggers are the process's): call where training
    starts. Calling it again changes nothing."""
    logging.getLogger(_RANK_ZERO_LOGGER).addFilter(_ADVERT)
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning, module=r"pytorch_lightning\.utilities\._pytree")
