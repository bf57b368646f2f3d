"""What every `meterguard` command shares: the error console and reading the settings."""

from __future__ import annotations

from datetime import datetime

import typer
from rich.console import Console

from meterguard.streams.settings import Settings
from meterguard.timeutil import parse_event_time

err = Console(stderr=True)


def load_settings() -> Settings:
    """The MG_ settings with the policy file validated, or exit 2 naming the problem."""
    try:
        settings = Settings()
        settings.policy  # noqa: B018 - validate the policy file before anything starts
        return settings
    except ValueError as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc


def require_broker(settings: Settings) -> str:
    """The bootstrap servers, or exit 2 when MG_KAFKA_BROKER is not set."""
    if not settings.kafka_broker:
        err.print("[red]MG_KAFKA_BROKER is not set[/red] (e.g. kafka://127.0.0.1:9092)")
        raise typer.Exit(2)
    return settings.bootstrap


def epoch_ms(text: str) -> int:
    return int(parse_event_time(text).timestamp() * 1000)


def minute_floor(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)
