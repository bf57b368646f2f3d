"""An alert as a Slack Block Kit message (pure; the Slack sink of issue 4 sends it).

Identities, teams and summaries come from metering events, that is from whoever holds a key:
attacker-controlled. Slack reads `<!channel>`, `<@U123>` and `<https://x|label>` in mrkdwn
text, so everything user-supplied goes into `plain_text` objects (never parsed), and the
notification fallback `text` is escaped with Slack's three entities.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from meterguard.models import Alert

SEVERITY_MARK = {"critical": "🔴", "warning": "🟠", "info": "🟢"}
MAX_TEXT = 2900  # Slack refuses section text over 3,000 characters


def escape_mrkdwn(text: str) -> str:
    """Slack's escaping for text it parses: &, < and > (so no mention or link survives)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def plain_text(text: str) -> dict[str, Any]:
    """A Block Kit plain_text object (Slack never parses it), cut to MAX_TEXT, never empty."""
    return {"type": "plain_text", "text": text[:MAX_TEXT] or " ", "emoji": False}


def alert_message(alert: Alert, dashboard_url: str | None = None) -> dict[str, Any]:
    """`{"text", "blocks"}` for chat.postMessage or an incoming webhook."""
    mark = SEVERITY_MARK.get(alert.severity, "⚪")
    state = "resolved" if alert.status == "resolved" else alert.severity
    headline = f"{mark} {state.upper()} · {alert.detector.replace('_', ' ')} · {alert.identity}"
    fields = [
        plain_text(f"Identity: {alert.identity}"),
        plain_text(f"Team: {alert.team or '–'}"),
        plain_text(f"Environment: {alert.environment or '–'}"),
        plain_text(f"Score: {alert.score:.2f}"),
    ]
    window = f"{alert.window_start:%Y-%m-%d %H:%M}–{alert.window_end:%H:%M} UTC"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": plain_text(headline[:150])},
        {"type": "section", "text": plain_text(alert.summary)},
        {"type": "section", "fields": fields},
        {"type": "context", "elements": [plain_text(f"{window} · alert {alert.alert_id}")]},
    ]
    if dashboard_url:
        link = f"{dashboard_url.rstrip('/')}/?identity={quote(alert.identity, safe='')}"
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {"type": "button", "text": plain_text("Open in meterguard"), "url": link}
                ],
            }
        )
    return {"text": escape_mrkdwn(f"{headline}: {alert.summary}")[:MAX_TEXT], "blocks": blocks}
