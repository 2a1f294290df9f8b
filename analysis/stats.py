"""Statistics of per-second series: is the number trustworthy, and how sure are we of it.

Pure functions on numpy arrays (no InfluxDB), so they are tested on synthetic series of
known distributions. A test's IOPS series is first cut where it becomes steady (warm-up),
then described: mean with a Student-t confidence interval, spread, shape, normality and
outliers, with plain-language warnings when the numbers should not be trusted as they are.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import signal, stats

CONFIDENCE = 0.95
ALPHA = 0.05
# Total drift over the kept part below this share of its mean counts as steady even if
# the slope is statistically significant (long, quiet series detect tiny slopes).
DRIFT_TOLERANCE = 0.05
MIN_STEADY = 5
MIN_NORMALITY = 8


@dataclass(frozen=True)
class WarmUp:
    """Where a series becomes steady: samples cut from its start and why."""

    cut: int
    steady: bool
    slope_t: float
    drift: float
    kpss_p: float | None
    adf_p: float | None


def _slope(y: np.ndarray) -> tuple[float, float]:
    """Least squares slope per sample and its t statistic."""
    n = len(y)
    x = np.arange(n, dtype=np.float64)
    x -= x.mean()
    sxx = float((x * x).sum())
    slope = float((x * (y - y.mean())).sum() / sxx)
    resid = y - y.mean() - slope * x
    se = float(np.sqrt((resid * resid).sum() / max(n - 2, 1) / sxx))
    if se == 0.0:
        return slope, 0.0 if slope == 0.0 else np.inf
    return slope, slope / se


def _is_flat(y: np.ndarray, alpha: float, tolerance: float) -> tuple[bool, float, float]:
    slope, t = _slope(y)
    mean = float(np.mean(y))
    drift = abs(slope) * len(y) / abs(mean) if mean else (0.0 if slope == 0 else np.inf)
    crit = float(stats.t.ppf(1 - alpha / 2, max(len(y) - 2, 1)))
    return bool(abs(t) < crit or drift < tolerance), t, drift


def _stationarity(y: np.ndarray) -> tuple[float | None, float | None]:
    """KPSS (null: level-stationary) and ADF (null: unit root) p-values; None if undefined."""
    if len(y) < 12 or float(np.std(y)) == 0.0:
        return None, None
    from statsmodels.tsa.stattools import adfuller, kpss

    with warnings.catch_warnings():  # p-values outside the tables are clipped, we know
        warnings.simplefilter("ignore")
        kpss_p = float(kpss(y, regression="c", nlags="auto")[1])
        adf_p = float(adfuller(y, autolag="AIC")[1])
    return kpss_p, adf_p


def mser_cut(y: np.ndarray, max_share: float = 0.5) -> int:
    """MSER truncation point: the d minimising the squared standard error of y[d:]'s mean.

    The Marginal Standard Error Rule (White, 1997) is the standard warm-up cut of
    simulation output analysis: dropping ramp samples shrinks the variance faster than
    losing samples grows the error, until the rest is level.
    """
    n = len(y)
    rev = y[::-1]
    k = np.arange(1, n + 1, dtype=np.float64)  # length of the tail y[n-k:]
    s1, s2 = np.cumsum(rev), np.cumsum(rev * rev)
    sse = np.maximum(s2 - s1 * s1 / k, 0.0)  # sum of squared deviations of each tail
    stat = (sse / (k * k))[::-1]  # index d: tail y[d:]
    last = max(min(int(n * max_share), n - MIN_STEADY), 0)
    return int(np.argmin(stat[: last + 1]))


def warmup_cut(
    y: np.ndarray, alpha: float = ALPHA, tolerance: float = DRIFT_TOLERANCE, max_share: float = 0.5
) -> WarmUp:
    """Where the series becomes steady (MSER cut), and whether the rest is steady.

    A series that never levels off is reported not steady with nothing cut.

    The kept part is steady when its least-squares slope is not significant at `alpha`
    or drifts less than `tolerance` of the mean over its length (fio's ss=iops_slope
    idea). At most `max_share` of the series is cut. KPSS/ADF p-values of the kept part
    are reported alongside (the seed found ADF alone unreliable, hence the slope rule).
    """
    y = np.asarray(y, dtype=np.float64)
    y = y[np.isfinite(y)]
    if len(y) < MIN_STEADY:
        return WarmUp(0, False, np.nan, np.nan, None, None)
    cut = mser_cut(y, max_share)
    flat, t, drift = _is_flat(y[cut:], alpha, tolerance)
    if not flat:  # it never levels off: nothing is warm-up, all of it is drift
        cut = 0
        _, t, drift = _is_flat(y, alpha, tolerance)
    return WarmUp(cut, flat, t, drift, *_stationarity(y[cut:]))


@dataclass
class Description:
    """What a steady series says, and what to be careful about."""

    n: int
    mean: float
    stddev: float
    ci_low: float
    ci_high: float
    median: float
    p5: float
    p95: float
    min: float
    max: float
    skew: float
    kurtosis: float
    normal_p: float | None
    outliers: int
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def confidence_interval(y: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student-t interval for the mean (samples treated as independent)."""
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    mean = float(y.mean()) if n else np.nan
    if n < 2:
        return mean, mean
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * y.std(ddof=1) / np.sqrt(n))
    return mean - half, mean + half


def normality_p(y: np.ndarray) -> float | None:
    """Shapiro-Wilk p-value (None below 8 samples or for a constant series)."""
    y = np.asarray(y, dtype=np.float64)
    if len(y) < MIN_NORMALITY or float(np.ptp(y)) == 0.0:
        return None
    return float(stats.shapiro(y[:5000]).pvalue)


def outlier_mask(y: np.ndarray, k: float = 3.5) -> np.ndarray:
    """Samples whose modified z-score (median/MAD based) exceeds k (Iglewicz-Hoaglin)."""
    y = np.asarray(y, dtype=np.float64)
    med = np.median(y) if len(y) else 0.0
    mad = np.median(np.abs(y - med)) if len(y) else 0.0
    if mad == 0:
        return np.zeros(len(y), dtype=bool)
    return np.abs(0.6745 * (y - med) / mad) > k


def describe(
    y: np.ndarray, confidence: float = CONFIDENCE, alpha: float = ALPHA, steady: bool = True
) -> Description:
    """Mean, spread, CI, shape, normality and outliers of a (steady part of a) series."""
    y = np.asarray(y, dtype=np.float64)
    y = y[np.isfinite(y)]
    n = len(y)
    notes = (
        []
        if steady
        else ["not steady: the series keeps drifting, the mean depends on when it is taken"]
    )
    if n == 0:
        nan = float("nan")
        return Description(0, *(nan,) * 11, None, 0, ["no samples"])
    lo, hi = confidence_interval(y, confidence)
    p = normality_p(y)
    if p is not None and p < alpha:
        notes.append(f"not normal (Shapiro-Wilk p={p:.3g}): prefer the median and percentiles")
    out = int(outlier_mask(y).sum())
    if out:
        notes.append(f"{out} outlier sample(s)")
    if n < MIN_NORMALITY:
        notes.append(f"only {n} samples: the interval is wide and normality is untested")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant series: skew/kurtosis are NaN
        skew = float(stats.skew(y)) if n > 2 else np.nan
        kurt = float(stats.kurtosis(y)) if n > 3 else np.nan
    return Description(
        n=n,
        mean=float(y.mean()),
        stddev=float(y.std(ddof=1)) if n > 1 else 0.0,
        ci_low=lo,
        ci_high=hi,
        median=float(np.median(y)),
        p5=float(np.percentile(y, 5)),
        p95=float(np.percentile(y, 95)),
        min=float(y.min()),
        max=float(y.max()),
        skew=skew,
        kurtosis=kurt,
        normal_p=p,
        outliers=out,
        warnings=notes,
    )


def kde_modes(
    values: np.ndarray, weights: np.ndarray, grid: int = 512, prominence: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """Peaks of a weighted KDE of log10(values): (mode values, share of mass per mode).

    Latency modes separate cache hits from device reads; the mass left of the valley
    after the fastest mode estimates the cache hit ratio independently of the counters.
    """
    v = np.asarray(values, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    keep = (v > 0) & (w > 0)
    v, w = np.log10(v[keep]), w[keep]
    if len(v) < 2 or float(np.ptp(v)) == 0.0:
        return np.exp(v[:1] * np.log(10)), np.ones(min(len(v), 1))
    kde = stats.gaussian_kde(v, weights=w)
    xs = np.linspace(v.min() - 0.2, v.max() + 0.2, grid)
    ys = kde(xs)
    peaks, _ = signal.find_peaks(ys, prominence=prominence * ys.max())
    if not len(peaks):
        peaks = np.array([int(np.argmax(ys))])
    # valleys between neighbouring peaks split the mass
    bounds = [xs[0]]
    for a, b in itertools.pairwise(peaks):
        bounds.append(xs[a + int(np.argmin(ys[a:b]))])
    bounds.append(xs[-1] + 1)
    share = np.array([w[(v >= lo) & (v < hi)].sum() for lo, hi in itertools.pairwise(bounds)])
    return 10 ** xs[peaks], share / share.sum()
