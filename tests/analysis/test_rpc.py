"""`analysis rpc` on an imported ombt campaign equals the seed notebook's aggregates."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.collector.test_ombt import DATA, notebook_params, run_cli


def test_ingested_ombt_campaign_gives_the_notebook_table(influx, tmp_path: Path) -> None:
    r = run_cli("collector", ["ingest", "ombt", str(DATA), "--run", "tc1"], influx, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "report"
    r = run_cli("analysis", ["rpc", "tc1", "--out", str(out)], influx, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    table = pd.read_csv(out / "rpc.csv")
    doc = json.loads((out / "rpc.json").read_text())
    reference = notebook_params()
    assert list(table["test"]) == [p["backup_dir"] for p in reference]
    for row, it, ref in zip(
        table.to_dict(orient="records"), doc["iterations"], reference, strict=True
    ):
        # the notebook's extraction table, column by column
        assert row["clients"] == ref["_ombt_clients"] and row["servers"] == ref["_ombt_servers"]
        assert row["call_type"] == ref["call_type"] and row["driver"] == ref["driver"]
        for side, agg in (("client", ref["_agg_clients"]), ("server", ref["_agg_servers"])):
            verb = "sent" if side == "client" else "received"
            assert row[f"{verb}_ok"] == agg["msgs_ok"] and row[f"{verb}_fail"] == agg["msgs_fail"]
            assert row[f"{side}_rate"] == pytest.approx(agg["rate"], rel=1e-9)
            assert row[f"{side}_lat_mean"] == pytest.approx(agg["latency_avg"], rel=1e-9)
            assert row[f"{side}_lat_stddev"] == pytest.approx(agg["latency_stdev"], rel=1e-9)
            for what in ("ok", "fail"):
                per = ref[f"_ombt_msgs_{verb}_{what}"]
                for stat in ("min", "mean", "max"):
                    assert row[f"per_{side}_{what}_{stat}"] == pytest.approx(per[stat]), (
                        side,
                        what,
                    )
            # the distribution the notebook plots, bucket by bucket
            dist = agg["latency"]["distribution"]
            expected = sorted(
                (i * 10 ** int(k), n)
                for k, counts in dist.items()
                for i, n in enumerate(counts)
                if n
            )
            got = [(b["lower"], b["count"]) for b in it["distribution"][side]]
            assert got == expected
        assert it["params"]["nbr_clients"] == ref["nbr_clients"]
    html = (out / "rpc.html").read_text()
    assert "Plotly.newPlot" in html and "<script src=" not in html  # self-contained
    assert "test_case_1-incremental-it-2" in html


def test_unknown_run_is_a_clear_error(influx, tmp_path: Path) -> None:
    r = run_cli("analysis", ["rpc", "no-such-run", "--out", str(tmp_path / "x")], influx, tmp_path)
    assert r.returncode == 2
    assert "no-such-run" in r.stderr and "no RPC iterations" in r.stderr
