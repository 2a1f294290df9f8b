from dataclasses import replace

from collector.lineproto import encode_point
from collector.sensors import Sample, net
from tests.collector.sensors.captures import CTX, DATA, raw, sample


def _flags(iface: str) -> int:
    return int(raw(0, f"sys/class/net/{iface}/flags"), 16)


def test_up_non_loopback_interfaces_like_telegraf():
    points, _ = net.parse(sample(0), CTX)
    got = {p.tags["device"]: p for p in points}
    ifaces = [d.name for d in (DATA / "t0/sys/class/net").iterdir()]
    want = {i for i in ifaces if _flags(i) & 0x1 and not _flags(i) & 0x8}
    assert set(got) == want and "lo" not in got
    for iface, p in got.items():
        line = next(
            x for x in raw(0, "proc/net/dev").splitlines() if x.strip().startswith(iface + ":")
        )
        cols = [int(v) for v in line.split(":", 1)[1].split()]
        assert (p.fields["bytes_recv"], p.fields["packets_recv"]) == (cols[0], cols[1])
        assert (p.fields["bytes_sent"], p.fields["packets_sent"]) == (cols[8], cols[9])
        assert (p.fields["drop_in"], p.fields["err_out"]) == (cols[3], cols[10])
        speed = DATA / f"t0/sys/class/net/{iface}/speed"
        assert p.fields["speed"] == (int(speed.read_text()) if speed.exists() else -1)
        encode_point(p)


def test_explicit_interfaces_include_loopback():
    points, _ = net.parse(sample(0), replace(CTX, interfaces=("l*",)))
    assert [p.tags["device"] for p in points] == ["lo"]


def test_unreadable_speed_is_minus_one():
    dev = "Inter\n face\n  ab0: 1 2 3 4 0 0 0 0 5 6 7 8 0 0 0 0\n"
    s = Sample(0, {"proc/net/dev": dev, "sys/class/net/ab0/flags": "0x1003\n"})
    (p,), _ = net.parse(s, CTX)
    assert p.fields["speed"] == -1 and p.fields["err_out"] == 7
