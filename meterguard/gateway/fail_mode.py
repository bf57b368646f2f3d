"""What a gateway answers when it cannot know the throttles: fail open or fail closed.

A gateway's view of the throttle commands comes from meterguard (the SSE feed, the Redis
gateway keys or the compacted throttle topic). When that source has been down for longer than
a bound, the view is *stale* and the fail mode decides:

- `open` (the default): decide from what the gateway holds. Commands it heard of still apply
  until they expire; identities it never heard of pass. An outage of the watchdog must not
  become an outage of every agent it watches, and a runaway throttled before the outage
  stays throttled for its command's life.
- `closed`: refuse every request with 503 and `Retry-After` until the view is fresh again.
  For deployments where spend must never go unchecked (hard budget caps, untrusted tenants):
  an outage of meterguard then stops the agents behind this gateway.

Settings: `MG_GATEWAY_FAIL_MODE` (`open` | `closed`) and `MG_GATEWAY_STALE_AFTER_S`, read by
`ThrottleClient` when its constructor is not given them (the constructor wins).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum

FAIL_MODE_ENV = "MG_GATEWAY_FAIL_MODE"
STALE_AFTER_ENV = "MG_GATEWAY_STALE_AFTER_S"
# Feed down this long before the fail mode applies. It rides out what the fault tests measured
# as routine: a worker restart (group join 3-5 s), a Redis restart or 30 s outage (counting
# again 1-2 s after Redis is back, tests/faults/README.md), and the client's reconnect
# backoff, capped at 30 s, so a fail-closed gateway refuses only when the feed is really out.
DEFAULT_STALE_AFTER_S = 60.0


class FailMode(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


DEFAULT_FAIL_MODE = FailMode.OPEN  # the module docstring says why


def fail_mode(given: FailMode | str | None, env: Mapping[str, str] = os.environ) -> FailMode:
    """The constructor's value, else `MG_GATEWAY_FAIL_MODE`, else open; ValueError otherwise."""
    raw = given if given is not None else env.get(FAIL_MODE_ENV, "").strip() or DEFAULT_FAIL_MODE
    try:
        return FailMode(str(raw).lower())
    except ValueError:
        raise ValueError(f"{FAIL_MODE_ENV} must be 'open' or 'closed', not {raw!r}") from None


def stale_after_s(given: float | None, env: Mapping[str, str] = os.environ) -> float:
    """The constructor's value, else `MG_GATEWAY_STALE_AFTER_S`, else 60 s; must be > 0."""
    raw: float | str = given if given is not None else env.get(STALE_AFTER_ENV, "").strip()
    if raw == "":
        return DEFAULT_STALE_AFTER_S
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0:  # also refuses NaN
        raise ValueError(f"{STALE_AFTER_ENV} must be a number of seconds > 0, not {raw!r}")
    return seconds
