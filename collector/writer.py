"""The writer: batches, gzip, retries, and a disk spool so a run loses nothing.

Batches go out from a small pool of sender threads through a bounded queue (memory stays
bounded whatever the input size; producers wait when InfluxDB is slower than they are).
A batch that cannot be delivered (server down, timeouts, 5xx) is written to the spool
directory and every later batch follows it there, so order is kept; a background thread
replays the spool oldest first once the server answers again. Points carry explicit
timestamps, so a batch that reached the server before a timeout and is replayed later
overwrites itself: each point is stored exactly once.

What is buffered also goes out every `flush_interval` seconds (1 s by
default, like Telegraf's flush_interval), so dashboards follow a run live even when the
points come slowly.

A 4xx (bad point, field type conflict) is never retried: the offending line is reported,
the batch is kept under `spool/rejected/`, and `flush()`/`close()` raise.
"""

from __future__ import annotations

import gzip
import itertools
import logging
import queue
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from collector.influx import (
    DatabaseNotFound,
    InfluxAuthError,
    InfluxClient,
    InfluxError,
    InfluxUnreachable,
    WriteRejected,
)
from collector.lineproto import Point, encode_frame, encode_point

log = logging.getLogger(__name__)

DEFAULT_BATCH_LINES = 5000
DEFAULT_FLUSH_INTERVAL = 1.0


class WriteError(InfluxError):
    """Points InfluxDB refused; `rejections` says which lines and why."""

    def __init__(self, rejections: list[Rejection]) -> None:
        lines = "\n".join(str(r) for r in rejections[:5])
        more = f"\n… and {len(rejections) - 5} more" if len(rejections) > 5 else ""
        super().__init__(f"InfluxDB rejected {len(rejections)} batch(es):\n{lines}{more}")
        self.rejections = rejections


@dataclass
class Rejection:
    message: str
    line: str | None
    saved_to: Path | None

    def __str__(self) -> str:
        where = f" (batch kept in {self.saved_to})" if self.saved_to else ""
        line = f"\n    offending line: {self.line[:300]}" if self.line else ""
        return f"  {self.message}{line}{where}"


@dataclass
class WriterStats:
    points: int = 0
    batches_sent: int = 0
    batches_spooled: int = 0
    batches_replayed: int = 0
    batches_rejected: int = 0
    retries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **kw: int) -> None:
        with self._lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)


_CONFLICT = re.compile(
    r'input field \\?"(?P<field>[^"\\]+)\\?" on measurement \\?"(?P<m>[^"\\]+)\\?"'
)
_UNPARSABLE = re.compile(r"unable to parse '(?P<line>.*?)': ")


def offending_line(message: str, lines: Sequence[str]) -> str | None:
    """Find the line InfluxDB's 400 message is about (it names it, or its field)."""
    m = _UNPARSABLE.search(message)
    if m:
        return m.group("line")
    m = _CONFLICT.search(message)
    if m:
        meas, fld = m.group("m"), m.group("field")
        for line in lines:
            if line.startswith((meas + ",", meas + " ")) and (
                f" {fld}=" in line or f",{fld}=" in line
            ):
                return line
    return None


class InfluxWriter:
    """Thread-safe; use as a context manager so `close()` flushes and reports rejections."""

    def __init__(
        self,
        client: InfluxClient,
        batch_lines: int = DEFAULT_BATCH_LINES,
        compress: bool | None = None,
        spool_dir: str | Path | None = None,
        senders: int = 2,
        max_queued_batches: int = 8,
        retries: int = 3,
        retry_wait: float = 0.2,
        replay_interval: float = 1.0,
        validate: bool = True,
        flush_interval: float | None = DEFAULT_FLUSH_INTERVAL,
    ) -> None:
        self.client = client
        self.batch_lines = batch_lines
        # gzip costs CPU on both ends; it pays off over a real network, not over loopback.
        self.compress = not client.is_loopback() if compress is None else compress
        self.validate = validate
        self.retries = retries
        self.retry_wait = retry_wait
        self.replay_interval = replay_interval
        self.spool_dir = Path(spool_dir) if spool_dir else None
        self.stats = WriterStats()
        self._buffer: list[str] = []
        self._buffer_lock = threading.Lock()
        self._queue: queue.Queue[list[str] | None] = queue.Queue(maxsize=max_queued_batches)
        self._state_lock = threading.Lock()
        self._spooling = False
        self._seq = itertools.count()
        self._rejections: list[Rejection] = []
        self._fatal: InfluxError | None = None
        self._replayer: threading.Thread | None = None
        self._closed = False
        if self.spool_dir:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            if self._spool_files():  # left by an earlier run that could not deliver
                self._spooling = True
                self._start_replayer()
        self._senders = [
            threading.Thread(target=self._send_loop, name=f"influx-sender-{i}", daemon=True)
            for i in range(senders)
        ]
        for t in self._senders:
            t.start()
        self._stop_timer = threading.Event()
        self._timer: threading.Thread | None = None
        if flush_interval:
            self._timer = threading.Thread(
                target=self._timer_loop, args=(flush_interval,), name="influx-flush", daemon=True
            )
            self._timer.start()

    def _timer_loop(self, interval: float) -> None:
        """Hand the buffer to the senders every `interval` s (without waiting for them)."""
        while not self._stop_timer.wait(interval):
            self._hand_over()

    def _hand_over(self) -> None:
        """Queue what is buffered as one batch (close() stops the timer before it closes)."""
        with self._buffer_lock:
            if self._buffer:
                batch, self._buffer = self._buffer, []
                self._submit(batch)

    # --- producer side -------------------------------------------------------------------

    def write(self, points: Iterable[Point]) -> None:
        for p in points:
            self.write_lines([encode_point(p, self.validate)])

    def write_lines(self, lines: Sequence[str]) -> None:
        with self._buffer_lock:
            self._buffer.extend(lines)
            self.stats.add(points=len(lines))
            while len(self._buffer) >= self.batch_lines:
                batch = self._buffer[: self.batch_lines]
                del self._buffer[: self.batch_lines]
                self._submit(batch)

    def write_frame(
        self,
        df: pd.DataFrame,
        measurement: str,
        tag_columns: Sequence[str] = (),
        field_columns: Sequence[str] | None = None,
        time_column: str | None = None,
        const_tags: Mapping[str, str] | None = None,
    ) -> None:
        """Encode a frame batch by batch (vectorised) so memory stays bounded."""
        for start in range(0, len(df), self.batch_lines):
            chunk = df.iloc[start : start + self.batch_lines]
            self.write_lines(
                encode_frame(
                    chunk,
                    measurement,
                    tag_columns,
                    field_columns,
                    time_column,
                    const_tags,
                    self.validate,
                )
            )

    def _submit(self, batch: list[str]) -> None:
        if self._closed:
            raise InfluxError("writer is closed")
        self._queue.put(batch)

    def flush(self) -> None:
        """Send what is buffered, wait for every batch to be delivered or spooled."""
        self._hand_over()
        self._queue.join()
        self._raise_problems()

    def close(self, replay_timeout: float = 0.0) -> None:
        """Flush, stop the senders; wait up to `replay_timeout` s for the spool to drain."""
        self._stop_timer.set()
        if self._timer is not None:
            self._timer.join()
        try:
            self.flush()
        finally:
            if not self._closed:
                self._closed = True
                for _ in self._senders:
                    self._queue.put(None)
                for t in self._senders:
                    t.join()
            if replay_timeout > 0:
                self.wait_replayed(replay_timeout)
        self._raise_problems()

    def wait_replayed(self, timeout: float) -> bool:
        """True once the spool is empty (everything delivered)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.spooled():
                return True
            time.sleep(0.05)
        return not self.spooled()

    def spooled(self) -> int:
        return len(self._spool_files()) if self.spool_dir else 0

    def __enter__(self) -> InfluxWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _raise_problems(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._rejections:
            rejections, self._rejections = self._rejections, []
            raise WriteError(rejections)

    # --- sender side ---------------------------------------------------------------------

    def _send_loop(self) -> None:
        while True:
            batch = self._queue.get()
            try:
                if batch is None:
                    return
                self._deliver(batch)
            except Exception as e:  # a sender must never die silently
                log.exception("writer: unexpected error")
                self._fatal = InfluxError(f"writer failed: {e}")
            finally:
                self._queue.task_done()

    def _deliver(self, batch: list[str]) -> None:
        with self._state_lock:
            spooling = self._spooling
        if spooling:
            self._spool(batch)
            return
        body = self._encode_body(batch)
        wait = self.retry_wait
        for attempt in range(self.retries + 1):
            try:
                self._post(body, batch)
                self.stats.add(batches_sent=1)
                return
            except InfluxUnreachable as e:
                if attempt == self.retries:
                    log.warning("writer: %s; spooling", e)
                    break
                self.stats.add(retries=1)
                time.sleep(wait)
                wait *= 2
        if self.spool_dir is None:
            self._fatal = InfluxUnreachable(
                f"InfluxDB at {self.client.url} is unreachable and no spool directory is set"
            )
            return
        with self._state_lock:
            self._spooling = True
        self._spool(batch)
        self._start_replayer()

    def _encode_body(self, batch: list[str]) -> bytes:
        body = ("\n".join(batch) + "\n").encode()
        return gzip.compress(body, compresslevel=1) if self.compress else body

    def _post(self, body: bytes, batch: list[str]) -> None:
        """One POST; 4xx are recorded as rejections (with the batch saved), never retried."""
        try:
            self.client.write_body(body, gzipped=self.compress)
        except WriteRejected as e:
            if e.status == 413 and len(batch) > 1:
                half = len(batch) // 2
                for part in (batch[:half], batch[half:]):
                    self._post(self._encode_body(part), part)
                return
            self._reject(e.message, batch)
        except (DatabaseNotFound, InfluxAuthError) as e:
            self._reject(str(e), batch)
            self._fatal = e

    def _reject(self, message: str, batch: list[str]) -> None:
        saved = None
        if self.spool_dir:
            rejected = self.spool_dir / "rejected"
            rejected.mkdir(exist_ok=True)
            saved = rejected / f"{time.time_ns()}-{next(self._seq):06d}.lp"
            saved.write_text("\n".join(batch) + "\n")
        rejection = Rejection(message, offending_line(message, batch), saved)
        log.error("writer: InfluxDB rejected a batch:%s", rejection)
        self.stats.add(batches_rejected=1)
        self._rejections.append(rejection)

    # --- the spool -----------------------------------------------------------------------

    def _spool_files(self) -> list[Path]:
        assert self.spool_dir is not None
        return sorted(self.spool_dir.glob("*.lp.gz"))

    def _spool(self, batch: list[str]) -> None:
        assert self.spool_dir is not None
        name = f"{time.time_ns():020d}-{next(self._seq):06d}"
        tmp = self.spool_dir / (name + ".tmp")
        with gzip.open(tmp, "wt", compresslevel=1) as f:
            f.write("\n".join(batch) + "\n")
        tmp.rename(self.spool_dir / (name + ".lp.gz"))  # atomic: a replay never sees half a file
        self.stats.add(batches_spooled=1)

    def _start_replayer(self) -> None:
        with self._state_lock:
            if self._replayer is not None and self._replayer.is_alive():
                return
            self._replayer = threading.Thread(
                target=self._replay_loop, name="influx-replay", daemon=True
            )
            self._replayer.start()

    def _replay_loop(self) -> None:
        wait = self.replay_interval
        while True:
            files = self._spool_files()
            if not files:
                with self._state_lock:
                    # A sender may have spooled between listing and locking: look again.
                    if not self._spool_files():
                        self._spooling = False
                        return
                continue
            path = files[0]
            with gzip.open(path, "rt") as f:
                batch = f.read().splitlines()
            try:
                self._post(self._encode_body(batch), batch)
            except InfluxUnreachable:
                time.sleep(wait)
                wait = min(wait * 2, 30.0)
                continue
            path.unlink()
            wait = self.replay_interval
            self.stats.add(batches_replayed=1)
