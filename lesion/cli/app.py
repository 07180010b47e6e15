"""How a command starts: its Hydra config composed from the command line, then its job."""

from collections.abc import Callable

import hydra
from omegaconf import DictConfig

from lesion.configs import config_dir
from lesion.option_reference import register_help_resolver


def run_app(config_name: str, job: Callable[[DictConfig], object]) -> None:
    """``conf/<config_name>.yaml`` composed with the command line's overrides, then ``job`` run on it (``-m``: a
    sweep of jobs), as a script's ``@hydra.main`` function would be. Hydra names the job after ``job``'s module
    (``lesion.cli.train``: ``train``, logging to ``train.log``) and puts relative output folders under the
    working directory, wherever the configs are.

    Args:
        config_name: the command's config in :func:`lesion.configs.config_dir` (``train``, ``evaluate`` …).
        job: the command's Hydra job, a module-level function (sweep launchers pickle it by name).
    """
    register_help_resolver()  # hydra.help.template: ${lesion_help:<command>}
    hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=config_name)(job)()
