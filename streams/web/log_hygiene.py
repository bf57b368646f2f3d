"""A malformed HTTP request is one line in the worker's log, not a traceback.

aiohttp answers a request its parser refuses (a control character in a header, a broken
request line) with 400 and logs it as an exception with its traceback
(`RequestHandler.handle_error`, aiohttp/web_protocol.py). That is a client's mistake, not
the worker's, and any client can send it as often as it likes: left alone, a hostile client
fills the log with tracebacks (burying real errors), and the parser's message quotes the
offending line, which may be an Authorization header. The filter keeps the record as one
WARNING line naming the refusal, without the quote.
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError

AIOHTTP_SERVER_LOGGER = "aiohttp.server"


class MalformedRequestFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            # Not the parser's message: it quotes the offending line, e.g. a header with
            # someone's credential in it.
            name = type(exc).__name__
            record.msg = f"malformed HTTP request from %s refused with {exc.code} ({name})"
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def install() -> None:
    """Once per process (installing again replaces nothing and adds nothing)."""
    logger = logging.getLogger(AIOHTTP_SERVER_LOGGER)
    if not any(isinstance(f, MalformedRequestFilter) for f in logger.filters):
        logger.addFilter(MalformedRequestFilter())
