"""Histogram math on synthetic data: fio's binning, interpolation, merging, coarsening."""

from __future__ import annotations

import numpy as np
import pytest

from collector import histogram as h


def test_bins_round_trip_fio_values() -> None:
    edges = h.bin_edges()
    assert len(edges) == h.PLAT_NR + 1
    lo = edges[:-1].astype(np.int64)
    hi = edges[1:].astype(np.int64)
    idx = np.arange(h.PLAT_NR)
    np.testing.assert_array_equal(h.value_to_bin(lo), idx)
    np.testing.assert_array_equal(h.value_to_bin(hi[:-1] - 1), idx[:-1])
    np.testing.assert_array_equal(h.value_to_bin(h.fio_bin_values()), idx)
    # fio reports the exact value below 128 ns and the bin midpoint above (stat.c).
    assert h.fio_bin_values()[127] == 127
    assert h.fio_bin_values()[h.value_to_bin(np.array([24704]))[0]] == 24704
    assert h.value_to_bin(np.array([10**15]))[0] == h.PLAT_NR - 1


def test_percentile_interpolates_inside_the_bin() -> None:
    counts = np.zeros(h.PLAT_NR, dtype=np.int64)
    b = int(h.value_to_bin(np.array([100_000]))[0])
    counts[b] = 4
    lo, hi = h.bin_edges()[b], h.bin_edges()[b + 1]
    p = h.percentiles(counts, [0, 25, 50, 100])
    np.testing.assert_allclose(p, [lo, lo + (hi - lo) / 4, lo + (hi - lo) / 2, hi])
    # fio picks the same bin and reports its midpoint.
    assert h.fio_percentiles(counts, [50])[0] == (lo + hi) / 2


def test_percentiles_of_many_rows_and_empty_rows() -> None:
    rng = np.random.default_rng(1)
    rows = [h.histogram_of(rng.lognormal(11, 0.5, 5000).astype(np.int64)) for _ in range(3)]
    counts = np.stack([rows[0], np.zeros(h.PLAT_NR, np.int64), rows[1], rows[2]])
    p = h.percentiles(counts, [50, 99])
    assert np.isnan(p[1]).all()
    for i, r in zip((0, 2, 3), rows, strict=True):
        np.testing.assert_array_equal(p[i], h.percentiles(r, [50, 99]))


def test_percentiles_agree_with_raw_samples_within_a_bin() -> None:
    rng = np.random.default_rng(2)
    raw = rng.lognormal(12, 0.7, 200_000).astype(np.int64)
    ours = h.percentiles(h.histogram_of(raw), [50, 90, 99, 99.9])
    np.testing.assert_allclose(ours, np.percentile(raw, [50, 90, 99, 99.9]), rtol=1 / 64)


def test_merge_is_adding_counts_never_averaging_percentiles() -> None:
    rng = np.random.default_rng(3)
    fast = rng.lognormal(10, 0.2, 9000).astype(np.int64)
    slow = rng.lognormal(14, 0.2, 1000).astype(np.int64)
    keys, merged = h.group_sum(
        np.array([7, 3, 7]),
        np.stack([h.histogram_of(fast), h.histogram_of(slow), h.histogram_of(slow)]),
    )
    assert keys.tolist() == [3, 7]
    np.testing.assert_array_equal(merged[1], h.histogram_of(np.concatenate([fast, slow])))
    both = np.concatenate([fast, slow, slow])
    total = h.percentiles(merged.sum(axis=0), [50])[0]
    assert total == pytest.approx(np.percentile(both, 50), rel=1 / 64)
    averaged = h.percentiles(merged, [50]).mean()
    assert averaged > 10 * total  # averaging per-key percentiles is badly wrong


@pytest.mark.parametrize("coarseness", [0, 1, 2])
def test_coarseness(coarseness: int) -> None:
    rng = np.random.default_rng(4)
    fine = h.histogram_of(rng.lognormal(11, 1.0, 50_000).astype(np.int64))
    coarse = h.coarsen(fine, coarseness)
    assert coarse.shape == (h.PLAT_NR >> coarseness,)
    assert h.coarseness_for(len(coarse)) == coarseness
    edges = h.bin_edges(coarseness)
    assert coarse.sum() == fine.sum()
    pf = h.percentiles(fine, [50, 99])
    pc = h.percentiles(coarse, [50, 99])
    # Both land in the same coarse bin.
    widths = np.diff(edges)[np.searchsorted(edges, pc, side="right") - 1]
    assert (np.abs(pf - pc) <= widths).all()
    _, buckets = h.log2_buckets(coarse)
    np.testing.assert_array_equal(buckets, h.log2_buckets(fine)[1])
    assert buckets.sum() == fine.sum()


def test_log2_buckets_are_exact() -> None:
    values = np.array([0, 1, 3, 127, 128, 255, 256, 1000, 1023, 1024])
    le, buckets = h.log2_buckets(h.histogram_of(values))
    for v in values:
        k = int(np.searchsorted(le, v, side="right"))
        assert v < le[k] and (k == 0 or v >= le[k - 1])
    expected = np.bincount(
        [int(np.searchsorted(le, v, side="right")) for v in values], minlength=len(le)
    )
    np.testing.assert_array_equal(buckets, expected)


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="1000 histogram bins"):
        h.coarseness_for(1000)
    with pytest.raises(ValueError, match="percentiles must be"):
        h.percentiles(np.ones(h.PLAT_NR, np.int64), [101])
    with pytest.raises(ValueError, match="non-negative integers"):
        h.percentiles(np.ones(h.PLAT_NR), [50])
    with pytest.raises(ValueError, match="coarseness must be"):
        h.bin_edges(7)
