"""The embedded default database: a private `influxd` the tool starts and reuses.

When no InfluxDB URL is configured the tool runs its own `influxd` (Debian's `influxdb`
package) with a generated config, a data directory under the state dir and free loopback
ports. It outlives a single command, so `loadgen run` followed by `analysis report` sees the
same data; `collector db stop` ends it. The process is tracked by the PID recorded in the
state dir and identified by its config path before it is signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from collector.influx import DEFAULT_DATABASE, InfluxClient, InfluxConfig, InfluxError

DEFAULT_STATE_DIR = ".wally"
ENV_STATE_DIR = "WALLY_STATE_DIR"

_CONFIG = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{root}/meta"
  logging-enabled = false

[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
  cache-max-memory-size = "1g"
  index-version = "tsi1"

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = {auth}
  log-enabled = false
  max-body-size = 0

[logging]
  level = "warn"

[continuous_queries]
  enabled = false
"""


def state_dir(path: str | os.PathLike | None = None) -> Path:
    return Path(path or os.environ.get(ENV_STATE_DIR) or DEFAULT_STATE_DIR).absolute()


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as influxd's Go listener does
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class EmbeddedInfluxd:
    """One private influxd whose files all live under `<state_dir>/influxdb/`."""

    state: Path
    auth: bool = False

    @property
    def root(self) -> Path:
        return self.state / "influxdb"

    @property
    def info_path(self) -> Path:
        return self.root / "influxd.json"

    @property
    def config_path(self) -> Path:
        return self.root / "influxd.conf"

    @property
    def log_path(self) -> Path:
        return self.root / "influxd.log"

    def info(self) -> dict | None:
        try:
            return json.loads(self.info_path.read_text())
        except (OSError, ValueError):
            return None

    def _alive_pid(self) -> int | None:
        """The recorded PID, only if that process is still *our* influxd."""
        info = self.info()
        if not info:
            return None
        pid = int(info["pid"])
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        if str(self.config_path).encode() not in cmdline:
            return None
        return pid

    def is_running(self) -> bool:
        return self._alive_pid() is not None

    @property
    def url(self) -> str | None:
        info = self.info()
        return info["url"] if info else None

    def status(self, database: str = DEFAULT_DATABASE) -> dict:
        running = self.is_running()
        info = self.info() or {}
        return {
            "url": info.get("url") if running else None,
            "database": database,
            "running": running,
            "pid": info.get("pid") if running else None,
            "data_dir": str(self.root),
        }

    def start(self, timeout: float = 30.0) -> str:
        """Start influxd if it is not running; return its URL once /ping answers."""
        if self.is_running():
            url = self.url
            assert url is not None
            self._wait_ping(url, timeout)
            return url
        binary = shutil.which("influxd")
        if binary is None:
            raise InfluxError(
                "influxd is not installed: run `make setup` (installs Debian's influxdb package) "
                "or configure an external InfluxDB with --influx-url / WALLY_INFLUX_URL"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        http_port, rpc_port = self._ports()
        self.config_path.write_text(
            _CONFIG.format(
                root=self.root,
                http_port=http_port,
                rpc_port=rpc_port,
                auth="true" if self.auth else "false",
            )
        )
        with open(self.log_path, "ab") as log:
            proc = subprocess.Popen(
                [binary, "-config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives Ctrl+C of the command that started it
            )
        url = f"http://127.0.0.1:{http_port}"
        self.info_path.write_text(json.dumps({"pid": proc.pid, "url": url}))
        try:
            self._wait_ping(url, timeout, proc)
        except InfluxError:
            self.stop()
            raise
        return url

    def _ports(self) -> tuple[int, int]:
        """Reuse the previous ports when free, so the URL stays the same across restarts."""
        try:
            text = self.config_path.read_text()
        except OSError:
            return free_port(), free_port()
        found = [int(p) for p in re.findall(r'bind-address = "127\.0\.0\.1:(\d+)"', text)]
        if len(found) == 2 and all(_port_free(p) for p in found):
            return found[1], found[0]
        return free_port(), free_port()

    def _wait_ping(self, url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
        client = InfluxClient(InfluxConfig(url=url, timeout=2.0))
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                return
            except InfluxError:
                if proc is not None and proc.poll() is not None:
                    tail = self.log_path.read_text(errors="replace")[-2000:]
                    raise InfluxError(
                        f"influxd exited with code {proc.returncode}; log:\n{tail}"
                    ) from None
                if time.monotonic() > deadline:
                    raise InfluxError(
                        f"influxd did not answer /ping at {url} within {timeout} s"
                    ) from None
                time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> bool:
        """Stop our influxd by its PID; True if one was running."""
        pid = self._alive_pid()
        if pid is None:
            self.info_path.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._alive_pid() is not None:
            _reap(pid)
            time.sleep(0.05)
        if self._alive_pid() is not None:
            os.kill(pid, signal.SIGKILL)
            while self._alive_pid() is not None:
                _reap(pid)
                time.sleep(0.05)
        self.info_path.unlink(missing_ok=True)
        return True

    def destroy(self) -> None:
        """Stop and delete every file (tests and `db stop --purge`)."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _reap(pid: int) -> None:
    """Collect our own child's exit status so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def resolve(
    config: InfluxConfig | None, state: Path | None = None, database: str | None = None
) -> InfluxClient:
    """The client for the configured database, or for the embedded one (started if needed)."""
    if config is None:
        server = EmbeddedInfluxd(state_dir(state))
        url = server.start()
        config = InfluxConfig(url=url, database=database or DEFAULT_DATABASE, embedded=True)
    client = InfluxClient(config)
    if config.embedded or config.create_database:
        client.create_database()
    return client
