"""RPC agents and controller against a real RabbitMQ: counts, broker counters, histograms,
faults and bad input."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter

import psutil
import pytest

from collector.influx import InfluxClient
from collector.lineproto import Point
from collector.writer import InfluxWriter
from loadgen.rpc.broker import BrokerError, LocalBroker
from loadgen.rpc.controller import Controller, RpcTestError, RpcTestSpec, run_local
from loadgen.rpc.stats import LatencyStats
from tests.fixtures.rabbitmq import overview_counts, published_to, wait_for


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in before}


def _by_type(points: list[Point], **tags: str) -> Counter[str]:
    """Failures by exception type summed over the `rpc_errors` points with these tags."""
    out: Counter[str] = Counter()
    for p in points:
        if p.measurement == "rpc_errors" and all(p.tags[k] == v for k, v in tags.items()):
            out[p.tags["error_type"]] += p.fields["count"]
    return out


def _hist_of(raw: list[float]) -> LatencyStats:
    s = LatencyStats()
    for v in raw:
        s.record(v)
    return s


@pytest.mark.parametrize(
    ("test_type", "servers", "queue_suffix", "executor"),
    [
        ("rpc-call", 2, "", "threading"),
        ("rpc-cast", 2, "", "threading"),
        ("rpc-fanout", 2, "fanout", "threading"),
        ("notify", 2, ".info", "threading"),
        ("rpc-call", 2, "", "eventlet"),
    ],
)
def test_each_type_counts_match_broker(
    counting_rabbitmq: LocalBroker, test_type: str, servers: int, queue_suffix: str, executor: str
) -> None:
    rabbitmq = counting_rabbitmq
    points: list[Point] = []
    spec = RpcTestSpec(
        url=rabbitmq.url,
        test_type=test_type,
        clients=3,
        servers=servers,
        calls=150,
        executor=executor,
        record_raw=True,
    )
    before = overview_counts(rabbitmq)
    ctl = Controller(spec, sink=points.extend)
    ctl.spawn_local()
    result = ctl.run()
    assert result.missing == {}
    assert {a.green for a in ctl.agents.values()} == {executor == "eventlet"}
    clients, servers_ = result.merged("client"), result.merged("server")
    assert clients.msgs_ok == 3 * 150 and clients.msgs_fail == 0
    fanout = servers if test_type == "rpc-fanout" else 1
    assert servers_.msgs_ok == clients.msgs_ok * fanout

    # RabbitMQ's own counters. Broker-wide: every call also publishes and delivers a reply.
    replies = clients.msgs_ok if test_type == "rpc-call" else 0
    expected = {"publish": clients.msgs_ok + replies, "deliver_get": servers_.msgs_ok + replies}
    # Broker-wide stats come from the management stats database, which can lag far behind
    # the queues' own counters on a busy machine: give it time, compare exactly.
    got = wait_for(lambda: _delta(before, overview_counts(rabbitmq)), expected, timeout=60)
    assert got == expected
    if test_type != "rpc-fanout":  # fanout queues are auto-deleted with their servers
        queue = f"wally-{ctl.test_id}-t0{queue_suffix}"
        assert (
            wait_for(lambda: published_to(rabbitmq, [queue])[queue], clients.msgs_ok)
            == servers_.msgs_ok
        )

    # merged histograms == histogram of every per-message latency, on both sides
    for side in ("client", "server"):
        raw = [v for a in result.side(side) for v in (a.raw or [])]
        assert len(raw) == result.merged(side).msgs_ok
        assert result.merged(side).same_histogram(_hist_of(raw))

    # the sink got per-second points and the per-iteration summary with merged totals
    rpc = [p for p in points if p.measurement == "rpc"]
    summary = [p for p in rpc if p.tags["test"] == "rpc/summary" and p.tags["agent"] == "all"]
    assert {p.tags["side"] for p in summary} == {"client", "server"}
    by_side = {p.tags["side"]: p.fields for p in summary}
    assert by_side["client"]["msgs_ok"] == clients.msgs_ok
    assert by_side["server"]["msgs_ok"] == servers_.msgs_ok
    # every agent's per-second points, its last partial second included, add up exactly
    # to its own final result
    ticks = [p for p in rpc if p.tags["test"] == "rpc"]
    for a in result.agents.values():
        assert a.stats is not None
        mine = [p.fields for p in ticks if p.tags["agent"] == a.name]
        assert mine, f"{a.name}: no per-second points"
        assert {p.tags["side"] for p in ticks if p.tags["agent"] == a.name} == {a.side}
        for f in ("msgs_ok", "msgs_fail"):
            assert sum(m[f] for m in mine) == getattr(a.stats, f), (a.name, f)
    assert not [p for p in points if p.measurement == "rpc_errors"]


def test_open_loop_paces_sends_and_measures_from_intended_time(rabbitmq: LocalBroker) -> None:
    spec = RpcTestSpec(
        url=rabbitmq.url, test_type="rpc-call", clients=1, servers=1, calls=60, rate=40.0
    )
    result = run_local(spec)
    client = result.merged("client")
    assert client.msgs_ok == 60
    # 60 sends at 40/s cannot take less than 59/40 s from the first intended send
    assert client.duration() >= 59 / 40
    assert client.rate() <= 40 * 1.05


def test_broker_restart_mid_test_counts_failures_and_recovers(
    rabbitmq: LocalBroker, influx: InfluxClient
) -> None:
    points: list[Point] = []
    writer = InfluxWriter(influx)
    calls_flow = threading.Event()

    def sink(batch: list[Point]) -> None:
        points.extend(batch)
        writer.write(batch)
        if any(p.tags.get("side") == "client" and p.fields.get("msgs_ok") for p in batch):
            calls_flow.set()

    restarted: list[float] = []

    def bounce() -> None:
        # mid-load, not mid-start-up: on a busy machine the roll call alone can take seconds
        if calls_flow.wait(60):
            rabbitmq.restart()
            restarted.append(time.time())

    spec = RpcTestSpec(
        url=rabbitmq.url,
        test_type="rpc-call",
        clients=2,
        servers=1,
        calls=None,
        duration=22.0,
        timeout=2.0,
        pause=0.01,
        # oslo's default (retry=None) blocks a send until the broker is back, so whether a
        # call fails would depend on how fast the restart is; bounded retries make it fail.
        retry=1,
    )
    t = threading.Thread(target=bounce)
    t.start()
    try:
        result = run_local(spec, sink=sink)
    finally:
        t.join()
        writer.close()
    assert restarted, "no client tick with calls before the restart was due"
    assert result.missing == {}
    client = result.merged("client")
    assert client.msgs_fail >= 1
    assert client.msgs_fail == sum(client.errors.values())
    assert set(client.errors) <= {"MessagingTimeout", "MessageDeliveryFailure"}
    # failures by type, as written to InfluxDB, are exactly the agents' own counts: per
    # agent at the end, per agent summed over its seconds, and merged (agent=all)
    stored = influx.query_df('SELECT * FROM rpc_errors WHERE "test" = $t', {"t": "rpc/summary"})
    for a in result.agents.values():
        assert a.stats is not None
        assert _by_type(points, test="rpc/summary", agent=a.name) == a.stats.errors, a.name
        assert _by_type(points, test="rpc", agent=a.name) == a.stats.errors, a.name
        rows = stored[stored["agent"] == a.name]
        assert dict(zip(rows["error_type"], rows["count"], strict=True)) == a.stats.errors
    for side in ("client", "server"):
        merged = result.merged(side).errors
        assert _by_type(points, test="rpc/summary", agent="all", side=side) == merged
        rows = stored[(stored["agent"] == "all") & (stored["side"] == side)]
        assert dict(zip(rows["error_type"], rows["count"], strict=True)) == merged
    # agents reconnected: calls succeeded after the broker came back
    after = [
        p
        for p in points
        if p.measurement == "rpc"  # not the rpc_errors of those seconds
        and p.tags["test"] == "rpc"
        and p.tags["side"] == "client"
        and p.time_ns / 1e9 > restarted[0] + 1
    ]
    assert sum(p.fields["msgs_ok"] for p in after) > 0


def test_killed_agent_is_reported_missing_and_others_finish(rabbitmq: LocalBroker) -> None:
    spec = RpcTestSpec(
        url=rabbitmq.url,
        test_type="rpc-cast",
        clients=2,
        servers=1,
        calls=None,
        duration=4.0,
        pause=0.005,
    )
    ctl = Controller(spec)
    ctl.spawn_local()

    def kill_later() -> None:
        # once the load runs: on a busy machine the agents' roll call alone can take seconds
        victim = ctl.agents["rpc-client-1"]
        deadline = time.monotonic() + 60
        while not victim.ready and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2.0)
        os.kill(ctl.procs["rpc-client-1"].pid, signal.SIGKILL)

    threading.Thread(target=kill_later).start()
    result = ctl.run()
    assert set(result.missing) == {"rpc-client-1"}
    assert result.agents["rpc-client-0"].stats is not None
    assert result.agents["rpc-client-0"].stats.msgs_ok > 0
    assert result.merged("server").msgs_ok >= result.agents["rpc-client-0"].stats.msgs_ok
    assert all(p.poll() is not None for p in ctl.procs.values())


@pytest.mark.parametrize("executor", ["threading", "eventlet"])
def test_idle_agents_use_no_cpu_and_exit_when_controller_vanishes(
    rabbitmq: LocalBroker, executor: str
) -> None:
    spec = RpcTestSpec(
        url=rabbitmq.url, test_type="rpc-call", clients=1, servers=1, calls=10, executor=executor
    )
    ctl = Controller(spec, silence_timeout=3.0)
    ctl.spawn_local()
    try:
        assert ctl._pump(lambda: all(a.ready for a in ctl.agents.values()), 60)
        procs = [psutil.Process(p.pid) for p in ctl.procs.values()]
        before = [sum(p.cpu_times()[:2]) for p in procs]
        time.sleep(3.0)
        used = [sum(p.cpu_times()[:2]) - b for p, b in zip(procs, before, strict=True)]
        assert max(used) < 0.15, f"idle agents used {used} CPU seconds in 3 s"
        # the controller disappears without a word: agents must notice and exit
        ctl._closed.set()
        for a in ctl.agents.values():
            a.channel.close()
        for p in ctl.procs.values():
            assert p.wait(timeout=20) is not None
    finally:
        ctl.close()


def test_bad_input_gives_clear_errors(rabbitmq: LocalBroker) -> None:
    with pytest.raises(RpcTestError, match=r"clients=0: expected an integer >= 1"):
        run_local(RpcTestSpec(url=rabbitmq.url, clients=0))
    with pytest.raises(BrokerError, match=r"does not answer"):
        run_local(RpcTestSpec(url="rabbit://guest:guest@127.0.0.1:1/"))
    wrong = rabbitmq.url.replace("guest:guest", "guest:wrong")
    with pytest.raises(BrokerError, match=r"login refused"):
        run_local(RpcTestSpec(url=wrong))
    with pytest.raises(RpcTestError, match=r"test_type='rpc-bogus'"):
        run_local(RpcTestSpec(url=rabbitmq.url, test_type="rpc-bogus"))
