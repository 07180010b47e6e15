"""Callbacks of a training run that need more than Lightning's defaults."""

from __future__ import annotations

from pathlib import Path

from pytorch_lightning.callbacks import ModelCheckpoint


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose restored state can only name files in its own folder.

    Lightning restores the best/last checkpoint paths from the file it resumes, then tests the
    best one and deletes superseded ones. Each restored path is replaced by the file of the same
    name in this callback's ``dirpath``: a resumed checkpoint cannot point the run at other files,
    and a run directory copied elsewhere resumes with its own checkpoints.
    """

    @property
    def state_key(self) -> str:
        # ModelCheckpoint's key, so checkpoints written with it resume their best/last state here.
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def load_state_dict(self, state_dict: dict) -> None:
        def here(path: str | None) -> str:
            name = Path(str(path)).name if path else ""
            return str(Path(self.dirpath) / name) if name not in ("", ".", "..") else ""

        relocated = {**state_dict, "dirpath": self.dirpath,
                     "best_model_path": here(state_dict.get("best_model_path")),
                     "kth_best_model_path": here(state_dict.get("kth_best_model_path")),
                     "last_model_path": here(state_dict.get("last_model_path")),
                     "best_k_models": {here(k): v for k, v in (state_dict.get("best_k_models") or {}).items() if here(k)}}
        super().load_state_dict(relocated)
