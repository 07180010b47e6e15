"""Pre-resized image cache: every source image decoded once into a square uint8 memmap.

ISIC images reach 30 MP; decoding them every epoch starves any GPU. Each image is decoded once
(PIL ``draft`` DCT scaling for JPEGs), its short side resized to ``size`` and a centred square
cropped (:func:`square_crop`). One split's squares are stored as ``images.npy`` (N×size×size×3
uint8, read as a memmap) plus ``index.json`` in a folder named after a key of the source files
(name, size, mtime), the ids in order, the size and :data:`CACHE_VERSION`: any change gives a
new key and a rebuild, nothing else does. A build writes into a temporary folder renamed into
place when complete, so a killed build is never trusted; a lock file lets one process build
while others (DDP ranks, parallel sweep jobs) wait for it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import PIL
from PIL import Image
from tqdm import tqdm

from lesion.data.color import correct_colours
from lesion.errors import LesionError

if TYPE_CHECKING:
    from lesion.data.readers import SplitTable

log = logging.getLogger(__name__)

# Bump when the stored pixels change for the same source files (resampling, crop, decoding).
CACHE_VERSION = 1
_CHUNK = 16  # images per build task
_IMAGES_PER_WORKER = 64  # fewer images than this per extra worker: build in this process


def default_cache_dir() -> Path:
    """``$LESION_CACHE/images``, or ``~/.cache/lesion/images`` when the variable is unset."""
    return Path(os.environ.get("LESION_CACHE", "~/.cache/lesion")).expanduser() / "images"


def square_size(image_size: int, cache_size: int | None) -> int:
    """Side of the stored squares: ``cache_size``, or 9/7 × ``image_size`` (288 for 224) when ``None``.

    A cache smaller than the network input is refused (upscaling cached squares loses detail).
    """
    size = cache_size or image_size * 9 // 7
    if size < image_size:
        raise LesionError("dataset.cache_size", f"{size} px is smaller than dataset.image_size={image_size}",
                          "use a cache_size ≥ image_size (null = 9/7 × image_size, 288 for 224)")
    return size


def square_crop(image: Image.Image, size: int) -> np.ndarray:
    """Resize the short side of ``image`` to ``size`` and crop the centred square: size×size×3 uint8."""
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) / 2, (h - side) / 2
    return np.asarray(image.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side)))


def decode_square(read: Callable[[int], Image.Image], size: int, color_constancy: str | None = None) -> np.ndarray:
    """The size×size×3 uint8 square of one source image, as the cache stores it.

    The one decoding path of split images and of folder inference, so a model sees the same pixels
    either way: ``read(min_size)`` decodes the source, large JPEGs at a reduced DCT scale whose
    short side stays ≥ ``min_size`` (see :func:`lesion.data.images.decode`), then :func:`square_crop`,
    then the colour constancy (:mod:`lesion.data.color`), if any.

    Args:
        read: decodes the source image given ``min_size`` (and raises the caller's errors).
        size: side of the square.
        color_constancy: a method of :data:`lesion.data.color.METHODS`, or ``None``.
    """
    return correct_colours(square_crop(read(size), size), color_constancy)


def cache_key(table: SplitTable, size: int, color_constancy: str | None = None) -> str:
    """SHA-256 of what the cached pixels depend on: source files, ids in order, size, colour constancy, versions."""
    archive = table.images
    payload = {"version": CACHE_VERSION, "pillow": PIL.__version__, "size": size, "path": str(archive.path.resolve()),
               "ids": table.ids, "sources": archive.key_sources(table.ids)}
    if color_constancy is not None:  # keys of caches without it stay as they were
        payload["color_constancy"] = color_constancy
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


class SquareImages:
    """The square images of one split, by row of its table: from the cache once built, else decoded.

    Both ways give identical pixels, so the cache only changes speed. Picklable for DataLoader
    workers: each process opens the memmap on first use.

    Args:
        table: the split.
        size: side of the stored squares.
        cache_dir: folder of the caches (``None``: no cache, decode every time).
        max_pixels: larger source images are refused (see :func:`lesion.data.images.decode`).
        color_constancy: applied to every square (see :func:`decode_square`), or ``None``.
    """

    def __init__(self, table: SplitTable, size: int, cache_dir: Path | None, max_pixels: int,
                 color_constancy: str | None = None):
        self.table, self.size, self.max_pixels = table, size, max_pixels
        self.color_constancy = color_constancy
        self.cache_dir = cache_dir
        self.path: Path | None = None  # the cache folder, once built or found valid
        self._array: np.ndarray | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}

    def __len__(self) -> int:
        return len(self.table)

    def decode(self, row: int) -> np.ndarray:
        """Square of ``row`` decoded from the source file."""
        image_id = self.table.ids[row]
        return decode_square(lambda min_size: self.table.images.read(image_id, min_size, self.max_pixels), self.size,
                             self.color_constancy)

    def __getitem__(self, row: int) -> np.ndarray:
        if self.path is None:
            return self.decode(row)
        if self._array is None:
            self._array = np.load(self.path / "images.npy", mmap_mode="r")
        return np.array(self._array[row])

    def build(self, workers: int | None = None) -> None:
        """Use the valid cache of this split, building it first when missing, stale or damaged.

        Args:
            workers: build processes (``None``: one per core, fewer for small splits).
        """
        if self.cache_dir is None or self.path is not None:
            return
        key = cache_key(self.table, self.size, self.color_constancy)
        folder = self.cache_dir / f"{self.table.layout.name}-{self.table.split}-{self.size}px-{key[:20]}"
        if _check(folder, key, len(self.table), self.size) is not None:
            try:
                # One builder at a time (DDP ranks, parallel sweep jobs): the others wait, then reuse its cache.
                with _build_lock(folder):
                    problem = _check(folder, key, len(self.table), self.size)
                    if problem is not None:
                        if folder.exists():
                            log.warning("image cache %s is unusable (%s); rebuilding it", folder, problem)
                            shutil.rmtree(folder)
                        self._write(folder, key, workers)
            except OSError as error:
                gigabytes = len(self.table) * self.size**2 * 3 / 1e9
                raise LesionError("dataset.cache_dir", f"cannot write the image cache in {self.cache_dir} ({error})",
                                  f"free {gigabytes:.1f} GB there, set dataset.cache_dir to a writable folder, "
                                  "or use dataset.cache=false") from None
        self.path = folder

    def _write(self, folder: Path, key: str, workers: int | None) -> None:
        """Build the cache in a temporary sibling of ``folder`` and rename it into place (under the lock)."""
        for abandoned in folder.parent.glob(f"{folder.name}.tmp-*"):  # a killed build's: its lock was released
            shutil.rmtree(abandoned, ignore_errors=True)
        temp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
        temp.mkdir(parents=True)
        try:
            array = temp / "images.npy"
            np.lib.format.open_memmap(array, mode="w+", dtype=np.uint8,
                                      shape=(len(self.table), self.size, self.size, 3)).flush()
            if hasattr(os, "posix_fallocate"):  # a full disk fails here, not as SIGBUS while writing the memmap
                with open(array, "r+b") as handle:
                    os.posix_fallocate(handle.fileno(), 0, array.stat().st_size)
            self._fill(array, workers)
            index = {"version": CACHE_VERSION, "key": key, "size": self.size, "source": str(self.table.images.path),
                     "ids": self.table.ids}
            (temp / "index.json").write_text(json.dumps(index))
            temp.rename(folder)
        finally:
            shutil.rmtree(temp, ignore_errors=True)
        log.info("image cache %s: %d images at %d px", folder, len(self.table), self.size)

    def _fill(self, array_path: Path, workers: int | None) -> None:
        chunks = [range(start, min(start + _CHUNK, len(self.table))) for start in range(0, len(self.table), _CHUNK)]
        progress = tqdm(total=len(self.table), desc=f"caching {self.table.split} images", unit="img")
        if workers is None:
            workers = min(available_cores(), len(self.table) // _IMAGES_PER_WORKER)
        with progress:
            if workers <= 1:
                for rows in chunks:
                    progress.update(_fill_rows(self, array_path, rows))
                return
            # Workers only decode with PIL/numpy, so forking (as DataLoader does on Linux) is safe and
            # avoids re-importing the entry script (torch, Lightning) in every worker.
            context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                                     initargs=(self, array_path)) as pool:
                for done in pool.map(_fill_worker_rows, chunks):
                    progress.update(done)


def _fill_rows(images: SquareImages, array_path: Path, rows: range) -> int:
    """Decode ``rows`` of ``images`` into the cache array being built."""
    array = np.load(array_path, mmap_mode="r+")
    for row in rows:
        array[row] = images.decode(row)
    array.flush()
    return len(rows)


_worker_job: tuple[SquareImages, Path] | None = None  # set once per build worker process


def _start_worker(images: SquareImages, array_path: Path) -> None:
    global _worker_job
    _worker_job = (images, array_path)


def _fill_worker_rows(rows: range) -> int:
    return _fill_rows(*_worker_job, rows)


def _check(folder: Path, key: str, n: int, size: int) -> str | None:
    """Why the cache ``folder`` cannot be used (``None`` when it can)."""
    if not folder.is_dir():
        return "missing"
    try:
        index = json.loads((folder / "index.json").read_text())
        array = np.load(folder / "images.npy", mmap_mode="r")
    except (OSError, ValueError) as error:
        return f"{type(error).__name__}: {error}"
    if index.get("key") != key or len(index.get("ids", ())) != n:
        return "its index does not match the source files"
    if array.shape != (n, size, size, 3) or array.dtype != np.uint8:
        return f"images.npy has shape {array.shape} {array.dtype}, expected {(n, size, size, 3)} uint8"
    return None


@contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    """Exclusive lock on ``<folder>.lock`` for building ``folder`` (released on exit, even when killed)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(f"{folder.name}.lock"), "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process to finish the image cache %s", folder)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def available_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

