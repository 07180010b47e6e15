"""``lesion-demo`` (``python demo.py`` in a clone): serve a checkpoint's web page,
``ckpt=PATH [port=7860] [host=127.0.0.1] [share=false]``."""

from omegaconf import DictConfig, OmegaConf

from lesion.cli.app import run_app
from lesion.hydra_record import run_or_refuse
from lesion.options import check_demo


def main() -> None:
    """The command (:func:`lesion.cli.app.run_app` of ``conf/demo.yaml`` and :func:`job`)."""
    run_app("demo", job)


def job(cfg: DictConfig) -> None:
    """One Hydra job: :func:`demo`, a refusal answered in one line (:func:`lesion.hydra_record.run_or_refuse`)."""
    run_or_refuse(demo, cfg, None)


def demo(cfg: DictConfig) -> object:
    """:func:`lesion.demo.run.run`, imported with torch only once the options are accepted: a refused option
    answers at once."""
    check_demo(OmegaConf.to_container(cfg, resolve=True))
    from lesion.demo.run import run

    return run(cfg)
