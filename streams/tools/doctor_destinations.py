"""`meterguard doctor`'s verdicts on alert destinations (pure): https, signed, reachable.

Destinations are those the worker would deliver to (sinks/routing.py `destinations`), shown by
their secret-free public names; `reachability` comes from doctor_probes.py `probe_endpoint`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from meterguard.streams.tools.doctor_checks import Finding


def is_local(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class DestinationView:
    """A configured destination as the doctor may show it (sinks/routing.py Destination)."""

    kind: str  # "webhook" | "slack"
    name: str  # public, secret-free
    scheme: str
    host: str | None
    has_secret: bool
    web_api: bool = False  # Slack Web API (bot token + channel)
    secret_setting: str = "MG_WEBHOOK_SECRET"


def destination_findings(
    views: Sequence[DestinationView],
    error: str | None,
    notes: Sequence[str] = (),
    reachability: dict[str, str | None] | None = None,
) -> list[Finding]:
    """Per destination: https, signed, and (when probed) reachable; `reachability` maps a
    view's name to None (connected) or why not; absent: not probed."""
    if error is not None:
        return [Finding("FAIL", "destinations", error)]
    findings = [Finding("WARN", "destinations", note) for note in notes]
    if not views:
        findings.append(
            Finding("OK", "destinations", "none configured: alerts go to the alerts topic only")
        )
    for view in views:
        findings.extend(_destination(view, reachability))
    return findings


def _destination(
    view: DestinationView, reachability: dict[str, str | None] | None
) -> list[Finding]:
    subject = f"{view.kind} {view.name}"
    found: list[Finding] = []
    if view.scheme != "https" and not is_local(view.host):
        found.append(
            Finding(
                "WARN",
                subject,
                "plain http to a remote host: alerts travel unencrypted; use https",
            )
        )
    if view.kind == "webhook" and not view.has_secret:
        found.append(
            Finding(
                "FAIL",
                subject,
                f"no signing secret: alerts are sent unsigned and receivers cannot verify "
                f"them; set {view.secret_setting}",
            )
        )
    if reachability is not None and view.name in reachability:
        problem = reachability[view.name]
        if problem is not None:
            found.append(Finding("FAIL", subject, f"not reachable: {problem}"))
        elif not found:
            found.append(Finding("OK", subject, _configured(view) + ", reachable"))
    elif not found:
        found.append(Finding("OK", subject, _configured(view) + " (not probed)"))
    return found


def _configured(view: DestinationView) -> str:
    if view.web_api:
        return "Slack Web API with a bot token"
    if view.kind == "slack":
        return "Slack incoming webhook"
    return "signed webhook" if view.has_secret else "webhook"
