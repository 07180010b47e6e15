"""Where the Hydra configs of the commands are: ``conf/`` of the clone, or its copy in an installed package.

The configs live in ``conf/`` beside the package in a clone; a wheel (``pip install .``) ships the same
files as ``lesion/conf/`` (pyproject.toml maps the package ``lesion.conf`` to ``conf/``). An editable
install (``pip install -e .``) imports the clone's package and so reads the clone's ``conf/``.
"""

from __future__ import annotations

from pathlib import Path

import lesion


def config_dir() -> Path:
    """The folder of ``train.yaml``, ``evaluate.yaml`` … and the config groups: the installed package's
    ``lesion/conf`` when present, else the clone's ``conf/`` beside the package."""
    package = Path(lesion.__file__).resolve().parent
    installed = package / "conf"
    return installed if installed.is_dir() else package.parent / "conf"
