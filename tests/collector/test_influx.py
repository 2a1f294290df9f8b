"""Round trips and failures against a real influxd."""

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.influx import (
    DatabaseNotFound,
    InfluxAuthError,
    InfluxClient,
    InfluxConfig,
    InfluxError,
    InfluxUnreachable,
    quote_ident,
)
from collector.influxd import EmbeddedInfluxd, free_port
from collector.lineproto import Point, encode_point

# Printable text of every script; the backslash patterns influxd cannot represent are refused
# by the encoder (tested in test_lineproto) and excluded here.
_text = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=20
)
nasty = _text.filter(lambda s: not re.search(r"\\(?=[,= ]|$)", s)) | st.sampled_from(
    ["a b", "a,b", "a=b", 'quo"te', "it's", r"back\slash", "ünï©ødé ✓", " lead", "trail "]
)
field_value = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=30),
)


def _read_back(client: InfluxClient, measurement: str) -> list[tuple]:
    df = client.query_df(f"SELECT * FROM {quote_ident(measurement)} GROUP BY *")
    out = []
    for row in df.to_dict("records"):
        row.pop("_measurement")
        t = row.pop("time")
        out.append((t, {k: v for k, v in row.items() if v is not None}))
    return sorted(out, key=lambda r: r[0])


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    measurement=nasty,
    tags=st.dictionaries(nasty, nasty, max_size=3),
    fields=st.dictionaries(nasty, field_value, min_size=1, max_size=4),
)
def test_round_trip_nasty_names_and_every_type(influx, measurement, tags, fields):
    # a tag key equal to a field key would be ambiguous in SELECT *; influxd renames it
    tags = {k: v for k, v in tags.items() if k not in fields and k not in ("time", "_measurement")}
    fields = {k: v for k, v in fields.items() if k != "time"}
    if not fields:
        return
    body = encode_point(Point(measurement, tags, fields, 1_600_000_000_000_000_123), validate=False)
    influx.write_body(body.encode())
    rows = _read_back(influx, measurement)
    influx.execute(f"DROP MEASUREMENT {quote_ident(measurement)}")
    # JSON carries a whole float as an integer literal (Go prints 1e16 as 10000000000000000):
    # the stored float64 is identical, so compare floats as floats.
    for _t, values in rows:
        for k, v in fields.items():
            if isinstance(v, float) and k in values:
                values[k] = float(values[k])
    assert rows == [(1_600_000_000_000_000_123, {**tags, **fields})]


def test_schema_point_with_nasty_tags_selects_by_bound_params(influx):
    values = ["a b", "a,b", "a=b", 'q"u', "it's", r"x\y", "ünï"]
    body = "\n".join(
        encode_point(Point("diskio", {"node": v, "device": "sda"}, {"reads": i}, i))
        for i, v in enumerate(values)
    )
    influx.write_body(body.encode())
    assert influx.tag_values("diskio", "node") == sorted(values)
    for i, v in enumerate(values):
        df = influx.select("diskio", ["reads"], tags={"node": v})
        assert df["reads"].tolist() == [i]
    df = influx.select("diskio", ["reads"], tags={"node": values[:3]}, start_ns=1, end_ns=3)
    assert sorted(df["reads"]) == [1, 2]


def test_chunked_query_returns_every_row(influx):
    n = 25_000
    body = "\n".join(f"mem used={i}i {i}" for i in range(n))
    influx.write_body(body.encode())
    df = influx.query_df("SELECT used FROM mem")
    assert len(df) == n
    assert df["used"].sum() == n * (n - 1) // 2
    assert df["time"].dtype == "int64"


def test_statement_error_is_raised_even_with_http_200(influx):
    influx.write_body(b'wally_event message="x" 1')
    # mean() of a string field fails at run time: HTTP 200 with results[1].error
    with pytest.raises(InfluxError, match="statement 1 failed: unsupported mean"):
        influx.query("SELECT * FROM wally_event; SELECT mean(message) FROM wally_event")
    with pytest.raises(InfluxError, match=r"HTTP 400.*error parsing query"):
        influx.query("SELECT nope( FROM mem")


def test_unknown_database_is_named(influx):
    other = InfluxClient(InfluxConfig(url=influx.url, database="no_such_db"))
    with pytest.raises(DatabaseNotFound, match="'no_such_db' does not exist"):
        other.write_body(b"mem used=1i 1")


def test_field_type_conflict_is_reported(influx):
    influx.write_body(b"mem used=1i 1")
    with pytest.raises(InfluxError, match="field type conflict"):
        influx.write_body(b"mem used=1.5 2")


@pytest.mark.parametrize(
    "url,match",
    [
        ("localhost:8086", "malformed InfluxDB URL"),
        ("ftp://host", "malformed InfluxDB URL"),
        ("http://", "malformed InfluxDB URL"),
        ("http://host:port", "port is not a number"),
    ],
)
def test_malformed_url(url, match):
    with pytest.raises(InfluxError, match=match):
        InfluxConfig(url=url)


def test_unreachable_server_is_named():
    client = InfluxClient(InfluxConfig(url=f"http://127.0.0.1:{free_port()}", timeout=2))
    with pytest.raises(InfluxUnreachable, match="unreachable: Connection refused"):
        client.ping()


def test_wrong_password(tmp_path):
    server = EmbeddedInfluxd(tmp_path, auth=True)
    url = server.start()
    try:
        # With auth on and no users yet, influxd accepts the first admin creation.
        InfluxClient(InfluxConfig(url=url)).execute(
            "CREATE USER admin WITH PASSWORD 's3cret' WITH ALL PRIVILEGES"
        )
        good = InfluxClient(InfluxConfig(url=url, username="admin", password="s3cret"))
        good.create_database()
        assert "wally" in good.databases()
        bad = InfluxClient(InfluxConfig(url=url, username="admin", password="wrong"))
        with pytest.raises(InfluxAuthError, match=r"refused the credentials \(admin\)") as e:
            bad.query("SHOW DATABASES")
        assert "wrong" not in str(e.value) and "wrong" not in repr(bad.config)
    finally:
        server.destroy()
