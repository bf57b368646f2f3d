"""The worker's log lines as JSON (`MG_LOG_FORMAT=json`): one object per line, Faust's records
and meterguard's alike.

    {"timestamp": "2026-12-04T14:20:01.123Z", "level": "WARNING", "logger": "meterguard",
     "message": "ALERT critical firing ...", "identity": "agent-7", "alert_id": "9f0c..."}

A log call names what it is about with `extra=` (`log.warning("ALERT ...", extra={"identity":
..., "alert_id": ...})`); only the names in CONTEXT_FIELDS become keys, so a record's other
attributes (a library's own `extra=`, Faust's `data`) never reach the line, whatever they
hold. The message is the same text the text format shows: the secret hygiene of the log calls
and filters (streams/web/log_hygiene.py, settings' repr) applies to both formats unchanged.

Where it applies: Faust (mode) configures logging when its worker starts, clearing the root
logger's handlers (mode/utils/logging.py `setup_logging`), so a handler installed before
would vanish. `faust_logging_config` is Faust's `logging_config` setting with `merge`: mode's
own dictConfig with its `default` handler replaced by a stream handler with this formatter
(same stream, stderr; the root level still from `--loglevel`). `install` sets the same up for
what runs before Faust (topic creation, the Redis check). Faust's worker redirects stdout and
stderr into the log once started, so prints become JSON lines too; its start-up banner (a
text table printed before) is left out with Faust's `--quiet` (streams/tools/cli.py).

Hand-written rather than python-json-logger: twenty lines on orjson (already a dependency),
and the allow-list of context keys is the point; python-json-logger's JsonFormatter writes
every non-standard attribute of a record by default (its `reserved_attrs` is a deny-list).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from meterguard.models import Alert, DeadLetter

LogFormat = Literal["text", "json"]
# The keys a log call may add with `extra=` (what the line is about). Identifiers and
# outcomes only: never a payload, a URL or a header.
CONTEXT_FIELDS = (
    "identity",
    "event_id",
    "alert_id",
    "episode_id",
    "command_id",
    "detector",
    "severity",
    "status",
    "action",
    "destination",
    "reason",
    "attempts",
    "format",
    "topic",
    "partition",
    "offset",
    "actor",
)
# Dead-letter lines a second, at most (DeadLetterLog). The fault tests' poison rounds send 11
# bad messages at once (tests/faults/test_duplicate_storm.py): each gets its line; a flood of
# thousands a second (a producer gone wrong) logs 20 and the count of the rest.
DEAD_LETTER_LINES_PER_SECOND = 20


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in the message are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "timestamp": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
        }
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                doc[name] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(doc, default=str).decode()


def _timestamp(created: float) -> str:
    moment = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    return moment.replace("+00:00", "Z")


def _message(record: logging.LogRecord) -> str:
    """record.getMessage(), or the template and its arguments if they do not fit: a bad log
    call must not become logging's own text traceback on stderr."""
    try:
        return record.getMessage()
    except Exception:
        return f"{record.msg} {record.args!r}"


def alert_context(alert: Alert) -> dict[str, str]:
    """`extra=` of a log line about one alert."""
    return {
        "identity": alert.identity,
        "alert_id": alert.alert_id,
        "episode_id": alert.episode_id,
        "detector": alert.detector,
        "severity": alert.severity,
        "status": alert.status,
    }


class DeadLetterLog:
    """One INFO line per dead letter (reason, format and where it was read), at most
    `per_second` lines a second: a poison flood must not become a log flood, and
    MG_TOPIC_DLQ holds every letter anyway. The next line logged says how many were not."""

    def __init__(
        self,
        logger: logging.Logger,
        per_second: int = DEAD_LETTER_LINES_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log, self._per_second, self._clock = logger, per_second, clock
        self._second, self._lines, self._unlogged = -1, 0, 0

    def letter(self, letter: DeadLetter, dlq: str) -> None:
        second = int(self._clock())
        if second != self._second:
            self._second, self._lines = second, 0
        if self._lines >= self._per_second:
            self._unlogged += 1
            return
        self._lines += 1
        unlogged, self._unlogged = self._unlogged, 0
        self._log.info(
            "dead letter to %s: %s%s",
            dlq,
            letter.reason,
            f" ({unlogged} earlier letters not logged)" if unlogged else "",
            extra={
                "reason": letter.reason,
                "format": letter.format,
                "topic": letter.topic,
                "partition": letter.partition,
                "offset": letter.offset,
            },
        )


def faust_logging_config(log_format: LogFormat) -> dict[str, Any] | None:
    """Faust's `logging_config` setting: None (Faust's own text lines) or the JSON handler."""
    if log_format != "json":
        return None
    return {
        "version": 1,
        "merge": True,  # into mode's config: its root logger, level and handler names
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "json"}},
    }


def install(log_format: LogFormat, level: str = "info") -> None:
    """JSON lines for what logs before Faust configures logging (`text`: nothing changes).
    Python warnings become records too, rather than text on stderr."""
    if log_format != "json":
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)
