"""The worker's Kafka security as Faust's `broker_credentials` (meterguard/kafka_security.py
reads the MG_KAFKA_* settings; this only picks Faust's class for them)."""

from __future__ import annotations

import faust
from faust.types.auth import CredentialsT

from meterguard.kafka_security import KafkaSecurity


def faust_credentials(security: KafkaSecurity) -> CredentialsT | None:
    """None for PLAINTEXT (Faust's default); SSLCredentials for SSL; SASLCredentials for
    SASL_*, with the TLS context for SASL_SSL (Faust then sets the protocol to SASL_SSL)."""
    if security.protocol == "PLAINTEXT":
        return None
    if security.protocol == "SSL":
        return faust.SSLCredentials(security.ssl_context())
    return faust.SASLCredentials(
        username=security.sasl_username,
        password=security.sasl_password,
        ssl_context=security.ssl_context(),
        mechanism=security.sasl_mechanism,
    )
