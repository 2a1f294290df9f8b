import pytest

from collector.lineproto import encode_point
from collector.sensors import Sample, system
from collector.sensors.reader import node_digest_users
from tests.collector.sensors.captures import CTX, raw, sample, time_ns


def test_system_from_real_files():
    (p,), _ = system.parse(sample(0), CTX)
    load = raw(0, "proc/loadavg").split()
    assert (p.fields["load1"], p.fields["load5"], p.fields["load15"]) == tuple(
        float(x) for x in load[:3]
    )
    stat = raw(0, "proc/stat").splitlines()
    btime = int(next(line for line in stat if line.startswith("btime")).split()[1])
    assert p.fields["uptime"] == time_ns(0) // 10**9 - btime
    uptime_file = float(raw(0, "proc/uptime").split()[0])
    assert abs(p.fields["uptime"] - uptime_file) <= 2  # same clock, two sources
    assert p.fields["n_cpus"] == sum(1 for line in stat if line.split()[0][3:].isdigit())
    assert "n_users" not in p.fields  # this machine has no utmp, like Telegraf: no field
    encode_point(p)


def _utmp_record(ut_type: int, user: bytes) -> bytes:
    rec = bytearray(384)
    rec[0:4] = ut_type.to_bytes(4, "little")
    rec[44 : 44 + len(user)] = user
    return bytes(rec)


def test_users_from_utmp_records():
    utmp = b"".join(
        [
            _utmp_record(2, b"reboot"),
            _utmp_record(7, b"alice"),
            _utmp_record(7, b"alice"),
            _utmp_record(7, b"bob"),
            _utmp_record(8, b"carol"),
        ]
    )
    s = sample(0)
    files = {**s.files, "@users": node_digest_users(utmp)}
    (p,), _ = system.parse(Sample(s.time_ns, files), CTX)
    assert (p.fields["n_users"], p.fields["n_unique_users"]) == (3, 2)


def test_bad_loadavg():
    with pytest.raises(ValueError, match="proc/loadavg"):
        system.parse(Sample(0, {"proc/loadavg": "a b c\n"}), CTX)
