import pytest

from collector.lineproto import encode_point
from collector.sensors import Sample, diskio
from tests.collector.sensors.captures import CTX, raw, sample, time_ns


def _line(i: int, dev: str) -> list[int]:
    for line in raw(i, "proc/diskstats").splitlines():
        w = line.split()
        if w[2] == dev:
            return [int(x) for x in w[3:]]
    raise AssertionError(dev)


def test_counters_are_diskstats_columns_and_idle_devices_are_skipped():
    points, _state = diskio.parse(sample(0), CTX, None)
    by_dev = {p.tags["device"]: p for p in points}
    lines = [line.split() for line in raw(0, "proc/diskstats").splitlines()]
    idle = {w[2] for w in lines if not any(int(x) for x in w[3:14])}
    assert idle, "the capture has devices that never did I/O"
    assert "vda" in by_dev and not idle & set(by_dev)
    c = _line(0, "vda")
    f = by_dev["vda"].fields
    assert (f["reads"], f["merged_reads"], f["read_bytes"], f["read_time"]) == (
        c[0], c[1], c[2] * 512, c[3])  # fmt: skip
    assert (f["writes"], f["write_bytes"], f["io_time"], f["weighted_io_time"]) == (
        c[4], c[6] * 512, c[9], c[10])  # fmt: skip
    assert "io_util" not in f  # nothing to compare with yet
    assert by_dev["vda"].tags["device_role"] == "os"
    encode_point(by_dev["vda"])


def test_derived_fields_from_two_real_captures():
    _, state = diskio.parse(sample(0), CTX, None)
    points, _ = diskio.parse(sample(1), CTX, state)
    p = next(p for p in points if p.tags["device"] == "vda")
    a, b = _line(0, "vda"), _line(1, "vda")
    d = [y - x for x, y in zip(a, b, strict=True)]
    ms = (time_ns(1) - time_ns(0)) // 1_000_000
    assert p.fields["io_util"] == pytest.approx(100 * d[9] / ms)
    ops = d[0] + d[4]
    assert ops > 0, "the capture was taken while a process was writing"
    assert p.fields["io_await"] == pytest.approx((d[3] + d[7]) / ops)
    assert p.fields["io_svctm"] == pytest.approx(d[9] / ops)
    encode_point(p)


def test_counter_wrap_gives_no_derived_fields():
    line = "8 0 sda {} 0 0 0 {} 0 0 0 0 {} 0\n"
    _, st = diskio.parse(Sample(0, {"proc/diskstats": line.format(100, 10, 50)}), CTX, None)
    (p,), _ = diskio.parse(Sample(10**9, {"proc/diskstats": line.format(5, 10, 60)}), CTX, st)
    assert not {"io_util", "io_await", "io_svctm"} & set(p.fields)
    assert p.tags["device_role"] == ""  # not in the mapping: tag dropped on write


def test_bad_counter_names_the_file():
    with pytest.raises(ValueError, match="proc/diskstats"):
        diskio.parse(Sample(0, {"proc/diskstats": "8 0 sda 1 2 x 4 5 6 7 8 9 10 11\n"}), CTX)
