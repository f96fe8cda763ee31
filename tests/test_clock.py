"""Timestamps in upstream's form: ISO-8601, microseconds, ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from cyntra.clock import isoformat_z, parse_ts


def _reference(ts: datetime) -> str:
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@given(
    st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30)),
    st.integers(min_value=-23 * 60, max_value=23 * 60),
    st.sampled_from(["naive", "utc", "offset"]),
)
def test_isoformat_z_equals_strftime(when: datetime, minutes: int, kind: str) -> None:
    ts = {"naive": when, "utc": when.replace(tzinfo=UTC),
          "offset": when.replace(tzinfo=timezone(timedelta(minutes=minutes)))}[kind]
    text = isoformat_z(ts)
    assert text == _reference(ts)
    assert parse_ts(text) == (ts if ts.tzinfo else ts.replace(tzinfo=UTC))


def test_isoformat_z_examples() -> None:
    assert isoformat_z(datetime(2025, 1, 6, 20, 56, 36, 604482, tzinfo=UTC)) == "2025-01-06T20:56:36.604482Z"
    assert isoformat_z(datetime(2025, 1, 6, 22, 0, tzinfo=timezone(timedelta(hours=2)))) == "2025-01-06T20:00:00.000000Z"
    assert isoformat_z(datetime(2025, 1, 6)) == "2025-01-06T00:00:00.000000Z"
    # before the year 1000 the text is strftime's, as it always was
    early = datetime(999, 5, 1, tzinfo=UTC)
    assert isoformat_z(early) == early.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
