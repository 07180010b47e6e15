"""The options of ``eda.py`` (``conf/eda.yaml``), checked before any work as :mod:`lesion.options`
checks those of training and evaluation."""

from __future__ import annotations

from collections.abc import Mapping

from lesion.data.cache import square_size
from lesion.options import DATASET, OUT_FOLDER, Section, Value

# Beyond about a quarter of the 64 bits, unrelated dermoscopy images (a dark lesion on plain skin)
# start to match: the listing would be of look-alikes, not of copies.
MAX_DISTANCE = 16

OPTIONS = Section({
    "out": OUT_FOLDER,
    "seed": Value(int, 0),
    "workers": Value(int, 1, null=True, hint="a number of processes ≥ 1, or null (one per core)"),
    "samples": Section({"per_class": Value(int, 0, 32, hint="a number of images per class from 0 to 32")}),
    "duplicates": Section({
        "max_distance": Value(int, 0, MAX_DISTANCE, hint=f"a number of bits from 0 (identical hashes) to "
                              f"{MAX_DISTANCE}; 4 finds copies, re-encodings and small edits"),
        "show": Value(int, 0, hint="a number of pairs ≥ 0 to show with thumbnails (all are in duplicates.csv)"),
    }),
    "dataset": DATASET,
})


def check_eda(cfg: Mapping) -> dict:
    """Refuse any bad option of a composed ``conf/eda.yaml`` config (a plain dict), or any other key
    (e.g. a training group added with ``+model=…``), before any work.

    Returns:
        The checked ``dataset`` section.
    """
    dataset = OPTIONS.check("", cfg)["dataset"]
    square_size(dataset["image_size"], dataset["cache_size"])
    return dataset
