import numpy as np
import pandas as pd
import pytest

from collector.lineproto import (
    LineProtocolError,
    Point,
    encode_frame,
    encode_point,
    escape_key,
    escape_measurement,
)


def test_escaping_follows_influxd_rules():
    assert escape_measurement("a b,c=d") == r"a\ b\,c=d"
    assert escape_key("a b,c=d") == r"a\ b\,c\=d"
    assert escape_key(r"x\y") == r"x\y"


@pytest.mark.parametrize("bad", ["a\\", "a\\,b", "a\\ b", "a\\=b", "line\nbreak"])
def test_unrepresentable_tag_values_are_refused_by_name(bad):
    p = Point("cpu", {"node": bad, "cpu": "cpu-total"}, {"usage_user": 1.0}, 1)
    with pytest.raises(LineProtocolError, match="tag node"):
        encode_point(p)


def test_schema_types_are_enforced():
    with pytest.raises(LineProtocolError, match=r"reads.*must be an integer"):
        encode_point(Point("diskio", {"device": "sda"}, {"reads": 1.5}, 1))
    with pytest.raises(LineProtocolError, match="not in the schema"):
        encode_point(Point("diskio", {"device": "sda"}, {"bogus": 1}, 1))
    with pytest.raises(LineProtocolError, match="unknown measurement"):
        encode_point(Point("nope", {}, {"x": 1}, 1))
    with pytest.raises(LineProtocolError, match="tag 'colour' is not declared"):
        encode_point(Point("diskio", {"colour": "red"}, {"reads": 1}, 1))
    # an int declared as float is written as a float, never flipping the field's type
    line = encode_point(Point("cpu", {"cpu": "cpu0"}, {"usage_user": 3}, 7))
    assert line == "cpu,cpu=cpu0 usage_user=3.0 7"


def test_frame_encoding_equals_point_encoding():
    rng = np.random.default_rng(1)
    n = 500
    df = pd.DataFrame(
        {
            "node": rng.choice(["n 1", "n,2", "n=3"], n),
            "device": rng.choice(["sda", "sdb"], n),
            "reads": rng.integers(0, 2**40, n),
            "io_util": rng.random(n) * 100,
            "time": np.arange(n, dtype="int64") * 1_000_000_000,
        }
    )
    df.loc[3, "io_util"] = np.nan
    lines = encode_frame(df, "diskio", ["node", "device"], ["reads", "io_util"], time_column="time")
    expected = [
        encode_point(
            Point(
                "diskio",
                {"node": r.node, "device": r.device},
                {
                    "reads": int(r.reads),
                    "io_util": None if np.isnan(r.io_util) else float(r.io_util),
                },
                int(r.time),
            )
        )
        for r in df.itertuples()
    ]
    assert lines == expected


def test_frame_rejects_fractional_ints_and_skips_empty_rows():
    df = pd.DataFrame({"reads": [1.5]}, index=pd.Index([1]))
    with pytest.raises(LineProtocolError, match="must be integers"):
        encode_frame(df, "diskio")
    df = pd.DataFrame({"io_util": [np.nan, 2.0]}, index=pd.Index([1, 2]))
    assert encode_frame(df, "diskio") == ["diskio io_util=2.0 2"]
