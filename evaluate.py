"""Evaluate a checkpoint: ``python evaluate.py ckpt=PATH [dataset=NAME dataset.root=DIR] split=test out=DIR``.

Installed, the same command is ``lesion-evaluate`` (:mod:`lesion.cli.evaluate`).
"""

from lesion.cli.evaluate import main

if __name__ == "__main__":
    main()
