"""Run a dashboard's queries the way Grafana would, without a Grafana.

Variables are resolved in order (each variable's query may use the ones before it), a
multi-value variable expands to `(a|b)` with regex escaping as Grafana's InfluxDB
datasource does, `$timeFilter` and `$__interval` come from the time range. `dashboards
check` uses this to list panels that would show nothing; the tests use it on real data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from collector.influx import InfluxClient, InfluxError
from dashboards import panels as P

_VAR_RE = re.compile(r"\$(\w+)|\[\[(\w+)\]\]")
_REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|\[\]{}/]")
_BUILTIN = {"timeFilter", "col"}


def used_variables(text: str) -> set[str]:
    """Dashboard variables a query refers to (Grafana built-ins and alias macros excluded)."""
    names = {a or b for a, b in _VAR_RE.findall(text)}
    return {n for n in names if n not in _BUILTIN and not n.startswith(("tag_", "__"))}


def interval_s(start_ms: int, end_ms: int, max_points: int = P.MAX_DATA_POINTS) -> int:
    """Grafana's $__interval: range / maxDataPoints, at least the 1 s minimum interval."""
    return max(1, round((end_ms - start_ms) / 1000 / max_points))


def format_values(values: Sequence[str]) -> str:
    """A variable's value inside a regex, as Grafana formats it for InfluxDB."""
    escaped = [_REGEX_SPECIAL.sub(lambda m: "\\" + m.group(0), v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def interpolate(
    query: str, variables: Mapping[str, Sequence[str]], start_ms: int, end_ms: int
) -> str:
    out = query.replace("$timeFilter", f"time >= {start_ms}ms and time <= {end_ms}ms")
    out = out.replace("$__interval", f"{interval_s(start_ms, end_ms)}s")

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name not in variables:
            return m.group(0)
        return format_values(variables[name])

    return _VAR_RE.sub(sub, out)


def _values(client: InfluxClient, query: str) -> list[str]:
    series = client.query(query)[0]["series"]
    return sorted({str(row[1]) for s in series for row in s.get("values", [])})


def resolve_variables(
    client: InfluxClient,
    doc: Mapping[str, Any],
    start_ms: int,
    end_ms: int,
    chosen: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, list[str]]:
    """Every variable's values: all of them for multi ("All"), the first for single ones,
    unless `chosen` picks some (which must be among the variable's values)."""
    out: dict[str, list[str]] = {}
    for var in doc["templating"]["list"]:
        name = var["name"]
        values = _values(client, interpolate(var["query"], out, start_ms, end_ms))
        if var.get("sort") == P.G.SORT_ALPHA_DESC:
            values.reverse()
        if chosen and name in chosen:
            missing = set(chosen[name]) - set(values)
            if missing:
                raise ValueError(f"variable {name}: {sorted(missing)} not among {values}")
            values = list(chosen[name])
        out[name] = values if var.get("multi") else values[:1]
    return out


@dataclass
class PanelResult:
    panel: str
    ref: str
    query: str
    rows: int
    error: str = ""


def check_dashboard(
    client: InfluxClient,
    doc: Mapping[str, Any],
    start_ms: int,
    end_ms: int,
    chosen: Mapping[str, Sequence[str]] | None = None,
) -> list[PanelResult]:
    """Every panel target's query executed on `client`, with its number of rows."""
    variables = resolve_variables(client, doc, start_ms, end_ms, chosen)
    results = []
    for panel in doc["panels"]:
        for tgt in panel["targets"]:
            q = interpolate(tgt["query"], variables, start_ms, end_ms)
            try:
                series = client.query(q)[0]["series"]
                rows = sum(len(s.get("values", [])) for s in series)
                results.append(PanelResult(panel["title"], tgt["refId"], q, rows))
            except InfluxError as e:
                results.append(PanelResult(panel["title"], tgt["refId"], q, 0, str(e)))
    return results
