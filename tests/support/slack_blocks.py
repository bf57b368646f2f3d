"""Walk a Slack message's Block Kit blocks for its texts.

Slack parses mentions (`<!channel>`, `<@U…>`) and links (`<url|label>`) in a message's
fallback `text` and in `mrkdwn` text objects (a bare `{"text": …}` without a type counts as
mrkdwn too); `plain_text` objects are shown as written. The tests check a hostile identity
only ever reaches the latter.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

PARSED_TYPES = frozenset({"mrkdwn", None})  # None: a text without a `type`


def block_texts(blocks: object) -> Iterator[tuple[str | None, str]]:
    """Every text object in `blocks`, depth first: (its `type`, or None; its text)."""
    if isinstance(blocks, dict):
        if isinstance(blocks.get("text"), str):
            yield blocks.get("type"), blocks["text"]
        for value in blocks.values():
            yield from block_texts(value)
    elif isinstance(blocks, list):
        for value in blocks:
            yield from block_texts(value)


def parsed_texts(message: dict[str, Any]) -> list[str]:
    """Every string Slack parses for mentions and links: the fallback and mrkdwn texts."""
    blocks = message.get("blocks", [])
    return [
        message.get("text", ""),
        *(text for kind, text in block_texts(blocks) if kind in PARSED_TYPES),
    ]


def plain_texts(message: dict[str, Any]) -> str:
    """The message's plain_text texts, one per line: what Slack shows exactly as written."""
    blocks = message.get("blocks", [])
    return "\n".join(text for kind, text in block_texts(blocks) if kind == "plain_text")
