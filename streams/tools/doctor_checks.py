"""`meterguard doctor`'s verdicts (pure): what the probes found → one line per finding.

Probes (streams/tools/doctor_probes.py) only gather facts: a metadata answer, an INFO reply,
an error's class and first line. Everything that judges them lives here and is unit-tested
without a server (tests/unit/test_doctor_checks.py). A line never carries a secret: URLs are
shown through `public_url` / `redis_place` (no user info, query or fragment), and `render`
blanks every configured secret value that an error message might still echo.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from meterguard.streams.runtime.topics import TopicSpec

Status = Literal["OK", "WARN", "FAIL", "SKIP"]
# The worker counts a doctor run suggests an even spread for (1 to 12 workers: a 2-core host
# up to a modest Deployment; beyond that, more partitions are the answer anyway).
TYPICAL_WORKER_COUNTS = range(1, 13)


@dataclass(frozen=True)
class Finding:
    status: Status
    subject: str
    message: str

    def line(self) -> str:
        return f"{self.status:<4} {self.subject}: {one_line(self.message)}"


def one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def render(findings: Iterable[Finding], secrets: Iterable[str | None] = ()) -> list[str]:
    """One line per finding; every non-empty secret value blanked wherever it appears."""
    hidden = sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True)
    lines = []
    for finding in findings:
        line = finding.line()
        for secret in hidden:
            line = line.replace(secret, "***")
        lines.append(line)
    return lines


def exit_code(findings: Iterable[Finding], strict: bool = False) -> int:
    """0 when nothing failed (and, with `strict`, nothing warned), else 1."""
    bad = {"FAIL", "WARN"} if strict else {"FAIL"}
    return 1 if any(f.status in bad for f in findings) else 0


def summary(findings: Sequence[Finding]) -> str:
    counts = {s: sum(f.status == s for f in findings) for s in ("FAIL", "WARN", "OK", "SKIP")}
    return "doctor: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)


# -- where things are, without credentials --------------------------------------------------


def public_url(url: str) -> str:
    """scheme://host[:port]/path: no user, password, query or fragment."""
    parts = urlsplit(url.strip())
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "") + parts.path


def redis_place(url: str) -> str:
    """A Redis URL as it may be shown: scheme, host, port and database only."""
    return public_url(url)


# -- broker ----------------------------------------------------------------------------------

BrokerFailure = Literal["config", "unreachable", "timeout", "auth", "tls"]


@dataclass(frozen=True)
class BrokerProbe:
    bootstrap: str
    brokers: int = 0
    cluster_id: str | None = None
    failure: BrokerFailure | None = None
    error: str = ""  # the error's class and first line (no secret: see `render`)


_BROKER_HINTS: dict[str, str] = {
    "config": "fix the MG_KAFKA_* settings",
    "unreachable": "check MG_KAFKA_BROKER (host:port of a listener this host can reach)",
    "timeout": "check MG_KAFKA_BROKER, firewalls, and MG_KAFKA_SECURITY_PROTOCOL "
    "(a TLS listener spoken to in PLAINTEXT never answers)",
    "auth": "check MG_KAFKA_SASL_MECHANISM, MG_KAFKA_SASL_USERNAME, MG_KAFKA_SASL_PASSWORD",
    "tls": "check MG_KAFKA_SECURITY_PROTOCOL and MG_KAFKA_SSL_CAFILE / CERTFILE / KEYFILE",
}


def broker_findings(probe: BrokerProbe, protocol: str, timeout_s: float) -> list[Finding]:
    if probe.failure is None:
        cluster = f", cluster id {probe.cluster_id}" if probe.cluster_id else ""
        return [
            Finding(
                "OK",
                "broker",
                f"{probe.bootstrap} answered metadata over {protocol} "
                f"({probe.brokers} broker{'s' if probe.brokers != 1 else ''}{cluster})",
            )
        ]
    what = {
        "config": "settings refused",
        "unreachable": f"cannot reach {probe.bootstrap}",
        "timeout": f"no metadata from {probe.bootstrap} within {timeout_s:g} s",
        "auth": f"{probe.bootstrap} refused the SASL credentials",
        "tls": f"TLS to {probe.bootstrap} failed",
    }[probe.failure]
    detail = f" ({probe.error})" if probe.error else ""
    hint = _BROKER_HINTS[probe.failure]
    if probe.failure == "unreachable" and protocol != "PLAINTEXT":
        hint += (
            f", and that it speaks {protocol} with these credentials (MG_KAFKA_SECURITY_"
            "PROTOCOL, MG_KAFKA_SASL_*, MG_KAFKA_SSL_*: a refused handshake ends the same way)"
        )
    return [Finding("FAIL", "broker", f"{what}{detail}: {hint}")]


# -- topics ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TopicState:
    partitions: int | None = None  # None: missing or not described
    error: str | None = None  # the metadata error's name, e.g. TopicAuthorizationFailedError
    cleanup_policy: str | None = None  # None: not asked or not reported


@dataclass(frozen=True)
class TopicsProbe:
    topics: dict[str, TopicState] = field(default_factory=dict)
    configs_error: str | None = None  # DescribeConfigs failed (Tansu drops some requests)


_MISSING = "UnknownTopicOrPartitionError"


def topic_findings(
    specs: Sequence[TopicSpec], probe: TopicsProbe, raw: str, events: str, keyed: bool = False
) -> list[Finding]:
    """Per topic: exists, partitions as configured, compacted where it must be; then the
    raw/events partition balance and how evenly the scored topic spreads over workers
    (`keyed`: MG_RAW_KEYED_BY_IDENTITY, the raw topic is scored without the events hop)."""
    findings: list[Finding] = []
    for spec in specs:
        state = probe.topics.get(spec.name, TopicState(error=_MISSING))
        subject = f"topic {spec.name}"
        if state.error == _MISSING or (state.error is None and state.partitions is None):
            findings.append(
                Finding(
                    "FAIL",
                    subject,
                    f"missing: create it with {spec.partitions} partitions"
                    f"{' and cleanup.policy=compact' if spec.compacted else ''} (`meterguard "
                    "worker` creates it at start if its Kafka user may create topics)",
                )
            )
            continue
        if state.error is not None:
            findings.append(
                Finding("FAIL", subject, f"not usable ({state.error}): check the user's ACLs")
            )
            continue
        findings.append(_topic_shape(spec, state, probe.configs_error))
    findings.extend(_balance(probe, raw, events, keyed))
    return findings


def _topic_shape(spec: TopicSpec, state: TopicState, configs_error: str | None) -> Finding:
    subject = f"topic {spec.name}"
    count = f"{state.partitions} partition{'s' if state.partitions != 1 else ''}"
    notes = []
    status: Status = "OK"
    if state.partitions != spec.partitions:
        status = "WARN"
        notes.append(
            f"MG_TOPIC_PARTITIONS is {spec.partitions} (used as it is; partition counts "
            "are the topic's, not the setting's)"
        )
    if spec.compacted:
        if configs_error is not None:
            status = "WARN"
            notes.append(f"cleanup.policy not readable ({configs_error}): it must include compact")
        else:
            policy = state.cleanup_policy or "delete"  # Kafka's default when not reported
            if "compact" not in policy.split(","):
                return Finding(
                    "FAIL",
                    subject,
                    f"cleanup.policy is {policy}: the throttle topic must be compacted "
                    "(the worker refuses to start; recreate it with cleanup.policy=compact)",
                )
            notes.append(f"cleanup.policy={policy}")
    return Finding(status, subject, "; ".join([count, *notes]))


def spread(partitions: int) -> list[int]:
    """Worker counts among TYPICAL_WORKER_COUNTS that hold equally many partitions each."""
    return [n for n in TYPICAL_WORKER_COUNTS if n <= partitions and partitions % n == 0]


def _balance(probe: TopicsProbe, raw: str, events: str, keyed: bool) -> list[Finding]:
    raw_n = probe.topics.get(raw, TopicState()).partitions
    events_n = probe.topics.get(events, TopicState()).partitions
    findings = []
    if not keyed and raw_n and events_n and raw_n != events_n:
        findings.append(
            Finding(
                "WARN",
                "partitions",
                f"{raw} has {raw_n} and {events} {events_n}: decoding spreads over at most "
                f"{raw_n} workers and scoring over {events_n}; give both the same count",
            )
        )
    scored, count = (raw, raw_n) if keyed else (events, events_n)
    if count:
        even = spread(count)
        uneven = [n for n in TYPICAL_WORKER_COUNTS if n not in even and n <= count]
        text = f"{scored} ({count}) spreads evenly over {_numbers(even)} workers"
        if uneven:
            text += f"; {_numbers(uneven)} workers get unequal shares"
        if count < max(TYPICAL_WORKER_COUNTS):
            text += f"; more than {count} workers leave some idle"
        findings.append(Finding("OK", "partitions", text))
    return findings


def _numbers(values: Sequence[int]) -> str:
    text = [str(v) for v in values]
    return text[0] if len(text) == 1 else ", ".join(text[:-1]) + f" or {text[-1]}"


# -- Redis -----------------------------------------------------------------------------------

RedisFailure = Literal["config", "refused", "unreachable", "timeout", "not_cluster"]


@dataclass(frozen=True)
class RedisProbe:
    place: str  # redis_place(url)
    cluster: bool = False
    failure: RedisFailure | None = None
    error: str = ""
    version: str | None = None
    nodes: int = 1  # primaries answering INFO (cluster) or 1
    aof_enabled: bool | None = None  # every node has the AOF on (None: not reported)
    maxmemory: int = 0
    maxmemory_policy: str | None = None


def redis_findings(probe: RedisProbe, timeout_s: float) -> list[Finding]:
    if probe.failure == "refused":  # check_redis's own one line names the settings
        return [Finding("FAIL", "redis", probe.error)]
    if probe.failure is not None:
        tls = probe.place.startswith("rediss://")
        port = (
            "a rediss:// URL needs a TLS port (a plain port never finishes the handshake)"
            if tls
            else "a TLS port needs rediss://"
        )
        message = {
            "config": f"settings refused: {probe.error}",
            "unreachable": f"cannot reach {probe.place} ({probe.error}): check MG_REDIS_URL; "
            + port,
            "timeout": f"no answer from {probe.place} within {timeout_s:g} s: check "
            f"MG_REDIS_URL, firewalls; {port}",
            "not_cluster": f"{probe.place} is not a Redis Cluster node (cluster mode is not "
            "enabled on it): unset MG_REDIS_CLUSTER",
        }[probe.failure]
        return [Finding("FAIL", "redis", message)]
    mode = f"cluster of {probe.nodes} primaries" if probe.cluster else "standalone"
    version = f", version {probe.version}" if probe.version else ""
    findings = [Finding("OK", "redis", f"{probe.place} answered PING ({mode}{version})")]
    if probe.aof_enabled is False:
        findings.append(
            Finding(
                "WARN",
                "redis persistence",
                "appendonly is off: a restart loses the windows, dedupe ids, episodes and "
                "the outbox (README, 'When Redis loses its data': appendonly yes)",
            )
        )
    elif probe.aof_enabled:
        findings.append(Finding("OK", "redis persistence", "appendonly yes"))
    if probe.maxmemory and probe.maxmemory_policy not in (None, "noeviction"):
        findings.append(
            Finding(
                "WARN",
                "redis memory",
                f"maxmemory-policy {probe.maxmemory_policy} evicts keys when full (every "
                "meterguard key has a TTL, so volatile-* policies evict them too): windows "
                "and dedupe ids would vanish silently; use noeviction",
            )
        )
    return findings


# -- files -----------------------------------------------------------------------------------


def file_finding(subject: str, setting: str, path: str | None, error: str | None) -> Finding:
    """A configuration file that loads (or the built-in default when unset)."""
    if error is not None:
        where = setting if path and path in error else f"{setting}={path}"
        return Finding("FAIL", subject, f"{where}: {error}")
    if not path:
        return Finding("OK", subject, f"built-in default ({setting} not set)")
    return Finding("OK", subject, f"{path} loads")
