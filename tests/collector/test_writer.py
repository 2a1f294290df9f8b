"""The writer against a real influxd: batching, outage with spool replay, rejections."""

import time

import numpy as np
import pandas as pd
import pytest

from collector.influx import InfluxClient, InfluxConfig, InfluxError
from collector.influxd import EmbeddedInfluxd
from collector.lineproto import Point
from collector.writer import InfluxWriter, WriteError, offending_line


def _count(client: InfluxClient, measurement: str) -> int:
    df = client.query_df(f'SELECT count("used") FROM "{measurement}"')
    return 0 if df.empty else int(df["count"].iloc[0])


def test_batches_and_frames_arrive(influx, tmp_path):
    n = 12_345
    df = pd.DataFrame(
        {
            "node": np.where(np.arange(n) % 2, "a b", "c,d"),
            "used": np.arange(n),
            "used_percent": np.arange(n) / 7,
        },
        index=pd.Index(np.arange(n, dtype="int64") * 1000),
    )
    # no timed flush: the batch count below is exact
    with InfluxWriter(
        influx, batch_lines=1000, spool_dir=tmp_path / "spool", flush_interval=None
    ) as w:
        w.write_frame(df, "mem", tag_columns=["node"], const_tags={"role": "testnode"})
        w.write([Point("mem", {"node": "x"}, {"used": 1}, 5)])
    assert w.stats.points == n + 1
    assert w.stats.batches_sent == 13  # 12 full batches of 1000 and the rest
    back = influx.query_df(
        "SELECT used, used_percent FROM mem WHERE role = 'testnode' GROUP BY \"node\""
    )
    assert len(back) == n
    back = back.sort_values("time")
    assert back["used"].tolist() == list(range(n))
    np.testing.assert_array_equal(back["used_percent"].to_numpy(), np.arange(n) / 7)


def test_slow_points_reach_the_server_without_a_flush(influx):
    with InfluxWriter(influx, flush_interval=0.2) as w:
        w.write([Point("mem", {"node": "slow"}, {"used": i}, i) for i in range(3)])
        deadline = time.monotonic() + 30
        while _count(influx, "mem") < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        # far fewer lines than a batch, yet delivered while the writer is still open
        assert _count(influx, "mem") == 3
        assert w.stats.batches_sent == 1


def test_outage_loses_nothing_and_duplicates_nothing(tmp_path):
    server = EmbeddedInfluxd(tmp_path / "state")
    url = server.start()
    client = InfluxClient(InfluxConfig(url=url, database="outage", timeout=2))
    client.create_database()
    writer = InfluxWriter(
        client,
        batch_lines=200,
        spool_dir=tmp_path / "spool",
        retries=1,
        retry_wait=0.05,
        replay_interval=0.1,
    )
    total = 0
    try:
        for step in range(60):
            if step == 20:
                server.stop()
            if step == 40:
                assert writer.spooled() > 0, "the outage should have sent batches to the spool"
                assert server.start() == url
            writer.write(
                Point("mem", {"node": "n1"}, {"used": total + i}, (total + i) * 1000)
                for i in range(250)
            )
            total += 250
            writer.flush()
        writer.close(replay_timeout=30)
        assert writer.spooled() == 0
        assert (
            writer.stats.batches_spooled > 0
            and writer.stats.batches_replayed == writer.stats.batches_spooled
        )
        df = client.query_df("SELECT used FROM mem")
        assert len(df) == total
        assert sorted(df["used"]) == list(range(total))
    finally:
        server.destroy()


def test_spool_left_by_a_dead_writer_is_replayed_by_the_next(influx, tmp_path):
    down = InfluxClient(InfluxConfig(url="http://127.0.0.1:9", database=influx.database, timeout=1))
    w1 = InfluxWriter(down, batch_lines=10, spool_dir=tmp_path, retries=0, replay_interval=60)
    w1.write(Point("mem", {}, {"used": i}, i) for i in range(35))
    w1.flush()
    assert w1.spooled() == 4
    w2 = InfluxWriter(influx, spool_dir=tmp_path, replay_interval=0.05)
    assert w2.wait_replayed(10)
    w2.close()
    assert _count(influx, "mem") == 35


def test_type_conflict_names_the_offending_line_and_keeps_the_batch(influx, tmp_path):
    influx.write_body(b"mem used=1.5 1")  # someone else made `used` a float
    w = InfluxWriter(influx, spool_dir=tmp_path, validate=True)
    w.write(
        [Point("mem", {"node": "n"}, {"used": 7}, 2), Point("mem", {"node": "n"}, {"free": 3}, 3)]
    )
    with pytest.raises(WriteError) as e:
        w.close()
    text = str(e.value)
    assert 'field type conflict: input field "used"' in text
    assert "offending line: mem,node=n used=7i 2" in text
    kept = e.value.rejections[0].saved_to
    assert kept is not None and "used=7i" in kept.read_text()
    assert _count(influx, "mem") == 1  # the good point of the partial write arrived


def test_unreachable_without_spool_is_an_error():
    down = InfluxClient(InfluxConfig(url="http://127.0.0.1:9", database="x", timeout=1))
    w = InfluxWriter(down, retries=0)
    w.write([Point("mem", {}, {"used": 1}, 1)])
    with pytest.raises(InfluxError, match="unreachable and no spool directory"):
        w.close()


def test_offending_line_for_parse_errors():
    msg = "unable to parse 'mem used=oops 1': invalid number"
    assert offending_line(msg, []) == "mem used=oops 1"
