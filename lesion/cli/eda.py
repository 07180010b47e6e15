"""``lesion-eda`` (``python eda.py`` in a clone): exploratory data analysis report,
``dataset=NAME [dataset.root=DIR] out=DIR``."""

from omegaconf import DictConfig, OmegaConf

from lesion.cli.app import run_app
from lesion.eda.options import check_eda
from lesion.hydra_record import run_or_refuse


def main() -> None:
    """The command (:func:`lesion.cli.app.run_app` of ``conf/eda.yaml`` and :func:`job`)."""
    run_app("eda", job)


def job(cfg: DictConfig) -> None:
    """One Hydra job: :func:`eda`, a refusal answered in one line (:func:`lesion.hydra_record.run_or_refuse`)."""
    run_or_refuse(eda, cfg, cfg.out)


def eda(cfg: DictConfig) -> object:
    """:func:`lesion.eda.run.run`, imported with the image and plotting libraries only once the options are
    accepted: a refused option answers at once."""
    check_eda(OmegaConf.to_container(cfg, resolve=True))
    from lesion.eda.run import run

    return run(cfg)
