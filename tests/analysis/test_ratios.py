"""Ratio expressions: the safe parser, term resolution against a catalog, evaluation."""

import numpy as np
import pytest

from analysis import ratios, windows
from analysis.config import section_from
from analysis.windows import NS, AnalysisError
from collector.lineproto import Point
from collector.writer import InfluxWriter

CATALOG = ratios.Catalog(
    roles={"testnode", "ceph-osd", "rabbitmq"},
    disk_devices={"ceph-osd": ["sdb", "sdc"], "testnode": ["vda"]},
    nic_devices={"ceph-osd": ["eth0"]},
    diskio_devices={"vda", "sdb", "sdc", "dm-0"},
    diskio_device_roles={"os", "osd-data"},
    net_devices={"eth0", "lo"},
    ceph_collections={"osd"},
    ceph_fields={"op_w", "op_latency.sum", "op_latency.avgcount"},
)


def _source(text):
    e = ratios.parse("r", text)
    return ratios.Resolver(CATALOG).source(e, e.terms[0])


def test_terms_are_found_with_their_columns():
    e = ratios.parse("r", "(storage.disk.reads + storage.disk.writes) / client.write.ios * 1000")
    assert [t.text for t in e.terms] == [
        "storage.disk.reads",
        "storage.disk.writes",
        "client.write.ios",
    ]
    assert [t.col for t in e.terms] == [2, 23, 46]
    values = {"storage.disk.reads": 3.0, "storage.disk.writes": 5.0, "client.write.ios": 4.0}
    assert ratios.evaluate(e, values) == pytest.approx(2000.0)
    chunks = {k: np.array([v, 2 * v]) for k, v in values.items()}
    np.testing.assert_allclose(ratios.evaluate(e, chunks), [2000.0, 2000.0])


@pytest.mark.parametrize(
    "expr,col,message",
    [
        ("storage.disk.reads +", 21, "syntax error"),
        ("storage.disk.reads ** 2", 1, "operator Pow is not allowed"),
        ("__import__('os').system('true')", 1, "Call is not allowed"),
        ("storage.disk.reads if 1 else 2", 1, "IfExp is not allowed"),
        ("reads / 2", 1, "bare name 'reads'"),
        ("storage.disk[0]", 1, "Subscript is not allowed"),
        ("", None, "empty"),
    ],
)
def test_bad_syntax_is_named_with_its_column(expr, col, message):
    with pytest.raises(ratios.RatioError) as err:
        ratios.parse("my_ratio", expr)
    assert err.value.col == col
    assert "'my_ratio'" in str(err.value) and message in str(err.value)


@pytest.mark.parametrize(
    "expr,col,message",
    [
        ("nosuch.disk.reads / client.ios", 1, "unknown role 'nosuch'; known: "),
        ("storage.flux.reads", 9, "unknown device or class 'flux'"),
        ("storage.disk.wirtes", 14, "unknown field 'wirtes' of diskio"),
        ("client.sideways.ios", 8, "client direction 'sideways'"),
        ("client.iopz", 1, "expected client[.read|.write].FIELD"),
        ("storage.osd.op_nope", 13, "no Ceph counter 'op_nope'"),
        ("storage.disk", 1, "expected ROLE.DEVICE_OR_CLASS.FIELD"),
    ],
)
def test_unresolvable_terms_are_named(expr, col, message):
    with pytest.raises(ratios.RatioError) as err:
        _source(expr)
    assert err.value.col == col and message in str(err.value), str(err.value)


def test_role_aliases_and_missing_roles():
    # storage means ceph-osd here; a role regex matches it inside "ceph-osd,testnode"
    src = _source("storage.disk.writes")
    assert '"role" =~ /(^|,)(ceph\\-osd|storage)(,|$)/' in src.where or "ceph" in src.where
    assert '"device" =~ /^(sdb|sdc)$/' in src.where
    lonely = ratios.Catalog({"testnode"}, {}, {}, set(), set(), set(), set())
    e = ratios.parse("r", "storage.cpu.busy_seconds")
    with pytest.raises(ratios.RatioError, match="no node has role 'storage'"):
        ratios.Resolver(lonely).source(e, e.terms[0])


def test_targets_resolve_to_measurements_and_kinds():
    assert _source("ceph_osd.osd_data.writes").where.endswith('"device_role" = $p0')
    assert _source("testnode.dm_0.reads").where.endswith('"device" =~ /^(dm\\-0)$/')
    assert _source("ceph-osd.net.bytes".replace("ceph-osd", '"ceph-osd"')).fields == (
        "bytes_sent",
        "bytes_recv",
    )
    assert _source("storage.osd.op_latency").kind == "latency_pair"
    assert _source("storage.osd.op_w").kind == "counter"
    assert _source("all.cpu.busy_seconds").kind == "cpu"
    assert _source("all.cpu.busy_seconds").where == "\"cpu\" != 'cpu-total'"
    assert _source("testnode.disk.iops_in_progress").kind == "gauge"


def test_config_section_is_validated():
    sec = section_from({"ratios": {"x": "testnode.disk.writes / client.ios"}, "chunks": 3})
    assert sec.ratio_exprs()["x"] and "disk_ios_per_client_io" in sec.ratio_exprs()
    with pytest.raises(ratios.RatioError, match="'x' at column 23: syntax error"):
        section_from({"ratios": {"x": "testnode.disk.writes /"}})
    with pytest.raises(AnalysisError, match=r"analysis\.thresholds\.cpu_pc"):
        section_from({"thresholds": {"cpu_pc": 3}}, "lab.yaml")


def _window(start_ns: int, end_ns: int) -> windows.TestWindow:
    return windows.TestWindow(
        run="r1",
        test="t1",
        kind="fio",
        status="done",
        iteration=1,
        nodes=("client0",),
        params={},
        ramp_s=0.0,
        first_start_ns=start_ns,
        last_end_ns=end_ns,
        start_ns=start_ns,
        end_ns=end_ns,
    )


def test_short_window_with_one_sample_per_series_gives_nan(influx):
    """A 1.5 s window holds one sample of each 1 s counter: no interval, no rate, no crash."""
    t0 = 1_700_000_000 * NS
    points = [
        Point("wally_node", {"node": "osd0", "role": "ceph-osd"}, {"roles": "ceph-osd"}, t0),
        *(
            Point(
                "diskio",
                {"node": "osd0", "role": "ceph-osd", "device": "sdb", "device_role": "osd-data"},
                {"reads": 100 * i, "writes": 50 * i},
                t0 + i * NS,
            )
            for i in range(4)
        ),
        *(
            Point(
                "fio",
                {"node": "client0", "op": "read", "run": "r1", "test": "t1"},
                {"iops": 9.0},
                t0 + i * NS,
            )
            for i in range(4)
        ),
    ]
    writer = InfluxWriter(influx, validate=False)
    writer.write(points)
    writer.close()
    engine = ratios.RatioEngine(influx)
    t = _window(t0 + NS // 2, t0 + 2 * NS)
    r = engine.evaluate(ratios.parse("r", "storage.disk.ios / client.ios"), t)
    assert np.isnan(r.value) and np.isnan(r.deviation)
    # a 3 s window spans two samples and gives the counter's rate
    r = engine.evaluate(ratios.parse("r", "storage.disk.ios / seconds"), _window(t0, t0 + 3 * NS))
    assert r.value == pytest.approx(150.0)
