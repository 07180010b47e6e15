"""lesion: skin-lesion classification from dermoscopy images (ISIC 2017 / ISIC 2018)."""

import os

__version__ = "0.1.0"

# albumentations asks PyPI for a newer version when it is imported, unless this is set: a network call
# (a 2 s timeout and a warning on an offline cluster node) on every import of lesion's data pipeline.
# Here, so every `import lesion…` path has it first; a user's own value wins.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
