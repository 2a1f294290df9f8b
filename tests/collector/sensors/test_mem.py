import pytest

from collector.lineproto import encode_point
from collector.sensors import Sample, mem
from tests.collector.sensors.captures import CTX, raw, sample


def _kb(key: str) -> int:
    for line in raw(0, "proc/meminfo").splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(key)


def test_gopsutil_arithmetic_on_real_meminfo():
    (p,), _ = mem.parse(sample(0), CTX)
    f = p.fields
    assert f["total"] == _kb("MemTotal") and f["available"] == _kb("MemAvailable")
    assert f["cached"] == _kb("Cached") + _kb("SReclaimable")
    assert f["used"] == f["total"] - f["free"] - f["buffered"] - f["cached"]
    assert f["used_percent"] == pytest.approx(100 * f["used"] / f["total"])
    assert f["shared"] == _kb("Shmem") and f["committed_as"] == _kb("Committed_AS")
    assert f["huge_pages_total"] == _kb("HugePages_Total") // 1024  # a count, not bytes
    assert set(f) == set(mem.schema.MEM.fields)
    encode_point(p)


def test_missing_total_is_an_error():
    with pytest.raises(ValueError, match="proc/meminfo: no MemTotal"):
        mem.parse(Sample(0, {"proc/meminfo": "MemFree: 10 kB\n"}), CTX)
