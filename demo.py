"""Serve a checkpoint's web page: ``python demo.py ckpt=PATH [port=7860] [host=127.0.0.1] [share=false]``.

Installed, the same command is ``lesion-demo`` (:mod:`lesion.cli.demo`).
"""

from lesion.cli.demo import main

if __name__ == "__main__":
    main()
