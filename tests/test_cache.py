"""Image cache: same pixels as decoding, rebuilt only on a key change, damage detected and repaired."""

from __future__ import annotations

import json
import os
import time
import shutil
from pathlib import Path

import numpy as np
import pytest

from lesion.data import cache as cache_module
from lesion.data.cache import SquareImages, square_crop
from lesion.data.datamodule import IsicDataModule
from lesion.data.readers import read_split
from lesion.errors import LesionError

SIZE = 40


@pytest.fixture
def builds(monkeypatch) -> list[Path]:
    """Folders of every cache built (filled) from now on."""
    made = []
    fill = SquareImages._fill

    def counting_fill(self, array_path, workers):
        made.append(array_path)
        fill(self, array_path, workers)

    monkeypatch.setattr(SquareImages, "_fill", counting_fill)
    return made


def squares(table, cache_dir, size=SIZE) -> SquareImages:
    images = SquareImages(table, size, cache_dir, max_pixels=10**9)
    images.build()
    return images


def decoded(table, size=SIZE) -> np.ndarray:
    uncached = SquareImages(table, size, None, max_pixels=10**9)
    return np.stack([uncached[row] for row in range(len(table))])


def test_cached_pixels_equal_decoded_pixels_in_process_and_with_worker_processes(synthetic_root, tmp_path, monkeypatch):
    table = read_split("isic2018", synthetic_root("isic2018"), "train")
    expected = decoded(table)
    assert expected.shape == (len(table), SIZE, SIZE, 3) and expected.dtype == np.uint8
    in_process = squares(table, tmp_path / "a")
    monkeypatch.setattr(cache_module, "_IMAGES_PER_WORKER", 8)  # 60 images → 2 build worker processes
    with_workers = squares(table, tmp_path / "b")
    for images in (in_process, with_workers):
        assert np.array_equal(np.stack([images[row] for row in range(len(table))]), expected)
        assert np.load(images.path / "images.npy", mmap_mode="r").shape == expected.shape
    assert json.loads((with_workers.path / "index.json").read_text())["ids"] == table.ids


def test_real_full_resolution_jpegs_cache_to_the_decoded_pixels(uda1, tmp_path):
    table = read_split("isic2017", uda1, "val")
    images = squares(table, tmp_path, size=288)
    rows = range(0, len(table), 7)
    assert all(np.array_equal(images[row], images.decode(row)) for row in rows)
    # Draft decoding at the cache size gives (nearly) the pixels of a full decode, resized.
    full = np.stack([square_crop(table.images.read(table.ids[r]), 288) for r in rows]).astype(float)
    assert np.abs(np.stack([images[r] for r in rows]) - full).mean() < 3.0


def test_cache_is_reused_and_rebuilt_only_when_a_source_file_changes(synthetic_root, as_folders, tmp_path, builds):
    root = as_folders(synthetic_root("isic2018"), tmp_path / "data")
    table = read_split("isic2018", root, "train")
    first = squares(table, tmp_path / "cache")
    again = squares(read_split("isic2018", root, "train"), tmp_path / "cache")
    assert again.path == first.path and len(builds) == 1

    member = table.images.path / table.images.members[table.ids[5]]
    os.utime(member, ns=(member.stat().st_atime_ns, member.stat().st_mtime_ns + 10**9))
    changed = squares(read_split("isic2018", root, "train"), tmp_path / "cache")
    assert changed.path != first.path and len(builds) == 2

    other_size = squares(read_split("isic2018", root, "train"), tmp_path / "cache", size=SIZE + 8)
    assert other_size.path not in (first.path, changed.path) and len(builds) == 3


def test_a_touched_zip_changes_the_key(synthetic_root, tmp_path, builds):
    root = tmp_path / "data"
    shutil.copytree(synthetic_root("isic2018"), root)
    first = squares(read_split("isic2018", root, "val"), tmp_path / "cache")
    archive = first.table.images.path
    os.utime(archive, ns=(archive.stat().st_atime_ns, archive.stat().st_mtime_ns + 10**9))
    assert squares(read_split("isic2018", root, "val"), tmp_path / "cache").path != first.path
    assert len(builds) == 2


@pytest.mark.parametrize("damage", ["truncated array", "garbled index", "index of other files", "missing array"])
def test_damaged_cache_is_detected_and_rebuilt(damage, synthetic_root, tmp_path, builds, caplog):
    table = read_split("isic2018", synthetic_root("isic2018"), "val")
    folder = squares(table, tmp_path).path
    array, index = folder / "images.npy", folder / "index.json"
    if damage == "truncated array":
        array.write_bytes(array.read_bytes()[: array.stat().st_size // 2])
    elif damage == "garbled index":
        index.write_text("{not json")
    elif damage == "index of other files":
        index.write_text(json.dumps({**json.loads(index.read_text()), "key": "0" * 64}))
    else:
        array.unlink()
    rebuilt = squares(table, tmp_path)
    assert rebuilt.path == folder and len(builds) == 2
    assert "unusable" in caplog.text and "rebuilding" in caplog.text
    assert np.array_equal(np.stack([rebuilt[r] for r in range(len(table))]), decoded(table))


def test_a_failed_build_leaves_nothing_and_an_abandoned_one_is_cleared(synthetic_root, as_folders, tmp_path, builds):
    root = as_folders(synthetic_root("isic2018"), tmp_path / "data")
    table = read_split("isic2018", root, "val")
    (table.images.path / table.images.members[table.ids[-1]]).write_bytes(b"not an image")
    with pytest.raises(LesionError, match="cannot be decoded as an image"):
        squares(table, tmp_path / "cache")
    assert all(p.suffix == ".lock" for p in (tmp_path / "cache").iterdir())  # no array, no index

    table = read_split("isic2018", synthetic_root("isic2018"), "val")
    key = cache_module.cache_key(table, SIZE)
    abandoned = tmp_path / "cache" / f"isic2018-val-{SIZE}px-{key[:20]}.tmp-999999999"  # a killed build's
    abandoned.mkdir()
    images = squares(table, tmp_path / "cache")
    assert [p for p in (tmp_path / "cache").iterdir() if p.is_dir()] == [images.path]  # the abandoned one is gone


def test_datamodule_batches_are_identical_with_and_without_the_cache(synthetic_root, tmp_path):
    def first_batch(cache: bool):
        dm = IsicDataModule("isic2018", str(synthetic_root("isic2018")), image_size=32, batch_size=8,
                            num_workers=0, cache=cache, cache_dir=str(tmp_path))
        dm.setup("fit")
        return next(iter(dm.val_dataloader()))[0]

    uncached = first_batch(False)
    assert list(tmp_path.iterdir()) == []
    cached = first_batch(True)
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 1
    assert cached.shape == (8, 3, 32, 32) and bool((cached == uncached).all())


def test_cache_smaller_than_the_input_is_refused(synthetic_root):
    with pytest.raises(LesionError) as error:
        IsicDataModule("isic2018", str(synthetic_root("isic2018")), image_size=64, cache_size=48)
    assert str(error.value) == ("dataset.cache_size: 48 px is smaller than dataset.image_size=64 — use a cache_size ≥ "
                                "image_size (null = 9/7 × image_size, 288 for 224)")


def test_default_cache_size_is_nine_sevenths_of_the_input(synthetic_root):
    dm = IsicDataModule("isic2018", str(synthetic_root("isic2018")), image_size=224, cache=False)
    assert dm.cache_size == 288 and dm.cache_dir is None


WAIT_FOR_CACHE = """
import sys
from pathlib import Path
from lesion.data.cache import SquareImages
from lesion.data.readers import read_split

images = SquareImages(read_split("isic2018", Path(sys.argv[1]), "val"), int(sys.argv[3]), Path(sys.argv[2]), 10**9)
print("building", flush=True)
images.build()
print(images.path)
"""


def test_a_second_process_waits_for_the_builder_and_reuses_its_cache(synthetic_root, tmp_path):
    import subprocess
    import sys

    table = read_split("isic2018", synthetic_root("isic2018"), "val")
    key = cache_module.cache_key(table, SIZE)
    folder = tmp_path / f"isic2018-val-{SIZE}px-{key[:20]}"
    with cache_module._build_lock(folder):  # this process is "building"
        waiting = subprocess.Popen([sys.executable, "-c", WAIT_FOR_CACHE, str(synthetic_root("isic2018")),
                                    str(tmp_path), str(SIZE)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        assert waiting.stdout.readline().strip() == "building"  # imports done, build() called
        time.sleep(2)
        assert waiting.poll() is None  # blocked on the lock
        SquareImages(table, SIZE, tmp_path, 10**9)._write(folder, key, workers=1)
    out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err
    assert out.strip() == str(folder) and "caching" not in err  # reused, not rebuilt


def test_an_unwritable_cache_folder_is_one_clear_error(synthetic_root, tmp_path):
    table = read_split("isic2018", synthetic_root("isic2018"), "val")
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(LesionError) as error:
        squares(table, tmp_path / "file" / "cache")
    assert str(error.value).startswith(f"dataset.cache_dir: cannot write the image cache in {tmp_path / 'file' / 'cache'}")
    assert str(error.value).endswith("set dataset.cache_dir to a writable folder, or use dataset.cache=false")
