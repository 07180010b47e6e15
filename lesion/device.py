"""The device a command runs its nets on: the ``device`` option of ``evaluate.py`` and ``demo.py``."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from lesion.errors import LesionError

if TYPE_CHECKING:
    import torch

DEVICE_HINT = "use device=auto (a GPU when one is visible), device=cpu, or device=cuda / cuda:N"


def resolve_device(where: str, device: object) -> torch.device:
    """``auto`` → the first visible CUDA GPU, else the CPU; ``cpu``; ``cuda`` or ``cuda:N``, refused
    in one line when torch sees no such GPU."""
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise LesionError(where, f"is {device!r}, not auto, cpu, cuda or cuda:N", DEVICE_HINT)
    import torch  # here: a device name that is not one is refused before torch is imported

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    chosen = torch.device(device)
    if chosen.type == "cuda":
        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (chosen.index or 0) >= visible:
            raise LesionError(where, f"{device} is not there: torch sees {visible} CUDA GPU(s) "
                              f"(torch {torch.__version__}, CUDA {torch.version.cuda or 'not built in'})",
                              "use device=auto or device=cpu, or run where the GPU is visible (CUDA_VISIBLE_DEVICES)")
    return chosen
