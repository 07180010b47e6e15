"""Serve a checkpoint's web page: ``python demo.py ckpt=PATH [port=7860] [host=127.0.0.1] [share=false]``."""

import hydra
from omegaconf import DictConfig, OmegaConf

from lesion.hydra_record import run_or_refuse
from lesion.options import check_demo


@hydra.main(version_base="1.3", config_path="conf", config_name="demo")
def main(cfg: DictConfig) -> None:
    run_or_refuse(demo, cfg, None)


def demo(cfg: DictConfig) -> object:
    """:func:`lesion.demo.run.run`, imported with torch only once the options are accepted: a refused option
    answers at once."""
    check_demo(OmegaConf.to_container(cfg, resolve=True))
    from lesion.demo.run import run

    return run(cfg)


if __name__ == "__main__":
    main()
