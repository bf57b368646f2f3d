"""Kafka SASL/TLS settings (issue 14, security): MG_KAFKA_* -> the keyword arguments of every
aiokafka client and the Faust app's `broker_credentials`, which Faust's own driver turns into
the very same arguments. Tansu (the test broker) speaks neither SASL nor TLS, so the mapping
is tested here, as a pure function, not against a broker."""

from __future__ import annotations

import ssl
from typing import Any

import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from meterguard.gateway.publisher import KafkaPublisher
from meterguard.kafka_security import KafkaSecurity, KafkaSecurityError
from meterguard.streams.runtime.kafka_credentials import faust_credentials
from meterguard.streams.settings import Settings

PASSWORD = "kafka-pw-QUOKKA-7731"


def settings(**env: str) -> Settings:
    return Settings.model_validate({"_env_file": None, **env})


def without_context(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k != "ssl_context"}


def test_plaintext_is_the_default_and_faust_gets_no_credentials() -> None:
    security = settings().kafka_security
    assert security.aiokafka_options() == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(security) is None
    assert dict(credentials_to_aiokafka_auth(None)) == security.aiokafka_options()


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_ssl_maps_to_aiokafka_and_to_faust_alike(mechanism: str) -> None:
    security = settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="metering",
        kafka_sasl_password=PASSWORD,
    ).kafka_security
    options = security.aiokafka_options()
    assert without_context(options) == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "metering",
        "sasl_plain_password": PASSWORD,
    }
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    credentials = faust_credentials(security)
    assert isinstance(credentials, faust.SASLCredentials)
    via_faust = dict(credentials_to_aiokafka_auth(credentials))
    assert without_context(via_faust) == without_context(options)
    assert isinstance(via_faust["ssl_context"], ssl.SSLContext)


def test_sasl_plaintext_has_no_tls_context() -> None:
    security = KafkaSecurity("SASL_PLAINTEXT", "SCRAM-SHA-512", "u", PASSWORD)
    assert "ssl_context" not in security.aiokafka_options()
    via_faust = dict(credentials_to_aiokafka_auth(faust_credentials(security)))
    assert via_faust["security_protocol"] == "SASL_PLAINTEXT"
    assert via_faust["ssl_context"] is None
    assert without_context(via_faust) == security.aiokafka_options()


def test_ssl_alone_is_a_verifying_tls_context() -> None:
    security = settings(kafka_security_protocol="SSL").kafka_security
    options = security.aiokafka_options()
    assert options["security_protocol"] == "SSL"
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    credentials = faust_credentials(security)
    assert isinstance(credentials, faust.SSLCredentials)
    assert dict(credentials_to_aiokafka_auth(credentials))["security_protocol"] == "SSL"


def test_a_missing_ca_file_fails_when_the_client_is_built() -> None:
    security = KafkaSecurity("SSL", ssl_cafile="/nonexistent/ca.pem")
    with pytest.raises(FileNotFoundError):
        security.aiokafka_options()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"protocol": "SASL_SSL"},  # no user, no password
        {"protocol": "SASL_PLAINTEXT", "sasl_username": "u"},  # no password
        {"protocol": "PLAINTEXT", "sasl_username": "u", "sasl_password": "p"},  # ignored SASL
        {"protocol": "PLAINTEXT", "ssl_cafile": "/ca.pem"},  # ignored TLS file
        {"protocol": "SASL_PLAINTEXT", "sasl_username": "u", "sasl_password": "p",
         "ssl_certfile": "/c.pem"},
        {"protocol": "SSL", "ssl_keyfile": "/k.pem"},  # a key without its certificate
        {"protocol": "TLS"},
        {"protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI", "sasl_username": "u",
         "sasl_password": "p"},
    ],
)  # fmt: skip
def test_contradictions_are_refused(kwargs: dict[str, str]) -> None:
    with pytest.raises(KafkaSecurityError):
        KafkaSecurity(**kwargs)


def test_settings_refuse_an_unknown_protocol() -> None:
    with pytest.raises(ValueError, match="kafka_security_protocol"):
        settings(kafka_security_protocol="TLS")


def test_the_password_never_shows_in_a_repr() -> None:
    s = settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="u",
        kafka_sasl_password=PASSWORD,
        api_token="api-token-QUOKKA",
        redis_url="redis://:redis-pw-QUOKKA@127.0.0.1:6379/0",
        webhook_secret="whsec_QUOKKA",
        slack_bot_token="xoxb-QUOKKA",
        slack_webhook_url="https://hooks.slack.com/services/T0/B0/QUOKKA",
    )
    for text in (repr(s), str(s), repr(s.kafka_security)):
        assert "QUOKKA" not in text


def test_the_gateway_publisher_reads_the_same_environment() -> None:
    made: dict[str, Any] = {}

    def factory(**kwargs: Any) -> object:
        made.update(kwargs)
        return object()

    env = {
        "MG_KAFKA_BROKER": "kafka://k1:9093,kafka://k2:9093",
        "MG_TOPIC_RAW": "raw.x",
        "MG_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext",
        "MG_KAFKA_SASL_MECHANISM": "scram-sha-256",
        "MG_KAFKA_SASL_USERNAME": "gw",
        "MG_KAFKA_SASL_PASSWORD": PASSWORD,
    }
    publisher = KafkaPublisher.from_env(env, producer_factory=factory)
    assert (publisher.bootstrap, publisher.topic) == ("k1:9093,k2:9093", "raw.x")
    factory(bootstrap_servers=publisher.bootstrap, **publisher._options)  # as start() does
    assert made["security_protocol"] == "SASL_PLAINTEXT"
    assert made["sasl_mechanism"] == "SCRAM-SHA-256"
    assert (made["sasl_plain_username"], made["sasl_plain_password"]) == ("gw", PASSWORD)
    with pytest.raises(ValueError, match="MG_KAFKA_BROKER"):
        KafkaPublisher.from_env({})
