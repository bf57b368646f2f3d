"""streams/runtime/log_format.py: the JSON line, its allow-list of context keys, the
dead-letter line's rate cap, and the Faust logging config (the worker test,
tests/integration/test_json_logs.py, runs it all in a real worker)."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson
import pytest

from meterguard.models import DeadLetter
from meterguard.streams.runtime import log_format
from meterguard.streams.runtime.log_format import DeadLetterLog, JsonFormatter


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("meterguard", logging.WARNING, __file__, 1, msg, args, None)
    made.__dict__.update(extra)
    return made


def test_a_line_is_one_json_object_with_the_listed_context_only():
    line = JsonFormatter().format(
        record("ALERT %s\nsecond line", "critical", identity="a-1", alert_id="x", url="u")
    )
    assert "\n" not in line
    doc = orjson.loads(line)
    assert doc.pop("timestamp").endswith("Z")
    assert doc == {
        "level": "WARNING",
        "logger": "meterguard",
        "message": "ALERT critical\nsecond line",
        "identity": "a-1",
        "alert_id": "x",
    }  # `url` is not a context key: left out


def test_an_exception_and_a_bad_log_call_stay_one_json_line():
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record("failed")
        failed.exc_info = sys.exc_info()
    doc = orjson.loads(JsonFormatter().format(failed))
    assert "ValueError: boom" in doc["exception"]
    doc = orjson.loads(JsonFormatter().format(record("%d items", "not a number")))
    assert doc["message"] == "%d items ('not a number',)"


def letter(offset: int) -> DeadLetter:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return DeadLetter(
        reason="invalid_json",
        error="e",
        raw="{",
        topic="raw",
        partition=0,
        offset=offset,
        ingest_time=at,
    )


def test_dead_letter_lines_are_capped_per_second_and_the_rest_counted(
    caplog: pytest.LogCaptureFixture,
):
    now = [100.0]
    dead = DeadLetterLog(logging.getLogger("mg-test"), per_second=2, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="mg-test"):
        for offset in range(5):
            dead.letter(letter(offset), "dlq")
        now[0] = 101.0
        dead.letter(letter(5), "dlq")
    assert [r.offset for r in caplog.records] == [0, 1, 5]  # type: ignore[attr-defined]
    assert caplog.records[-1].getMessage() == (
        "dead letter to dlq: invalid_json (3 earlier letters not logged)"
    )


def test_text_changes_nothing_and_json_replaces_fausts_default_handler():
    assert log_format.faust_logging_config("text") is None
    config = log_format.faust_logging_config("json")
    assert config is not None and config["merge"] is True
    formatter = config["formatters"]["json"]["()"]
    assert formatter == "meterguard.streams.runtime.log_format.JsonFormatter"
    assert config["handlers"]["default"]["formatter"] == "json"
