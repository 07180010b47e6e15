"""Export a checkpoint: ``python export.py ckpt=PATH [format=onnx|torchscript] [out=FILE]``."""

import hydra
from omegaconf import DictConfig

from lesion.export.run import run
from lesion.hydra_record import run_or_refuse


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    run_or_refuse(run, cfg, None)


if __name__ == "__main__":
    main()
