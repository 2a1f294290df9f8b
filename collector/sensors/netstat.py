"""Telegraf ``inputs.netstat``: sockets by TCP state, counted on the node (``@sockets``).

gopsutil's ``NetConnections("all")`` (what Telegraf uses) reads tcp, tcp6, udp, udp6 and
unix: TCP sockets count by state, UDP and unix datagram sockets as ``udp_socket``, other
unix sockets have status NONE (``tcp_none``). Unlike gopsutil we count a unix socket shared
by several processes once (gopsutil once per process holding it).
"""

from __future__ import annotations

from collector import schema
from collector.lineproto import Point
from collector.sensors import (
    Context,
    Sample,
    Sensor,
    base_tags,
    digest_counts,
    parse_error,
    register,
)

SOCKETS = "@sockets"
# /proc/net/tcp "st" column (include/net/tcp_states.h) -> Telegraf field
TCP_STATES = {
    "01": "tcp_established", "02": "tcp_syn_sent", "03": "tcp_syn_recv",
    "04": "tcp_fin_wait1", "05": "tcp_fin_wait2", "06": "tcp_time_wait", "07": "tcp_close",
    "08": "tcp_close_wait", "09": "tcp_last_ack", "0A": "tcp_listen", "0B": "tcp_closing",
}  # fmt: skip
SOCK_DGRAM = 2


def parse(sample: Sample, ctx: Context, state: object = None) -> tuple[list[Point], object]:
    fields = dict.fromkeys(schema.NETSTAT.fields, 0)
    for key, n in digest_counts(sample, SOCKETS):
        if key.startswith("tcp:"):
            name = TCP_STATES.get(key[4:].upper())
            if name:
                fields[name] += n
        elif key == "udp":
            fields["udp_socket"] += n
        elif key.startswith("unix:"):
            try:
                sock_type = int(key[5:], 16)
            except ValueError:
                raise parse_error(SOCKETS, f"bad unix socket type in {key!r}") from None
            fields["udp_socket" if sock_type == SOCK_DGRAM else "tcp_none"] += n
    return [Point(schema.NETSTAT.name, base_tags(ctx), fields, sample.time_ns)], state


SENSOR = register(Sensor("netstat", schema.NETSTAT, (SOCKETS,), parse, __doc__ or ""))
