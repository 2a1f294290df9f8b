"""Every panel of every dashboard, queried like Grafana would, on a real run's data.

The data: see conftest.py (real `loadgen run` with collector, fio and the session's
RabbitMQ broker; Ceph and ombt captures through the real parsers). Variables resolve
through their own queries against the same database, so an index that does not match
the panels fails here too.
"""

from __future__ import annotations

import pytest

from collector import schema
from dashboards import panels as P
from dashboards.build import all_dashboards
from dashboards.check import (
    check_dashboard,
    format_values,
    interpolate,
    resolve_variables,
    used_variables,
)

DASHBOARDS = all_dashboards()
# The Node dashboard shows one node: the one the run sampled (ceph0 has Ceph data only).
CHOSEN = {"wally-node.json": {schema.TAG_NODE: ["local"]}}


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_panel_shows_real_data(run_data, name):
    doc = DASHBOARDS[name]
    variables = resolve_variables(
        run_data.client, doc, run_data.start_ms, run_data.end_ms, CHOSEN.get(name)
    )
    empty_vars = [v for v, values in variables.items() if not values]
    assert not empty_vars, f"{name}: variables without values: {empty_vars}"
    if P.RUN_VAR in variables:
        # the newest run of the kind is preselected
        expected = run_data.rpc_run if "rpc" in name else run_data.run_id
        assert variables[P.RUN_VAR] == [expected]
    results = check_dashboard(
        run_data.client, doc, run_data.start_ms, run_data.end_ms, CHOSEN.get(name)
    )
    assert len(results) == sum(len(p["targets"]) for p in doc["panels"])
    empty = [
        f"{r.panel} [{r.ref}]: {r.error or 'no rows'}\n  {r.query}" for r in results if not r.rows
    ]
    assert not empty, f"{name}: panels without data:\n" + "\n".join(empty)


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_annotations_run(run_data, name):
    doc = DASHBOARDS[name]
    variables = resolve_variables(
        run_data.client, doc, run_data.start_ms, run_data.end_ms, CHOSEN.get(name)
    )
    for ann in doc["annotations"]["list"]:
        q = interpolate(ann["query"], variables, run_data.start_ms, run_data.end_ms)
        series = run_data.client.query(q)[0]["series"]
        if ann["name"] == "Tests":
            rows = [row for s in series for row in s["values"]]
            assert rows, f"{name}: no test regions\n  {q}"
            cols = series[0]["columns"]
            for row in rows:
                rec = dict(zip(cols, row, strict=True))
                assert rec["end_ms"] >= rec["time"] / 1e6  # region end after its start


def test_storage_totals_match_fio_points(run_data):
    """The total IOPS panel sums nodes per op: equal to the fio points averaged per second."""
    doc = DASHBOARDS["wally-storage.json"]
    panel = next(p for p in doc["panels"] if p["title"] == "Client IOPS (total)")
    variables = resolve_variables(run_data.client, doc, run_data.start_ms, run_data.end_ms, None)
    q = interpolate(panel["targets"][0]["query"], variables, run_data.start_ms, run_data.end_ms)
    got = run_data.client.query_df(q)
    raw = run_data.client.query_df(
        f"SELECT iops FROM {schema.FIO.name} WHERE run = $r", {"r": run_data.run_id}
    )
    assert got["iops"].sum() == pytest.approx(raw["iops"].sum(), rel=1e-6)


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_structure(name):
    doc = DASHBOARDS[name]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
    cells: dict[tuple[int, int], str] = {}
    for p in doc["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= P.GRID_WIDTH, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]
    defined = {v["name"] for v in doc["templating"]["list"]}
    queries = [t["query"] for p in doc["panels"] for t in p["targets"]]
    queries += [a["query"] for a in doc["annotations"]["list"]]
    queries += [v["query"] for v in doc["templating"]["list"]]
    for q in queries:
        assert used_variables(q) <= defined, f"{name}: undefined {used_variables(q) - defined}"
    for p in doc["panels"]:
        assert p["datasource"] == P.DATASOURCE
        assert p["maxDataPoints"] == P.MAX_DATA_POINTS and p["interval"] == P.MIN_INTERVAL
        refs = [t["refId"] for t in p["targets"]]
        assert all(refs) and len(refs) == len(set(refs)), p["title"]
        assert all(t["datasource"] == P.DATASOURCE for t in p["targets"]), p["title"]
        if p["type"] == "heatmap":
            # Grafana 10+ heatmap options, not grafanalib's legacy Angular layout
            assert isinstance(p["options"], dict) and "calculate" in p["options"]
            assert "cards" not in p and "dataFormat" not in p
    for v in doc["templating"]["list"]:
        assert v["datasource"] == P.DATASOURCE
    for a in doc["annotations"]["list"]:
        assert a["datasource"] == P.DATASOURCE
    assert doc["schemaVersion"] == P.SCHEMA_VERSION and doc["refresh"] == P.REFRESH


def test_variable_formatting_like_grafana():
    assert format_values(["a.b/c"]) == r"a\.b\/c"
    assert format_values(["n1", "n-2"]) == "(n1|n-2)"
    q = interpolate(
        'SELECT x FROM m WHERE $timeFilter AND "node" =~ /^$node$/ GROUP BY time($__interval)',
        {"node": ["a", "b"]},
        0,
        2_000_000,
    )
    assert (
        q
        == 'SELECT x FROM m WHERE time >= 0ms and time <= 2000000ms AND "node" =~ /^(a|b)$/ GROUP BY time(2s)'
    )
