"""Pure logic of the RPC latency stats: exact merge, ombt buckets, transport."""

from __future__ import annotations

import math
import random

import pytest

from loadgen.rpc.stats import LatencyStats, new_histogram


def _ombt_buckets(values_ms: list[float]) -> dict[int, list[int]]:
    """ombt's Stats.update bucketing (from the seed notebook), the reference."""
    dist: dict[int, list[int]] = {}
    for value in values_ms:
        log = int(math.log10(value)) if value >= 1.0 else 0
        base = 10**log
        index = int(value / base)
        dist.setdefault(log, [0] * 10)[index] += 1
    return dist


def _latencies(seed: int, n: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.lognormvariate(-6, 1.5) for _ in range(n)]


def test_merge_equals_histogram_of_all_values() -> None:
    parts = [_latencies(seed, 500) for seed in range(4)]
    stats = []
    for values in parts:
        s = LatencyStats()
        for v in values:
            s.record(v)
        stats.append(s)
    merged = LatencyStats.merged(stats)
    everything = LatencyStats()
    for v in (v for values in parts for v in values):
        everything.record(v)
    assert merged.same_histogram(everything)
    assert merged.msgs_ok == 2000
    assert merged.mean_ms() == pytest.approx(everything.mean_ms())
    assert merged.stddev_ms() == pytest.approx(everything.stddev_ms())
    assert merged.min_ms == everything.min_ms and merged.max_ms == everything.max_ms
    for p in (50, 90, 99, 99.9):
        assert merged.percentile_ms(p) == everything.percentile_ms(p)


def test_ombt_buckets_match_ombt_for_values_at_histogram_resolution() -> None:
    h = new_histogram()
    # values the histogram represents exactly (lowest equivalent values), in seconds
    values_s = [h.get_lowest_equivalent_value(round(v * 1e6)) / 1e6 for v in _latencies(7, 3000)]
    values_s = [v for v in values_s if v > 0]
    s = LatencyStats()
    for v in values_s:
        s.record(v)
    assert s.ombt_distribution() == _ombt_buckets([v * 1000 for v in values_s])


def test_round_trip_and_failures_by_type() -> None:
    s = LatencyStats()
    for v in _latencies(3, 100):
        s.record(v)
    s.record_failure(TimeoutError("late"))
    s.record_failure(TimeoutError("late again"))
    s.record_failure("MessageDeliveryFailure")
    s.mark(100.0, 110.0)
    back = LatencyStats.from_dict(s.to_dict())
    assert back.same_histogram(s)
    assert dict(back.errors) == {"TimeoutError": 2, "MessageDeliveryFailure": 1}
    assert (back.msgs_ok, back.msgs_fail) == (100, 3)
    assert back.rate() == pytest.approx(103 / 10)
    assert back.summary_fields() == s.summary_fields()


def test_missing_field_is_named() -> None:
    data = LatencyStats().to_dict()
    del data["errors"]
    with pytest.raises(ValueError, match="'errors'"):
        LatencyStats.from_dict(data)
