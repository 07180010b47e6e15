"""Exploratory data analysis report: ``python eda.py dataset=NAME [dataset.root=DIR] out=DIR``."""

import hydra
from omegaconf import DictConfig, OmegaConf

from lesion.eda.options import check_eda
from lesion.hydra_record import run_or_refuse


@hydra.main(version_base="1.3", config_path="conf", config_name="eda")
def main(cfg: DictConfig) -> None:
    run_or_refuse(eda, cfg, cfg.out)


def eda(cfg: DictConfig) -> object:
    """:func:`lesion.eda.run.run`, imported with the image and plotting libraries only once the options are
    accepted: a refused option answers at once."""
    check_eda(OmegaConf.to_container(cfg, resolve=True))
    from lesion.eda.run import run

    return run(cfg)


if __name__ == "__main__":
    main()
