import os

import pytest

from collector.lineproto import encode_point
from collector.sensors import ProcMatch, procstat, procstat_for_roles
from tests.collector.sensors.captures import CTX, SUBJECT, raw, sample, time_ns


def _stat(i: int) -> list[str]:
    return raw(i, f"proc/{SUBJECT}/stat").rsplit(")", 1)[1].split()


def test_fields_of_a_real_process():
    (p,), _state = procstat.parse(sample(0), CTX, None)
    tck = os.sysconf("SC_CLK_TCK")
    st = _stat(0)
    assert p.tags == {"node": "n1", "role": "testnode", "process_name": "python3",
                      "pattern": "urandom", "pid": SUBJECT}  # fmt: skip
    assert p.fields["cpu_time_user"] == int(st[11]) / tck
    assert p.fields["cpu_time_system"] == int(st[12]) / tck
    status = dict(line.split(":", 1) for line in raw(0, f"proc/{SUBJECT}/status").splitlines())
    assert p.fields["memory_rss"] == int(status["VmRSS"].split()[0]) * 1024
    assert p.fields["num_threads"] == int(status["Threads"])
    io = dict(line.split(": ") for line in raw(0, f"proc/{SUBJECT}/io").splitlines())
    assert p.fields["write_bytes"] == int(io["write_bytes"]) > 0
    assert p.fields["write_count"] == int(io["syscw"])
    assert p.fields["num_fds"] == int(raw(0, f"proc/{SUBJECT}/fds"))
    btime = int(
        next(x for x in raw(0, "proc/stat").splitlines() if x.startswith("btime")).split()[1]
    )
    assert p.fields["created_at"] == (int(st[19]) * 1000 // tck + btime * 1000) * 10**6
    assert "cpu_usage" not in p.fields  # needs two samples, like Telegraf
    encode_point(p)


def test_cpu_usage_between_captures():
    _, state = procstat.parse(sample(0), CTX, None)
    (p,), _ = procstat.parse(sample(1), CTX, state)
    a, b = _stat(0), _stat(1)
    ticks = sum(int(b[k]) - int(a[k]) for k in (11, 12, 39))
    secs = (time_ns(1) - time_ns(0)) / 1e9
    assert p.fields["cpu_usage"] == pytest.approx(100 * ticks / os.sysconf("SC_CLK_TCK") / secs)
    assert p.fields["cpu_usage"] > 10  # the subject spins between writes
    encode_point(p)


def test_role_selectors():
    assert procstat_for_roles(["ceph-osd", "testnode", "ceph-osd"]) == (
        ProcMatch("exe", "^ceph-osd$"), ProcMatch("exe", "^fio$"))  # fmt: skip
    with pytest.raises(ValueError, match="'exe' or 'pattern'"):
        ProcMatch("name", "x")
