"""Exploratory data analysis report: ``python eda.py dataset=NAME [dataset.root=DIR] out=DIR``.

Installed, the same command is ``lesion-eda`` (:mod:`lesion.cli.eda`).
"""

from lesion.cli.eda import main

if __name__ == "__main__":
    main()
