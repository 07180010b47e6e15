"""Stack the fold models' scores with tabular features in gradient-boosted trees:
``python stack.py sweep=SWEEP_DIR [stack=lightgbm|xgboost|catboost] [out=DIR]``.

Installed, the same command is ``lesion-stack`` (:mod:`lesion.cli.stack`).
"""

from lesion.cli.stack import main

if __name__ == "__main__":
    main()
