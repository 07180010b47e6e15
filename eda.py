"""Exploratory data analysis report: ``python eda.py dataset=NAME [dataset.root=DIR] out=DIR``."""

import hydra
from omegaconf import DictConfig

from lesion.eda.run import run
from lesion.hydra_record import run_or_refuse


@hydra.main(version_base="1.3", config_path="conf", config_name="eda")
def main(cfg: DictConfig) -> None:
    run_or_refuse(run, cfg, cfg.out)


if __name__ == "__main__":
    main()
