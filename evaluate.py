"""Evaluate a checkpoint: ``python evaluate.py ckpt=PATH [dataset=NAME dataset.root=DIR] split=test out=DIR``."""

import hydra
from omegaconf import DictConfig

from lesion.errors import LesionError, exit_with
from lesion.hydra_record import discard_refused
from lesion.evaluate.run import run


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except LesionError as error:
        discard_refused(cfg.out)
        exit_with(error)


if __name__ == "__main__":
    main()
