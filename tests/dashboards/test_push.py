"""`dashboards push`: clear errors for an unreachable Grafana and a refused token.

The 401 comes from a tiny real HTTP server started here (no Grafana is installable); the
unreachable case from a loopback port nobody listens on.
"""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

DASHBOARDS = [sys.executable, "-m", "dashboards"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Unauthorized(http.server.BaseHTTPRequestHandler):
    def _deny(self) -> None:
        body = b'{"message":"invalid API key"}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _deny

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def grafana_401() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unauthorized)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def _push(url: str, *extra: str, env: dict[str, str] | None = None):
    return subprocess.run(
        [*DASHBOARDS, "push", "--grafana-url", url, *extra],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        timeout=60,
    )


def test_unreachable_grafana_is_named():
    url = f"http://127.0.0.1:{_closed_port()}"
    r = _push(url, env={"GRAFANA_TOKEN": "glsa_x"})
    assert r.returncode == 1
    assert f"Grafana at {url} is unreachable" in r.stderr


def test_refused_token_is_named(grafana_401, tmp_path):
    token = tmp_path / "token"
    token.write_text("glsa_wrong\n")
    r = _push(grafana_401, "--token-file", str(token), "--with-datasource")
    assert r.returncode == 1
    assert f"Grafana at {grafana_401} refused the API token" in r.stderr
    assert "HTTP 401" in r.stderr


def test_missing_token_says_where_to_put_it():
    r = _push("http://127.0.0.1:3000")
    assert r.returncode == 1 and "set GRAFANA_TOKEN or pass --token-file" in r.stderr
