"""`meterguard doctor`: the worker's settings (MG_*, streams/settings.py) checked against the
real broker, Redis, files and destinations; one line per finding, exit 0 when nothing failed.

    OK   broker: 10.0.0.5:9092 answered metadata over SASL_SSL (3 brokers, cluster id …)
    FAIL topic meterguard.throttle: cleanup.policy is delete: the throttle topic must be …
    WARN redis persistence: appendonly is off: a restart loses the windows, …

Probes run concurrently, each within `--timeout` seconds; destinations get a TCP connection
(and a verified TLS handshake for https), never a request. The verdicts are pure
(doctor_checks.py), the probes I/O (doctor_probes.py); no line carries a secret.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator
from typing import Annotated
from urllib.parse import urlsplit

import typer
from pydantic import ValidationError

from meterguard.sinks.routing import (
    Destination,
    RoutingConfig,
    SlackApi,
    WebhookRoute,
    destinations,
)
from meterguard.streams.decoding.formats.mapping import MappingConfig
from meterguard.streams.policy.config import PolicyConfig
from meterguard.streams.policy.registry import Registry
from meterguard.streams.runtime.topics import topic_specs
from meterguard.streams.settings import Settings
from meterguard.streams.tools.doctor_checks import (
    Finding,
    broker_findings,
    exit_code,
    file_finding,
    one_line,
    public_url,
    redis_findings,
    render,
    summary,
    topic_findings,
)
from meterguard.streams.tools.doctor_destinations import DestinationView, destination_findings
from meterguard.streams.tools.doctor_probes import (
    probe_endpoint,
    probe_kafka,
    probe_redis,
    probe_registry,
)

# Client libraries log connection failures themselves (aiokafka at ERROR on every bootstrap
# attempt); the doctor reports each once, as its own line.
QUIET_LOGGERS = ("aiokafka", "redis", "httpx")


def doctor(
    timeout: Annotated[
        float,
        typer.Option(min=0.1, help="seconds each probe may take (broker, Redis, a destination)"),
    ] = 5.0,
    probe: Annotated[
        bool, typer.Option(help="connect to each alert destination (TCP, and TLS for https)")
    ] = True,
    strict: Annotated[bool, typer.Option(help="exit 1 on warnings too")] = False,
) -> None:
    """Check broker, Redis, topics, partitions, policy and destinations: one line each."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    try:
        settings = Settings()
    except ValidationError as exc:
        findings = [settings_finding(error) for error in exc.errors()]
        secrets: list[str | None] = []
    else:
        findings = asyncio.run(run_checks(settings, timeout, probe))
        secrets = list(secret_values(settings))
    for line in render(findings, secrets):
        print(line)
    print(summary(findings))
    raise typer.Exit(exit_code(findings, strict))


def settings_finding(error: object) -> Finding:
    """One pydantic error as a line, without the value given (it may be a secret)."""
    detail = error if isinstance(error, dict) else {}
    name = "MG_" + "_".join(str(p) for p in detail.get("loc", ())).upper()
    return Finding("FAIL", "settings", f"{name}: {detail.get('msg', 'invalid')}")


async def run_checks(settings: Settings, timeout_s: float, probe: bool) -> list[Finding]:
    policy, policy_error = _load(PolicyConfig.load, settings.policy_file)
    views, destination_error, notes = destination_views(
        settings, policy.routing if isinstance(policy, PolicyConfig) else RoutingConfig()
    )
    kafka, redis_found, reachability, registry_error = await asyncio.gather(
        _kafka(settings, timeout_s),
        _redis(settings, timeout_s),
        _reachability(views, timeout_s) if probe else _none(),
        probe_registry(settings.registry_url, timeout_s)
        if probe and settings.registry_url
        else _none_str(),
    )
    findings = [*kafka, *redis_found]
    findings.append(file_finding("policy", "MG_POLICY_FILE", settings.policy_file, policy_error))
    _, registry_file_error = _load(Registry.load, settings.registry_file)
    findings.append(
        file_finding("registry", "MG_REGISTRY_FILE", settings.registry_file, registry_file_error)
    )
    if settings.registry_url:
        findings.append(_registry_url(settings.registry_url, probe, registry_error))
    _, mapping_error = _load(MappingConfig.load, settings.mapping_file)
    findings.append(
        file_finding("mapping", "MG_MAPPING_FILE", settings.mapping_file, mapping_error)
    )
    findings.extend(
        destination_findings([v for v, _ in views], destination_error, notes, reachability)
    )
    return findings


async def _none() -> dict[str, str | None] | None:
    return None


async def _none_str() -> str | None:
    return None


def _load(loader: Callable[[str | None], object], path: str | None) -> tuple[object, str | None]:
    try:
        return loader(path), None
    except (ValueError, OSError) as exc:
        return None, one_line(str(exc))


async def _kafka(settings: Settings, timeout_s: float) -> list[Finding]:
    if not settings.kafka_broker:
        return [
            Finding("FAIL", "broker", "MG_KAFKA_BROKER is not set (e.g. kafka://kafka-0:9092)"),
            Finding("SKIP", "topics", "not checked: no broker"),
        ]
    specs = topic_specs(settings)
    broker, topics = await probe_kafka(settings, specs, timeout_s)
    found = broker_findings(broker, settings.kafka_security_protocol, timeout_s)
    if topics is None:
        return [*found, Finding("SKIP", "topics", "not checked: the broker did not answer")]
    names = (settings.topic_raw, settings.topic_events)
    return [*found, *topic_findings(specs, topics, *names, settings.raw_keyed_by_identity)]


async def _redis(settings: Settings, timeout_s: float) -> list[Finding]:
    if not settings.redis_url:
        return [Finding("FAIL", "redis", "MG_REDIS_URL is not set (e.g. redis://redis:6379/0)")]
    return redis_findings(await probe_redis(settings, timeout_s), timeout_s)


def destination_views(
    settings: Settings, routing: RoutingConfig
) -> tuple[list[tuple[DestinationView, str]], str | None, list[str]]:
    """Each destination as the doctor shows it, with the URL to probe; or the error that
    stops the worker's delivery from starting (streams/delivery/deliverer.py)."""
    notes = []
    try:
        slack_api = SlackApi.of(
            settings.slack_api_url, settings.slack_bot_token, settings.slack_channel
        )
        found = destinations(
            routing,
            settings.webhook_url,
            settings.webhook_secret,
            settings.slack_webhook_url,
            os.environ,
            slack_api,
        )
    except ValueError as exc:
        return [], one_line(str(exc)), []
    if slack_api is not None and settings.slack_webhook_url:
        notes.append(
            "MG_SLACK_WEBHOOK_URL is ignored: MG_SLACK_BOT_TOKEN + MG_SLACK_CHANNEL (the Web "
            "API) take precedence; unset one of them"
        )
    return [(_view(d), d.url) for d in found], None, notes


def _view(destination: Destination) -> DestinationView:
    parts = urlsplit(destination.url)
    route = destination.filter
    setting = "MG_WEBHOOK_SECRET"
    if isinstance(route, WebhookRoute):
        setting = "secret_env on its entry in the policy file's routing.webhooks"
    return DestinationView(
        kind=destination.kind,
        name=destination.public_name,
        scheme=parts.scheme,
        host=parts.hostname,
        has_secret=bool(destination.secret),
        web_api=destination.channel is not None,
        secret_setting=setting,
    )


async def _reachability(
    views: list[tuple[DestinationView, str]], timeout_s: float
) -> dict[str, str | None]:
    problems = await asyncio.gather(*(probe_endpoint(url, timeout_s) for _, url in views))
    return {view.name: problem for (view, _), problem in zip(views, problems, strict=True)}


def _registry_url(url: str, probe: bool, error: str | None) -> Finding:
    if not probe:
        return Finding("OK", "registry url", f"{public_url(url)} (not probed)")
    if error is not None:
        return Finding(
            "WARN",
            "registry url",
            f"{error} (the worker keeps MG_REGISTRY_FILE's registry, or none, until it answers)",
        )
    return Finding("OK", "registry url", f"{public_url(url)} answers a registry")


def secret_values(settings: Settings) -> Iterator[str | None]:
    """Every configured value that must not appear in a line (blanked by `render`)."""
    for secret in (settings.kafka_sasl_password, settings.redis_password, settings.api_token):
        yield secret.get_secret_value() if secret else None
    yield settings.webhook_secret
    yield settings.slack_bot_token
    yield settings.slack_webhook_url
    for url in (settings.redis_url, settings.registry_url, settings.slack_webhook_url):
        yield from _url_secrets(url)
    for url in (settings.webhook_url or "").split(","):
        yield from _url_secrets(url)
    policy_file = settings.policy_file
    try:
        routing = PolicyConfig.load(policy_file).routing
    except (ValueError, OSError):
        return
    for route in routing.webhooks:
        yield from _url_secrets(route.url)
        if route.secret_env:
            yield os.environ.get(route.secret_env)


def _url_secrets(url: str | None) -> Iterator[str | None]:
    if not url:
        return
    parts = urlsplit(url.strip())
    yield parts.password
    yield parts.query or None
    yield parts.fragment or None
