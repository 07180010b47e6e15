"""``run(cfg)``: the exploratory data analysis report of a dataset's splits as they are on disk.

Called by ``eda.py`` and tests. Reads top to bottom: options checked → the splits read (a
synthetic dataset generated first) → their image caches built (or found) → one pass over the
cached squares per split (colour sums and pHash of every image) → source sizes from the file
headers → lesion groups → patient metadata (skin tone among it) → near-duplicate pairs. Only then
is anything written to ``out``: the ``.hydra/`` record, the figures, ``duplicates.csv`` and ``report.md``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from lesion.data.cache import SquareImages, default_cache_dir, square_size
from lesion.data.custom import layout_of
from lesion.data.layouts import SPLITS
from lesion.data.metadata import read_metadata
from lesion.data.readers import find_grouping, read_groups, read_split
from lesion.data.synthetic import ensure_synthetic
from lesion.eda import figures
from lesion.eda.duplicates import Duplicates, find_duplicates
from lesion.eda.hashing import TooManyPairs, phash
from lesion.eda.options import check_eda
from lesion.eda.report import Findings, duplicates_csv, format_report
from lesion.eda.sources import source_sizes
from lesion.eda.statistics import (colour_by_class, colour_sums, group_summary, metadata_by_class, pooled_colour,
                                   size_summary, skin_tones)
from lesion.errors import LesionError
from lesion.files import write_atomic
from lesion.hydra_record import write_record

log = logging.getLogger(__name__)

_BLOCK = 64  # squares per step of the scan: 64 × 288² × 3 float32 ≈ 64 MB


def scan(images: SquareImages, desc: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pass over a split's squares: every image's pHash, channel sums and sums of squares.

    Returns:
        (N,) uint64 hashes, N×3 Σx and N×3 Σx² (float64).
    """
    n = len(images)
    hashes = np.zeros(n, dtype=np.uint64)
    sums, squares = np.zeros((n, 3)), np.zeros((n, 3))
    with tqdm(total=n, desc=desc, unit="img") as progress:
        for start in range(0, n, _BLOCK):
            rows = range(start, min(start + _BLOCK, n))
            batch = np.stack([images[r] for r in rows]).astype(np.float32)  # one conversion for both
            hashes[rows.start:rows.stop] = phash(batch)
            sums[rows.start:rows.stop], squares[rows.start:rows.stop] = colour_sums(batch)
            progress.update(len(rows))
    return hashes, sums, squares


def _samples(squares: dict[str, SquareImages], labels: dict[str, np.ndarray], classes: list[str],
             per_class: int, seed: int) -> dict[str, list[tuple[np.ndarray, str]]]:
    """A seeded random draw of ``per_class`` images of each class from all splits."""
    rng = np.random.default_rng(seed)
    drawn = {}
    for k, name in enumerate(classes):
        pool = [(s, int(r)) for s in squares for r in np.flatnonzero(labels[s] == k)]
        picks = rng.choice(len(pool), size=min(per_class, len(pool)), replace=False) if pool else []
        drawn[name] = [(squares[s][r], f"{s} {squares[s].table.ids[r]}") for s, r in (pool[i] for i in sorted(picks))]
    return drawn


def run(cfg: DictConfig) -> Findings:
    """Analyse the dataset ``cfg.dataset`` and write the report to ``cfg.out``.

    Returns:
        What the report shows.
    """
    options = OmegaConf.to_container(cfg, resolve=True)
    data = check_eda(options)
    root = Path(data["root"]).expanduser()
    if data["synthetic"]:
        ensure_synthetic(data["layout"], root, n=data["synthetic_n"], seed=data["synthetic_seed"])
    layout = layout_of(data)
    tables = {s: t for s in SPLITS if (t := read_split(layout, root, s)) is not None}
    size = square_size(data["image_size"], data["cache_size"])
    cache_dir = None  # dataset.cache=false: decode every image from its source file
    if data["cache"]:
        cache_dir = Path(data["cache_dir"]).expanduser() if data["cache_dir"] else default_cache_dir()
    squares = {s: SquareImages(t, size, cache_dir, data["max_pixels"]) for s, t in tables.items()}
    for images in squares.values():
        images.build(options["workers"])
    classes = list(layout.classes)
    labels = {s: t.labels for s, t in tables.items()}
    names = {s: [classes[k] for k in t.labels] for s, t in tables.items()}

    scans = {s: scan(images, f"hashing {s} images") for s, images in squares.items()}
    sizes = {s: source_sizes(t.images, t.ids, f"reading {s} image sizes") for s, t in tables.items()}
    grouping = find_grouping(layout, root)
    groups = None
    if grouping is not None:
        found = read_groups(layout, root, tables["train"].ids, strict=False)
        groups = group_summary(found, labels["train"], classes, grouping.kind, grouping.file)
    try:
        duplicates = find_duplicates({s: h for s, (h, _, _) in scans.items()}, {s: t.ids for s, t in tables.items()},
                                     names, cfg.duplicates.max_distance)
    except TooManyPairs as error:
        raise LesionError("duplicates.max_distance", f"finds {error} within {cfg.duplicates.max_distance} bits, "
                          "too many to tell copies from look-alikes", "lower it (4 finds copies)") from None
    metadata = {s: m for s, t in tables.items() if (m := read_metadata(layout, root, s, t.ids)) is not None}
    tones = {s: counts for s, m in metadata.items() if (counts := skin_tones(m)) is not None}
    pixels = size * size
    all_sums = np.concatenate([sm for _, sm, _ in scans.values()])
    all_squares = np.concatenate([sq for _, _, sq in scans.values()])
    findings = Findings(
        layout=layout.name, root=str(root), square=size, classes=classes,
        counts={s: t.class_counts() for s, t in tables.items()},
        missing_splits=[s for s in SPLITS if s not in tables],
        val_fraction=data["val_fraction"], test_fraction=data.get("test_fraction"),
        sizes={s: size_summary(v) for s, v in sizes.items()},
        colour=colour_by_class(all_sums, all_squares, np.concatenate(list(labels.values())), classes, pixels),
        colour_by_split={s: pooled_colour(sm, sq, pixels) for s, (_, sm, sq) in scans.items()},
        groups=groups, grouping_files=[g.file for g in layout.groupings],
        duplicates=duplicates, shown=cfg.duplicates.show,
        metadata=metadata_by_class([metadata[s] for s in metadata], [labels[s] for s in metadata], classes)
        if metadata else None, metadata_splits=list(metadata), skin_tone_by_split=tones or None,
    )
    samples = _samples(squares, labels, classes, cfg.samples.per_class, cfg.seed) if cfg.samples.per_class else None

    out = Path(cfg.out)
    write_record(cfg, out)
    _write(findings, out, sizes, samples, squares)
    log.info("%s: %d images, %d near-duplicate pairs across splits (≤ %d bits) → %s", layout.name,
             sum(len(t) for t in tables.values()), len(duplicates.across), duplicates.max_distance, out / "report.md")
    return findings


def _write(findings: Findings, out: Path, sizes: dict[str, np.ndarray],
           samples: dict[str, list] | None, squares: dict[str, SquareImages]) -> None:
    """The figures, pair thumbnails, ``duplicates.csv`` and ``report.md`` (the report last)."""
    folder = out / "figures"
    names = {"counts": "class_counts.png", "sizes": "image_sizes.png", "colour": "colour_per_class.png",
             "groups": "images_per_lesion.png", "samples": "samples.png"}
    figures.plot_split_counts(findings.counts, folder / names["counts"],
                              f"{findings.layout}: images per class and split")
    figures.plot_sizes(sizes, folder / names["sizes"])
    figures.plot_colour(findings.colour, folder / names["colour"], findings.square)
    drawn = ["counts", "sizes", "colour"]
    if findings.groups is not None:
        figures.plot_group_sizes(findings.groups, folder / names["groups"])
        drawn.append("groups")
    if samples is not None:
        figures.plot_samples(samples, max(len(v) for v in samples.values()) or 1, folder / names["samples"])
        drawn.append("samples")
    findings.figures = {k: f"figures/{names[k]}" for k in drawn}
    findings.pair_images = _pair_images(findings.duplicates, findings.shown, squares, out / "duplicates")
    write_atomic(out / "duplicates.csv", duplicates_csv(findings.duplicates.pairs))
    write_atomic(out / "report.md", format_report(findings))


def _pair_images(duplicates: Duplicates, shown: int, squares: dict[str, SquareImages], folder: Path) -> list[str]:
    """One PNG per shown cross-split pair (both cached squares side by side); paths relative to ``out``."""
    for stale in folder.glob("pair_*.png"):  # of an earlier report in the same folder
        stale.unlink()
    paths = []
    for k, pair in enumerate(tqdm(duplicates.across[:shown], desc="pair thumbnails", unit="pair")):
        name = f"pair_{k + 1:03d}.png"
        titles = tuple(f"{i.split} {i.id} ({i.label})" for i in (pair.first, pair.second))
        figures.plot_pair(squares[pair.first.split][pair.first.row], squares[pair.second.split][pair.second.row],
                          titles, pair.distance, folder / name)
        paths.append(f"duplicates/{name}")
    return paths
