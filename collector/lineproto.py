"""InfluxDB line protocol: points and DataFrames to bytes, escaped correctly.

Escaping follows what influxd 1.x actually parses (checked against 1.6.7): in measurement
names `,` and space are escaped; in tag keys, tag values and field keys `,`, `=` and space;
in string field values `"` and `\\`. influxd does *not* unescape `\\\\` in names and tags, so a
backslash right before an escapable character or at the end of a name cannot be written at
all: such values are rejected with a clear error rather than silently altered. Newlines
end a line in the protocol and are rejected everywhere.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat

import numpy as np
import pandas as pd

from collector import schema

FieldValue = int | float | str | bool


class LineProtocolError(ValueError):
    """A point that cannot be written as given; the message names the part at fault."""


@dataclass(slots=True)
class Point:
    """One sample: what parsers produce and the writer consumes."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    time_ns: int


_MEAS_RE = re.compile(r"([, ])")
_KEY_RE = re.compile(r"([,= ])")
# A backslash followed by an escapable character (or ending the text) cannot be expressed.
_BAD_BACKSLASH_NAME = re.compile(r"\\(?=[, ]|$)")
_BAD_BACKSLASH_KEY = re.compile(r"\\(?=[,= ]|$)")


def _check(text: str, what: str, bad: re.Pattern[str]) -> None:
    if not isinstance(text, str):
        raise LineProtocolError(f"{what} must be a string, got {type(text).__name__}: {text!r}")
    if "\n" in text or "\r" in text:
        raise LineProtocolError(f"{what} {text!r} contains a newline")
    if bad.search(text):
        raise LineProtocolError(
            f"{what} {text!r} has a backslash before ',', '=', ' ' or at its end: "
            "InfluxDB line protocol cannot represent that"
        )


def escape_measurement(name: str) -> str:
    _check(name, "measurement name", _BAD_BACKSLASH_NAME)
    if not name:
        raise LineProtocolError("measurement name is empty")
    return _MEAS_RE.sub(r"\\\1", name)


# Keys and tag values repeat in every point (the same few hundred strings per node):
# escaped ones are remembered, which was a fifth of the collector's CPU per sample.
_ESCAPED_KEYS: dict[str, str] = {}
_ESCAPED_KEYS_MAX = 100_000


def escape_key(text: str, what: str = "tag") -> str:
    """Escape a tag key, tag value or field key."""
    escaped = _ESCAPED_KEYS.get(text) if isinstance(text, str) else None
    if escaped is None:
        _check(text, what, _BAD_BACKSLASH_KEY)
        escaped = _KEY_RE.sub(r"\\\1", text)
        if len(_ESCAPED_KEYS) < _ESCAPED_KEYS_MAX:
            _ESCAPED_KEYS[text] = escaped
    return escaped


def escape_string_field(value: str, what: str = "string field") -> str:
    if "\n" in value or "\r" in value:
        raise LineProtocolError(f"{what} {value!r} contains a newline")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_value(value: FieldValue, ftype: type | None, what: str) -> str:
    """Format one field value with the type the schema declares (ints get the `i`)."""
    if ftype is None:
        ftype = type(value)
    if ftype is bool:
        if not isinstance(value, bool | np.bool_):
            raise LineProtocolError(f"{what} must be a bool, got {value!r}")
        return "true" if value else "false"
    if ftype is int:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            if isinstance(value, float | np.floating) and float(value).is_integer():
                return f"{int(value)}i"
            raise LineProtocolError(f"{what} must be an integer, got {value!r}")
        return f"{int(value)}i"
    if ftype is float:
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise LineProtocolError(f"{what} must be a number, got {value!r}")
        v = float(value)
        if not math.isfinite(v):
            raise LineProtocolError(f"{what} must be finite, got {value!r}")
        return repr(v)
    if ftype is str:
        if not isinstance(value, str):
            raise LineProtocolError(f"{what} must be a string, got {value!r}")
        return escape_string_field(value, what)
    raise LineProtocolError(f"{what}: unsupported type {ftype}")


def _field_type(m: schema.Measurement | None, name: str, where: str) -> type | None:
    if m is None:
        return None
    f = m.field(name)
    if f is None:
        known = ", ".join(sorted(m.fields))
        raise LineProtocolError(
            f"{where}: field {name!r} is not in the schema of {m.name!r} ({known})"
        )
    return f.type


def _measurement(name: str, validate: bool) -> schema.Measurement | None:
    if not validate:
        return None
    try:
        return schema.get(name)
    except KeyError as e:
        raise LineProtocolError(str(e.args[0])) from None


def _tag_block(tags: Mapping[str, str], m: schema.Measurement | None, where: str) -> str:
    parts = []
    for k in sorted(tags):
        v = tags[k]
        if v is None or v == "":
            continue  # InfluxDB drops empty tags; omit them rather than fail the line
        if m is not None and k not in m.tags:
            raise LineProtocolError(
                f"{where}: tag {k!r} is not declared for {m.name!r} ({', '.join(m.tags)})"
            )
        parts.append(f",{escape_key(k, 'tag key')}={escape_key(str(v), f'tag {k}')}")
    return "".join(parts)


def encode_point(p: Point, validate: bool = True) -> str:
    m = _measurement(p.measurement, validate)
    where = f"point {p.measurement}"
    if not p.fields:
        raise LineProtocolError(f"{where}: has no fields")
    fields = []
    for k, v in p.fields.items():
        if v is None:
            continue
        ftype = _field_type(m, k, where)
        fields.append(
            f"{escape_key(k, 'field key')}={format_value(v, ftype, f'{where} field {k!r}')}"
        )
    if not fields:
        raise LineProtocolError(f"{where}: every field is empty")
    return (
        f"{escape_measurement(p.measurement)}{_tag_block(p.tags, m, where)} "
        f"{','.join(fields)} {int(p.time_ns)}"
    )


def encode_points(points: Iterable[Point], validate: bool = True) -> list[str]:
    return [encode_point(p, validate) for p in points]


def encode_frame(
    df: pd.DataFrame,
    measurement: str,
    tag_columns: Sequence[str] = (),
    field_columns: Sequence[str] | None = None,
    time_column: str | None = None,
    const_tags: Mapping[str, str] | None = None,
    validate: bool = True,
) -> list[str]:
    """Encode a frame to lines without an interpreted per-row loop.

    Time is the int64 ns column `time_column`, or the index when it is a DatetimeIndex or
    an integer index of ns. Tag prefixes are escaped once per distinct tag combination;
    each column becomes a list of strings in C (`map(str, ...)`) and rows are assembled by
    `map("".join, zip(...))`. Rows whose fields are all missing are skipped (InfluxDB
    rejects lines without fields).
    """
    m = _measurement(measurement, validate)
    where = f"frame for {measurement}"
    if field_columns is None:
        field_columns = [c for c in df.columns if c not in tag_columns and c != time_column]
    if not field_columns:
        raise LineProtocolError(f"{where}: no field columns")
    if len(df) == 0:
        return []
    const_tags = dict(const_tags or {})
    for key in (*const_tags, *tag_columns):
        if m is not None and key not in m.tags:
            raise LineProtocolError(f"{where}: tag {key!r} is not declared for {measurement!r}")

    parts: list[Iterable[str]] = [_prefixes(df, measurement, tag_columns, const_tags, where)]
    columns = [
        (c, *_format_column(df[c], _field_type(m, c, where), f"{where} field {c!r}"))
        for c in field_columns
    ]
    # A column present on every row goes first, so every other field can start with ",".
    columns.sort(key=lambda c: not c[2].all())
    any_field = np.zeros(len(df), dtype=bool)
    for i, (name, text, present, suffix) in enumerate(columns):
        key = escape_key(name, "field key")
        if present.all():
            parts += [repeat(f"{' ' if i == 0 else ','}{key}="), text, repeat(suffix)]
        else:
            # the first field present on a row opens the field set with " ", later ones ","
            pieces = np.where(any_field, f",{key}=", f" {key}=").astype(object)
            pieces = pieces + np.array(text, dtype=object) + suffix
            parts.append(np.where(present, pieces, "").tolist())
        any_field |= present
    parts += [repeat(" "), map(str, _times_ns(df, time_column, where).tolist())]
    lines = list(map("".join, zip(*parts, strict=False)))  # repeat() is endless
    if any_field.all():
        return lines
    return [line for line, keep in zip(lines, any_field, strict=True) if keep]


def _prefixes(
    df: pd.DataFrame,
    measurement: str,
    tag_columns: Sequence[str],
    const_tags: dict[str, str],
    where: str,
) -> list[str]:
    """Measurement and sorted tag set for every row, escaped once per distinct combination."""
    head = escape_measurement(measurement)
    if not tag_columns:
        return [head + _tag_block(const_tags, None, where)] * len(df)
    codes, uniques = [], []
    for col in tag_columns:
        c, u = pd.factorize(df[col], use_na_sentinel=True)
        codes.append(c + 1)  # 0 = missing
        uniques.append([None, *u])
    combined = np.ravel_multi_index(codes, [len(u) for u in uniques])
    distinct, inverse = np.unique(combined, return_inverse=True)
    encoded = []
    for flat in distinct:
        idx = np.unravel_index(flat, [len(u) for u in uniques])
        tags = dict(const_tags)
        for col, u, k in zip(tag_columns, uniques, idx, strict=True):
            if u[k] is not None:
                tags[col] = str(u[k])
        encoded.append(head + _tag_block(tags, None, where))
    return np.array(encoded, dtype=object)[inverse].tolist()


def _times_ns(df: pd.DataFrame, time_column: str | None, where: str) -> np.ndarray:
    if time_column is not None:
        col = df[time_column]
        if pd.api.types.is_datetime64_any_dtype(col):
            return col.astype("datetime64[ns]").to_numpy().view("int64")
        return col.to_numpy(dtype="int64")
    idx = df.index
    if isinstance(idx, pd.DatetimeIndex):
        return idx.as_unit("ns").asi8
    if pd.api.types.is_integer_dtype(idx):
        return idx.to_numpy(dtype="int64")
    raise LineProtocolError(f"{where}: no time column and the index is not a time index")


def _format_column(
    col: pd.Series, ftype: type | None, what: str
) -> tuple[list[str], np.ndarray, str]:
    """A column as the text of its values, a presence mask, and the type suffix (`i`)."""
    values = col.to_numpy()
    present = ~pd.isna(values)
    if ftype is None:
        ftype = _infer_type(col)
    if ftype is int:
        if pd.api.types.is_float_dtype(col) and not np.all(np.equal(np.mod(values[present], 1), 0)):
            raise LineProtocolError(f"{what} must be integers, got fractional values")
        if not (pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)):
            raise LineProtocolError(f"{what} must be integers, got dtype {col.dtype}")
        ints = np.where(present, values, 0).astype("int64")
        return list(map(str, ints.tolist())), present, "i"
    if ftype is float:
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            raise LineProtocolError(f"{what} must be numeric, got dtype {col.dtype}")
        floats = values.astype("float64")
        if np.isinf(floats[present]).any():
            raise LineProtocolError(f"{what} contains infinity")
        return list(map(repr, floats.tolist())), present, ""
    if ftype is bool:
        return np.where(values.astype(bool), "true", "false").tolist(), present, ""
    return (
        [
            escape_string_field(str(v), what) if p else ""
            for v, p in zip(values, present, strict=True)
        ],
        present,
        "",
    )


def _infer_type(col: pd.Series) -> type:
    if pd.api.types.is_bool_dtype(col):
        return bool
    if pd.api.types.is_integer_dtype(col):
        return int
    if pd.api.types.is_float_dtype(col):
        return float
    return str
