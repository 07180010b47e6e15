"""Train a lesion classifier: ``python train.py [experiment=NAME] key=value ...``.

Installed, the same command is ``lesion-train`` (:mod:`lesion.cli.train`).
"""

from lesion.cli.train import main

if __name__ == "__main__":
    main()
