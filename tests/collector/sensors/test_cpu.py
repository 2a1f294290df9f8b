import pytest

from collector.lineproto import encode_point
from collector.sensors import Sample, cpu
from tests.collector.sensors.captures import CTX, raw, sample


def _ticks(text: str, name: str) -> list[int]:
    for line in text.splitlines():
        words = line.split()
        if words[0] == name:
            return [int(w) for w in words[1:]]
    raise AssertionError(f"no {name} line")


def test_first_sample_only_primes_state():
    points, state = cpu.parse(sample(0), CTX, None)
    assert points == []
    assert "cpu-total" in state and "cpu0" in state


def test_usage_from_real_deltas():
    _, state = cpu.parse(sample(0), CTX, None)
    points, _ = cpu.parse(sample(1), CTX, state)
    by_cpu = {p.tags["cpu"]: p for p in points}
    assert set(by_cpu) >= {"cpu-total", "cpu0"}
    for name, p in by_cpu.items():
        encode_point(p)
        assert p.tags["node"] == "n1" and p.tags["role"] == "testnode"
        line = "cpu" if name == "cpu-total" else name
        a, b = _ticks(raw(0, "proc/stat"), line), _ticks(raw(1, "proc/stat"), line)
        d = [y - x for x, y in zip(a, b, strict=True)]
        total = sum(d[:8])  # user..steal; guest is inside user
        assert p.fields["usage_idle"] == pytest.approx(100 * d[3] / total)
        assert p.fields["usage_system"] == pytest.approx(100 * d[2] / total)
        assert p.fields["usage_user"] == pytest.approx(100 * (d[0] - d[8]) / total)
        shares = sum(v for k, v in p.fields.items() if k not in ("usage_guest", "usage_guest_nice"))
        assert shares + p.fields["usage_guest"] + p.fields["usage_guest_nice"] == pytest.approx(100)


def test_guest_time_is_taken_out_of_user():
    a = Sample(0, {"proc/stat": "cpu 100 10 50 800 0 0 0 0 40 5\n"})
    b = Sample(1, {"proc/stat": "cpu 200 20 50 800 0 0 0 0 80 10\n"})
    _, st = cpu.parse(a, CTX, None)
    (p,), _ = cpu.parse(b, CTX, st)
    assert p.fields["usage_user"] == pytest.approx(6000 / 110)  # (100 - 40) / 110
    assert p.fields["usage_nice"] == pytest.approx(5 / 1.1)
    assert p.fields["usage_guest"] == pytest.approx(40 / 1.1)


def test_cpu_without_elapsed_time_is_skipped():
    s = Sample(0, {"proc/stat": "cpu 1 2 3 4 5 6 7 8 0 0\n"})
    _, st = cpu.parse(s, CTX, None)
    assert cpu.parse(s, CTX, st)[0] == []


def test_bad_input_names_the_file():
    with pytest.raises(ValueError, match="proc/stat"):
        cpu.parse(Sample(0, {"proc/stat": "cpu 1 x 3\n"}), CTX, None)
    with pytest.raises(ValueError, match="proc/stat: missing"):
        cpu.parse(Sample(0, {}), CTX, None)
