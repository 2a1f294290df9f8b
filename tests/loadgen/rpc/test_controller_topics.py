"""The controller's topology for real: several topics and a non-default message length.

A module of its own beside test_controller.py (same module under test: how
`loadgen.rpc.controller` spreads agents over topics) because it needs exact broker-wide
counters, hence a broker of its own (`counting_rabbitmq`).

Three clients on two topics put two clients on topic 0 and one on topic 1, so a server
that got another topic's messages (or missed its own) shows in its exact count.
"""

from __future__ import annotations

import pytest

from loadgen.rpc.broker import LocalBroker
from loadgen.rpc.controller import Controller, RpcTestSpec
from tests.fixtures.rabbitmq import overview_counts, published_to, wait_for

CALLS = 30
CLIENTS = 3
TOPICS = 2


@pytest.mark.parametrize(("test_type", "servers"), [("rpc-call", 2), ("rpc-fanout", 4)])
def test_topics_each_server_gets_exactly_its_topics_messages(
    counting_rabbitmq: LocalBroker, test_type: str, servers: int
) -> None:
    rabbitmq = counting_rabbitmq
    spec = RpcTestSpec(
        url=rabbitmq.url,
        test_type=test_type,
        clients=CLIENTS,
        servers=servers,
        topics=TOPICS,
        calls=CALLS,
        length=100,
    )
    before = overview_counts(rabbitmq)
    ctl = Controller(spec)
    ctl.spawn_local()
    result = ctl.run()
    assert result.missing == {}
    topics = [f"wally-{ctl.test_id}-t{t}" for t in range(TOPICS)]
    clients, receivers = result.side("client"), result.side("server")
    assert {a.topic for a in clients} == {a.topic for a in receivers} == set(topics)
    for a in clients:
        assert a.stats is not None
        assert (a.stats.msgs_ok, a.stats.msgs_fail) == (CALLS, 0), a.name
    sent = {t: CALLS * sum(a.topic == t for a in clients) for t in topics}
    assert sorted(sent.values()) == [CALLS, 2 * CALLS]
    per_topic = {t: sum(a.topic == t for a in receivers) for t in topics}
    for a in receivers:
        # rpc-call: a topic's calls go to its one server; fanout: to every server of the topic
        assert a.stats is not None and a.stats.msgs_ok == sent[a.topic], a.name
        assert a.stats.msgs_fail == 0
    if test_type == "rpc-call":
        assert set(per_topic.values()) == {1}
        # RabbitMQ's own counters, per topic queue: its clients' calls, nothing else
        assert wait_for(lambda: published_to(rabbitmq, topics), sent) == sent
    received = sum(a.stats.msgs_ok for a in receivers)
    assert received == sum(sent[t] * per_topic[t] for t in topics)
    # broker-wide: every call also publishes and delivers a reply; fanout queues are gone
    # with their servers, so its copies are checked as deliveries
    replies = CLIENTS * CALLS if test_type == "rpc-call" else 0
    expected = {"publish": CLIENTS * CALLS + replies, "deliver_get": received + replies}
    got = wait_for(
        lambda: {k: v - before[k] for k, v in overview_counts(rabbitmq).items()},
        expected,
        timeout=60,
    )
    assert got == expected
