"""fio log ingestion speed: our parse + convert to point frames vs pandas.read_csv alone.

Two fio-format files are generated: a per-I/O clat log (3 M lines, `time_ms, clat_ns,
ddir, bs, prio`) and a clat histogram log (5 k lines x 1856 bins). For each, the floor is
`pandas.read_csv(path, header=None)` (reading it at all); ours is read_log/read_hist_log
plus re-gridding to 1 s and building the fio_lat, fio_hist (and fio) frames the writer takes.
Rounds alternate between the two sides, each round timing read_csv and then ours on the same
file back to back, so a busy spell on the shared machine hits both; the ratio of a file is
the median of its per-round ratios. ratio = ours rows/s / read_csv rows/s, the smaller of
the two files.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from collector import fio, histogram

CLAT_ROWS = 3_000_000
HIST_ROWS = 5_000
ROUNDS = 9
T0 = 1_795_000_000_000


def write_clat_log(path: Path, rng: np.random.Generator) -> None:
    t = T0 + np.sort(rng.integers(0, CLAT_ROWS // 20, CLAT_ROWS))  # ~20k IOPS
    clat = rng.lognormal(11, 0.8, CLAT_ROWS).astype(np.int64)
    ddir = rng.integers(0, 2, CLAT_ROWS)
    df = pd.DataFrame({"t": t, "v": clat, "d": ddir, "bs": 4096, "p": 0})
    df.to_csv(path, header=False, index=False, sep=",")
    path.write_text(path.read_text().replace(",", ", "))  # fio writes ", "


def write_hist_log(path: Path, rng: np.random.Generator) -> None:
    samples = rng.lognormal(11, 0.8, (HIST_ROWS, 400)).astype(np.int64)
    rows = np.repeat(np.arange(HIST_ROWS), 400)
    key = rows * histogram.PLAT_NR + histogram.value_to_bin(samples.ravel())
    counts = np.bincount(key, minlength=HIST_ROWS * histogram.PLAT_NR).reshape(HIST_ROWS, -1)
    head = np.stack(
        [
            T0 + 1000 * np.arange(1, HIST_ROWS + 1),
            np.zeros(HIST_ROWS, int),
            np.full(HIST_ROWS, 4096),
        ],
        1,
    )
    np.savetxt(path, np.hstack([head, counts]), fmt="%d", delimiter=", ")


def seconds(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def ours_clat(path: Path) -> None:
    log = fio.read_log(path)
    h = fio.clat_log_histograms({"n1": [log]})
    fio.lat_frame(h)
    fio.hist_frame(h)
    fio.rates_frame({"n1": [log]}, {"n1": [log]}, 0)


def ours_hist(path: Path) -> None:
    h = fio.merge_hist_logs({"n1": [fio.read_hist_log(path)]})
    fio.lat_frame(h)
    fio.hist_frame(h)


def main() -> None:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bench_fio_parse_") as tmp:
        clat, hist = Path(tmp) / "t_clat.1.log", Path(tmp) / "t_clat_hist.1.log"
        write_clat_log(clat, rng)
        write_hist_log(hist, rng)
        cases = (
            ("clat", clat, CLAT_ROWS, ours_clat),
            ("hist", hist, HIST_ROWS, ours_hist),
        )
        floor: dict[str, list[float]] = {name: [] for name, *_ in cases}
        mine: dict[str, list[float]] = {name: [] for name, *_ in cases}
        for _ in range(ROUNDS):  # alternating, so a busy spell hits both sides
            for name, path, _, ours in cases:
                floor[name].append(seconds(lambda p=path: pd.read_csv(p, header=None)))
                mine[name].append(seconds(lambda p=path, f=ours: f(p)))
        ratios = []
        for name, path, rows, _ in cases:
            per_round = np.array(floor[name]) / np.array(mine[name])
            ratios.append(float(np.median(per_round)))
            f, m = np.median(floor[name]), np.median(mine[name])
            print(
                f"{name}: {rows} lines, {path.stat().st_size / 1e6:.0f} MB; {ROUNDS} alternating "
                f"rounds, median: read_csv {rows / f:,.0f} rows/s, ours (parse+frames) "
                f"{rows / m:,.0f} rows/s; ratio per round "
                + " ".join(f"{r:.2f}" for r in per_round)
                + f", median {ratios[-1]:.2f}"
            )
    print(f"ratio={min(ratios):.2f} target=>=0.5")


if __name__ == "__main__":
    main()
