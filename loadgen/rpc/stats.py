"""Latency and outcome statistics of one RPC agent, mergeable exactly across agents.

ombt kept min/max/sum/sum-of-squares and power-of-ten buckets, which cannot give
percentiles. We record every latency in an HDR histogram (microsecond resolution, three
significant digits) so that per-agent histograms add up exactly to the histogram of all
messages, and derive ombt's buckets from it for compatibility with old post-mortems.
Mean and standard deviation come from exact running sums, as ombt computed them.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

# Latencies are recorded in microseconds; one hour is the largest representable value
# (an open-loop test that falls that far behind is already meaningless).
LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def percentile_field(p: float) -> str:
    """`99.9` -> `lat_p99_9`, the field names of the `rpc` measurement."""
    return "lat_p" + f"{p:g}".replace(".", "_")


@dataclass
class LatencyStats:
    """Outcomes of one agent (or a merge of agents): latencies, successes, failures."""

    hist: HdrHistogram = field(default_factory=new_histogram)
    msgs_ok: int = 0
    msgs_fail: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    total_ms: float = 0.0
    sum_sq_ms: float = 0.0
    min_ms: float | None = None
    max_ms: float | None = None
    start_time: float | None = None  # epoch seconds of the first message
    stop_time: float | None = None  # epoch seconds of the last completion
    clamped: int = 0  # latencies outside the histogram range (negative skew or > 1 h)

    def record(self, latency_s: float) -> None:
        """Count one successful message with its latency in seconds."""
        ms = latency_s * 1000.0
        us = round(latency_s * 1e6)
        if us < LOWEST_US or us > HIGHEST_US:
            self.clamped += 1
            us = min(max(us, LOWEST_US), HIGHEST_US)
        self.hist.record_value(us)
        self.msgs_ok += 1
        self.total_ms += ms
        self.sum_sq_ms += ms * ms
        self.min_ms = ms if self.min_ms is None else min(self.min_ms, ms)
        self.max_ms = ms if self.max_ms is None else max(self.max_ms, ms)

    def record_failure(self, exc: BaseException | str) -> None:
        """Count one failed message under its exception type name."""
        name = exc if isinstance(exc, str) else type(exc).__name__
        self.msgs_fail += 1
        self.errors[name] += 1

    def mark(self, start: float, stop: float) -> None:
        """Widen the [start, stop] window (epoch seconds) this agent was active in."""
        self.start_time = start if self.start_time is None else min(self.start_time, start)
        self.stop_time = stop if self.stop_time is None else max(self.stop_time, stop)

    def merge(self, other: LatencyStats) -> None:
        """Add another agent's stats in place; histogram merge is exact."""
        self.hist.add(other.hist)
        self.msgs_ok += other.msgs_ok
        self.msgs_fail += other.msgs_fail
        self.errors.update(other.errors)
        self.total_ms += other.total_ms
        self.sum_sq_ms += other.sum_sq_ms
        self.clamped += other.clamped
        for mine, theirs, pick in (("min_ms", other.min_ms, min), ("max_ms", other.max_ms, max)):
            if theirs is not None:
                current = getattr(self, mine)
                setattr(self, mine, theirs if current is None else pick(current, theirs))
        if other.start_time is not None and other.stop_time is not None:
            self.mark(other.start_time, other.stop_time)

    @classmethod
    def merged(cls, parts: list[LatencyStats]) -> LatencyStats:
        out = cls()
        for part in parts:
            out.merge(part)
        return out

    # --- derived numbers ---------------------------------------------------------------

    @property
    def count(self) -> int:
        return self.msgs_ok + self.msgs_fail

    def mean_ms(self) -> float:
        return self.total_ms / self.msgs_ok if self.msgs_ok else 0.0

    def stddev_ms(self) -> float:
        """Population standard deviation, as ombt's Stats.std_deviation computes it."""
        if not self.msgs_ok:
            return -1.0
        var = self.sum_sq_ms / self.msgs_ok - self.mean_ms() ** 2
        return math.sqrt(max(var, 0.0))

    def percentile_ms(self, p: float) -> float:
        return self.hist.get_value_at_percentile(p) / 1000.0 if self.msgs_ok else 0.0

    def duration(self) -> float:
        if self.start_time is None or self.stop_time is None:
            return 0.0
        return self.stop_time - self.start_time

    def rate(self) -> float:
        """Messages (ok + failed) per second over the active window, as ombt reports."""
        d = self.duration()
        return self.count / d if d > 0 else 0.0

    def ombt_distribution(self) -> dict[int, list[int]]:
        """ombt's buckets: {power of ten of the ms value: ten counts by leading digit}.

        Each HDR bucket is placed by its lowest equivalent value, i.e. the value that
        was recorded up to the histogram's 3-digit resolution.
        """
        dist: dict[int, list[int]] = {}
        for item in self.hist.get_recorded_iterator():
            ms = self.hist.get_lowest_equivalent_value(item.value_iterated_to) / 1000.0
            log = int(math.log10(ms)) if ms >= 1.0 else 0
            index = min(int(ms / 10**log), 9)
            dist.setdefault(log, [0] * 10)[index] += item.count_at_value_iterated_to
        return dist

    def summary_fields(self) -> dict[str, Any]:
        """Fields of the `rpc` measurement for this agent or merge."""
        out: dict[str, Any] = {
            "msgs_ok": self.msgs_ok,
            "msgs_fail": self.msgs_fail,
            "rate": self.rate(),
        }
        if self.msgs_ok:
            for p in PERCENTILES:
                out[percentile_field(p)] = self.percentile_ms(p)
            out["lat_mean"] = self.mean_ms()
            out["lat_stddev"] = self.stddev_ms()
            out["lat_min"] = float(self.min_ms or 0.0)
            out["lat_max"] = float(self.max_ms or 0.0)
        return out

    # --- transport ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "hdr": self.hist.encode().decode("ascii"),
            "msgs_ok": self.msgs_ok,
            "msgs_fail": self.msgs_fail,
            "errors": dict(self.errors),
            "total_ms": self.total_ms,
            "sum_sq_ms": self.sum_sq_ms,
            "min_ms": self.min_ms,
            "max_ms": self.max_ms,
            "start_time": self.start_time,
            "stop_time": self.stop_time,
            "clamped": self.clamped,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyStats:
        try:
            hist = new_histogram()
            if data["msgs_ok"]:
                hist.add(HdrHistogram.decode(data["hdr"].encode("ascii")))
            return cls(
                hist=hist,
                msgs_ok=int(data["msgs_ok"]),
                msgs_fail=int(data["msgs_fail"]),
                errors=Counter({str(k): int(v) for k, v in data["errors"].items()}),
                total_ms=float(data["total_ms"]),
                sum_sq_ms=float(data["sum_sq_ms"]),
                min_ms=data["min_ms"],
                max_ms=data["max_ms"],
                start_time=data["start_time"],
                stop_time=data["stop_time"],
                clamped=int(data.get("clamped", 0)),
            )
        except KeyError as exc:
            raise ValueError(f"agent stats: missing field {exc.args[0]!r}") from None

    def same_histogram(self, other: LatencyStats) -> bool:
        """True when both histograms hold exactly the same counts in the same buckets."""
        mine = {
            i.value_iterated_to: i.count_at_value_iterated_to
            for i in self.hist.get_recorded_iterator()
        }
        theirs = {
            i.value_iterated_to: i.count_at_value_iterated_to
            for i in other.hist.get_recorded_iterator()
        }
        return mine == theirs
