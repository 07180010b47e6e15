"""What keeps the stages before training within n·log n at ISIC 2024 scale (401,059 images)."""

from __future__ import annotations

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lesion.configs import config_dir
from lesion.data.cache import square_size
from lesion.data.synthetic import SQUARE_SIDES
from lesion.eda import hashing
from lesion.eda.hashing import TooManyPairs, close_pairs, distance, index_bands


@st.composite
def clustered_hashes(draw) -> np.ndarray:
    """Up to 150 hashes: a few seeds, each copied with a few bits flipped, so that distances 0–16 all occur."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(0, 150))
    seeds = rng.integers(0, 2**64, size=max(1, draw(st.integers(1, 20))), dtype=np.uint64)
    flips = rng.random((n, 64)) < draw(st.floats(0, 0.15))
    noise = np.packbits(flips, axis=1).view(">u8").ravel().astype(np.uint64)
    return seeds[rng.integers(0, len(seeds), n)] ^ noise


def _feasible_bands(max_distance: int) -> list[int]:
    """Every band count whose lookups stay few enough for a test (the full comparison, 0, included)."""
    return [0] + [b for b in range(1, max_distance + 2)
                  if sum(hashing._patterns(w, max_distance // b) for w in hashing._widths(b)) <= 3000]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hashes=clustered_hashes(), max_distance=st.integers(0, 16), data=st.data())
def test_indexed_pair_search_finds_exactly_the_pairs_of_the_full_distance_matrix(hashes, max_distance, data):
    bands = data.draw(st.sampled_from([None, *_feasible_bands(max_distance)]), label="bands")
    block = data.draw(st.integers(1, 5000), label="block_elements")
    full = distance(hashes[:, None], hashes[None, :])
    first, second = np.nonzero(np.triu(full <= max_distance, 1))
    expected = np.lexsort((second, first, full[first, second]))  # by distance, then rows

    pairs = close_pairs(hashes, max_distance, max_pairs=10**9, block_elements=block, bands=bands)

    assert pairs.first.tolist() == first[expected].tolist()
    assert pairs.second.tolist() == second[expected].tolist()
    assert pairs.distances.tolist() == full[first, second][expected].tolist()


def test_pair_search_compares_a_small_share_of_all_pairs(monkeypatch):
    rng = np.random.default_rng(0)
    n = 20_000
    hashes = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    hashes[1::50] = hashes[::50] ^ np.uint64(0b1011)  # 400 pairs 3 bits apart
    compared = []
    measured = hashing.distance

    def counting(a, b):
        result = measured(a, b)
        compared.append(result.size)
        return result

    monkeypatch.setattr(hashing, "distance", counting)
    pairs = close_pairs(hashes, 4)
    assert len(pairs) == 400 and set(pairs.distances.tolist()) == {3}
    assert sum(compared) < n * (n - 1) / 2 / 100


def test_pair_search_is_indexed_for_the_eda_default_at_every_size_up_to_isic2024():
    for n in (1_000, 10_000, 100_000, 401_059, 4_000_000):
        assert index_bands(n, 4) > 0


def test_too_many_pairs_is_refused_by_the_indexed_search_too():
    hashes = np.repeat(np.arange(30, dtype=np.uint64), 10)  # 30 groups of 10 equal hashes: 1,350 pairs
    assert len(close_pairs(hashes, 0, bands=1)) == 30 * 45
    with pytest.raises(TooManyPairs):
        close_pairs(hashes, 0, max_pairs=1000, bands=1)


@pytest.mark.parametrize("dataset", ["isic2024", "synthetic2024"])
def test_isic2024_crops_are_cached_at_their_own_resolution(dataset):
    with initialize_config_dir(str(config_dir()), version_base=None):
        config = compose("train", overrides=[f"dataset={dataset}"]).dataset
    side = square_size(config.image_size, config.cache_size)
    # Not above the largest synthetic crop (150 px; real ones: median 131 px): nothing stored upsampled.
    assert config.image_size <= side <= SQUARE_SIDES["isic2024"][1]
