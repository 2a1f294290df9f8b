"""fio's completion-latency histogram: bin geometry, percentiles, merging, coarsening.

fio keeps latencies in FIO_IO_U_PLAT_NR = 1856 bins (stat.h: 29 groups of 64). Values below
128 ns have a bin each; above, group g = idx >> 6 covers [2^(g+5), 2^(g+6)) in 64 bins of
width 2^(g-1), so every bin is ~1/64..1/128 of its value wide. fio's own JSON percentiles
(stat.c calc_clat_percentiles) take the first bin whose cumulative count reaches q% of N and
report plat_idx_to_val(bin): the bin *midpoint* (the exact value below 128 ns).

Histograms here are count arrays whose last axis is the bins. Merging is adding counts
(over jobs, nodes and time windows): a percentile over a test is computed on the summed
histogram, never by averaging per-second percentiles. Percentiles are interpolated
uniformly inside the bin, so they land in the same bin as fio's and differ from fio's
midpoint by at most half a bin (< 0.8 %).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PLAT_BITS = 6
PLAT_VAL = 1 << PLAT_BITS
PLAT_GROUP_NR = 29
PLAT_NR = PLAT_GROUP_NR * PLAT_VAL  # 1856 bins in fio >= 3.x
MAX_COARSENESS = PLAT_BITS  # coarse bins never straddle a group

DEFAULT_PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)


def _check_coarseness(coarseness: int) -> None:
    if not isinstance(coarseness, int | np.integer) or not 0 <= coarseness <= MAX_COARSENESS:
        raise ValueError(f"coarseness must be an integer 0..{MAX_COARSENESS}, got {coarseness!r}")


def coarseness_for(ncols: int) -> int:
    """The log_hist_coarseness that gives `ncols` bins (fio writes 1856 >> coarseness)."""
    for c in range(MAX_COARSENESS + 1):
        if PLAT_NR >> c == ncols:
            return c
    expected = ", ".join(str(PLAT_NR >> c) for c in range(MAX_COARSENESS + 1))
    raise ValueError(f"{ncols} histogram bins is not 1856 >> coarseness (one of {expected})")


def _fine_edges() -> np.ndarray:
    idx = np.arange(PLAT_NR + 1, dtype=np.int64)
    err = np.maximum((idx >> PLAT_BITS) - 1, 0)
    lo = (np.int64(1) << (err + PLAT_BITS)) + (idx % PLAT_VAL) * (np.int64(1) << err)
    # idx == PLAT_NR is the upper edge of the last bin: the next group's start.
    return np.where(idx < 2 * PLAT_VAL, idx, lo).astype(np.float64)


_FINE_EDGES = _fine_edges()


def bin_edges(coarseness: int = 0) -> np.ndarray:
    """Bin edges in ns (length nbins + 1): bin i holds values in [edges[i], edges[i+1])."""
    _check_coarseness(coarseness)
    return _FINE_EDGES[:: 1 << coarseness].copy()


def fio_bin_values() -> np.ndarray:
    """fio's plat_idx_to_val for every fine bin: the value fio reports for that bin."""
    lo, hi = _FINE_EDGES[:-1], _FINE_EDGES[1:]
    idx = np.arange(PLAT_NR)
    return np.where(idx < 2 * PLAT_VAL, lo, (lo + hi) / 2).astype(np.int64)


def value_to_bin(values_ns: np.ndarray) -> np.ndarray:
    """fio's plat_val_to_idx, vectorised: the fine bin of each latency (ns).

    For v >= 128 fio keeps the leading bit and the next 6: group msb - 5, slot = those 6
    bits. As a float64 (exact below 2**53) that is the biased exponent and the top 6
    mantissa bits, i.e. bits 46.. of the float: idx = (bits >> 46) - (1023 + 5) * 64.
    """
    v = np.asarray(values_ns, dtype=np.int64)
    if v.size and v.min() < 0:
        raise ValueError("latencies must be >= 0 ns")
    idx = (v.astype(np.float64).view(np.int64) >> 46) - (1023 + PLAT_BITS - 1) * PLAT_VAL
    idx = np.where(v < 2 * PLAT_VAL, v, idx)
    return np.minimum(idx, PLAT_NR - 1)


def histogram_of(values_ns: np.ndarray) -> np.ndarray:
    """Fine fio histogram (1856 counts) of raw latencies, as fio itself would bin them."""
    return np.bincount(value_to_bin(values_ns), minlength=PLAT_NR).astype(np.int64)


def coarsen(counts: np.ndarray, by: int) -> np.ndarray:
    """Add 2**by adjacent bins together, as fio's log_hist_coarseness does."""
    _check_coarseness(by)
    c = np.asarray(counts)
    if c.shape[-1] % (1 << by):
        raise ValueError(f"{c.shape[-1]} bins cannot be coarsened by 2**{by}")
    return c.reshape(*c.shape[:-1], c.shape[-1] >> by, 1 << by).sum(axis=-1)


def _ranked_bins(
    counts: np.ndarray, percentiles: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row and percentile: fio's bin, the rank, counts before and in it, row totals.

    One searchsorted over all rows at once: each row's cumulative counts are shifted by
    row * (max total + 1) so the flattened array stays sorted.
    """
    c = np.asarray(counts)
    if c.ndim == 0 or c.shape[-1] == 0:
        raise ValueError("a histogram needs at least one bin")
    if np.issubdtype(c.dtype, np.floating) or (c < 0).any():
        raise ValueError("histogram counts must be non-negative integers")
    q = np.asarray(percentiles, dtype=np.float64)
    if q.ndim != 1 or ((q < 0) | (q > 100)).any():
        raise ValueError(f"percentiles must be a list of values in 0..100, got {percentiles!r}")
    rows = c.reshape(-1, c.shape[-1]).astype(np.int64)
    nbins = rows.shape[1]
    cum = np.cumsum(rows, axis=1)
    total = cum[:, -1]
    rank = q[None, :] / 100.0 * total[:, None]
    need = np.maximum(np.ceil(rank), 1).astype(np.int64)  # first bin with cum >= rank
    shift = (np.arange(len(rows), dtype=np.int64) * (int(total.max(initial=0)) + 1))[:, None]
    flat = (cum + shift).ravel()
    pos = np.searchsorted(flat, (need + shift).ravel(), side="left").reshape(need.shape)
    b = np.minimum(pos - np.arange(len(rows))[:, None] * nbins, nbins - 1)
    before = np.take_along_axis(cum, b, axis=1) - np.take_along_axis(rows, b, axis=1)
    inbin = np.take_along_axis(rows, b, axis=1)
    return b, rank, before, inbin, total


def percentiles(
    counts: np.ndarray,
    qs: Sequence[float] = DEFAULT_PERCENTILES,
    coarseness: int | None = None,
) -> np.ndarray:
    """Percentiles (ns) of histograms, interpolated linearly inside the chosen bin.

    `counts` has bins on its last axis (1856 >> coarseness of them; the coarseness is
    inferred when not given); the result has shape counts.shape[:-1] + (len(qs),) and is
    NaN where a histogram is empty.
    """
    c = np.asarray(counts)
    if coarseness is None:
        coarseness = coarseness_for(c.shape[-1])
    edges = bin_edges(coarseness)
    if c.shape[-1] != len(edges) - 1:
        raise ValueError(f"{c.shape[-1]} bins do not match coarseness {coarseness}")
    b, rank, before, inbin, total = _ranked_bins(c, qs)
    lo, width = edges[b], edges[b + 1] - edges[b]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.clip((rank - before) / inbin, 0.0, 1.0)
    out = lo + frac * width
    out[total == 0] = np.nan
    return out.reshape(*c.shape[:-1], len(qs))


def fio_percentiles(counts: np.ndarray, qs: Sequence[float] = DEFAULT_PERCENTILES) -> np.ndarray:
    """Percentiles exactly as fio's JSON reports them (bin midpoint, fine bins only).

    Used to merge several jobs' json+ `bins` into the numbers fio's group_reporting prints.
    """
    c = np.asarray(counts)
    if c.shape[-1] != PLAT_NR:
        raise ValueError(f"fio percentiles need the {PLAT_NR} fine bins, got {c.shape[-1]}")
    b, _, _, _, total = _ranked_bins(c, qs)
    out = fio_bin_values()[b].astype(np.float64)
    out[total == 0] = np.nan
    return out.reshape(*c.shape[:-1], len(qs))


def group_sum(keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge histogram rows that share a key by adding them (jobs, nodes, time windows).

    `keys` is one int64 per row (or a 2-D array of key columns); returns the sorted unique
    keys and one summed histogram per key.
    """
    k = np.asarray(keys)
    c = np.asarray(counts)
    if len(k) != len(c):
        raise ValueError(f"{len(k)} keys for {len(c)} histogram rows")
    if len(k) == 0:
        return k, c.reshape(0, *c.shape[1:])
    if k.ndim == 1:
        uniq, inv = np.unique(k, return_inverse=True)
    else:
        uniq, inv = np.unique(k, axis=0, return_inverse=True)
    inv = inv.ravel()
    if len(uniq) == len(k):  # nothing to merge: just put the rows in key order
        out = np.empty_like(c)
        out[inv] = c
        return uniq, out
    order = np.argsort(inv, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(inv[order]) != 0])
    return uniq, np.add.reduceat(c[order], starts, axis=0)


def log2_buckets(
    counts: np.ndarray, coarseness: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Coarse histogram in powers of two: (le, counts), le = bucket top in ns.

    Every fio bin lies inside one [2^(k-1), 2^k) range (groups start at powers of two), so
    this regrouping is exact. Returns all 35 buckets (le = 1 .. 2^34) up to fio's last bin; callers drop the
    empty ones if they like.
    """
    c = np.asarray(counts)
    if coarseness is None:
        coarseness = coarseness_for(c.shape[-1])
    lo = bin_edges(coarseness)[:-1]
    k = np.where(lo >= 1, np.floor(np.log2(np.maximum(lo, 1))).astype(np.int64) + 1, 0)
    nk = int(k.max()) + 1
    out = np.zeros((*c.shape[:-1], nk), dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, np.diff(k) != 0])
    out[..., k[starts]] = np.add.reduceat(c, starts, axis=-1)
    return (np.int64(1) << np.arange(nk, dtype=np.int64)), out


def sparse_encode(counts: np.ndarray) -> list[str]:
    """Each histogram row as 'index:count' pairs of its non-empty bins, joined by ','.

    The text form of `fio_hist_fine`: one string field per point keeps fio's fine bins
    without a series per bin.
    """
    c = np.asarray(counts)
    rows = c.reshape(-1, c.shape[-1])
    row, col = np.nonzero(rows)
    text = np.char.add(np.char.add(col.astype(str), ":"), rows[row, col].astype(str))
    ends = np.searchsorted(row, np.arange(len(rows)), side="right")
    starts = np.r_[0, ends[:-1]]
    return [",".join(text[a:b]) for a, b in zip(starts, ends, strict=True)]


def sparse_decode(texts: Sequence[str], nbins: int) -> np.ndarray:
    """Dense (len(texts), nbins) counts from sparse_encode's strings; bad text is an error."""
    out = np.zeros((len(texts), nbins), dtype=np.int64)
    for i, text in enumerate(texts):
        if not text:
            continue
        try:
            pairs = np.array([p.split(":") for p in text.split(",")], dtype=np.int64)
        except ValueError:
            raise ValueError(
                f"histogram text {text[:60]!r} is not 'index:count' pairs joined by ','"
            ) from None
        if pairs.ndim != 2 or pairs.shape[1] != 2:
            raise ValueError(f"histogram text {text[:60]!r} is not 'index:count' pairs")
        idx, cnt = pairs[:, 0], pairs[:, 1]
        if (idx < 0).any() or (idx >= nbins).any() or (cnt < 0).any():
            raise ValueError(f"histogram text {text[:60]!r} has a bin outside 0..{nbins - 1}")
        np.add.at(out[i], idx, cnt)
    return out
