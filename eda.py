"""Exploratory data analysis report: ``python eda.py dataset=NAME [dataset.root=DIR] out=DIR``."""

import hydra
from omegaconf import DictConfig

from lesion.eda.run import run
from lesion.errors import LesionError, exit_with
from lesion.hydra_record import discard_refused


@hydra.main(version_base="1.3", config_path="conf", config_name="eda")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except LesionError as error:
        discard_refused(cfg.out)
        exit_with(error)


if __name__ == "__main__":
    main()
