"""Building blocks every dashboard uses: InfluxQL fragments, panels, variables, layout.

Names come from `collector.schema`, so a renamed field breaks the build, not a panel.

How dashboards select nodes: sensor points carry `role` = *all* roles of their node joined
with "," (`ceph-osd,testnode`, see `collector.engine.role_tag`), so a panel cannot match a
role by equality. Instead the tag index `wally_node` (one record per node *and* role) feeds
the variables: `role` lists `SHOW TAG VALUES FROM wally_node WITH KEY = "role"`, `node`
lists the nodes with the chosen roles, and every panel filters `"node" =~ /^$node$/`.
Devices work the same way through `wally_device` (`device_role`, then `device`/`nic`).

grafanalib (0.7.x) emits JSON for old Grafanas; `render` fixes what Grafana 10+ needs:
an explicit `maxDataPoints` (grafanalib's default of 100 turns 1 s data into 1 min
averages), a minimum interval of 1 s, the datasource by uid on every panel and target, a
current `schemaVersion`, `refId`s, and the new heatmap panel's options instead of the
legacy (Angular) heatmap JSON.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable, Sequence
from typing import Any

import attr
import grafanalib.core as G
from grafanalib._gen import DashboardEncoder
from grafanalib.influxdb import InfluxDBTarget

from collector import grafana, schema
from collector.influx import quote_ident, quote_literal

DATASOURCE_UID = "wally-influxdb"
DATASOURCE_NAME = "Wally InfluxDB"
DATASOURCE = {"type": G.PLUGIN_ID_INFLUXDB, "uid": DATASOURCE_UID}
# Grafana 10.4 / 11 dashboards; older Grafanas refuse nothing here, newer ones migrate.
SCHEMA_VERSION = 39
REFRESH = "5s"
# Enough points for 1 s samples over ~15 min before Grafana starts averaging.
MAX_DATA_POINTS = 1000
MIN_INTERVAL = "1s"
PANEL_HEIGHT = 8
GRID_WIDTH = 24
ALL = "$__all"

TIME_FILTER = "$timeFilter"
INTERVAL = "$__interval"

# Grafana units (https://grafana.com/docs/grafana/latest/panels-visualizations/...).
UNIT = {
    "ops": "iops",
    "IOPS": "iops",
    "bytes": "bytes",
    "bytes/s": "Bps",
    "KiB/s": "KiBs",
    "percent": "percent",
    "ns": "ns",
    "ms": "ms",
    "s": "s",
    "msg/s": "reqps",
}


# --- InfluxQL ------------------------------------------------------------------------------


def ident(name: str) -> str:
    return quote_ident(name)


def var_match(tag: str, var: str | None = None) -> str:
    """`"tag" =~ /^$var$/`: Grafana expands a multi-value variable to `(a|b)`, escaped."""
    return f"{ident(tag)} =~ /^${var or tag}$/"


def tag_eq(tag: str, value: str) -> str:
    return f"{ident(tag)} = {quote_literal(value)}"


def tag_ne(tag: str, value: str) -> str:
    return f"{ident(tag)} != {quote_literal(value)}"


def mean(field: str) -> str:
    return f"mean({ident(field)})"


def rate(field: str) -> str:
    """Per-second rate of a counter, robust to counter resets."""
    return f"non_negative_derivative(mean({ident(field)}), 1s)"


def ratio_of_rates(num: str, den: str) -> str:
    """Mean per event over the interval, e.g. latency = d(sum)/d(count)."""
    return f"{rate(num)} / {rate(den)}"


def as_(expr: str, alias: str) -> str:
    return f"{expr} AS {ident(alias)}"


def select(
    measurement: str,
    exprs: str | Sequence[str],
    where: Iterable[str] = (),
    by: Iterable[str] = (),
    time_bucket: bool = True,
    fill: str = "none",
    source: str | None = None,
) -> str:
    """One InfluxQL SELECT over the dashboard's time range, grouped by time and tags.

    `source` replaces the measurement by a subquery (sums across series of a rate).
    """
    cols = exprs if isinstance(exprs, str) else ", ".join(exprs)
    conds = [TIME_FILTER, *where]
    q = f"SELECT {cols} FROM {source or ident(measurement)}"
    if conds:
        q += " WHERE " + " AND ".join(conds)
    groups = ([f"time({INTERVAL})"] if time_bucket else []) + [ident(t) for t in by]
    if groups:
        q += " GROUP BY " + ", ".join(groups)
    if time_bucket:
        q += f" fill({fill})"
    return q


def sum_over(inner: str, field: str, by: Iterable[str] = ()) -> str:
    """Sum across series of a per-series value computed by `inner` (total IOPS of a role)."""
    return select("", as_(f"sum({ident(field)})", field), by=by, source=f"({inner})")


def alias(*tags: str, prefix: str = "") -> str:
    """A legend like `node vda` from tag values: Grafana's `$tag_<key>` placeholders."""
    return prefix + " ".join(f"$tag_{t}" for t in tags)


# --- panels ----------------------------------------------------------------------------------


def target(query: str, legend: str = "", fmt: str = G.TIME_SERIES_TARGET_FORMAT) -> InfluxDBTarget:
    return InfluxDBTarget(query=query, alias=legend, format=fmt, datasource=DATASOURCE)


def timeseries(
    title: str,
    targets: Sequence[InfluxDBTarget],
    unit: str = "",
    description: str = "",
    stacked: bool = False,
    width: int = 12,
) -> G.TimeSeries:
    panel = G.TimeSeries(
        title=title,
        description=description,
        targets=list(targets),
        unit=UNIT.get(unit, unit),
        stacking={"mode": "normal", "group": "A"} if stacked else {"mode": "none"},
        fillOpacity=20 if stacked else 0,
        legendDisplayMode="table",
        legendPlacement="right" if width >= 12 else "bottom",
        legendCalcs=["mean", "max"],
        tooltipMode="multi",
        gridPos=G.GridPos(h=PANEL_HEIGHT, w=width, x=0, y=0),
    )
    return panel


def barchart(
    title: str, targets: Sequence[InfluxDBTarget], x_field: str, unit: str = "", width: int = 12
) -> G.BarChart:
    return G.BarChart(
        title=title,
        targets=list(targets),
        gridPos=G.GridPos(h=PANEL_HEIGHT, w=width, x=0, y=0),
        extraJson={
            "options": {"xField": x_field},
            "fieldConfig": {"defaults": {"unit": UNIT.get(unit, unit)}},
        },
    )


@attr.s
class Heatmap(G.Panel):
    """Grafana's heatmap panel (9.1+), not grafanalib's legacy Angular heatmap.

    `buckets=True`: each series is one bucket named by its upper bound (`le`) or by an
    ordinal label (one row per OSD); Grafana then must not re-bucket (`calculate: false`).
    `buckets=False`: Grafana buckets the values of all series itself (CPU busy of N nodes).
    """

    unit = attr.ib(default="")
    buckets = attr.ib(default=True)
    scheme = attr.ib(default="Oranges")

    def to_json_data(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "calculate": not self.buckets,
            "cellGap": 1,
            "color": {
                "mode": "scheme",
                "scheme": self.scheme,
                "scale": "exponential",
                "exponent": 0.5,
                "fill": "dark-orange",
                "reverse": False,
                "steps": 64,
            },
            "exemplars": {"color": "rgba(255,0,255,0.7)"},
            "filterValues": {"le": 1e-9},
            "legend": {"show": True},
            "showValue": "never",
            "tooltip": {"mode": "single", "yHistogram": True, "showColorScale": False},
            "yAxis": {"axisPlacement": "left", "reverse": False, "unit": self.unit},
            "cellValues": {},
        }
        if self.buckets:
            options["rowsFrame"] = {"layout": "le"}
            options["yAxis"]["decimals"] = 0
        else:
            options["calculation"] = {"yBuckets": {"mode": "count", "value": "20"}}
        return self.panel_json(
            {
                "type": G.HEATMAP_TYPE,
                "options": options,
                "fieldConfig": {
                    "defaults": {
                        "custom": {"hideFrom": {"legend": False, "tooltip": False, "viz": False}}
                    }
                },
            }
        )


def heatmap(
    title: str,
    targets: Sequence[InfluxDBTarget],
    unit: str = "",
    buckets: bool = True,
    description: str = "",
    width: int = 12,
) -> Heatmap:
    return Heatmap(
        title=title,
        description=description,
        targets=list(targets),
        unit=UNIT.get(unit, unit),
        buckets=buckets,
        gridPos=G.GridPos(h=PANEL_HEIGHT, w=width, x=0, y=0),
    )


def layout(rows: Sequence[Sequence[G.Panel]]) -> list[G.Panel]:
    """Rows of panels, left to right; a row's widths are spread evenly over the grid."""
    out: list[G.Panel] = []
    y = 0
    for row in rows:
        x = 0
        width = GRID_WIDTH // len(row)
        height = max(p.gridPos.h for p in row)
        for i, panel in enumerate(row):
            w = GRID_WIDTH - x if i == len(row) - 1 else width
            panel.gridPos = G.GridPos(h=height, w=w, x=x, y=y)
            out.append(panel)
            x += w
        y += height
    return out


# --- variables ---------------------------------------------------------------------------


def tag_values_query(measurement: str, key: str, where: Iterable[str] = ()) -> str:
    q = f"SHOW TAG VALUES FROM {ident(measurement)} WITH KEY = {ident(key)}"
    conds = list(where)
    if conds:
        q += " WHERE " + " AND ".join(conds)
    return q


def variable(
    name: str,
    query: str,
    label: str = "",
    multi: bool = True,
    default: str | None = None,
    sort: int = G.SORT_ALPHA_ASC,
) -> G.Template:
    """A query variable; multi ones default to "All", single ones to the first value."""
    tpl = G.Template(
        name=name,
        query=query,
        label=label or name,
        dataSource=DATASOURCE,
        multi=multi,
        includeAll=multi,
        default=default,
        refresh=G.REFRESH_ON_DASHBOARD_LOAD,
        sort=sort,
    )
    if multi and default is None:
        tpl._current = {"selected": True, "text": ["All"], "value": [ALL]}
    elif default is None:
        tpl._current = {}
    return tpl


def role_var(default: str | None = None) -> G.Template:
    return variable(
        schema.TAG_ROLE,
        tag_values_query(schema.WALLY_NODE.name, schema.TAG_ROLE),
        "Role",
        default=default,
    )


def node_var(multi: bool = True) -> G.Template:
    return variable(
        schema.TAG_NODE,
        tag_values_query(schema.WALLY_NODE.name, schema.TAG_NODE, [var_match(schema.TAG_ROLE)]),
        "Node",
        multi=multi,
    )


DEVICE_KIND_DISK, DEVICE_KIND_NIC = "disk", "nic"
NIC_VAR = "nic"


def device_role_var() -> G.Template:
    return variable(
        schema.TAG_DEVICE_ROLE,
        tag_values_query(
            schema.WALLY_DEVICE.name,
            schema.TAG_DEVICE_ROLE,
            [var_match(schema.TAG_NODE), tag_eq("kind", DEVICE_KIND_DISK)],
        ),
        "Device role",
    )


def device_var() -> G.Template:
    return variable(
        schema.TAG_DEVICE,
        tag_values_query(
            schema.WALLY_DEVICE.name,
            schema.TAG_DEVICE,
            [
                var_match(schema.TAG_NODE),
                var_match(schema.TAG_DEVICE_ROLE),
                tag_eq("kind", DEVICE_KIND_DISK),
            ],
        ),
        "Disk",
    )


def nic_var() -> G.Template:
    return variable(
        NIC_VAR,
        tag_values_query(
            schema.WALLY_DEVICE.name,
            schema.TAG_DEVICE,
            [var_match(schema.TAG_NODE), tag_eq("kind", DEVICE_KIND_NIC)],
        ),
        "NIC",
    )


RUN_VAR = grafana.RUN_VAR


def run_var(kind: str | None = None) -> G.Template:
    """The run to look at, newest first (run ids start with their date)."""
    where = [tag_eq("kind", kind)] if kind else []
    return variable(
        RUN_VAR,
        tag_values_query(schema.WALLY_TEST.name, RUN_VAR, where),
        "Run",
        multi=False,
        sort=G.SORT_ALPHA_DESC,
    )


def _annotation(name: str, color: str, query: str, **columns: str) -> dict[str, Any]:
    return {
        "name": name,
        "datasource": DATASOURCE,
        "enable": True,
        "iconColor": color,
        "query": query,
        "tagsColumn": "",
        **columns,
    }


def test_annotation(kind: str) -> dict[str, Any]:
    """Every test iteration of the chosen run as a region with its parameters."""
    query = select(
        schema.WALLY_TEST.name,
        [as_(f"{ident('end')} / 1000000", "end_ms"), ident("test"), ident("params")],
        [var_match(RUN_VAR), tag_eq("kind", kind)],
        time_bucket=False,
    )
    return _annotation(
        "Tests",
        "rgba(0, 211, 255, 1)",
        query,
        titleColumn="test",
        textColumn="params",
        timeEndColumn="end_ms",
    )


def event_annotation() -> dict[str, Any]:
    """Sensor gaps and node failures (`wally_event`) on the chosen nodes."""
    query = select(
        schema.WALLY_EVENT.name,
        [ident("message"), ident("kind")],
        [var_match(schema.TAG_NODE)],
        time_bucket=False,
    )
    return _annotation(
        "Events", "rgba(255, 96, 96, 1)", query, titleColumn="kind", textColumn="message"
    )


# --- the dashboard ------------------------------------------------------------------------


def dashboard(
    title: str,
    uid: str,
    rows: Sequence[Sequence[G.Panel]],
    variables: Sequence[G.Template],
    annotations: Sequence[dict[str, Any]] = (),
    tags: Sequence[str] = ("wally",),
    time_from: str = "now-30m",
    description: str = "",
) -> dict[str, Any]:
    """A Grafana 10+ dashboard JSON document."""
    dash = G.Dashboard(
        title=title,
        uid=uid,
        description=description,
        panels=layout(rows),
        templating=G.Templating(list=list(variables)),
        annotations=G.Annotations(list=list(annotations)),
        tags=list(tags),
        refresh=REFRESH,
        schemaVersion=SCHEMA_VERSION,
        time=G.Time(time_from, "now"),
        timezone="browser",
        graphTooltip=G.GRAPH_TOOLTIP_MODE_SHARED_CROSSHAIR,
    ).auto_panel_ids()
    return render(dash)


def render(dash: G.Dashboard) -> dict[str, Any]:
    """grafanalib's JSON with what Grafana 10+ needs set explicitly (see module doc)."""
    doc = json.loads(json.dumps(dash.to_json_data(), cls=DashboardEncoder))
    for key in ("rows", "sharedCrosshair", "hideControls", "style"):
        doc.pop(key, None)
    for panel in doc["panels"]:
        panel["datasource"] = DATASOURCE
        panel["maxDataPoints"] = MAX_DATA_POINTS
        panel["interval"] = MIN_INTERVAL
        for letter, tgt in zip(string.ascii_uppercase, panel["targets"], strict=False):
            tgt["refId"] = letter
            tgt["datasource"] = DATASOURCE
    return doc
