"""``python -m lesion.summary MULTIRUN_DIR``: the sweep table of :mod:`lesion.evaluate.summary`."""

from lesion.evaluate.summary import main

if __name__ == "__main__":
    main()
