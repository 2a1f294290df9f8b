"""Per-second clat percentiles across nodes: ours vs fio's own fiologparser_hist.py.

Generates one fio clat histogram log per node (relative ms times k*1000 + a few ms, as fio
writes without log_unix_epoch: fiologparser_hist.py --noweight walks intervals from 0, so
epoch-stamped logs would take it billions of steps), runs Debian's fiologparser_hist.py
(`--noweight`: each fio window counted in one interval, our semantics) on all of them, and
ours (parse, re-grid to 1 s, add the nodes' histograms, percentiles) in the same run.

Same numbers: per interval the sample counts are equal and the percentiles agree within
1 %. Documented differences: it labels an interval by its end (our label + 1 s), and it
interpolates between bin midpoints on a midpoint CDF where we interpolate uniformly inside
the bin; both stay inside fio's bin. ratio = their time / ours.
"""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from collector import fio, histogram

NODES = 4
SECONDS = 240
SCRIPT = Path("/usr/share/doc/fio/fiologparser_hist.py.gz")
QS = [50.0, 90.0, 99.0, 99.9]


def write_log(path: Path, rng: np.random.Generator) -> None:
    samples = rng.lognormal(11, 0.8, (SECONDS, 2000)).astype(np.int64)
    key = np.repeat(np.arange(SECONDS), 2000) * histogram.PLAT_NR + histogram.value_to_bin(
        samples.ravel()
    )
    counts = np.bincount(key, minlength=SECONDS * histogram.PLAT_NR).reshape(SECONDS, -1)
    t = 1000 * np.arange(1, SECONDS + 1) + rng.integers(1, 6, SECONDS)
    head = np.stack([t, np.zeros(SECONDS, int), np.full(SECONDS, 4096)], 1)
    np.savetxt(path, np.hstack([head, counts]), fmt="%d", delimiter=", ")


def ours(paths: list[Path]) -> pd.DataFrame:
    h = fio.merge_hist_logs({p.name: [fio.read_hist_log(p)] for p in paths}, grid=fio.Grid(0))
    keys, merged = histogram.group_sum(h.time_ns, h.counts)  # all nodes added per second
    p = histogram.percentiles(merged, QS, h.coarseness)
    return pd.DataFrame(
        {
            "end_ms": keys // 1_000_000 + 1000,
            "samples": merged.sum(axis=1),
            **{str(q): p[:, i] for i, q in enumerate(QS)},
        }
    )


def main() -> None:
    if not SCRIPT.exists():
        sys.exit(f"{SCRIPT} missing: apt-get install fio")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bench_fio_hist_") as tmp:
        script = Path(tmp) / "fiologparser_hist.py"
        script.write_bytes(gzip.decompress(SCRIPT.read_bytes()))
        paths = [Path(tmp) / f"node{i}_clat_hist.1.log" for i in range(NODES)]
        for p in paths:
            write_log(p, rng)
        t = time.perf_counter()
        out = subprocess.run(
            [
                sys.executable,
                str(script),
                "--noweight",
                "--percentiles",
                "90:99:99.9",
                *map(str, paths),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        theirs_s = time.perf_counter() - t
        theirs = pd.read_csv(io.StringIO(out), skipinitialspace=True)
        t = time.perf_counter()
        mine = ours(paths)
        ours_s = time.perf_counter() - t
    m = mine.merge(theirs, left_on="end_ms", right_on="end-time", how="outer", indicator=True)
    assert (m["_merge"] == "both").all(), "intervals differ"
    assert (m["samples_x"] == m["samples_y"]).all(), "sample counts differ"
    diffs = {
        col: float((m[str(q)] / m[col] - 1).abs().max())
        for q, col in zip(QS, ["median", "90%", "99%", "99.9%"], strict=True)
    }
    print("largest relative difference per percentile:", {k: f"{v:.2%}" for k, v in diffs.items()})
    worst = max(diffs.values())
    print(
        f"{NODES} nodes x {SECONDS} s: fiologparser_hist.py --noweight {theirs_s:.2f} s, ours {ours_s:.3f} s; "
        f"{len(m)} intervals, equal counts, percentiles within {worst:.2%}"
    )
    print(f"ratio={theirs_s / ours_s:.1f} target=>=20")


if __name__ == "__main__":
    main()
