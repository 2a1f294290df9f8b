from collections import Counter

from collector.lineproto import encode_point
from collector.sensors import netstat
from tests.collector.sensors.captures import CTX, SOCKET_TABLES, raw, sample

STATE_NAMES = {"01": "established", "06": "time_wait", "0A": "listen", "08": "close_wait"}


def test_socket_counts_from_real_tables():
    (p,), _ = netstat.parse(sample(0), CTX)
    tcp = Counter()
    udp = 0
    unix = Counter()
    for table in SOCKET_TABLES:
        rows = [line.split() for line in raw(0, f"proc/{table}").splitlines()[1:]]
        if "tcp" in table:
            tcp.update(r[3] for r in rows)
        elif "udp" in table:
            udp += len(rows)
        else:
            unix.update(r[4] for r in rows)
    for hexstate, name in STATE_NAMES.items():
        assert p.fields[f"tcp_{name}"] == tcp[hexstate]
    assert p.fields["udp_socket"] == udp + unix["0002"]
    assert p.fields["tcp_none"] == sum(n for t, n in unix.items() if t != "0002")
    assert sum(v for k, v in p.fields.items() if k.startswith("tcp_")) == (
        sum(tcp.values()) + p.fields["tcp_none"]
    )
    encode_point(p)
