"""``lesion-evaluate`` (``python evaluate.py`` in a clone): evaluate a checkpoint,
``ckpt=PATH [dataset=NAME dataset.root=DIR] split=test out=DIR``."""

from omegaconf import DictConfig, OmegaConf

from lesion.cli.app import run_app
from lesion.hydra_record import run_or_refuse
from lesion.options import check_evaluate


def main() -> None:
    """The command (:func:`lesion.cli.app.run_app` of ``conf/evaluate.yaml`` and :func:`job`)."""
    run_app("evaluate", job)


def job(cfg: DictConfig) -> None:
    """One Hydra job: :func:`evaluate`, a refusal answered in one line (:func:`lesion.hydra_record.run_or_refuse`)."""
    run_or_refuse(evaluate, cfg, cfg.out)


def evaluate(cfg: DictConfig) -> object:
    """:func:`lesion.evaluate.run.run`, imported with torch only once the options are accepted: a refused option
    answers at once."""
    check_evaluate(OmegaConf.to_container(cfg, resolve=True))
    from lesion.evaluate.run import run

    return run(cfg)
