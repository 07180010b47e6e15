"""Serve a checkpoint's web page: ``python demo.py ckpt=PATH [port=7860] [host=127.0.0.1] [share=false]``."""

import hydra
from omegaconf import DictConfig

from lesion.demo.run import run
from lesion.hydra_record import run_or_refuse


@hydra.main(version_base="1.3", config_path="conf", config_name="demo")
def main(cfg: DictConfig) -> None:
    run_or_refuse(run, cfg, None)


if __name__ == "__main__":
    main()
