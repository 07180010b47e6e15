"""Evaluate a checkpoint: ``python evaluate.py ckpt=PATH [dataset=NAME dataset.root=DIR] split=test out=DIR``."""

import hydra
from omegaconf import DictConfig, OmegaConf

from lesion.hydra_record import run_or_refuse
from lesion.options import check_evaluate


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run_or_refuse(evaluate, cfg, cfg.out)


def evaluate(cfg: DictConfig) -> object:
    """:func:`lesion.evaluate.run.run`, imported with torch only once the options are accepted: a refused option
    answers at once."""
    check_evaluate(OmegaConf.to_container(cfg, resolve=True))
    from lesion.evaluate.run import run

    return run(cfg)


if __name__ == "__main__":
    main()
