"""RunCheckpoint: a resumed checkpoint's callback state cannot point the run at other files."""

from __future__ import annotations

from pytorch_lightning.callbacks import ModelCheckpoint

from lesion.train.callbacks import RunCheckpoint


def test_restored_paths_stay_in_the_callbacks_folder(tmp_path):
    ours = tmp_path / "run" / "checkpoints"
    callback = RunCheckpoint(dirpath=ours, filename="best", monitor="val/bacc", mode="max")
    callback.load_state_dict({
        "monitor": "val/bacc", "best_model_score": 0.5, "current_score": 0.5, "kth_value": 0.5,
        "dirpath": "/etc", "best_model_path": "/etc/passwd", "kth_best_model_path": "../../x.ckpt",
        "last_model_path": "/elsewhere/run/checkpoints/last.ckpt", "best_k_models": {"/etc/shadow": 0.5, "..": 0.1},
    })
    assert callback.best_model_path == str(ours / "passwd")
    assert callback.kth_best_model_path == str(ours / "x.ckpt")
    assert callback.last_model_path == str(ours / "last.ckpt")
    assert callback.best_k_models == {str(ours / "shadow"): 0.5}
    assert callback.best_model_score == 0.5  # the score is kept: a resumed run still knows its best


def test_state_key_is_model_checkpoints(tmp_path):
    options = {"dirpath": tmp_path, "filename": "best", "monitor": "val/bacc", "mode": "max", "save_top_k": 1}
    assert RunCheckpoint(**options).state_key == ModelCheckpoint(**options).state_key
