"""eda.py end to end (counts, figures, lesion groups, planted near-duplicates, refusals), the pHash and
its pair search, the statistics, and the benchmark's quick run."""

from __future__ import annotations

import csv
import io
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from lesion.data.cache import SquareImages
from lesion.data.metadata import read_metadata
from lesion.data.readers import ImageArchive, read_split
from lesion.eda import figures
from lesion.eda.hashing import TooManyPairs, close_pairs, distance, phash
from lesion.eda.sources import source_sizes
from lesion.eda.statistics import Colour, colour_by_class, colour_sums
from lesion.evaluate.plots import save_figure

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("train", "val", "test")
# Official ISIC 2018 names of each split's image folder and ground-truth CSV.
FILES = {"train": ("ISIC2018_Task3_Training_Input", "ISIC2018_Task3_Training_GroundTruth.csv"),
         "val": ("ISIC2018_Task3_Validation_Input", "ISIC2018_Task3_Validation_GroundTruth.csv"),
         "test": ("ISIC2018_Task3_Test_Input", "ISIC2018_Task3_Test_GroundTruth.csv")}
GROUPINGS = "ISIC2018_Task3_Training_LesionGroupings.csv"
PNG = b"\x89PNG\r\n\x1a\n"
SMALL = ["dataset.image_size=32", "workers=1"]  # 41 px cached squares


def section(report: str, title: str) -> str:
    """The text of the report section ``## title`` (up to the next ``## ``)."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", report, re.MULTILINE | re.DOTALL)
    assert match, f"no section {title!r} in the report"
    return match.group(1)


def tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table in ``text``: rows (header first, separator dropped), cells stripped."""
    found, rows = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            found.append([rows[0], *rows[2:]])
            rows = []
    return found


def class_counts(report: str) -> dict[str, dict[str, int]]:
    """``{split: {class: images}}`` as the report's count table gives it."""
    header, *rows = tables(section(report, "Images per class and split"))[0]
    splits = header[1:header.index("all")]
    return {s: {row[0]: int(row[1 + k]) for row in rows if row[0] != "**all**"} for k, s in enumerate(splits)}


def pair_counts(report: str) -> dict[str, int]:
    """``{"train–test": pairs, "within train": pairs, …}`` from the near-duplicate section."""
    header, *rows = tables(section(report, "Near-duplicate images"))[0]
    return {row[0]: int(row[1].strip("*")) for row in rows}


def linked_files(report: str, out: Path) -> list[Path]:
    return [out / link for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)]


def duplicate_rows(out: Path) -> list[dict]:
    with open(out / "duplicates.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def one_hot_row(image_id: str, label: str, columns: list[str]) -> str:
    return ",".join([image_id, *("1.0" if c == label else "0.0" for c in columns)]) + "\n"


# --- the command line on a generated synthetic dataset -----------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_run(run_cli, lesion_cache, tmp_path_factory) -> tuple[Path, Path]:
    """eda.py on dataset=synthetic2018 (generated under $LESION_CACHE): its out folder and the data root."""
    out = tmp_path_factory.mktemp("eda") / "out"
    run_cli("eda.py", "dataset=synthetic2018", "dataset.synthetic_n=40", *SMALL, f"out={out}")
    return out, lesion_cache / "synthetic2018-n40-s0"


def test_report_counts_are_those_of_the_splits_and_every_figure_is_written(synthetic_run):
    out, root = synthetic_run
    report = (out / "report.md").read_text()
    expected = {s: read_split("isic2018", root, s).class_counts() for s in SPLITS}
    assert class_counts(report) == expected
    total = sum(sum(c.values()) for c in expected.values())
    all_row = next(r for r in tables(section(report, "Images per class and split"))[0] if r[0] == "**all**")
    assert [int(v) for v in all_row[1:5]] == [*(sum(expected[s].values()) for s in SPLITS), total]

    figures = linked_files(report, out)
    names = {f.name for f in figures}
    assert {"class_counts.png", "image_sizes.png", "colour_per_class.png", "samples.png"} <= names
    for figure in figures:
        assert figure.read_bytes()[:8] == PNG, figure
    assert (out / ".hydra" / "config.yaml").is_file()


def test_report_sizes_and_colour_rows_cover_every_split_and_class(synthetic_run):
    out, root = synthetic_run
    report = (out / "report.md").read_text()
    header, *rows = tables(section(report, "Source image sizes"))[0]
    assert [(r[0], int(r[1])) for r in rows] == [(s, len(read_split("isic2018", root, s))) for s in SPLITS]
    table = read_split("isic2018", root, "train")
    widths = [Image.open(io.BytesIO(table.images.read_bytes(i))).size[0] for i in table.ids]
    assert rows[0][2] == f"{min(widths)}–{max(widths)} ({np.median(widths):.0f})"

    by_class, by_split = tables(section(report, "Colour per class"))[:2]
    counts = {c: sum(read_split("isic2018", root, s).class_counts()[c] for s in SPLITS) for c in table.layout.classes}
    assert [(r[0], int(r[1])) for r in by_class[1:]] == list(counts.items())
    for row in by_class[1:] + by_split[1:]:
        for cell in row[2:]:
            mean, std = (float(v) for v in cell.split(" ± "))
            assert 0 <= mean <= 255 and 0 <= std <= 128


def test_report_says_when_there_is_no_grouping_file_or_metadata(synthetic_run):
    out, _ = synthetic_run
    report = (out / "report.md").read_text()
    assert "No lesion-grouping file" in section(report, "Images per lesion")
    assert not (out / "figures" / "images_per_lesion.png").exists()
    assert section(report, "Metadata per class").strip().startswith("No metadata file")


# --- planted near-duplicates and a lesion-grouping file ------------------------------------------------------------


@pytest.fixture(scope="module")
def planted(synthetic_root, as_folders, run_cli, tmp_path_factory) -> dict:
    """A copy of the synthetic ISIC 2018 dataset (folders) with planted copies and a lesion-grouping file,
    and eda.py's report on it.

    Planted: training image A copied byte for byte into the test split; training image B re-encoded
    (JPEG quality 70) 2 levels brighter into the validation split, under another label; training
    image C copied into the training split under a new id. Lesions: training images two by two.
    """
    root = as_folders(synthetic_root("isic2018"), tmp_path_factory.mktemp("planted") / "data")
    train = read_split("isic2018", root, "train")
    a, b, c = train.ids[:3]
    columns = list(train.layout.classes)
    label = dict(zip(train.ids, (columns[k] for k in train.labels)))

    def plant(split: str, image_id: str, data: bytes, cls: str) -> None:
        folder, csv_name = FILES[split]
        (root / folder / f"{image_id}.jpg").write_bytes(data)
        with open(root / csv_name, "a") as handle:
            handle.write(one_hot_row(image_id, cls, columns))

    plant("test", "ISIC_9000001", train.images.read_bytes(a), label[a])
    brighter = np.clip(np.asarray(train.images.read(b), dtype=np.int16) + 2, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(brighter).save(buffer, format="JPEG", quality=70)
    other = next(k for k in columns if k != label[b])
    plant("val", "ISIC_9000002", buffer.getvalue(), other)
    plant("train", "ISIC_9000003", train.images.read_bytes(c), label[c])

    ids = read_split("isic2018", root, "train").ids
    lesions = {i: f"HAM_{k // 2:07d}" for k, i in enumerate(ids)}
    (root / GROUPINGS).write_text("image,lesion_id,diagnosis_confirm_type\n"
                                  + "".join(f"{i},{g},histo\n" for i, g in lesions.items()))
    out = tmp_path_factory.mktemp("planted-eda") / "out"
    run_cli("eda.py", "dataset=isic2018", f"dataset.root={root}", *SMALL, f"out={out}")
    return {"root": root, "out": out, "a": a, "b": b, "c": c, "lesions": lesions,
            "report": (out / "report.md").read_text()}


def test_planted_copies_are_exactly_the_pairs_found(planted):
    rows = duplicate_rows(planted["out"])
    found = {(r["kind"], r["split_1"], r["id_1"], r["split_2"], r["id_2"]) for r in rows}
    assert found == {("across", "train", planted["a"], "test", "ISIC_9000001"),
                     ("across", "train", planted["b"], "val", "ISIC_9000002"),
                     ("within", "train", planted["c"], "train", "ISIC_9000003")}
    distances = {r["id_2"]: int(r["distance"]) for r in rows}
    assert distances["ISIC_9000001"] == 0 and distances["ISIC_9000003"] == 0
    assert distances["ISIC_9000002"] <= 4


def test_planted_copies_are_listed_in_the_report_with_thumbnails(planted):
    report, out = planted["report"], planted["out"]
    text = section(report, "Near-duplicate images")
    assert pair_counts(report) == {"train–val": 1, "train–test": 1, "val–test": 0,
                                   "within train": 1, "within val": 0, "within test": 0}
    header, *rows = tables(text)[1]
    first_ids = sorted(re.search(r"`(\S+)`", row[2]).group(1) for row in rows)
    second_ids = sorted(re.search(r"`(\S+)`", row[3]).group(1) for row in rows)
    assert first_ids == sorted([planted["a"], planted["b"]])
    assert second_ids == ["ISIC_9000001", "ISIC_9000002"]
    labels = {re.search(r"`(\S+)`", row[3]).group(1): row[4] for row in rows}
    assert labels == {"ISIC_9000001": "same", "ISIC_9000002": "**differ**"}
    thumbnails = linked_files(text, out)
    assert len(thumbnails) == 2 and all(f.read_bytes()[:8] == PNG for f in thumbnails)


def test_images_per_lesion_come_from_the_grouping_file(planted):
    text = section(planted["report"], "Images per lesion")
    lesions = planted["lesions"]
    assert f"{len(lesions)} images of {len(set(lesions.values()))} lesions" in text
    per_lesion = tables(text)[1]
    sizes = np.bincount(np.unique(list(lesions.values()), return_counts=True)[1])
    assert {int(r[0]): int(r[1]) for r in per_lesion[1:]} == {k: int(n) for k, n in enumerate(sizes) if n}
    assert (planted["out"] / "figures" / "images_per_lesion.png").read_bytes()[:8] == PNG


# --- refusals ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("override, where", [
    ("duplicates.max_distance=-1", "duplicates.max_distance"),
    ("duplicates.max_distance=65", "duplicates.max_distance"),
    ("samples.per_class=-2", "samples.per_class"),
    ("dataset.cache_size=16", "dataset.cache_size"),
])
def test_bad_option_is_one_line_exit_2_and_out_is_not_created(run_cli, synthetic_root, tmp_path, override, where):
    out = tmp_path / "out"
    result = run_cli("eda.py", "dataset=isic2018", f"dataset.root={synthetic_root('isic2018')}", override,
                     f"out={out}", check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"lesion: error: {where}: "), result.stderr[-2000:]
    assert " — " in lines[0]
    assert not out.exists()


def test_missing_dataset_is_one_line_exit_2_and_out_is_not_created(run_cli, tmp_path):
    out = tmp_path / "out"
    result = run_cli("eda.py", "dataset=isic2018", f"dataset.root={tmp_path / 'absent'}", f"out={out}", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"lesion: error: {tmp_path / 'absent'}: ")
    assert not out.exists()


def metadata_rows(report: str) -> dict[str, dict[str, str]]:
    header, *rows = tables(section(report, "Metadata per class"))[0]
    return {row[0]: dict(zip(header, row)) for row in rows}


def expected_metadata(layout: str, root: Path) -> dict[str, dict[str, str]]:
    """Per class, the age-missing count and the sex cell the report should show, from read_metadata."""
    frames, labels = [], []
    for split in SPLITS:
        table = read_split(layout, root, split)
        frame = None if table is None else read_metadata(layout, root, split, table.ids)
        if frame is not None:
            frames.append(frame)
            labels.append([table.layout.classes[y] for y in table.labels])
    frame = pd.concat(frames).assign(label=[c for part in labels for c in part])
    out = {}
    for cls, rows in frame.groupby("label"):
        sexes = rows["sex"].fillna("missing").value_counts()
        out[cls] = {"images": str(len(rows)), "age missing": str(int(rows["age"].isna().sum())),
                    "sex": ", ".join(f"{k} {sexes[k]}" for k in ("female", "male", "missing") if k in sexes)}
    return out


def test_report_shows_the_patient_metadata_per_class(run_cli, lesion_cache, tmp_path):
    out = tmp_path / "out"
    run_cli("eda.py", "dataset=synthetic2019", "dataset.synthetic_n=40", *SMALL, f"out={out}")
    shown = metadata_rows((out / "report.md").read_text())
    expected = expected_metadata("isic2019", lesion_cache / "synthetic2019-n40-s0")
    assert {c: {k: row[k] for k in ("images", "age missing", "sex")} for c, row in shown.items() if c in expected} == expected
    assert shown["UNK"]["images"] == "0"


# --- real images ---------------------------------------------------------------------------------------------------


def test_real_uda1_images(run_cli, uda1, tmp_path):
    out = tmp_path / "out"
    run_cli("eda.py", "dataset=isic2017", f"dataset.root={uda1}", "dataset.image_size=64", f"out={out}")
    report = (out / "report.md").read_text()
    assert class_counts(report) == {s: read_split("isic2017", uda1, s).class_counts() for s in SPLITS}
    counts = pair_counts(report)
    across = [r for r in duplicate_rows(out) if r["kind"] == "across"]
    assert len(across) == counts["train–val"] + counts["train–test"] + counts["val–test"]
    assert all(f.read_bytes()[:8] == PNG for f in linked_files(report, out))
    shown = metadata_rows(report)
    assert {c: {k: shown[c][k] for k in ("images", "age missing", "sex")} for c in ("NV", "MEL")} == \
        expected_metadata("isic2017", uda1)
    print(f"\nUDA-1: {len(across)} near-duplicate pairs across splits (≤ 4 bits of 64, 82 px squares): "
          + ", ".join(f"{k} {v}" for k, v in counts.items()))


# --- pHash and pair search -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def squares(synthetic_root) -> np.ndarray:
    """The synthetic training images as 64 px squares (decoded as the cache stores them)."""
    table = read_split("isic2018", synthetic_root("isic2018"), "train")
    images = SquareImages(table, 64, None, 10**9)
    return np.stack([images[r] for r in range(len(images))])


def test_phash_of_identical_images_is_identical_and_of_other_images_far(squares):
    hashes = phash(squares)
    assert hashes.dtype == np.uint64 and hashes.shape == (len(squares),)
    assert (phash(squares.copy()) == hashes).all()
    # 50 unrelated smooth random textures: hashes about half their bits apart, none close.
    coarse = np.random.default_rng(0).integers(0, 256, (50, 9, 9, 3), dtype=np.uint8)
    textures = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)[:, :64, :64]
    hashed = phash(textures)
    apart = distance(hashed[:, None], hashed[None, :])[np.triu_indices(len(hashed), 1)]
    assert apart.min() > 8 and 26 <= np.median(apart) <= 38


def test_phash_is_the_same_one_by_one_as_in_a_batch_and_for_grey_input(squares):
    batch = phash(squares)
    assert [int(phash(s[None])[0]) for s in squares[:8]] == batch[:8].tolist()
    grey = np.asarray([np.asarray(Image.fromarray(s).convert("L"), dtype=np.float32) for s in squares[:8]])
    assert distance(phash(grey), batch[:8]).max() <= 2  # PIL rounds grey levels to integers


def test_phash_changes_little_for_a_brighter_re_encoded_or_resized_copy(squares):
    original = phash(squares)
    brighter = phash(np.clip(squares.astype(np.int16) + 2, 0, 255).astype(np.uint8))
    assert distance(brighter, original).max() <= 2

    def jpeg(image: np.ndarray) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=60)
        return np.asarray(Image.open(buffer).convert("RGB"))

    assert distance(phash(np.stack([jpeg(s) for s in squares])), original).max() <= 4
    larger = np.stack([np.asarray(Image.fromarray(s).resize((96, 96), Image.Resampling.BICUBIC)) for s in squares])
    assert distance(phash(larger), original).max() <= 4


def test_close_pairs_blockwise_finds_every_pair_of_the_full_distance_matrix():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, 300, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, 300, dtype=np.uint64)
    # Near copies: flip 0–5 random bits of 40 hashes.
    for k, source in enumerate(rng.choice(300, 40, replace=False)):
        flips = rng.choice(64, k % 6, replace=False)
        hashes[k * 7 % 300] = hashes[source] ^ np.uint64(sum(1 << int(f) for f in flips))
    full = distance(hashes[:, None], hashes[None, :])
    for max_distance in (0, 3, 5):
        i, j = np.nonzero(np.triu(full <= max_distance, 1))
        for block in (1 << 22, 1000, 301):  # one block, several, one row at a time
            pairs = close_pairs(hashes, max_distance, block_elements=block)
            assert set(zip(pairs.first.tolist(), pairs.second.tolist())) == set(zip(i.tolist(), j.tolist()))
            assert (pairs.distances == full[pairs.first, pairs.second]).all()
            assert (np.diff(pairs.distances.astype(int)) >= 0).all()
    assert len(close_pairs(hashes, 5)) > 0
    with pytest.raises(TooManyPairs):
        close_pairs(hashes, 5, max_pairs=len(close_pairs(hashes, 5)) - 1, block_elements=1000)


# --- statistics and sizes ------------------------------------------------------------------------------------------


def test_colour_statistics_of_known_images():
    flat = np.broadcast_to(np.array([10, 20, 30], dtype=np.uint8), (3, 8, 8, 3))
    halves = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    halves[:, :4] = 255
    images = np.concatenate([flat, halves])
    sums, squares = colour_sums(images)
    colour = colour_by_class(sums, squares, np.array([0, 0, 0, 1, 1]), ["flat", "halves", "none"], 64)
    assert colour["flat"].images == 3 and colour["flat"].mean == (10, 20, 30) and colour["flat"].std == (0, 0, 0)
    assert colour["halves"].mean == (127.5,) * 3 and colour["halves"].std == (127.5,) * 3
    assert colour["none"].images == 0 and all(math.isnan(v) for v in colour["none"].mean)


def test_source_sizes_are_upright_and_read_from_headers(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90°: shown as 20 wide, 40 high
    Image.new("RGB", (40, 20)).save(folder / "rotated.jpg", exif=exif)
    Image.new("RGB", (33, 17)).save(folder / "plain.png")
    archive = ImageArchive(folder, {"rotated": "rotated.jpg", "plain": "plain.png"})
    assert source_sizes(archive, ["plain", "rotated"]).tolist() == [[33, 17], [20, 40]]
    assert Image.open(folder / "rotated.jpg").size == (40, 20)  # the stored size differs


# --- benchmark ------------------------------------------------------------------------------------------------------


def test_benchmark_quick_run_prints_its_ratio_and_the_time_for_n_images(cli_env, tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "eda.py"), "--quick"], cwd=tmp_path,
                            env=cli_env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-4000:]
    ratios = re.findall(r"^ratio \S+ = (\S+)×", result.stdout, re.MULTILINE)
    assert len(ratios) == 1, result.stdout
    assert math.isfinite(float(ratios[0])) and float(ratios[0]) > 0
    timing = re.search(r"^(\d+) images: .* (\S+) s in all", result.stdout, re.MULTILINE)
    assert timing and int(timing.group(1)) > 0 and float(timing.group(2)) > 0, result.stdout


@settings(max_examples=12, deadline=None)
@given(classes=st.lists(st.text("ABCDEFGHIKLMNSVabceghilmnorstu_", min_size=2, max_size=12), min_size=1, max_size=12,
                        unique=True),
       layout=st.text("abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=4, max_size=30),
       size=st.sampled_from([32, 288, 1024]))
def test_figure_titles_lie_inside_their_figures(classes, layout, size, tmp_path_factory):
    """The colour figure (its width follows the class count) and the count figure (its title names the
    layout) keep their titles whole inside the figure, for few or many classes and long layout names."""
    drawn = []

    def keep(figure, path):
        drawn.append(figure)
        return save_figure(figure, path)

    folder = tmp_path_factory.mktemp("figures")
    colour = Colour(10, (120.0, 90.0, 80.0), (30.0, 25.0, 20.0))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(figures, "save_figure", keep)
        figures.plot_colour({name: colour for name in classes}, folder / "colour_per_class.png", size)
        figures.plot_split_counts({split: {name: 7 for name in classes} for split in SPLITS}, folder / "counts.png",
                                  f"{layout}: images per class and split")
    for figure in drawn:
        renderer = figure.canvas.get_renderer()
        page = figure.bbox
        for ax in figure.axes:
            box = ax.title.get_window_extent(renderer)
            assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1, \
                (ax.title.get_text(), box, page)
