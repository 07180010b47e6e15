"""The options of ``eda.py`` (``conf/eda.yaml``), checked before any work as :mod:`lesion.options`
checks those of training and evaluation."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from lesion.data.cache import square_size
from lesion.options import DATASET, OUT_FOLDER, Section, Value

# Beyond about a quarter of the 64 bits, unrelated dermoscopy images (a dark lesion on plain skin)
# start to match: the listing would be of look-alikes, not of copies.
MAX_DISTANCE = 16

OPTIONS = Section({
    "out": dataclasses.replace(OUT_FOLDER, doc="The folder of report.md, figures/, duplicates/ (pair thumbnails), "
                                               "duplicates.csv and the log."),
    "seed": Value(int, 0, doc="Seed of the draw of sample images."),
    "workers": Value(int, 1, null=True, hint="a number of processes ≥ 1, or null (one per core)",
                     doc="Image-cache build processes; null = one per core (fewer for small splits)."),
    "samples": Section({"per_class": Value(int, 0, 32, hint="a number of images per class from 0 to 32",
                                           doc="Sample images per class in the grid (0 = no grid).")},
                       doc="The grid of sample images."),
    "duplicates": Section({
        "max_distance": Value(int, 0, MAX_DISTANCE, hint=f"a number of bits from 0 (identical hashes) to "
                              f"{MAX_DISTANCE}; 4 finds copies, re-encodings and small edits",
                              doc="Largest Hamming distance (bits of 64) between the perceptual hashes of a "
                                  "near-duplicate pair: 0 = identical hashes; 4 finds copies, re-encoded and resized "
                                  "copies and small edits."),
        "show": Value(int, 0, hint="a number of pairs ≥ 0 to show with thumbnails (all are in duplicates.csv)",
                      doc="Cross-split pairs shown with thumbnails in report.md (all pairs are in duplicates.csv)."),
    }, doc="Near-duplicate images within and across splits."),
    "dataset": DATASET,
}, doc="python eda.py [dataset=NAME] [dataset.root=DIR] [out=DIR]: the exploratory data analysis of a dataset — "
       "class counts per split, image sizes, colour per class, sample grids and near-duplicates.")


def check_eda(cfg: Mapping) -> dict:
    """Refuse any bad option of a composed ``conf/eda.yaml`` config (a plain dict), or any other key
    (e.g. a training group added with ``+model=…``), before any work.

    Returns:
        The checked ``dataset`` section.
    """
    dataset = OPTIONS.check("", cfg)["dataset"]
    square_size(dataset["image_size"], dataset["cache_size"])
    return dataset
