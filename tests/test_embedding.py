"""Embedding cache: keyed by the pixels' sources and everything that shapes them, reused otherwise."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from lesion.balance import embedding
from lesion.data.cache import SquareImages
from lesion.data.datamodule import LesionDataset
from lesion.data.readers import read_split
from lesion.data.synthetic import write_synthetic
from lesion.data.transforms import EvalPreset, TrainPreset
from lesion.balance.embedding import cached_embed
from lesion.models.registry import baseline_net

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def net():
    return baseline_net(num_classes=7, taxonomy=[[k] for k in range(7)], backbone="resnet18", weights="none").eval()


def synthetic(root: Path, seed: int) -> Path:
    return write_synthetic("isic2018", root, n=21, seed=seed, image_size=(48, 40))


def dataset(root: Path, image_size: int = 32, square: int = 40, preset=EvalPreset, mean=MEAN, rows=None,
            image_cache: Path | None = None, seed: int = 0) -> LesionDataset:
    """The validation split of ``root`` as freshly read (a new process would see the same)."""
    images = SquareImages(read_split("isic2018", root, "val"), square, image_cache, max_pixels=10**9)
    transform = preset(image_size, mean, STD)
    transform.set_random_seed(seed)
    return LesionDataset(images, transform, rows)


@pytest.fixture
def computed(monkeypatch) -> list[int]:
    """Sizes of the datasets actually embedded (not read from the cache) from now on."""
    sizes = []
    real = embedding.embed

    def counting(net, data, *args, **kwargs):
        sizes.append(len(data))
        return real(net, data, *args, **kwargs)

    monkeypatch.setattr(embedding, "embed", counting)
    return sizes


def embed_cached(net, data: LesionDataset, cache_dir: Path, seed: int = 0) -> np.ndarray:
    avg, mx = cached_embed(net, data, cache_dir=cache_dir, batch_size=4, num_workers=0, tag="val", seed=seed)
    return np.concatenate([avg, mx], axis=1)


@pytest.mark.parametrize("how", ["another synthetic seed elsewhere", "rewritten in place"])
def test_same_ids_other_pixels_give_other_embeddings(net, tmp_path, computed, how):
    first_root = synthetic(tmp_path / "a", seed=0)
    first = dataset(first_root)
    first_embedding = embed_cached(net, first, tmp_path / "embeddings")
    if how == "rewritten in place":
        shutil.rmtree(first_root)
        synthetic(tmp_path / "b", seed=1).rename(first_root)
        second_root = first_root
    else:
        second_root = synthetic(tmp_path / "b", seed=1)
    second = dataset(second_root)
    assert second.ids == first.ids
    assert not np.array_equal(second.images[0], first.images[0])

    second_embedding = embed_cached(net, second, tmp_path / "embeddings")
    assert computed == [len(first), len(second)]
    assert not np.allclose(second_embedding, first_embedding)
    fresh = np.concatenate(embedding.embed(net, second, batch_size=4, num_workers=0), axis=1)
    np.testing.assert_allclose(second_embedding, fresh, rtol=1e-5, atol=1e-6)


def test_same_data_twice_is_read_from_the_cache(net, tmp_path, computed):
    """Also when the second dataset reads its squares from the image cache instead of decoding them."""
    root = synthetic(tmp_path / "data", seed=0)
    first = embed_cached(net, dataset(root), tmp_path / "embeddings")
    again = embed_cached(net, dataset(root, image_cache=tmp_path / "images"), tmp_path / "embeddings")
    assert computed == [7]
    np.testing.assert_array_equal(again, first)
    assert len(list((tmp_path / "embeddings").glob("*.npz"))) == 1


CHANGES = {
    "image size": {"image_size": 24},
    "square (cache) size": {"square": 48},
    "normalisation": {"mean": (0.5, 0.5, 0.5)},
    "augmentation": {"preset": TrainPreset},
    "rows (shard)": {"rows": np.arange(0, 7, 2)},
}


@pytest.mark.parametrize("change", CHANGES)
def test_each_input_of_the_pixels_has_its_own_cache_entry(net, tmp_path, computed, change):
    root = synthetic(tmp_path / "data", seed=0)
    base = embed_cached(net, dataset(root), tmp_path / "embeddings")
    other = dataset(root, **CHANGES[change])
    changed = embed_cached(net, other, tmp_path / "embeddings")
    assert computed == [7, len(other)]
    assert len(list((tmp_path / "embeddings").glob("*.npz"))) == 2
    assert changed.shape != base.shape or not np.allclose(changed, base)


def test_augmentation_seed_has_its_own_cache_entry(net, tmp_path, computed):
    root = synthetic(tmp_path / "data", seed=0)
    seed_1 = embed_cached(net, dataset(root, preset=TrainPreset, seed=1), tmp_path / "embeddings", seed=1)
    seed_2 = embed_cached(net, dataset(root, preset=TrainPreset, seed=2), tmp_path / "embeddings", seed=2)
    again = embed_cached(net, dataset(root, preset=TrainPreset, seed=1), tmp_path / "embeddings", seed=1)
    assert computed == [7, 7]
    assert not np.allclose(seed_1, seed_2)
    np.testing.assert_array_equal(again, seed_1)


def test_augmented_embeddings_depend_on_the_seed_not_on_the_loader(net, tmp_path):
    """The cache key leaves out batch size and workers, so the augmentations must not depend on them."""
    root = synthetic(tmp_path / "data", seed=0)
    in_process = embedding.embed(net, dataset(root, preset=TrainPreset), batch_size=2, num_workers=0, seed=3)
    workers = embedding.embed(net, dataset(root, preset=TrainPreset, seed=99), batch_size=3, num_workers=2, seed=3)
    for a, b in zip(in_process, workers):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
