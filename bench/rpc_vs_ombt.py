"""rpc-call throughput and client CPU per message: our agents vs ombt 3.0, same broker.

One private RabbitMQ, the same topology for both (2 clients, 1 server, 2000 calls per
client, 1 KiB payload, closed loop without pause), run one after the other. Client CPU
is measured with psutil over the test window only. A raw AMQP request/reply baseline
(pika, the thinnest client) shows how much of the bus's capacity the oslo.messaging
path leaves unused, and a bare oslo.messaging call loop (no agents, no statistics, same
topology) what any tool built on that layer can reach on this machine: the ceiling both
ombt and our agents work under. Run: `python bench/rpc_vs_ombt.py` (needs `pip install
ombt pika`); `python bench/rpc_vs_ombt.py --ceiling 2,4,8` times only the bare loop with
those client counts (does more in flight raise the ceiling?).
"""

from __future__ import annotations

import multiprocessing as mp
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil

from collector.ombt import aggregate, read_controller_log
from loadgen.rpc.broker import LocalBroker
from loadgen.rpc.controller import Controller, RpcTestSpec

CLIENTS, SERVERS, CALLS, LENGTH = 2, 1, 2000, 1024


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def run_ombt(broker: LocalBroker, work: Path) -> tuple[float, float]:
    """(msg/s, client CPU seconds per message) of ombt's rpc-call."""
    ombt = shutil.which("ombt2")
    if ombt is None:
        sys.exit("ombt2 not found: pip install ombt==3.0")
    topic = f"ombt-{uuid.uuid4().hex[:6]}"
    base = [ombt, "--url", broker.url, "--topic", topic]
    procs: list[subprocess.Popen] = []
    try:
        for role, n in (("rpc-server", SERVERS), ("rpc-client", CLIENTS)):
            for i in range(n):
                log = open(work / f"ombt-{role}-{i}.log", "wb")  # noqa: SIM115
                procs.append(
                    subprocess.Popen([*base, role], stdout=log, stderr=log, start_new_session=True)
                )
                log.close()
        time.sleep(5)  # ombt agents announce themselves on the bus; the controller pings them
        clients = [p.pid for p in procs[SERVERS:]]
        out = work / "ombt-controller.log"
        cpu0 = cpu_seconds(clients)
        subprocess.run(
            [
                *base,
                "controller",
                "--output",
                str(out),
                "rpc-call",
                "--calls",
                str(CALLS),
                "--length",
                str(LENGTH),
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )
        cpu = cpu_seconds(clients) - cpu0
        subprocess.run([*base, "controller", "shutdown"], capture_output=True, timeout=60)
    finally:
        for p in procs:  # ombt's shutdown leaves agents running: stop them by PID
            if p.poll() is None:
                p.kill()
            p.wait()
    per_client, _ = read_controller_log(out)
    agg = aggregate(per_client.values())
    msgs = agg["msgs_ok"] + agg["msgs_fail"]
    if agg["msgs_ok"] != CLIENTS * CALLS:
        sys.exit(f"ombt: {agg['msgs_ok']} calls ok of {CLIENTS * CALLS}")
    return agg["rate"], cpu / msgs


def run_ours(broker: LocalBroker) -> tuple[float, float, dict[str, float]]:
    """(msg/s, client CPU seconds per message, latency percentiles in ms)."""
    spec = RpcTestSpec(
        url=broker.url,
        test_type="rpc-call",
        clients=CLIENTS,
        servers=SERVERS,
        calls=CALLS,
        length=LENGTH,
    )
    ctl = Controller(spec)
    ctl.spawn_local()
    clients = [p.pid for name, p in ctl.procs.items() if name.startswith("rpc-client")]
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample() -> None:  # clients exit at the end: keep their last CPU reading
        while not done.wait(0.05):
            samples.append((time.time(), cpu_seconds(clients)))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = ctl.run()
    finally:
        done.set()
        sampler.join()
    merged = result.merged("client")
    if merged.msgs_ok != CLIENTS * CALLS:
        sys.exit(f"ours: {merged.msgs_ok} calls ok of {CLIENTS * CALLS}")
    at_start = [c for t, c in samples if t <= result.start]
    in_test = [c for t, c in samples if t <= (merged.stop_time or 0) + 0.1]
    cpu = in_test[-1] - at_start[-1]
    pct = {f"p{p:g}": merged.percentile_ms(p) for p in (50, 90, 99, 99.9)}
    pct["max"] = merged.max_ms or 0.0
    return merged.rate(), cpu / merged.count, pct


class _Echo:
    def call(self, ctxt: dict, payload: str) -> bool:
        return True


def _oslo_server(url: str, topic: str, ready, stop) -> None:
    import oslo_messaging as om

    from loadgen.rpc.agent import make_transport

    transport = make_transport(url)
    server = om.get_rpc_server(
        transport, om.Target(topic=topic, server="s0"), [_Echo()], executor="threading"
    )
    server.start()
    ready.set()
    stop.wait()
    server.stop()
    server.wait()
    transport.cleanup()


def _oslo_client(url: str, topic: str, calls: int, start, out) -> None:
    import oslo_messaging as om

    from loadgen.rpc.agent import make_transport

    transport = make_transport(url)
    client = om.get_rpc_client(transport, om.Target(topic=topic)).prepare(timeout=30)
    payload = "x" * LENGTH
    client.call({}, "call", payload=payload)  # connects and declares the reply queue
    start.wait()
    t0 = time.time()
    for _ in range(calls):
        client.call({}, "call", payload=payload)
    out.put((t0, time.time(), calls))
    transport.cleanup()


def run_bare_oslo(broker: LocalBroker, clients: int = CLIENTS) -> float:
    """msg/s of a bare oslo.messaging call loop with one server: the layer's own ceiling.
    The total number of calls stays that of the benchmark whatever the client count."""
    topic = f"bare-{uuid.uuid4().hex[:6]}"
    ctx = mp.get_context("spawn")
    ready, stop, start, out = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Queue()
    server = ctx.Process(target=_oslo_server, args=(broker.url, topic, ready, stop))
    server.start()
    ready.wait(60)
    procs = [
        ctx.Process(
            target=_oslo_client, args=(broker.url, topic, CALLS * CLIENTS // clients, start, out)
        )
        for _ in range(clients)
    ]
    return _timed(procs, start, out, stop, server)


def _timed(clients: list, start, out, stop, server) -> float:
    """Start the clients together; aggregate msg/s from their (t0, t1, count) reports."""
    for c in clients:
        c.start()
    time.sleep(2.0)
    start.set()
    results = [out.get(timeout=300) for _ in clients]
    for c in clients:
        c.join(30)
    stop.set()
    server.join(30)
    if server.is_alive():
        server.kill()
        server.join()
    total = sum(n for _, _, n in results)
    return total / (max(t1 for _, t1, _ in results) - min(t0 for t0, _, _ in results))


def _amqp_server(url: tuple[str, int], queue: str, ready, stop) -> None:
    import pika

    conn = pika.BlockingConnection(pika.ConnectionParameters(*url))
    ch = conn.channel()
    ch.queue_declare(queue, auto_delete=True)

    def reply(ch, method, props, body) -> None:
        ch.basic_publish(
            "", props.reply_to, b"ok", pika.BasicProperties(correlation_id=props.correlation_id)
        )
        ch.basic_ack(method.delivery_tag)

    ch.basic_consume(queue, reply)
    ready.set()
    while not stop.is_set():
        conn.process_data_events(time_limit=0.2)
    conn.close()


def _amqp_client(url: tuple[str, int], queue: str, start, out) -> None:
    import pika

    conn = pika.BlockingConnection(pika.ConnectionParameters(*url))
    ch = conn.channel()
    got: list[bytes] = []
    ch.basic_consume("amq.rabbitmq.reply-to", lambda c, m, p, body: got.append(body), auto_ack=True)
    payload = b"x" * LENGTH
    start.wait()
    t0 = time.time()
    for i in range(CALLS):
        props = pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id=str(i))
        ch.basic_publish("", queue, payload, props)
        while len(got) <= i:
            conn.process_data_events(time_limit=None)
    out.put((t0, time.time(), len(got)))
    conn.close()


def run_raw_amqp(broker: LocalBroker) -> float:
    """msg/s of plain request/reply (direct reply-to) with pika, same topology."""
    url = ("127.0.0.1", broker.amqp_port)
    queue = f"raw-{uuid.uuid4().hex[:6]}"
    ctx = mp.get_context("spawn")
    ready, stop, start, out = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Queue()
    server = ctx.Process(target=_amqp_server, args=(url, queue, ready, stop))
    server.start()
    ready.wait(30)
    clients = [
        ctx.Process(target=_amqp_client, args=(url, queue, start, out)) for _ in range(CLIENTS)
    ]
    return _timed(clients, start, out, stop, server)


def ceiling(counts: list[int]) -> None:
    """The bare oslo.messaging loop with more clients (one server): whether more calls in
    flight raise what the layer carries on this machine."""
    work = Path(tempfile.mkdtemp(prefix="wally-bench-rpc-"))
    with LocalBroker(base=work / "rabbit") as broker:
        for n in counts:
            print(
                f"bare oslo.messaging, {n} clients, 1 server: {run_bare_oslo(broker, n):8.1f} msg/s"
            )
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    if "--ceiling" in sys.argv:  # e.g. --ceiling 2,4,8: no ombt, no ratio line
        ceiling([int(n) for n in sys.argv[sys.argv.index("--ceiling") + 1].split(",")])
        return
    work = Path(tempfile.mkdtemp(prefix="wally-bench-rpc-"))
    broker = LocalBroker(base=work / "rabbit")
    broker.start()
    try:
        ombt_rate, ombt_cpu = run_ombt(broker, work)
        our_rate, our_cpu, pct = run_ours(broker)
        bare_rate = run_bare_oslo(broker)
        raw_rate = run_raw_amqp(broker)
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"topology: {CLIENTS} clients, {SERVERS} server, {CALLS} calls/client, {LENGTH} B, rpc-call"
    )
    print(f"ombt:  {ombt_rate:8.1f} msg/s  client CPU {ombt_cpu * 1e3:.3f} ms/msg")
    print(f"ours:  {our_rate:8.1f} msg/s  client CPU {our_cpu * 1e3:.3f} ms/msg")
    print("ours latency (HDR, ms): " + "  ".join(f"{k}={v:.3f}" for k, v in pct.items()))
    print(
        f"bare oslo.messaging call loop: {bare_rate:8.1f} msg/s (ours / bare {our_rate / bare_rate:.3f})"
    )
    print(
        f"2x ombt = {2 * ombt_rate:.0f} msg/s is {2 * ombt_rate / bare_rate:.2f}x what "
        "oslo.messaging alone reaches here"
    )
    print(f"raw AMQP (pika, direct reply-to): {raw_rate:8.1f} msg/s")
    print(f"amqp_ratio={our_rate / raw_rate:.3f} (ours / raw AMQP msg/s)")
    print(f"ratio={our_rate / ombt_rate:.3f} target=>=2")


if __name__ == "__main__":
    main()
