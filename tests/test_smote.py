"""SMOTE-Tomek on embeddings: exact mode equals imblearn, counts, synthetic rows on same-class
segments in full space (both modes), k capping, excluded singleton classes, determinism."""

from __future__ import annotations

import logging
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from imblearn.combine import SMOTETomek
from imblearn.over_sampling import SMOTE
from sklearn.neighbors import NearestNeighbors

from lesion.balance.smote import ProjectedNeighbors, _drop_rows, oversample, smote_tomek
from lesion.errors import LesionError

MODES = {"exact": None, "reduced": 8}


def clustered(counts: list[int], dim: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping classes on a 4-d plane plus noise in ``dim`` dims (so Tomek links exist and an
    8-d projection loses information): float32 features and int labels."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(counts)), counts)
    latent = 0.5 * rng.normal(size=(len(counts), 4))[labels] + rng.normal(size=(len(labels), 4))
    features = latent @ rng.normal(size=(4, dim)) + 0.3 * rng.normal(size=(len(labels), dim))
    return features.astype(np.float32), labels


def test_exact_mode_equals_imblearn_smote_tomek():
    x, y = clustered([180, 70, 40, 10])
    got_x, got_y, report = smote_tomek(x, y, k_neighbors=4, seed=7, search_dims=None)
    ref_x, ref_y = SMOTETomek(smote=SMOTE(k_neighbors=4, random_state=7)).fit_resample(x, y)
    assert report["mode"] == "exact"
    removed = sum(report["counts_oversampled"].values()) - sum(report["counts_after"].values())
    assert removed > 0, "the data must contain Tomek links to test their removal"
    np.testing.assert_array_equal(got_x, ref_x)
    np.testing.assert_array_equal(got_y, ref_y)
    assert got_x.dtype == np.float32 and got_y.dtype == np.int64
    # a projection to as many dimensions as the data has is no reduction: same exact result
    same_x, _, report = smote_tomek(x, y, k_neighbors=4, seed=7, search_dims=64)
    assert report["mode"] == "exact"
    np.testing.assert_array_equal(same_x, ref_x)


@pytest.mark.parametrize("mode", MODES)
def test_auto_fills_every_class_to_the_majority_then_tomek_only_removes(mode):
    x, y = clustered([180, 70, 40, 10])
    out_x, out_y, report = smote_tomek(x, y, search_dims=MODES[mode])
    assert report["mode"] == mode
    assert report["counts_before"] == {0: 180, 1: 70, 2: 40, 3: 10}
    assert report["counts_oversampled"] == {0: 180, 1: 180, 2: 180, 3: 180}
    assert all(report["counts_after"][c] <= n for c, n in report["counts_oversampled"].items())
    assert report["counts_after"] == dict(zip(*map(np.ndarray.tolist, np.unique(out_y, return_counts=True))))
    assert len(out_x) == len(out_y) < 4 * 180
    assert report["k_neighbors"] == 5 and report["excluded_classes"] == [] and report["seconds"] >= 0


@pytest.mark.parametrize("mode", MODES)
def test_every_synthetic_row_lies_on_a_segment_between_two_real_same_class_rows(mode):
    x, y = clustered([120, 40, 25])
    out_x, out_y, _ = smote_tomek(x, y, k_neighbors=3, search_dims=MODES[mode])
    original = {row.tobytes() for row in x}
    new = np.array([row.tobytes() not in original for row in out_x])
    assert new.sum() > 150
    x64 = x.astype(np.float64)
    for row, cls in zip(out_x[new].astype(np.float64), out_y[new]):
        members = x64[y == cls]
        # for every start x_i and end x_j: the best λ on the line x_i + λ (x_j - x_i), and the miss
        spans = members[None, :, :] - members[:, None, :]
        offsets = row - members
        lengths = np.einsum("ijd,ijd->ij", spans, spans)
        lam = np.einsum("id,ijd->ij", offsets, spans) / np.where(lengths > 0, lengths, np.inf)
        miss = np.abs(offsets[:, None, :] - lam[..., None] * spans).max(axis=2)
        i, j = np.unravel_index(np.argmin(miss), miss.shape)
        assert miss[i, j] < 1e-5 and -1e-6 <= lam[i, j] <= 1 + 1e-6


def test_k_is_capped_by_the_smallest_oversampled_class(caplog):
    x, y = clustered([60, 20, 3])
    with caplog.at_level(logging.WARNING, logger="lesion.balance.smote"):
        _, _, report = smote_tomek(x, y, k_neighbors=5)
    assert report["k_neighbors"] == 2
    assert "capped from 5 to 2" in caplog.text


def test_a_single_sample_class_is_excluded_and_passes_through(caplog):
    x, y = clustered([60, 20, 1])
    with caplog.at_level(logging.WARNING, logger="lesion.balance.smote"):
        out_x, out_y, report = smote_tomek(x, y)
    assert report["excluded_classes"] == [2]
    assert "class 2 has 1 sample" in caplog.text
    assert report["counts_oversampled"] == {0: 60, 1: 60, 2: 1}
    np.testing.assert_array_equal(out_x[out_y == 2], x[y == 2])


@pytest.mark.parametrize("counts", [[50, 1], [50]])
def test_fewer_than_two_usable_classes_is_a_lesion_error(counts):
    x, y = clustered(counts)
    with pytest.raises(LesionError, match="balance.smote_tomek: only 1 class"):
        smote_tomek(x, y)


@pytest.mark.parametrize("mode", MODES)
def test_deterministic_per_seed(mode):
    x, y = clustered([100, 30, 12])
    first, second, other = (smote_tomek(x, y, seed=s, search_dims=MODES[mode]) for s in (3, 3, 4))
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert first[0].shape != other[0].shape or not np.array_equal(first[0], other[0])


@settings(max_examples=25, deadline=None)
@given(counts=st.lists(st.integers(2, 40), min_size=2, max_size=4), k=st.integers(1, 5), seed=st.integers(0, 2**31),
       projected=st.booleans(), extra=st.integers(0, 30), dim=st.sampled_from([24, 4096]))
def test_oversample_gives_the_rows_of_imblearn_smote(counts, k, seed, projected, extra, dim):
    x, y = clustered(counts, dim=dim, seed=seed % 100)  # 4096-d: chunks of 64 synthetic rows
    k = min(k, min(counts) - 1)
    targets = {c: max(counts) + extra * (c % 2) for c in range(len(counts))}
    components = np.random.default_rng(seed).normal(size=(6, dim)).astype(np.float32)
    neighbours = ProjectedNeighbors(k + 1, components) if projected else NearestNeighbors(n_neighbors=k + 1)
    ref_x, ref_y = SMOTE(sampling_strategy=targets, k_neighbors=neighbours, random_state=seed).fit_resample(x, y)
    got_x, got_y = oversample(x, y, {c: n - counts[c] for c, n in targets.items()}, neighbours, seed)
    np.testing.assert_array_equal(got_x, ref_x)
    np.testing.assert_array_equal(got_y, ref_y)
    assert got_x.dtype == np.float32 and got_y.dtype == np.int64


@settings(max_examples=40, deadline=None)
@given(drop=st.lists(st.booleans(), min_size=1, max_size=300), dim=st.sampled_from([1, 3, 2**12, 2**14]))
def test_dropping_rows_in_place_keeps_the_other_rows_in_order(drop, dim):
    drop = np.array(drop)  # wide rows: chunks of 64 and 16 rows, so kept rows cross chunk borders
    x = np.arange(len(drop) * dim, dtype=np.float32).reshape(len(drop), dim)
    expected = x[~drop].copy()
    np.testing.assert_array_equal(_drop_rows(x, drop), expected)


@pytest.mark.parametrize("mode", MODES)
def test_memory_is_the_output_plus_a_small_part_of_the_input(mode):
    x, y = clustered([3600, 400], dim=1024)
    tracemalloc.start()
    try:
        out_x, _, report = smote_tomek(x, y, search_dims=MODES[mode])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report["counts_oversampled"] == {0: 3600, 1: 3600}
    held, given, chunks = out_x.nbytes, x.nbytes, 8 * 2**20  # the output, the input, temporaries of fixed size
    assert peak < held + 0.25 * given + chunks, f"peak {peak >> 20} MiB for {given >> 20} MiB in, {held >> 20} MiB out"
