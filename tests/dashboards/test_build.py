"""`dashboards build` output, the committed docker/ provisioning, and run links."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from collector.grafana import run_url
from collector.inventory import load_inventory
from dashboards import panels as P
from dashboards import provisioning, storage

ROOT = Path(__file__).parents[2]
DOCKER = ROOT / "docker"


def _build(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dashboards", "build", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_build_writes_provisioning_with_config_values(tmp_path):
    lab = tmp_path / "lab.yaml"
    lab.write_text(
        yaml.safe_dump(
            {
                "nodes": [{"uri": "local", "roles": ["ceph-osd"]}],
                "influx": {"url": "http://10.0.0.5:8086", "database": "lab1"},
            }
        )
    )
    r = _build(str(lab), "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    ds = yaml.safe_load((out / provisioning.DATASOURCES_FILE).read_text())["datasources"][0]
    assert ds["uid"] == P.DATASOURCE_UID and ds["url"] == "http://10.0.0.5:8086"
    assert ds["jsonData"]["dbName"] == "lab1"
    cluster = json.loads((out / "dashboards" / "wally-cluster.json").read_text())
    role = next(v for v in cluster["templating"]["list"] if v["name"] == "role")
    assert role["current"]["value"] == "ceph-osd"  # the config's storage role preselected


def test_build_rejects_bad_influx_url(tmp_path):
    r = _build("--out", str(tmp_path), "--influx-url", "influx:8086")
    assert r.returncode == 2 and "malformed InfluxDB URL 'influx:8086'" in r.stderr


def test_docker_provisioning_is_current():
    """docker/grafana is `dashboards build docker/lab.yaml --out docker/grafana` output."""
    files = provisioning.render_for(load_inventory(DOCKER / "lab.yaml", check_files=False))
    for rel, text in files.items():
        path = DOCKER / "grafana" / rel
        assert path.exists(), (
            f"{path} missing: run `dashboards build docker/lab.yaml --out docker/grafana`"
        )
        assert path.read_text() == text, (
            f"{path} is stale: run `dashboards build docker/lab.yaml --out docker/grafana`"
        )


def test_compose_services_mounts_and_datasource():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert {"influxdb", "grafana", "telegraf", "rabbitmq"} <= set(services)
    assert services["influxdb"]["image"].startswith("influxdb:1.8")
    assert "management" in services["rabbitmq"]["image"]
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (DOCKER / src).exists(), f"{name}: mounted {src} does not exist"
    grafana_mounts = {v.split(":")[1] for v in services["grafana"]["volumes"]}
    assert "/etc/grafana/provisioning" in grafana_mounts
    assert provisioning.CONTAINER_DASHBOARDS in grafana_mounts
    ds_file = DOCKER / "grafana" / provisioning.DATASOURCES_FILE
    ds = yaml.safe_load(ds_file.read_text())["datasources"][0]
    host = urlsplit(ds["url"]).hostname
    assert host in services, f"datasource URL host {host} is not a compose service"
    for path in (DOCKER / "grafana" / "dashboards").glob("*.json"):
        doc = json.loads(path.read_text())
        uids = {t["datasource"]["uid"] for p in doc["panels"] for t in p["targets"]}
        assert uids == {ds["uid"]}, path.name


def test_run_url_window_and_run():
    url = run_url(
        "http://grafana:3000/", "20260101-000000-abcd", 1_000_000_000_000, 1_060_500_000_000
    )
    parts = urlsplit(url)
    assert parts.path == f"/d/{storage.UID}/"
    q = parse_qs(parts.query)
    assert q["var-run"] == ["20260101-000000-abcd"]
    assert int(q["from"][0]) <= 1_000_000 and int(q["to"][0]) >= 1_060_500
    live = parse_qs(urlsplit(run_url("http://g", "r", 1_000_000_000_000)).query)
    assert live["to"] == ["now"]
    with pytest.raises(ValueError, match="before start"):
        run_url("http://g", "r", 2, 1)
