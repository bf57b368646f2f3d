"""Which alerts go where: per-destination filters and the policy file's `routing:` section.

    routing:
      webhooks:
        - url: https://siem.example.com/hooks/meterguard
          secret_env: SIEM_WEBHOOK_SECRET     # the env var's name; secrets never in the file
          min_severity: critical
          environments: [prod]
          format: ocsf                        # meterguard (default) | ocsf (sinks/ocsf.py)
      slack:
        min_severity: warning
        statuses: [firing]

Every filter field left out passes everything. `MG_WEBHOOK_URL` destinations pass everything
and are signed with `MG_WEBHOOK_SECRET`. Pure: the environment is passed in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from meterguard.models import Alert, Severity
from meterguard.sinks.ocsf import AlertFormat

SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}
SinkKind = Literal["webhook", "slack"]


class AlertFilter(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    min_severity: Severity = "info"
    detectors: frozenset[str] | None = None  # None: every detector
    environments: frozenset[str] | None = None
    teams: frozenset[str] | None = None
    statuses: frozenset[Literal["firing", "resolved"]] | None = None

    def matches(self, alert: Alert) -> bool:
        return (
            SEVERITY_RANK[alert.severity] >= SEVERITY_RANK[self.min_severity]
            and _allowed(self.detectors, alert.detector)
            and _allowed(self.environments, alert.environment)
            and _allowed(self.teams, alert.team)
            and _allowed(self.statuses, alert.status)
        )


def _allowed(allowed: frozenset[str] | None, value: str | None) -> bool:
    return allowed is None or (value is not None and value in allowed)


class WebhookRoute(AlertFilter):
    url: str = Field(min_length=1)
    secret_env: str | None = None
    format: AlertFormat = "meterguard"  # the body: meterguard's envelope, or an OCSF finding

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _check_url(value)


class RoutingConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    webhooks: tuple[WebhookRoute, ...] = ()
    slack: AlertFilter = AlertFilter()


@dataclass(frozen=True)
class Destination:
    """One place alerts are delivered to, resolved from settings + policy + environment."""

    kind: SinkKind
    url: str
    secret: str | None = field(repr=False)  # webhook: signing secret; Slack API: bot token
    filter: AlertFilter
    channel: str | None = None  # Slack Web API only; `url` is then the API base URL
    format: AlertFormat = "meterguard"  # webhooks only; not in `key` (the outbox holds alerts)

    @property
    def key(self) -> str:
        """Stable, secret-free id for Redis keys and metric labels (URLs may hold tokens)."""
        ident = f"{self.kind}\x1f{self.url}"
        if self.channel is not None:  # only then: existing destinations keep their keys
            ident += f"\x1f{self.channel}"
        digest = hashlib.sha256(ident.encode()).hexdigest()[:12]
        return f"{self.kind}-{digest}"

    @property
    def public_name(self) -> str:
        if self.channel is not None:
            # A channel may be given by name with its '#' (`#alerts`) or by id (`C123`).
            return f"{public_url(self.url)}#{self.channel.removeprefix('#')}"
        return public_url(self.url, hide_path=self.kind == "slack")


def public_url(url: str, hide_path: bool = False) -> str:
    """The URL without credentials, query or fragment (and path, where the path is the key)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    path = "/…" if hide_path and parts.path not in ("", "/") else parts.path
    return f"{parts.scheme}://{host}{path}"


def destinations(
    routing: RoutingConfig,
    webhook_urls: str | None,
    webhook_secret: str | None,
    slack_url: str | None,
    environ: Mapping[str, str],
    slack_api: SlackApi | None = None,
) -> list[Destination]:
    """Every configured destination; the policy file's entry wins for a URL given twice.

    Slack is one destination: the Web API when `slack_api` is given, else the webhook.
    """
    found: dict[str, Destination] = {}
    for route in routing.webhooks:
        secret = None
        if route.secret_env is not None:
            secret = environ.get(route.secret_env)
            if not secret:
                raise ValueError(
                    f"routing webhook {public_url(route.url)}: secret_env {route.secret_env} "
                    "is not set"
                )
        found.setdefault(
            route.url, Destination("webhook", route.url, secret, route, format=route.format)
        )
    for url in (u.strip() for u in (webhook_urls or "").split(",")):
        if url:
            found.setdefault(
                _check_url(url), Destination("webhook", url, webhook_secret or None, AlertFilter())
            )
    if slack_api is not None:
        url = _check_url(slack_api.base_url)
        found[f"slack-api\x1f{url}"] = Destination(
            "slack", url, slack_api.token, routing.slack, slack_api.channel
        )
    elif slack_url:
        found.setdefault(
            _check_url(slack_url), Destination("slack", slack_url, None, routing.slack)
        )
    return list(found.values())


@dataclass(frozen=True)
class SlackApi:
    base_url: str
    token: str = field(repr=False)
    channel: str

    @classmethod
    def of(cls, base_url: str, token: str | None, channel: str | None) -> SlackApi | None:
        """Both set: the Web API; neither: none; one alone is a configuration mistake."""
        if bool(token) != bool(channel):
            raise ValueError("MG_SLACK_BOT_TOKEN and MG_SLACK_CHANNEL go together: set both")
        return cls(base_url, token, channel) if token and channel else None


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {public_url(url)}")
    return url
