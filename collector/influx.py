"""InfluxDB v1 HTTP API client: connection settings, InfluxQL to DataFrames, safe quoting.

The v1 API (`/write`, `/query`, `/ping`) is the common ground of InfluxDB 1.x, 2.x (compat
endpoints, token auth) and 3.x, so it is the only one we speak. Every statement's `error`
is checked: InfluxDB reports a failed statement with HTTP 200.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import requests

DEFAULT_DATABASE = "wally"

ENV_URL = "WALLY_INFLUX_URL"
ENV_DATABASE = "WALLY_INFLUX_DATABASE"
ENV_USERNAME = "WALLY_INFLUX_USERNAME"
ENV_PASSWORD = "WALLY_INFLUX_PASSWORD"
ENV_TOKEN = "WALLY_INFLUX_TOKEN"


class InfluxError(RuntimeError):
    """Anything InfluxDB refused or could not be asked; the message says what and where."""


class InfluxUnreachable(InfluxError):
    """The server did not answer (refused, timed out, 5xx): worth retrying later."""


class InfluxAuthError(InfluxError):
    pass


class DatabaseNotFound(InfluxError):
    pass


@dataclass(frozen=True)
class InfluxConfig:
    """Where and how to reach InfluxDB. Secrets never appear in repr or logs."""

    url: str
    database: str = DEFAULT_DATABASE
    retention_policy: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    timeout: float = 10.0
    create_database: bool = True
    embedded: bool = False

    def __post_init__(self) -> None:
        validate_url(self.url)
        if not self.database:
            raise InfluxError("influx database name is empty")

    def with_database(self, database: str) -> InfluxConfig:
        return replace(self, database=database)


def validate_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InfluxError(
            f"malformed InfluxDB URL {url!r}: expected http[s]://HOST[:PORT], e.g. http://127.0.0.1:8086"
        )
    try:
        parts.port  # noqa: B018 - raises on a non-numeric port
    except ValueError:
        raise InfluxError(f"malformed InfluxDB URL {url!r}: the port is not a number") from None
    return url


def read_secret(env: str | None, file: str | os.PathLike | None, what: str) -> str | None:
    """A secret comes from an environment variable or a file, never from the config text."""
    if env:
        value = os.environ.get(env)
        if value is None:
            raise InfluxError(f"{what}: environment variable {env} is not set")
        return value
    if file:
        path = Path(file).expanduser()
        try:
            return path.read_text().strip()
        except OSError as e:
            raise InfluxError(f"{what}: cannot read secret file {path}: {e.strerror}") from None
    return None


def config_from(
    section: Mapping[str, Any] | None = None,
    url: str | None = None,
    database: str | None = None,
) -> InfluxConfig | None:
    """Settings from flags, then environment, then the config file's `influx:` section.

    Returns None when no URL is configured anywhere: the caller then uses the embedded server.
    """
    section = dict(section or {})
    url = url or os.environ.get(ENV_URL) or section.get("url")
    if not url:
        return None
    password = os.environ.get(ENV_PASSWORD) or read_secret(
        section.get("password_env"), section.get("password_file"), "influx.password"
    )
    token = os.environ.get(ENV_TOKEN) or read_secret(
        section.get("token_env"), section.get("token_file"), "influx.token"
    )
    return InfluxConfig(
        url=url.rstrip("/"),
        database=database
        or os.environ.get(ENV_DATABASE)
        or section.get("database")
        or DEFAULT_DATABASE,
        retention_policy=section.get("retention_policy"),
        username=os.environ.get(ENV_USERNAME) or section.get("username"),
        password=password,
        token=token,
        timeout=float(section.get("timeout", 10.0)),
        create_database=bool(section.get("create_database", False)),
    )


# --- InfluxQL quoting -------------------------------------------------------------------


def quote_ident(name: str) -> str:
    """A measurement, field or tag key as an InfluxQL identifier."""
    if "\n" in name:
        raise InfluxError(f"identifier {name!r} contains a newline")
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_literal(value: str) -> str:
    """A string literal; prefer bind parameters (`params=`) where InfluxQL allows them."""
    if "\n" in value:
        raise InfluxError(f"string literal {value!r} contains a newline")
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def regex_literal(pattern: str) -> str:
    """A regex literal /.../; callers pass a regex, we escape only the delimiter."""
    if "\n" in pattern:
        raise InfluxError(f"regex {pattern!r} contains a newline")
    return "/" + pattern.replace("/", "\\/") + "/"


def regex_any_of(values: Iterable[str]) -> str:
    """A regex literal matching exactly one of the given strings."""
    return regex_literal("^(" + "|".join(re.escape(v) for v in values) + ")$")


def tag_filter(tags: Mapping[str, str | Sequence[str]], params: dict[str, Any]) -> str:
    """WHERE fragment for tag equality/membership, values passed as bind parameters."""
    clauses = []
    for i, (key, value) in enumerate(sorted(tags.items())):
        values = [value] if isinstance(value, str) else list(value)
        if not values:
            raise InfluxError(f"tag filter {key!r} has no values")
        ors = []
        for j, v in enumerate(values):
            name = f"t{i}_{j}"
            params[name] = str(v)
            ors.append(f"{quote_ident(key)} = ${name}")
        clauses.append("(" + " OR ".join(ors) + ")")
    return " AND ".join(clauses)


# --- the client ------------------------------------------------------------------------


class InfluxClient:
    """Talks to one InfluxDB database. Safe to share between threads for queries."""

    def __init__(self, config: InfluxConfig, session: requests.Session | None = None) -> None:
        self.config = config
        self.session = session or requests.Session()
        if config.token:
            self.session.headers["Authorization"] = f"Token {config.token}"
        elif config.username:
            self.session.auth = (config.username, config.password or "")

    @property
    def url(self) -> str:
        return self.config.url

    @property
    def database(self) -> str:
        return self.config.database

    def is_loopback(self) -> bool:
        host = urlsplit(self.url).hostname or ""
        return host == "localhost" or host.startswith("127.") or host == "::1"

    def __repr__(self) -> str:
        return f"InfluxClient({self.url!r}, database={self.database!r})"

    def _request(self, method: str, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", self.config.timeout)
        try:
            resp = self.session.request(method, self.url + path, **kw)
        except requests.ConnectionError as e:
            raise InfluxUnreachable(
                f"InfluxDB at {self.url} is unreachable: {_reason(e)}"
            ) from None
        except requests.Timeout:
            raise InfluxUnreachable(
                f"InfluxDB at {self.url} did not answer within {kw['timeout']} s"
            ) from None
        if resp.status_code in (401, 403):
            who = self.config.username or ("token" if self.config.token else "anonymous")
            raise InfluxAuthError(
                f"InfluxDB at {self.url} refused the credentials ({who}): {_body_error(resp)}"
            )
        if resp.status_code >= 500:
            raise InfluxUnreachable(
                f"InfluxDB at {self.url} failed with HTTP {resp.status_code}: {_body_error(resp)}"
            )
        return resp

    def ping(self) -> str:
        resp = self._request("GET", "/ping", timeout=min(self.config.timeout, 5.0))
        if resp.status_code != 204:
            raise InfluxError(
                f"{self.url}/ping answered HTTP {resp.status_code}: is this InfluxDB?"
            )
        return resp.headers.get("X-Influxdb-Version", "unknown")

    def write_body(self, body: bytes, gzipped: bool = False, precision: str = "ns") -> None:
        """POST one line-protocol body; errors are classified for the writer's retry logic."""
        params = {"db": self.database, "precision": precision}
        if self.config.retention_policy:
            params["rp"] = self.config.retention_policy
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        resp = self._request("POST", "/write", params=params, data=body, headers=headers)
        if resp.status_code == 204:
            return
        message = _body_error(resp)
        if resp.status_code == 404 and "database not found" in message:
            raise DatabaseNotFound(
                f"database {self.database!r} does not exist on {self.url}: create it "
                "(CREATE DATABASE) or set influx.create_database: true"
            )
        raise WriteRejected(resp.status_code, message)

    def query(
        self,
        q: str,
        params: Mapping[str, Any] | None = None,
        database: str | None = None,
        epoch: str = "ns",
        chunk_size: int = 10000,
        method: str = "GET",
    ) -> list[dict]:
        """Run InfluxQL; returns one merged result per statement, each checked for `error`."""
        args: dict[str, Any] = {"q": q, "epoch": epoch, "chunked": "true", "chunk_size": chunk_size}
        db = self.database if database is None else database
        if db:
            args["db"] = db
        if params:
            args["params"] = json.dumps(dict(params))
        if method == "POST":
            resp = self._request("POST", "/query", data=args, stream=True)
        else:
            resp = self._request("GET", "/query", params=args, stream=True)
        if resp.status_code != 200:
            raise InfluxError(
                f"query failed on {self.url} (HTTP {resp.status_code}): {_body_error(resp)}\n  {q}"
            )
        merged: dict[int, dict] = {}
        for raw in resp.iter_lines():
            if not raw:
                continue
            chunk = json.loads(raw)
            if "error" in chunk:
                raise InfluxError(f"query failed on {self.url}: {chunk['error']}\n  {q}")
            for result in chunk.get("results", []):
                sid = result.get("statement_id", 0)
                if "error" in result:
                    raise InfluxError(f"statement {sid} failed: {result['error']}\n  {q}")
                into = merged.setdefault(sid, {"statement_id": sid, "series": []})
                _merge_series(into["series"], result.get("series", []))
        return [merged[k] for k in sorted(merged)]

    def execute(self, q: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a statement that changes state (CREATE, DROP), via POST as InfluxDB requires."""
        self.query(q, params=params, method="POST")

    def query_df(self, q: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Long-form frame of the first statement: `time` (int ns), tag columns, field columns."""
        results = self.query(q, params=params)
        return series_to_frame(results[0]["series"] if results else [])

    def create_database(self) -> None:
        self.execute(f"CREATE DATABASE {quote_ident(self.database)}")

    def databases(self) -> list[str]:
        series = self.query("SHOW DATABASES", database="")[0]["series"]
        return [row[0] for s in series for row in s.get("values", [])]

    def measurements(self) -> list[str]:
        series = self.query("SHOW MEASUREMENTS")[0]["series"]
        return [row[0] for s in series for row in s.get("values", [])]

    def tag_values(
        self, measurement: str, key: str, where: Mapping[str, str | Sequence[str]] | None = None
    ) -> list[str]:
        """Distinct values of a tag, answered from the tag index (no series scan)."""
        params: dict[str, Any] = {}
        q = f"SHOW TAG VALUES FROM {quote_ident(measurement)} WITH KEY = {quote_ident(key)}"
        if where:
            q += " WHERE " + tag_filter(where, params)
        series = self.query(q, params=params)[0]["series"]
        return sorted({row[1] for s in series for row in s.get("values", [])})

    def select(
        self,
        measurement: str,
        fields: Sequence[str] = ("*",),
        tags: Mapping[str, str | Sequence[str]] | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
        group_by: Sequence[str] = (),
    ) -> pd.DataFrame:
        """Rows of a measurement selected by tags and a time window [start, end)."""
        params: dict[str, Any] = {}
        cols = ", ".join("*" if f == "*" else quote_ident(f) for f in fields)
        where = []
        if tags:
            where.append(tag_filter(tags, params))
        if start_ns is not None:
            params["start"] = int(start_ns)
            where.append("time >= $start")
        if end_ns is not None:
            params["end"] = int(end_ns)
            where.append("time < $end")
        q = f"SELECT {cols} FROM {quote_ident(measurement)}"
        if where:
            q += " WHERE " + " AND ".join(where)
        if group_by:
            q += " GROUP BY " + ", ".join(quote_ident(g) for g in group_by)
        return self.query_df(q, params)


class WriteRejected(InfluxError):
    """InfluxDB refused a write body (HTTP 4xx): retrying it would fail the same way."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def series_to_frame(series: list[dict]) -> pd.DataFrame:
    """One long frame of a statement's series: their columns, tag columns, `_measurement`.

    Consecutive series of the same shape become one frame built from all their rows at
    once (tags repeated per row): results of thousands of series (one per disk of a big
    cluster) would otherwise cost a frame each.
    """
    frames = []
    i = 0
    while i < len(series):
        shape = _shape(series[i])
        j = i + 1
        while j < len(series) and _shape(series[j]) == shape:
            j += 1
        run = series[i:j]
        lens = [len(s.get("values", [])) for s in run]
        df = pd.DataFrame([v for s in run for v in s.get("values", [])], columns=shape[0])
        for k in shape[1]:
            df[k] = np.repeat(np.array([s["tags"][k] for s in run], dtype=object), lens)
        if shape[2]:
            df["_measurement"] = np.repeat(np.array([s["name"] for s in run], dtype=object), lens)
        frames.append(df)
        i = j
    if not frames:
        return pd.DataFrame()
    out = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    if "time" in out.columns and pd.api.types.is_numeric_dtype(out["time"]):
        out["time"] = out["time"].astype("int64")
    return out


def _shape(s: dict) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    return tuple(s["columns"]), tuple(s.get("tags") or {}), "name" in s


def _merge_series(into: list[dict], new: list[dict]) -> None:
    """Chunked responses split a series across chunks; glue the pieces back together."""
    for s in new:
        last = into[-1] if into else None
        if (
            last is not None
            and last.get("name") == s.get("name")
            and last.get("tags") == s.get("tags")
            and last.get("columns") == s.get("columns")
        ):
            last["values"].extend(s.get("values", []))
        else:
            into.append({**s, "values": list(s.get("values", []))})


def _body_error(resp: requests.Response) -> str:
    try:
        return resp.json().get("error", resp.text).strip()
    except ValueError:
        return resp.text.strip() or resp.reason


def _reason(e: Exception) -> str:
    text = str(e)
    for marker in (
        "Connection refused",
        "Name or service not known",
        "timed out",
        "No route to host",
    ):
        if marker in text:
            return marker
    return text.splitlines()[0][:200] if text else type(e).__name__
