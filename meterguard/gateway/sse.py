"""An incremental `text/event-stream` parser (the WHATWG "event stream interpretation").

Pure: text in, events out, no I/O. Chunks may split anywhere, including between the CR and
LF of a CRLF, so a trailing CR is held back until the next chunk says what it was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class ServerSentEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None
    retry_ms: int | None = None


class SSEParser:
    """Feed decoded text chunks; get back the events completed by each chunk."""

    def __init__(self) -> None:
        self._buffer = ""
        self._at_start = True
        self._event = ""
        self._data: list[str] = []
        # The spec's "last event ID" outlives the event that set it.
        self._last_id: str | None = None
        self._retry_ms: int | None = None

    def feed(self, chunk: str) -> list[ServerSentEvent]:
        if self._at_start and chunk:
            self._at_start = False
            chunk = chunk.removeprefix("\ufeff")
        self._buffer += chunk
        events: list[ServerSentEvent] = []
        pos = 0
        for match in _LINE_END.finditer(self._buffer):
            if match.group() == "\r" and match.end() == len(self._buffer):
                break  # maybe the first half of a CRLF split across chunks
            event = self._line(self._buffer[pos : match.start()])
            if event is not None:
                events.append(event)
            pos = match.end()
        self._buffer = self._buffer[pos:]
        return events

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: keep-alives
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry_ms = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return ServerSentEvent(
            event=event or "message",
            data="\n".join(data),
            id=self._last_id,
            retry_ms=self._retry_ms,
        )
