"""Operator actions on the throttle feed (pure): bearer-token check, release command, audit.

The HTTP route in streams/web/routes.py does the I/O; everything it decides is here and unit-tested.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from datetime import datetime

from meterguard.models import AuditEvent, ThrottleCommand, ThrottleLimits, stable_id

MAX_REASON = 500
MAX_ACTOR = 128
# Control characters, and the lone surrogates aiohttp makes of a header's non-UTF-8 bytes
# (JSON cannot carry them: the audit record would fail to serialise).
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


@dataclass(frozen=True)
class Refusal:
    status: int
    error: str


def check_bearer(authorization: str | None, token: str | None) -> Refusal | None:
    """None if the request carries the API token. Fails closed when no token is configured."""
    if not token:
        return Refusal(503, "operator actions are disabled: MG_API_TOKEN is not set")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return Refusal(401, "missing bearer token (Authorization: Bearer <MG_API_TOKEN>)")
    # compare_digest: the time taken does not depend on where the strings differ. The given
    # token as the client's bytes (aiohttp decodes headers with surrogateescape; a strict
    # encode raised on a non-UTF-8 byte).
    if not hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token.encode()):
        return Refusal(403, "invalid token")
    return None


def clean_text(value: object, limit: int) -> str:
    """Operator-supplied text for logs and the audit trail: printable and bounded."""
    text = value if isinstance(value, str) else ""
    return _UNPRINTABLE.sub(" ", text).strip()[:limit]


def release_command(
    held: ThrottleCommand, now: datetime, actor: str, reason: str
) -> ThrottleCommand:
    """The release of `held`: version above it (gateways drop lower versions), same alert,
    kept as long as the released command would have been relevant."""
    why = f"released by {actor}" + (f": {reason}" if reason else "")
    return ThrottleCommand(
        command_id=stable_id(held.identity, "operator-release", held.command_id),
        identity=held.identity,
        action="release",
        limits=ThrottleLimits(),
        reason=why,
        alert_id=held.alert_id,
        issued_at=now,
        expires_at=max(held.expires_at, now),
        version=held.version + 1,
    )


def release_audit(
    held: ThrottleCommand, release: ThrottleCommand, actor: str, reason: str, remote: str | None
) -> AuditEvent:
    return AuditEvent(
        audit_id=stable_id("audit", release.command_id),
        action="throttle.release",
        identity=held.identity,
        actor=actor,
        reason=reason,
        command_id=release.command_id,
        target_command_id=held.command_id,
        alert_id=held.alert_id,
        remote=remote,
        at=release.issued_at,
    )
