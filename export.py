"""Export a checkpoint: ``python export.py ckpt=PATH [format=onnx|torchscript] [out=FILE]``."""

import hydra
from omegaconf import DictConfig, OmegaConf

from lesion.hydra_record import run_or_refuse
from lesion.options import check_export


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    run_or_refuse(export, cfg, None)


def export(cfg: DictConfig) -> object:
    """:func:`lesion.export.run.run`, imported with torch only once the options are accepted: a refused option
    answers at once."""
    check_export(OmegaConf.to_container(cfg, resolve=True))
    from lesion.export.run import run

    return run(cfg)


if __name__ == "__main__":
    main()
