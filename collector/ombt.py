"""Legacy ombt / ombt-orchestrator campaigns -> the aggregates the seed notebook computes.

A campaign directory has `params.json` (a list of iterations, each with `backup_dir`,
`nbr_clients`, `nbr_servers`, `call_type`, `driver`, ...) and, per iteration, controller
output files `<backup_dir>/*controller*.log` (not `*_docker.log`, the human-readable
copy): line 1 is a JSON object of per-client TestResults, line 2 per-server. Several
files (shards) of one iteration are merged by agent name. Aggregation follows ombt's
TestResults/Stats merge exactly, so old results give the same numbers here as in the
notebook; `campaign_points` turns them into `wally_test` and `rpc` points.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector import schema
from collector.lineproto import Point

AgentResults = dict[str, dict[str, Any]]


class OmbtFormatError(ValueError):
    """A campaign file is not what ombt writes; the message names the file and the part."""


def read_controller_log(path: Path) -> tuple[AgentResults, AgentResults]:
    """(per-client, per-server) results of one controller output file."""
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        raise OmbtFormatError(f"{path}: expected 2 JSON lines (clients, servers), got {len(lines)}")
    out = []
    for i, what in ((0, "clients"), (1, "servers")):
        try:
            doc = json.loads(lines[i])
        except json.JSONDecodeError as exc:
            raise OmbtFormatError(f"{path}:{i + 1}: {what} line is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise OmbtFormatError(
                f"{path}:{i + 1}: {what} line must be a JSON object by agent name"
            )
        for name, result in doc.items():
            for key in ("start_time", "stop_time", "msgs_ok", "msgs_fail", "latency"):
                if key not in result:
                    raise OmbtFormatError(f"{path}:{i + 1}: {what} {name!r} has no {key!r}")
        out.append(doc)
    return out[0], out[1]


def controller_logs(iteration_dir: Path) -> list[Path]:
    return sorted(
        p for p in iteration_dir.glob("*controller*.log") if not p.name.endswith("_docker.log")
    )


def load_iteration(iteration_dir: Path) -> tuple[AgentResults, AgentResults] | None:
    """Merged shards of one iteration, or None when it has no controller output (the
    notebook skips such iterations too)."""
    logs = controller_logs(iteration_dir)
    if not logs:
        return None
    clients: AgentResults = {}
    servers: AgentResults = {}
    for log in logs:
        c, s = read_controller_log(log)
        clients.update(c)
        servers.update(s)
    return clients, servers


def _pick(a: float | None, b: float | None, fn) -> float | None:
    if a is not None and b is not None:
        return fn(a, b)
    return a if a is not None else b


def aggregate(results: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """ombt's merged TestResults plus rate, latency_avg and latency_stdev (ms)."""
    agg: dict[str, Any] = {"start_time": None, "stop_time": None, "msgs_ok": 0, "msgs_fail": 0}
    errors: dict[str, int] = {}
    lat = {"min": None, "max": None, "total": 0, "count": 0, "sum_of_squares": 0}
    dist: dict[int, list[int]] = {}
    for r in results:
        # ombt merges with `a or b`: a zero/None time or bound counts as absent
        agg["start_time"] = _pick(agg["start_time"] or None, r["start_time"] or None, min)
        agg["stop_time"] = _pick(agg["stop_time"] or None, r["stop_time"] or None, max)
        agg["msgs_ok"] += r["msgs_ok"]
        agg["msgs_fail"] += r["msgs_fail"]
        for err, n in (r.get("errors") or {}).items():
            errors[err] = errors.get(err, 0) + n
        rl = r["latency"]
        lat["min"] = _pick(lat["min"], rl.get("min"), min)
        lat["max"] = _pick(lat["max"], rl.get("max"), max)
        for k in ("total", "count", "sum_of_squares"):
            lat[k] += rl.get(k, 0)
        for k, row in (rl.get("distribution") or {}).items():
            key = int(k)
            dist[key] = (
                [a + b for a, b in zip(row, dist[key], strict=True)] if key in dist else list(row)
            )
    duration = agg["stop_time"] - agg["start_time"]
    count = lat["count"]
    avg = lat["total"] / float(count) if count else 0
    agg["errors"] = errors
    agg["latency"] = {**lat, "distribution": dist}
    agg["rate"] = float(agg["msgs_ok"] + agg["msgs_fail"]) / duration
    agg["latency_avg"] = avg
    agg["latency_stdev"] = math.sqrt(lat["sum_of_squares"] / float(count) - avg**2) if count else -1
    return agg


def msgs_stats(results: Iterable[Mapping[str, Any]], key: str) -> dict[str, float]:
    """Per-agent mean/min/max of `msgs_ok` or `msgs_fail`."""
    values = [r[key] for r in results]
    return {"mean": statistics.mean(values), "min": min(values), "max": max(values)}


@dataclass
class OmbtIteration:
    params: dict[str, Any]
    clients: AgentResults
    servers: AgentResults

    @property
    def name(self) -> str:
        return str(self.params["backup_dir"])

    def summary(self) -> dict[str, Any]:
        """The notebook's `_ombt_*` and `_agg_*` values for this iteration."""
        c, s = list(self.clients.values()), list(self.servers.values())
        return {
            "_ombt_clients": len(c),
            "_ombt_servers": len(s),
            "_ombt_msgs_sent_ok": msgs_stats(c, "msgs_ok"),
            "_ombt_msgs_received_ok": msgs_stats(s, "msgs_ok"),
            "_ombt_msgs_sent_fail": msgs_stats(c, "msgs_fail"),
            "_ombt_msgs_received_fail": msgs_stats(s, "msgs_fail"),
            "_agg_servers": aggregate(s),
            "_agg_clients": aggregate(c),
        }


def read_campaign(campaign_dir: Path) -> list[OmbtIteration]:
    """Every iteration of `params.json` that has controller output, in file order."""
    params_file = campaign_dir / "params.json"
    try:
        params = json.loads(params_file.read_text())
    except FileNotFoundError:
        raise OmbtFormatError(
            f"{params_file}: not found (is {campaign_dir} an ombt campaign?)"
        ) from None
    except json.JSONDecodeError as exc:
        raise OmbtFormatError(f"{params_file}: not JSON: {exc}") from None
    if not isinstance(params, list):
        raise OmbtFormatError(f"{params_file}: expected a JSON list of iterations")
    out = []
    for i, param in enumerate(params):
        if "backup_dir" not in param:
            raise OmbtFormatError(f"{params_file}: iteration {i} has no 'backup_dir'")
        loaded = load_iteration(campaign_dir / param["backup_dir"])
        if loaded is not None:
            out.append(OmbtIteration(param, *loaded))
    return out


def _ns(t: float) -> int:
    return round(t * 1e9)


def _rpc_fields(result: Mapping[str, Any], rate: float | None = None) -> dict[str, Any]:
    lat = result["latency"]
    count = lat.get("count", 0)
    fields: dict[str, Any] = {
        "msgs_ok": int(result["msgs_ok"]),
        "msgs_fail": int(result["msgs_fail"]),
    }
    duration = (result["stop_time"] or 0) - (result["start_time"] or 0)
    if rate is None and duration > 0:
        rate = (result["msgs_ok"] + result["msgs_fail"]) / duration
    if rate is not None:
        fields["rate"] = float(rate)
    if count:
        avg = lat["total"] / count
        fields["lat_mean"] = float(avg)
        fields["lat_stddev"] = math.sqrt(max(lat["sum_of_squares"] / count - avg**2, 0.0))
        fields["lat_min"] = float(lat["min"])
        fields["lat_max"] = float(lat["max"])
    return fields


def distribution_points(
    distribution: Mapping[Any, list[int]], tags: Mapping[str, str], time_ns: int
) -> list[Point]:
    """`rpc_hist` points of an ombt distribution ({power of ten: ten counts by leading
    digit}, ms): one per non-empty bucket, tag `le` = the bucket's upper bound."""
    out = []
    for order, row in sorted(distribution.items(), key=lambda kv: int(kv[0])):
        base = 10 ** int(order)
        for index, count in enumerate(row):
            if count:
                out.append(
                    Point(
                        schema.RPC_HIST.name,
                        {**tags, "le": str((index + 1) * base)},
                        {"count": int(count), "lower": float(index * base)},
                        time_ns,
                    )
                )
    return out


def error_points(tags: Mapping[str, str], errors: Mapping[str, int], time_ns: int) -> list[Point]:
    """One `rpc_errors` point per exception type that failed messages, none when nothing
    failed: failures are rare, so this costs nothing while a test goes well. (ombt keys
    its errors by the exception's text, not its type: imported campaigns carry that.)"""
    return [
        Point(schema.RPC_ERRORS.name, {**tags, "error_type": name}, {"count": int(n)}, time_ns)
        for name, n in sorted(errors.items())
        if n
    ]


def campaign_points(campaign_dir: Path, run: str, node: str = "ombt") -> list[Point]:
    """`wally_test` (window + params), `rpc` summary points (per agent and merged
    `agent=all`) and the merged `rpc_hist` distribution per side for every iteration, so
    the RPC post-mortem works on legacy campaigns."""
    out: list[Point] = []
    for index, it in enumerate(read_campaign(campaign_dir)):
        summary = it.summary()
        start = min(summary["_agg_clients"]["start_time"], summary["_agg_servers"]["start_time"])
        end = max(summary["_agg_clients"]["stop_time"], summary["_agg_servers"]["stop_time"])
        call_type = str(it.params.get("call_type", ""))
        out.append(
            Point(
                schema.WALLY_TEST.name,
                {"run": run, "test": it.name, "node": node, "kind": "rpc", "status": "ok"},
                {
                    "start": _ns(start),
                    "end": _ns(end),
                    "iteration": index,
                    "params": json.dumps(it.params, sort_keys=True),
                },
                _ns(start),
            )
        )
        for side, agents, agg in (
            ("client", it.clients, summary["_agg_clients"]),
            ("server", it.servers, summary["_agg_servers"]),
        ):
            rows = [(name, r, None) for name, r in agents.items()] + [("all", agg, agg["rate"])]
            for name, result, rate in rows:
                tags = {
                    "run": run,
                    "test": f"{it.name}/summary",
                    "node": node,
                    "agent": name,
                    "side": side,
                    "call_type": call_type,
                }
                out.append(Point(schema.RPC.name, tags, _rpc_fields(result, rate), _ns(end)))
                out += error_points(tags, result.get("errors") or {}, _ns(end))
            hist_tags = {k: v for k, v in tags.items() if k != "agent"}
            out += distribution_points(agg["latency"]["distribution"], hist_tags, _ns(end))
    return out
