"""Statistics on pseudo-random series of known distributions (the seed's postprocessing tests)."""

import numpy as np
import pytest

from analysis import stats


def test_confidence_interval_covers_the_true_mean_at_its_level():
    rng = np.random.default_rng(1)
    draws, n, mu = 2000, 30, 5000.0
    hits = 0
    for _ in range(draws):
        lo, hi = stats.confidence_interval(rng.normal(mu, 400.0, n), 0.95)
        hits += lo <= mu <= hi
    # binomial sd of the coverage over 2000 draws is 0.5 %: 3 sd either side
    assert 0.935 <= hits / draws <= 0.965


def test_describe_matches_numpy_and_scipy_definitions():
    rng = np.random.default_rng(2)
    y = rng.gamma(4.0, 250.0, 400)
    d = stats.describe(y)
    assert d.n == 400
    assert d.mean == pytest.approx(y.mean())
    assert d.stddev == pytest.approx(y.std(ddof=1))
    assert d.median == pytest.approx(np.median(y))
    assert d.p95 == pytest.approx(np.percentile(y, 95))
    # gamma(k=4): skewness 2/sqrt(k) = 1, excess kurtosis 6/k = 1.5
    assert d.skew == pytest.approx(1.0, abs=0.35)
    assert d.kurtosis == pytest.approx(1.5, abs=1.2)


def test_normality_is_detected_and_rejected():
    rng = np.random.default_rng(3)
    normal_rejected = sum(stats.normality_p(rng.normal(100, 10, 200)) < 0.05 for _ in range(200))
    assert normal_rejected <= 20  # ~5 % false alarms expected
    for sample in (rng.exponential(100, 200), rng.lognormal(3, 1, 200), rng.uniform(0, 1, 500)):
        assert stats.normality_p(sample) < 0.05
    warned = stats.describe(rng.exponential(100, 200))
    assert any("not normal" in w for w in warned.warnings)
    assert not any("not normal" in w for w in stats.describe(rng.normal(0, 1, 50)).warnings)


@pytest.mark.parametrize("ramp", [0, 10, 25])
def test_warmup_cut_finds_a_known_ramp(ramp):
    rng = np.random.default_rng(ramp)
    level, n = 20000.0, 120
    y = level * (1 + 0.05 * rng.standard_normal(n))
    y[:ramp] *= np.linspace(0.2, 1.0, ramp, endpoint=False)
    wu = stats.warmup_cut(y)
    assert wu.steady
    assert ramp - 4 <= wu.cut <= ramp + 2, wu
    assert wu.kpss_p is not None and wu.kpss_p > 0.01


def test_a_drifting_series_is_not_steady():
    rng = np.random.default_rng(7)
    y = np.linspace(1000, 3000, 100) + rng.normal(0, 20, 100)
    wu = stats.warmup_cut(y)
    assert not wu.steady and wu.cut == 0
    assert any("not steady" in w for w in stats.describe(y, steady=wu.steady).warnings)


def test_outliers_are_counted():
    rng = np.random.default_rng(4)
    y = rng.normal(1000, 10, 100)
    y[[5, 50]] = [2000, 10]
    assert stats.outlier_mask(y).sum() == 2
    assert stats.describe(y).outliers == 2


def test_kde_modes_split_a_bimodal_latency_mixture():
    rng = np.random.default_rng(5)
    fast, slow = rng.lognormal(np.log(20e3), 0.2, 7000), rng.lognormal(np.log(2e6), 0.3, 3000)
    values = np.concatenate([fast, slow])
    edges = np.geomspace(1e3, 1e8, 400)
    counts, _ = np.histogram(values, edges)
    modes, share = stats.kde_modes((edges[:-1] + edges[1:]) / 2, counts)
    assert len(modes) == 2
    assert modes[0] == pytest.approx(20e3, rel=0.25) and modes[1] == pytest.approx(2e6, rel=0.25)
    assert share[0] == pytest.approx(0.7, abs=0.03)
