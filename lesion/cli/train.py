"""``lesion-train`` (``python train.py`` in a clone): train a lesion classifier, ``[experiment=NAME] key=value ...``."""

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lesion.cli.app import run_app
from lesion.hydra_record import run_or_refuse
from lesion.options import check_train


def main() -> None:
    """The command (:func:`lesion.cli.app.run_app` of ``conf/train.yaml`` and :func:`job`)."""
    run_app("train", job)


def job(cfg: DictConfig) -> float:
    """One Hydra job: :func:`train`, a refusal answered in one line (:func:`lesion.hydra_record.run_or_refuse`)."""
    return run_or_refuse(train, cfg, cfg.run_dir)


def train(cfg: DictConfig) -> float:
    """One job of ``train.py`` (:func:`lesion.train.sweep.run_job`), Lightning imported only once a single run's
    options are accepted: a refused option answers at once. A sweep's refused job is recorded and the sweep goes
    on (:mod:`lesion.train.sweep`)."""
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        check_train(OmegaConf.to_container(cfg, resolve=True))
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from lesion.train.callbacks import EXIT_STATUS
    from lesion.train.notices import silence_lightning_notices
    from lesion.train.sweep import run_job

    silence_lightning_notices()
    try:
        return run_job(cfg)
    except SIGTERMException:  # last.ckpt saved and the resume command logged by lesion.train.callbacks
        raise SystemExit(EXIT_STATUS) from None
