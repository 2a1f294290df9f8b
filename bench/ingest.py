"""Writer throughput against the server's own ceiling, measured in the same run.

Baseline: pre-built line protocol bodies of 10k lines (3 integer fields each) POSTed in a
sequential loop, nothing else to do: what influxd ingests. Ours: the same points as a
DataFrame, encoded by `InfluxWriter.write_frame` (vectorised) and sent. Each side writes
to its own fresh database and new timestamps; the rounds alternate to share the noise.

    python bench/ingest.py [--points 600000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collector.influx import InfluxClient, InfluxConfig
from collector.influxd import EmbeddedInfluxd
from collector.lineproto import encode_frame
from collector.writer import InfluxWriter

BATCH = 10_000


def frame(n: int, t0: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "node": np.char.add("node", (np.arange(n) % 50).astype(str)),
            "device": np.char.add("sd", np.array(list("abcd"))[np.arange(n) % 4]),
            "reads": rng.integers(0, 2**40, n),
            "writes": rng.integers(0, 2**40, n),
            "read_bytes": rng.integers(0, 2**50, n),
        },
        index=pd.Index(t0 + np.arange(n, dtype="int64") * 1000),
    )


def baseline(client: InfluxClient, bodies: list[bytes]) -> float:
    session = requests.Session()
    url = f"{client.url}/write"
    params = {"db": client.database, "precision": "ns"}
    start = time.perf_counter()
    for body in bodies:
        r = session.post(url, params=params, data=body)
        assert r.status_code == 204, r.text
    return time.perf_counter() - start


def ours(client: InfluxClient, df: pd.DataFrame) -> float:
    start = time.perf_counter()
    with InfluxWriter(client, batch_lines=BATCH) as writer:
        writer.write_frame(df, "diskio", tag_columns=["node", "device"])
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--points", type=int, default=600_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedInfluxd(Path(tmp))
        url = server.start()
        try:
            base_rates, our_rates = [], []
            for r in range(args.rounds):
                t0 = 1_700_000_000_000_000_000 + r * 10**15
                df = frame(args.points, t0)
                lines = encode_frame(df, "diskio", ["node", "device"])
                bodies = [
                    ("\n".join(lines[i : i + BATCH]) + "\n").encode()
                    for i in range(0, len(lines), BATCH)
                ]
                c_base = InfluxClient(InfluxConfig(url=url, database=f"base{r}"))
                c_ours = InfluxClient(InfluxConfig(url=url, database=f"ours{r}"))
                c_base.create_database()
                c_ours.create_database()
                base_rates.append(args.points / baseline(c_base, bodies))
                our_rates.append(args.points / ours(c_ours, df))
                for c in (c_base, c_ours):
                    got = c.query_df("SELECT count(reads) FROM diskio")["count"].iloc[0]
                    assert got == args.points, f"{c.database}: {got} points stored"
                print(
                    f"round {r}: baseline {base_rates[-1]:,.0f} points/s, writer {our_rates[-1]:,.0f} points/s"
                )
        finally:
            server.destroy()
    base, mine = statistics.median(base_rates), statistics.median(our_rates)
    print(f"baseline (pre-built 10k-line bodies, sequential POST): {base:,.0f} points/s")
    print(f"writer (DataFrame -> encode -> send):                  {mine:,.0f} points/s")
    print(f"ratio={mine / base:.2f} target=>=0.9")


if __name__ == "__main__":
    main()
