"""Train a lesion classifier: ``python train.py [experiment=NAME] key=value ...``."""

import hydra
from omegaconf import DictConfig
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lesion.hydra_record import run_or_refuse
from lesion.train.callbacks import EXIT_STATUS
from lesion.train.sweep import run_job


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    try:
        return run_or_refuse(run_job, cfg, cfg.run_dir)
    except SIGTERMException:  # last.ckpt saved and the resume command logged by lesion.train.callbacks
        raise SystemExit(EXIT_STATUS) from None


if __name__ == "__main__":
    main()
