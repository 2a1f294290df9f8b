import socket
from collections import Counter

from collector.lineproto import encode_point
from collector.sensors import netstat
from collector.sensors.reader import node_tcp_states
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


def _proc_tcp_states() -> Counter:
    states = Counter()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            states.update(line.split()[3] for line in f.read().splitlines()[1:])
    return states


def test_netlink_counts_match_proc_tables():
    """The node counts TCP states over sock_diag, in one dump for both families or one per
    family; /proc/net/tcp{,6} is the ground truth. Sockets come and go on a shared
    machine: retry until two /proc reads agree."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        client = socket.create_connection(srv.getsockname())
        peer, _ = srv.accept()
        try:
            for _ in range(20):
                before = _proc_tcp_states()
                ours = Counter()
                for family in (socket.AF_INET, socket.AF_INET6):
                    ours.update(node_tcp_states(family))
                both = Counter(node_tcp_states())
                if before == _proc_tcp_states():
                    break
            assert ours == before
            assert both == before
            assert ours["0A"] >= 1 and ours["01"] >= 2
        finally:
            client.close()
            peer.close()
