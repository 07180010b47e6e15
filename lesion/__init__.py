"""lesion: skin-lesion classification from dermoscopy images (ISIC 2017 / ISIC 2018)."""

__version__ = "0.1.0"
