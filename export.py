"""Export a checkpoint: ``python export.py ckpt=PATH [format=onnx|torchscript] [out=FILE]``.

Installed, the same command is ``lesion-export`` (:mod:`lesion.cli.export`).
"""

from lesion.cli.export import main

if __name__ == "__main__":
    main()
