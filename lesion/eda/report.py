"""The exploratory data analysis report as Markdown: what a reader needs before training on a dataset.

Sections: images per class and split, source image sizes, colour per class, images per lesion,
patient metadata per class (age, sex, site), skin tone per class and split (where the metadata has
one), sample images and near-duplicate images across splits. Figures are linked by paths relative to the report.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from lesion.data.metadata import SKIN_TYPES
from lesion.eda.duplicates import Duplicates, Pair
from lesion.eda.hashing import BITS
from lesion.eda.statistics import CHANNELS, ClassMetadata, Colour, Groups, Sizes

SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}


@dataclass
class Findings:
    """Everything the report shows, computed before any file is written.

    ``figures``: figure name → path relative to the report (absent: not drawn). ``pair_images``:
    thumbnail path of each of the first shown cross-split pairs. ``metadata``: per-class patient
    metadata of the splits that have a metadata file (``metadata_splits``), ``None`` when none has.
    ``skin_tone_by_split``: images per Fitzpatrick type (``None``: missing) of each of those splits, ``None``
    when their metadata has no skin tone.
    """

    layout: str
    root: str
    square: int
    classes: list[str]
    counts: dict[str, dict[str, int]]
    missing_splits: list[str]
    val_fraction: float
    test_fraction: float | None
    sizes: dict[str, Sizes]
    colour: dict[str, Colour]
    colour_by_split: dict[str, Colour]
    groups: Groups | None
    grouping_files: list[str]
    duplicates: Duplicates
    shown: int
    figures: dict[str, str] = field(default_factory=dict)
    pair_images: list[str] = field(default_factory=list)
    metadata: dict[str, ClassMetadata] | None = None
    metadata_splits: list[str] = field(default_factory=list)
    skin_tone_by_split: dict[str, dict[str | None, int]] | None = None


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def _number(value: float, digits: int = 1) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _figure(findings: Findings, name: str, alt: str) -> list[str]:
    return [f"![{alt}]({findings.figures[name]})", ""] if name in findings.figures else []


def _counts(f: Findings) -> list[str]:
    splits = list(f.counts)
    total = {c: sum(f.counts[s][c] for s in splits) for c in f.classes}
    everything = sum(total.values())
    rows = [[c, *(f.counts[s][c] for s in splits), total[c], f"{100 * total[c] / max(everything, 1):.1f} %"]
            for c in f.classes]
    rows.append(["**all**", *(sum(f.counts[s].values()) for s in splits), everything, "100.0 %"])
    lines = ["## Images per class and split", "", _table(["class", *splits, "all", "share"], rows), ""]
    present = [n for n in total.values() if n]
    if len(present) > 1:
        lines += [f"Largest to smallest class present: {max(present) / min(present):.1f} : 1.", ""]
    for c in f.classes:
        absent = [s for s in splits if f.counts[s][c] == 0]
        if absent:
            where = "any split" if len(absent) == len(splits) else ", ".join(absent)
            lines += [f"No images of {c} in {where}: its recall and AUC there are undefined "
                      "(left out of BACC and macro AUC).", ""]
    for split in f.missing_splits:
        lines += [f"No {SPLIT_NAMES.get(split, split)} split on disk: {_made_instead(f, split)}.", ""]
    return lines + _figure(f, "counts", "Images per class and split")


def _made_instead(f: Findings, split: str) -> str:
    """What training uses in place of a split that is not on disk."""
    if split == "val":
        return (f"training validates on a {f.val_fraction:.0%} hold-out of the training split "
                "(`dataset.val_fraction`, stratified, seeded)")
    if split == "test" and f.test_fraction is not None:
        return f"training tests on a {f.test_fraction:.0%} hold-out of the training split (`dataset.test_fraction`)"
    return "testing uses the validation split (or set `dataset.test_fraction` for a hold-out)"


def _range(values: tuple, digits: int = 0) -> str:
    low, high, median = values
    return f"{_number(low, digits)}–{_number(high, digits)} ({_number(median, digits)})"


def _sizes(f: Findings) -> list[str]:
    rows = []
    for split, s in f.sizes.items():
        common = ", ".join(f"{w}×{h} ({k})" for (w, h), k in s.common)
        rows.append([split, s.images, _range(s.width), _range(s.height), _range(s.megapixels, 2),
                     _range(s.aspect, 2), common])
    header = ["split", "images", "width px", "height px", "megapixels", "aspect w/h", "most common sizes (images)"]
    return ["## Source image sizes", "", "Minimum–maximum (median) of the original files, as decoded upright.", "",
            _table(header, rows), ""] + _figure(f, "sizes", "Source image sizes")


def _colour_row(name: str, c: Colour) -> list:
    cells = [f"{_number(m)} ± {_number(s)}" for m, s in zip(c.mean, c.std)] if c.images else ["n/a"] * 3
    return [name, c.images, *cells]


def _colour(f: Findings) -> list[str]:
    header = ["", "images", *(f"{ch} mean ± std" for ch in CHANNELS)]
    return ["## Colour per class", "",
            f"Pixel values 0–255 pooled over every pixel of the {f.square}×{f.square} cached centred squares "
            "(all splits); the standard deviation is over pixels, so it mixes variation within and between images.", "",
            _table(["class", *header[1:]], [_colour_row(c, f.colour[c]) for c in f.classes]), "",
            "Per split (all classes):", "",
            _table(["split", *header[1:]], [_colour_row(s, c) for s, c in f.colour_by_split.items()]), ""] \
        + _figure(f, "colour", "Colour per class")


def _groups(f: Findings) -> list[str]:
    g = f.groups
    if g is None:
        if f.grouping_files:
            what = f"No lesion-grouping file ({', '.join(f'`{n}`' for n in f.grouping_files)}) in `{f.root}`"
        else:
            what = f"The {f.layout} layout has no lesion-grouping file"
        return ["## Images per lesion", "", f"{what}: images per lesion unknown, and splits made from the training "
                "split (hold-out, folds) are by image, so images of one lesion may fall on both sides.", ""]
    title = f"Images per {g.kind}"
    rows = [[c, images, groups, _number(images / groups, 2) if groups else "n/a"]
            for c, (images, groups) in g.by_class.items()]
    rows.append(["**all**", g.images, g.groups, _number(g.images / max(g.groups, 1), 2)])
    several = sum(k for n, k in g.per_group.items() if n > 1)
    lines = [f"## {title}", "",
             f"Training split, from `{g.file}`: {_count(g.images, 'image')} of {_count(g.groups, g.kind)}; "
             f"{_count(several, g.kind)} with more than one image. Splits made from it (hold-out, folds) keep "
             f"each {g.kind} on one side unless `dataset.split_by=image`.", "",
             _table(["class", "images", f"{g.kind}s", f"images per {g.kind}"], rows), "",
             _table([f"images per {g.kind}", f"{g.kind}s"], list(g.per_group.items())), ""]
    if g.mixed:
        lines += [f"{_count(g.mixed, g.kind)} with images of different labels.", ""]
    return lines + _figure(f, "groups", title)


def _metadata(f: Findings) -> list[str]:
    lines = ["## Metadata per class", ""]
    if f.metadata is None:
        return lines + ["No metadata file for this layout in the dataset folder, so no age, sex or site.", ""]

    def counts(values: dict, names: Sequence) -> str:
        return ", ".join(f"{n if n is not None else 'missing'} {values[n]}" for n in names if values.get(n))

    sites = sorted({s for m in f.metadata.values() for s in m.site if s is not None})
    rows = [[name, m.images, f"{_number(m.age_mean)} ± {_number(m.age_std)}", m.age_missing,
             counts(m.sex, ["female", "male", None]), counts(m.site, [*sites, None]) or "n/a"]
            for name, m in f.metadata.items()]
    return lines + [f"From the metadata of the {', '.join(SPLIT_NAMES[s] for s in f.metadata_splits)} split(s). "
                    "Missing values are counted as missing, never as 0.", "",
                    _table(["class", "images", "age (mean ± sd)", "age missing", "sex", "site"], rows), ""]


def _skin_tone(f: Findings) -> list[str]:
    if f.skin_tone_by_split is None:
        return []
    lines = ["## Skin tone", ""]
    if not any(n for counts in f.skin_tone_by_split.values() for tone, n in counts.items() if tone is not None):
        return lines + ["The metadata has a skin tone column, but no image has a Fitzpatrick type in it.", ""]

    def row(name: str, counts: dict) -> list:
        return [name, sum(counts.values()), *(counts.get(t, 0) for t in SKIN_TYPES), counts.get(None, 0)]

    header = ["images", *SKIN_TYPES, "missing"]
    return lines + ["Fitzpatrick skin type (I–VI) of the images of the "
                    f"{', '.join(SPLIT_NAMES[s] for s in f.metadata_splits)} split(s); missing values are a group of "
                    "their own, as in the subgroup report of `evaluate.py`.", "",
                    _table(["class", *header], [row(c, m.skin_tone) for c, m in f.metadata.items()]), "",
                    _table(["split", *header], [row(s, counts) for s, counts in f.skin_tone_by_split.items()]), ""]


def _samples(f: Findings) -> list[str]:
    if "samples" not in f.figures:
        return []
    return ["## Sample images", "", "A seeded random draw per class from all splits, as cached (centred squares).",
            ""] + _figure(f, "samples", "Sample images per class")


def _image(i) -> str:
    return f"{i.split} `{i.id}` ({i.label})"


def _duplicates(f: Findings) -> list[str]:
    d = f.duplicates
    across, within = d.across, d.within
    lines = ["## Near-duplicate images", "",
             f"Each image's {BITS * BITS}-bit DCT perceptual hash (pHash, Zauner 2010) of its cached square; a pair is "
             f"two images whose hashes differ in at most {d.max_distance} bits (`duplicates.max_distance`). "
             "Copies, re-encoded and resized copies and small brightness changes are found; other crops, "
             "mirrored or rotated copies are not.", ""]
    rows = []
    for a, b in sorted(d.counts, key=lambda pair: pair[0] == pair[1]):  # across splits first
        n = d.counts[a, b]
        rows.append([f"{a}–{b}", f"**{n}**" if n else 0] if a != b else [f"within {a}", n])
    lines += [_table(["splits", "pairs"], rows), ""]
    if not across:
        lines += ["No pair across splits.", ""]
    else:
        shown = across[:f.shown]
        some = f" (the first {len(shown)} shown)" if len(shown) < len(across) else ""
        lines += [f"**{_count(len(across), 'pair')} across splits**{some}; all pairs are in `duplicates.csv`.", ""]
        rows = []
        for k, pair in enumerate(shown):
            picture = f"![pair {k + 1}]({f.pair_images[k]})" if k < len(f.pair_images) else ""
            labels = "same" if pair.first.label == pair.second.label else "**differ**"
            rows.append([k + 1, pair.distance, _image(pair.first), _image(pair.second), labels, picture])
        lines += [_table(["#", "distance", "first", "second", "labels", "images"], rows), ""]
    if within:
        lines += [f"{_count(len(within), 'pair')} within splits (several images of one lesion, or one image "
                  "published twice); listed in `duplicates.csv`.", ""]
        in_train = d.counts.get(("train", "train"), 0)
        if in_train and {"val", "test"} & set(f.missing_splits):
            lines += [f"The {_count(in_train, 'pair')} within the training split can fall on both sides of the "
                      "hold-outs made from it: group them (a lesion-grouping file) or drop one image of each.", ""]
    return lines


def format_report(f: Findings) -> str:
    """The report as Markdown text."""
    splits = ", ".join(f"{s} {sum(c.values())}" for s, c in f.counts.items())
    total = sum(sum(c.values()) for c in f.counts.values())
    lines = [f"# Exploratory data analysis: {f.layout}", "",
             f"Dataset `{f.layout}` in `{f.root}`: {total} images ({splits}), {len(f.classes)} classes "
             f"({', '.join(f.classes)}). Colour, samples and hashes come from the {f.square}×{f.square} image "
             "cache.", ""]
    for section in (_counts, _sizes, _colour, _groups, _metadata, _skin_tone, _samples, _duplicates):
        lines += section(f)
    return "\n".join(lines).rstrip() + "\n"


def duplicates_csv(pairs: Sequence[Pair]) -> str:
    """Every pair as CSV: ``kind`` (across / within), both images' split, id and label, distance."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["kind", "distance", "split_1", "id_1", "label_1", "split_2", "id_2", "label_2"])
    writer.writerows(["across" if p.across else "within", p.distance, p.first.split, p.first.id, p.first.label,
                      p.second.split, p.second.id, p.second.label] for p in pairs)
    return buffer.getvalue()

