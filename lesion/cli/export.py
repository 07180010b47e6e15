"""``lesion-export`` (``python export.py`` in a clone): export a checkpoint,
``ckpt=PATH [format=onnx|torchscript] [out=FILE]``."""

from omegaconf import DictConfig, OmegaConf

from lesion.cli.app import run_app
from lesion.hydra_record import run_or_refuse
from lesion.options import check_export


def main() -> None:
    """The command (:func:`lesion.cli.app.run_app` of ``conf/export.yaml`` and :func:`job`)."""
    run_app("export", job)


def job(cfg: DictConfig) -> None:
    """One Hydra job: :func:`export`, a refusal answered in one line (:func:`lesion.hydra_record.run_or_refuse`)."""
    run_or_refuse(export, cfg, None)


def export(cfg: DictConfig) -> object:
    """:func:`lesion.export.run.run`, imported with torch only once the options are accepted: a refused option
    answers at once."""
    check_export(OmegaConf.to_container(cfg, resolve=True))
    from lesion.export.run import run

    return run(cfg)
