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


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text[:MAX_TEXT] or " ", "emoji": False}


def alert_message(alert: Alert, dashboard_url: str | None = None) -> dict[str, Any]:
    """`{"text", "blocks"}` for chat.postMessage or an incoming webhook."""
    mark = SEVERITY_MARK.get(alert.severity, "⚪")
    state = "resolved" if alert.status == "resolved" else alert.severity
    headline = f"{mark} {state.upper()} · {alert.detector.replace('_', ' ')} · {alert.identity}"
    fields = [
        _plain(f"Identity: {alert.identity}"),
        _plain(f"Team: {alert.team or '–'}"),
        _plain(f"Environment: {alert.environment or '–'}"),
        _plain(f"Score: {alert.score:.2f}"),
    ]
    window = f"{alert.window_start:%Y-%m-%d %H:%M}–{alert.window_end:%H:%M} UTC"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(headline[:150])},
        {"type": "section", "text": _plain(alert.summary)},
        {"type": "section", "fields": fields},
        {"type": "context", "elements": [_plain(f"{window} · alert {alert.alert_id}")]},
    ]
    if dashboard_url:
        link = f"{dashboard_url.rstrip('/')}/?identity={quote(alert.identity, safe='')}"
        blocks.append(
            {
                "type": "actions",
                "elements": [{"type": "button", "text": _plain("Open in meterguard"), "url": link}],
            }
        )
    return {"text": escape_mrkdwn(f"{headline}: {alert.summary}")[:MAX_TEXT], "blocks": blocks}
