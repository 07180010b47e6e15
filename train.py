"""Train a lesion classifier: ``python train.py [experiment=NAME] key=value ...``."""

import hydra
from omegaconf import DictConfig
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lesion.errors import LesionError, exit_with
from lesion.hydra_record import discard_refused
from lesion.train.callbacks import EXIT_STATUS
from lesion.train.sweep import run_job


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    try:
        return run_job(cfg)
    except LesionError as error:
        discard_refused(cfg.run_dir)
        exit_with(error)
    except SIGTERMException:  # last.ckpt saved and the resume command logged by lesion.train.callbacks
        raise SystemExit(EXIT_STATUS) from None


if __name__ == "__main__":
    main()
