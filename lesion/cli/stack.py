"""``lesion-stack`` (``python stack.py`` in a clone): gradient-boosted trees on a K-fold sweep's out-of-fold image
scores and the tabular features, ``sweep=SWEEP_DIR [stack=lightgbm|xgboost|catboost] out=DIR``."""

from omegaconf import DictConfig, OmegaConf

from lesion.cli.app import run_app
from lesion.hydra_record import run_or_refuse
from lesion.stack.options import check_stack


def main() -> None:
    """The command (:func:`lesion.cli.app.run_app` of ``conf/stack.yaml`` and :func:`job`)."""
    run_app("stack", job)


def job(cfg: DictConfig) -> None:
    """One Hydra job: :func:`stack`, a refusal answered in one line (:func:`lesion.hydra_record.run_or_refuse`)."""
    run_or_refuse(stack, cfg, cfg.out)


def stack(cfg: DictConfig) -> object:
    """:func:`lesion.stack.run.run`, imported with torch and the tree library only once the options are accepted: a
    refused option answers at once."""
    check_stack(OmegaConf.to_container(cfg, resolve=True))
    from lesion.stack.run import run

    return run(cfg)
