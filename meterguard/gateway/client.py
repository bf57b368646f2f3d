"""ThrottleClient: a gateway's in-memory copy of meterguard's active throttle commands.

The copy is fed by the worker's Server-Sent Events feed (`GET /api/throttles/stream`), so the
request path (`decide`) is synchronous and never waits on the network. When meterguard is
unreachable the client keeps what it has: commands expire by themselves. Once the feed has
been down for longer than `stale_after_s` the view is stale and the fail mode decides
(gateway/fail_mode.py): open (the default) goes on deciding from what it holds, identities it
never heard of pass; closed refuses every request with 503 until the feed is back.

Depends on httpx and `meterguard.models` only: gateways embed it without Faust or Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType

import httpx

from meterguard.gateway.fail_mode import FailMode
from meterguard.gateway.fail_mode import fail_mode as _fail_mode
from meterguard.gateway.fail_mode import stale_after_s as _stale_after_s
from meterguard.gateway.sse import SSEParser
from meterguard.models import ThrottleCommand, utc_now

log = logging.getLogger(__name__)

STREAM_PATH = "/api/throttles/stream"
# A block may be released by an operator at any moment: a caller told to come back at the
# block's expiry (hours away) would never notice, so it is told to try again soon instead.
MAX_BLOCK_RETRY_AFTER_S = 300


@dataclass(frozen=True)
class Decision:
    allowed: bool
    status: int  # 200, 429, or 503 (fail closed: the throttle view is stale)
    retry_after_s: int  # whole seconds, as the Retry-After header wants; 0 when allowed
    command: ThrottleCommand | None  # the active command that applied, if any


ALLOW = Decision(allowed=True, status=200, retry_after_s=0, command=None)


@dataclass
class _MinuteUsage:
    """Fixed-window counter: one minute of the wall clock, reset when the minute turns."""

    minute: int
    requests: int = 0
    tokens: int = 0


class ThrottleClient:
    def __init__(
        self,
        base_url: str,
        *,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] = utc_now,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        # Three missed keep-alives (sent every ~15 s): the connection is dead, not idle.
        read_timeout_s: float = 45.0,
        fail_mode: FailMode | str | None = None,  # None: MG_GATEWAY_FAIL_MODE, else open
        stale_after_s: float | None = None,  # None: MG_GATEWAY_STALE_AFTER_S, else 60
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = http
        self._owns_http = False
        self._clock = clock
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.read_timeout_s = read_timeout_s
        self.fail_mode = _fail_mode(fail_mode)
        self.stale_after_s = _stale_after_s(stale_after_s)
        self._live = False  # a synced connection to the feed is open
        self._down_since = clock()  # the feed is down since then (while not live)
        self._active: dict[str, ThrottleCommand] = {}
        # Version floors left by releases, kept until the release expires: a lagging worker's
        # snapshot must not resurrect a throttle that was already released.
        self._released: dict[str, ThrottleCommand] = {}
        self._usage: dict[str, _MinuteUsage] = {}
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connections = 0  # successful snapshots so far (observability, tests)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._http is None:  # made here, so a client fed by hand (apply) never opens one
            self._http, self._owns_http = httpx.AsyncClient(), True
        if self._task is None:
            self._task = asyncio.create_task(self._follow(), name="meterguard-throttle-stream")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http, self._owns_http = None, False

    async def __aenter__(self) -> ThrottleClient:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def is_stale(self, now: datetime | None = None) -> bool:
        """No synced connection to the feed for over `stale_after_s` (never synced counts
        from the client's creation)."""
        if self._live:
            return False
        down_s = ((now or self._clock()) - self._down_since).total_seconds()
        return down_s > self.stale_after_s

    def unavailable(self) -> Decision:
        """The fail-closed answer: 503, come back once the feed was retried (backoff cap)."""
        return Decision(False, 503, _ceil_seconds(self.backoff_cap_s), None)

    # The keyword is public API (callers and tests pass timeout=); it is applied here with
    # asyncio.timeout, exactly as a caller's own `async with asyncio.timeout()` would.
    async def wait_ready(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait for the first complete snapshot; TimeoutError if it does not come in time."""
        async with asyncio.timeout(timeout):
            await self._ready.wait()

    # -- the cache -------------------------------------------------------------------------

    def get(self, identity: str, now: datetime | None = None) -> ThrottleCommand | None:
        """The live command for an identity; an expired one is dropped on the way."""
        command = self._active.get(identity)
        if command is not None and command.is_expired(now or self._clock()):
            self._forget(identity)
            return None
        return command

    def commands(self) -> dict[str, ThrottleCommand]:
        now = self._clock()
        return {i: c for i, c in self._active.items() if not c.is_expired(now)}

    def apply(self, command: ThrottleCommand, now: datetime | None = None) -> bool:
        """Take one new or changed command; False if it was stale and ignored."""
        now = now or self._clock()
        identity = command.identity
        held = self._active.get(identity)
        if (held is not None and command.version < held.version) or self._below_floor(command):
            return False
        if command.action == "release":
            self._forget(identity)
            self._prune_floors(now)  # releases are rare: a full pass keeps the floors bounded
            self._released[identity] = command
            return True
        if command.is_expired(now):
            # Newer than what we hold, and already over: nothing is in force any more.
            self._forget(identity)
            return False
        self._active[identity] = command
        return True

    def replace(self, snapshot: Iterable[ThrottleCommand], now: datetime | None = None) -> None:
        """Resync from a full snapshot; what we hold still wins where its version is higher.

        Identities missing from the snapshot are dropped: released or expired meanwhile.
        """
        now = now or self._clock()
        self._prune_floors(now)
        previous, self._active = self._active, {}
        for command in sorted(snapshot, key=lambda c: c.version):
            held = previous.get(command.identity)
            self.apply(
                held if held is not None and held.version > command.version else command, now
            )
        self._usage = {i: u for i, u in self._usage.items() if i in self._active}

    def _prune_floors(self, now: datetime) -> None:
        self._released = {i: r for i, r in self._released.items() if not r.is_expired(now)}

    def _below_floor(self, command: ThrottleCommand) -> bool:
        # A tie goes to the release: an operator's release must not lose to a replayed throttle.
        released = self._released.get(command.identity)
        if released is None:
            return False
        if command.action == "release":
            return command.version < released.version
        return command.version <= released.version

    def _forget(self, identity: str) -> None:
        self._active.pop(identity, None)
        self._usage.pop(identity, None)

    # -- the request path ------------------------------------------------------------------

    def decide(self, identity: str, tokens: int = 0, now: datetime | None = None) -> Decision:
        """Allow or refuse one request of `identity`; an allowed one counts against its limits.

        `tokens` is what the request is known to cost up front (0 if unknown); report the
        actual usage afterwards with `record_tokens`.
        """
        now = now or self._clock()
        if self.fail_mode is FailMode.CLOSED and self.is_stale(now):
            return self.unavailable()
        command = self.get(identity, now)
        if command is None:
            return ALLOW
        until_expiry = _ceil_seconds((command.expires_at - now).total_seconds())
        if command.action == "block":
            return Decision(False, 429, min(until_expiry, MAX_BLOCK_RETRY_AFTER_S), command)
        usage = self._usage_now(identity, now)
        rpm = command.limits.requests_per_minute
        tpm = command.limits.tokens_per_minute
        over = (rpm is not None and usage.requests >= rpm) or (
            tpm is not None and (usage.tokens >= tpm or usage.tokens + tokens > tpm)
        )
        if over:
            until_next_minute = _ceil_seconds(60 - now.timestamp() % 60)
            return Decision(False, 429, min(until_next_minute, until_expiry), command)
        usage.requests += 1
        usage.tokens += tokens
        return Decision(True, 200, 0, command)

    def record_tokens(self, identity: str, tokens: int, now: datetime | None = None) -> None:
        """Charge tokens learnt after the call (the response's usage) to a throttled identity."""
        now = now or self._clock()
        if tokens > 0 and self.get(identity, now) is not None:
            self._usage_now(identity, now).tokens += tokens

    def _usage_now(self, identity: str, now: datetime) -> _MinuteUsage:
        minute = int(now.timestamp() // 60)
        usage = self._usage.get(identity)
        if usage is None or usage.minute != minute:
            usage = self._usage[identity] = _MinuteUsage(minute)
        return usage

    # -- the feed --------------------------------------------------------------------------

    async def _follow(self) -> None:
        """Follow the stream forever: reconnect with capped exponential backoff and jitter."""
        failures = 0
        while True:
            synced = False
            try:
                synced = await self._stream_once()
                log.info("throttle stream from %s ended; reconnecting", self.base_url)
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("throttle stream from %s failed: %r", self.base_url, exc)
            finally:
                if self._live:  # the feed is down from now on
                    self._live, self._down_since = False, self._clock()
            failures = 0 if synced else failures + 1
            await asyncio.sleep(self._backoff(failures))

    def _backoff(self, failures: int) -> float:
        # "Equal jitter": never zero (no hot loop), spread so restarted workers are not
        # hit by every gateway in the same instant.
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * 2.0**failures)
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    async def _stream_once(self) -> bool:
        """One connection: snapshot until `ready`, then live changes. True if it synced."""
        snapshot: list[ThrottleCommand] | None = []
        parser = SSEParser()
        timeout = httpx.Timeout(10.0, read=self.read_timeout_s)
        headers = {"accept": "text/event-stream", "cache-control": "no-cache"}
        url = self.base_url + STREAM_PATH
        assert self._http is not None, "start() makes the client"
        async with self._http.stream("GET", url, headers=headers, timeout=timeout) as response:
            response.raise_for_status()
            async for text in response.aiter_text():
                for event in parser.feed(text):
                    if event.event == "command":
                        command = _parse_command(event.data)
                        if command is None:
                            continue
                        if snapshot is None:
                            self.apply(command)
                        else:
                            snapshot.append(command)
                    elif event.event == "ready" and snapshot is not None:
                        self._check_count(event.data, len(snapshot))
                        self.replace(snapshot)
                        snapshot = None
                        self._live = True
                        self.connections += 1
                        self._ready.set()
        return snapshot is None

    @staticmethod
    def _check_count(data: str, received: int) -> None:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            expected = json.loads(data).get("count")
            if expected != received:
                log.warning("throttle snapshot announced %s commands, got %d", expected, received)


def _parse_command(data: str) -> ThrottleCommand | None:
    # One malformed command must not cost the connection and with it every other command.
    try:
        return ThrottleCommand.model_validate_json(data)
    except ValueError as exc:
        log.warning("ignoring malformed throttle command: %s", exc)
        return None


def _ceil_seconds(seconds: float) -> int:
    return max(1, math.ceil(seconds))
