"""The commands: ``lesion-train``, ``lesion-evaluate``, ``lesion-eda``, ``lesion-export``, ``lesion-demo`` and
``lesion-stack``, also run from a clone as ``python train.py`` … (each root script calls its module's ``main``).

Each module's ``main`` composes the command's config from the command line with Hydra and runs one job
(``-m``: a sweep of jobs); the job imports the heavy libraries only once its options are accepted, so
``--help``, ``--cfg`` and a refused option answer at once.
"""
