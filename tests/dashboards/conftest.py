"""One real run for every dashboard test in this package, shared per session.

`loadgen run` drives fio on the `local` node (roles testnode + rabbitmq) while the
collector samples it: node sensors, procstat of fio and of the session broker's
`beam.smp`, and the broker's management API (`rabbitmq_*`), all real. What is not cheap
to produce live is written through the real parsers from captured data, re-timed into the
run's window: Ceph perf dumps / historic ops / ops in flight / pool and PG stats
(tests/data/ceph) for a node `ceph0` (its `wally_node` record parsed from
tests/data/discovery), and RPC per-test summaries from the ombt campaign (tests/data/ombt).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from collector import discovery, ombt, schema
from collector.ceph import OSD_ROLE
from collector.influx import InfluxClient, InfluxConfig
from collector.influxd import EmbeddedInfluxd
from collector.lineproto import Point
from collector.sensors import ceph as ceph_sensor
from collector.writer import InfluxWriter
from dashboards.rpc import RABBITMQ_ROLE
from loadgen.rpc.broker import LocalBroker

DATA = Path(__file__).parent.parent / "data"
CEPH_NODE = "ceph0"


@dataclass
class RunData:
    client: InfluxClient
    run_id: str
    rpc_run: str
    start_ms: int
    end_ms: int


def _retime(points: list[Point], start_ns: int, end_ns: int) -> list[Point]:
    """Map captured points (and test windows) linearly onto [start, end] of the run."""
    t0, t1 = min(p.time_ns for p in points), max(p.time_ns for p in points)
    scale = (end_ns - start_ns) / max(t1 - t0, 1)

    def at(t: int) -> int:
        return start_ns + int((t - t0) * scale)

    out = []
    for p in points:
        fields = dict(p.fields)
        if p.measurement == schema.WALLY_TEST.name:
            fields["start"], fields["end"] = at(fields["start"]), at(fields["end"])
        out.append(Point(p.measurement, p.tags, fields, at(p.time_ns)))
    return out


def _ceph_points(start_ns: int, end_ns: int) -> list[Point]:
    info = discovery.parse_discovery(
        (DATA / "discovery" / "debian12_vm.txt").read_text(), CEPH_NODE, [OSD_ROLE]
    )
    tags = {"node": CEPH_NODE, "role": OSD_ROLE}
    out = info.points(start_ns)
    # one capture per kind: the same dump every 2 s gives rates of 0, but real series
    ceph = DATA / "ceph"
    for t in range(start_ns, end_ns, 2_000_000_000):
        out += ceph_sensor.parse_perf_dump(
            (ceph / "osd0_perf_dump.json").read_text(), "osd", "0", tags, t
        )
        stages, _ = ceph_sensor.summarise_historic_ops(
            (ceph / "osd0_historic_ops.json").read_text(), "0", tags, t
        )
        out += stages
        out.append(
            ceph_sensor.parse_ops_in_flight(
                (ceph / "osd0_ops_in_flight.json").read_text(), "0", tags, t
            )
        )
        out += ceph_sensor.parse_pool_stats((ceph / "osd_pool_stats.json").read_text(), tags, t)
        out += ceph_sensor.parse_pg_stat((ceph / "pg_stat.json").read_text(), tags, t)
    return out


def _rpc_points(run: str, start_ns: int, end_ns: int) -> list[Point]:
    return _retime(ombt.campaign_points(DATA / "ombt", run), start_ns, end_ns)


@pytest.fixture(scope="session")
def run_data(
    influxd: EmbeddedInfluxd, rabbitmq: LocalBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunData]:
    tmp = tmp_path_factory.mktemp("dash-run")
    client = InfluxClient(
        InfluxConfig(url=influxd.url or "", database=f"dash_{uuid.uuid4().hex[:10]}")
    )
    client.create_database()
    lab = {
        "nodes": [{"uri": "local", "roles": ["testnode", RABBITMQ_ROLE]}],
        "rabbitmq": {
            "url": rabbitmq.api,
            "user": rabbitmq.user,
            "password_env": "DASH_RMQ_PASSWORD",
        },
        "plan": {
            "suites": [
                {
                    "name": "dash",
                    "target": str(tmp / "testfile"),
                    "size": "32m",
                    "engine": "psync",
                    "direct": False,
                    "runtime": 3,
                    "ramp_time": 0,
                    "rw": ["randread", "randwrite"],
                    "bs": "4k",
                    "iodepth": [1, 2],
                }
            ]
        },
    }
    # a queue, so the broker has queue stats to report while the run samples it
    queue_api = f"{rabbitmq.api}/api/queues/%2F/wally-dashboards-test"
    auth = (rabbitmq.user, rabbitmq.password)
    requests.put(queue_api, json={"durable": False}, auth=auth, timeout=10).raise_for_status()
    try:
        plan = tmp / "lab.yaml"
        plan.write_text(yaml.safe_dump(lab, sort_keys=False))
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "loadgen",
                "run",
                str(plan),
                "--json",
                "--runs-dir",
                str(tmp / "runs"),
                "--influx-url",
                client.url,
                "--database",
                client.database,
            ],
            capture_output=True,
            text=True,
            env={
                **os.environ,
                "WALLY_STATE_DIR": str(tmp / "state"),
                "DASH_RMQ_PASSWORD": rabbitmq.password,
            },
            timeout=300,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        doc = json.loads(r.stdout)
        tests = client.query_df(
            'SELECT "start", "end" FROM wally_test WHERE run = $r', {"r": doc["run_id"]}
        )
        start_ns, end_ns = int(tests["start"].min()), int(tests["end"].max())
        rpc_run = f"{doc['run_id']}-rpc"
        with InfluxWriter(client) as w:
            w.write(_ceph_points(start_ns, end_ns))
            w.write(_rpc_points(rpc_run, start_ns, end_ns))
        yield RunData(
            client, doc["run_id"], rpc_run, start_ns // 1_000_000, -(-end_ns // 1_000_000)
        )
    finally:
        requests.delete(queue_api, auth=auth, timeout=10)
    client.execute(f'DROP DATABASE "{client.database}"')
