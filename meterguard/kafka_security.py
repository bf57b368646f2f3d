"""How meterguard's Kafka clients authenticate and encrypt (pure, aiokafka only).

    MG_KAFKA_SECURITY_PROTOCOL   PLAINTEXT (default) | SSL | SASL_PLAINTEXT | SASL_SSL
    MG_KAFKA_SASL_MECHANISM      PLAIN (default) | SCRAM-SHA-256 | SCRAM-SHA-512
    MG_KAFKA_SASL_USERNAME       with SASL_*: required
    MG_KAFKA_SASL_PASSWORD       with SASL_*: required (never logged: repr hides it)
    MG_KAFKA_SSL_CAFILE          with SSL / SASL_SSL: the CA bundle (default: the system's)
    MG_KAFKA_SSL_CERTFILE        with SSL / SASL_SSL: client certificate (mutual TLS)
    MG_KAFKA_SSL_KEYFILE         its private key (unencrypted PEM; with the certificate)

One value, `KafkaSecurity`, feeds every client: `aiokafka_options()` are the keyword arguments
of AIOKafkaProducer / AIOKafkaConsumer / AIOKafkaAdminClient (aiokafka uses
`sasl_plain_username` / `sasl_plain_password` for SCRAM too), and the worker's Faust app gets
the same as `broker_credentials` (streams/runtime/kafka_credentials.py). Gateways that import
no Faust build it with `KafkaSecurity.from_env()`. A setting that would be silently ignored
(a certificate with PLAINTEXT, a SASL user without SASL) is refused instead.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from aiokafka.helpers import create_ssl_context

Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
Mechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
PROTOCOLS: tuple[str, ...] = get_args(Protocol)
MECHANISMS: tuple[str, ...] = get_args(Mechanism)


class KafkaSecurityError(ValueError):
    """The MG_KAFKA_* settings contradict each other or are incomplete."""


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)  # never in a log line
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise KafkaSecurityError(
                f"MG_KAFKA_SECURITY_PROTOCOL must be one of {', '.join(PROTOCOLS)}"
            )
        if self.sasl_mechanism not in MECHANISMS:
            raise KafkaSecurityError(
                f"MG_KAFKA_SASL_MECHANISM must be one of {', '.join(MECHANISMS)}"
            )
        if self.uses_sasl and not (self.sasl_username and self.sasl_password):
            raise KafkaSecurityError(
                f"{self.protocol} needs MG_KAFKA_SASL_USERNAME and MG_KAFKA_SASL_PASSWORD"
            )
        if not self.uses_sasl and (self.sasl_username or self.sasl_password):
            raise KafkaSecurityError(
                "MG_KAFKA_SASL_USERNAME/PASSWORD are set but MG_KAFKA_SECURITY_PROTOCOL is "
                f"{self.protocol}: use SASL_SSL (or SASL_PLAINTEXT)"
            )
        files = (self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile)
        if not self.uses_ssl and any(files):
            raise KafkaSecurityError(
                "MG_KAFKA_SSL_* files are set but MG_KAFKA_SECURITY_PROTOCOL is "
                f"{self.protocol}: use SSL (or SASL_SSL)"
            )
        if self.ssl_keyfile and not self.ssl_certfile:
            raise KafkaSecurityError("MG_KAFKA_SSL_KEYFILE needs MG_KAFKA_SSL_CERTFILE")

    @property
    def uses_ssl(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """A verifying context (hostname checked) for SSL / SASL_SSL, else None. Reads the
        files: call it when a client is built, not at import."""
        if not self.uses_ssl:
            return None
        context: ssl.SSLContext = create_ssl_context(
            cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
        )
        return context

    def aiokafka_options(self) -> dict[str, Any]:
        """Keyword arguments for any aiokafka client (the same keys Faust's driver passes,
        faust/transport/drivers/aiokafka.py `credentials_to_aiokafka_auth`)."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_ssl:
            options["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            options |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.sasl_username,
                "sasl_plain_password": self.sasl_password,
            }
        return options

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> KafkaSecurity:
        """The MG_KAFKA_* variables of `environ` (e.g. os.environ), for clients without
        meterguard's Settings (a gateway's KafkaPublisher)."""

        def get(name: str) -> str | None:
            return environ.get(f"MG_KAFKA_{name}") or None

        return cls(
            protocol=(get("SECURITY_PROTOCOL") or "PLAINTEXT").upper(),
            sasl_mechanism=(get("SASL_MECHANISM") or "PLAIN").upper(),
            sasl_username=get("SASL_USERNAME"),
            sasl_password=get("SASL_PASSWORD"),
            ssl_cafile=get("SSL_CAFILE"),
            ssl_certfile=get("SSL_CERTFILE"),
            ssl_keyfile=get("SSL_KEYFILE"),
        )
