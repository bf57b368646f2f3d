"""What every `meterguard` command shares: the error console and reading the settings."""

from __future__ import annotations

import asyncio
from datetime import datetime

import typer
from rich.console import Console

from meterguard.streams.settings import Settings
from meterguard.streams.store.connection import RedisRefused, check_redis, redis_client
from meterguard.streams.store.retry import REDIS_UNAVAILABLE
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


def require_redis(settings: Settings) -> None:
    """Exit 2 with one line (no secret) when Redis refuses the configured user, password, TLS
    files or topology (streams/store/connection.py); Redis not up yet is left to the caller's
    retries."""
    if not settings.redis_url:
        return
    try:
        client = redis_client(settings.redis_url, settings.redis_options)
    except ValueError as exc:
        err.print(f"[red]configuration error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None

    async def check() -> None:
        try:
            await check_redis(client, settings.redis_url or "")
        finally:
            await client.aclose()

    try:
        asyncio.run(check())
    except RedisRefused as exc:
        err.print(f"[red]redis refused:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    except REDIS_UNAVAILABLE:
        pass  # not up yet: the worker's calls retry (store/retry.py)


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
