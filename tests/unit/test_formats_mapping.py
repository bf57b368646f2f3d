"""The mapping file (streams/decoding/formats/mapping.py): fallbacks, defaults and clear errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from meterguard.models import DeadLetter, MeteringEvent
from meterguard.streams.decoding.decode import decode_message
from meterguard.streams.decoding.formats.mapping import DEFAULT_MAPPING, MappingConfig

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "formats"
INGEST = datetime(2025, 6, 3, 14, 30, tzinfo=UTC)


def load(tmp_path: Path, text: str) -> MappingConfig:
    path = tmp_path / "mapping.yaml"
    path.write_text(text)
    return MappingConfig.load(str(path))


def one_event(value: bytes, mapping: MappingConfig, headers: object = None) -> MeteringEvent:
    (event,) = decode_message(value, headers, INGEST, mapping=mapping).items  # type: ignore[arg-type]
    assert isinstance(event, MeteringEvent), event
    return event


def test_the_documented_example_file_is_the_default() -> None:
    assert MappingConfig.load(str(ROOT / "deploy" / "mapping.yaml")) == DEFAULT_MAPPING


def test_no_file_means_defaults() -> None:
    assert MappingConfig.load(None) == DEFAULT_MAPPING
    assert MappingConfig.load("") == DEFAULT_MAPPING


def test_a_partial_section_keeps_the_other_defaults(tmp_path: Path) -> None:
    mapping = load(tmp_path, "litellm:\n  identity: end_user\n")
    assert mapping.litellm.identity == ("end_user",)
    assert mapping.litellm.team == DEFAULT_MAPPING.litellm.team
    assert mapping.otlp == DEFAULT_MAPPING.otlp


def test_identity_falls_back_along_the_chain(tmp_path: Path) -> None:
    row = orjson.loads((DATA / "litellm_spend_logs_payload.json").read_bytes())
    assert one_event(orjson.dumps(row), DEFAULT_MAPPING).identity == "acme-prod-key"
    metadata = orjson.loads(row["metadata"])  # a JSON string in the row, as LiteLLM writes it
    metadata["user_api_key_alias"] = None
    row["metadata"] = json.dumps(metadata)
    assert one_event(orjson.dumps(row), DEFAULT_MAPPING).identity == row["api_key"]
    row["end_user"] = "customer-42"
    mapping = load(tmp_path, "litellm:\n  identity: [end_user, api_key]\n")
    assert one_event(orjson.dumps(row), mapping).identity == "customer-42"


def test_cloudevents_subject_is_used_when_data_names_no_identity() -> None:
    ce = orjson.loads((DATA / "cloudevents_structured.json").read_bytes())
    assert one_event(orjson.dumps(ce), DEFAULT_MAPPING).identity == "svc-invoice-bot"
    ce["data"]["identity"] = "svc-from-data"
    assert one_event(orjson.dumps(ce), DEFAULT_MAPPING).identity == "svc-from-data"


def test_header_paths_and_defaults(tmp_path: Path) -> None:
    mapping = load(
        tmp_path,
        "cloudevents:\n"
        "  identity: ['header:x-workload-identity', subject]\n"
        "  environment: [envext]\n"
        "  defaults: {environment: prod, tenant: acme, source: gw-default}\n"
        "  source: []\n",
    )
    ce = orjson.loads((DATA / "cloudevents_structured.json").read_bytes())
    del ce["data"]["environment"]
    event = one_event(orjson.dumps(ce), mapping, [("x-workload-identity", b"spiffe://a/b")])
    assert (event.identity, event.environment, event.tenant) == ("spiffe://a/b", "prod", "acme")
    assert event.source == "gw-default"
    ce["envext"] = "staging"
    assert one_event(orjson.dumps(ce), mapping).environment == "staging"


def test_otlp_resource_and_span_prefixes(tmp_path: Path) -> None:
    value = (DATA / "otlp_collector_two_services.json").read_bytes()
    mapping = load(
        tmp_path, "otlp:\n  identity: ['span:gen_ai.agent.name', 'resource:service.name']\n"
    )
    events = decode_message(value, None, INGEST, mapping=mapping).events
    # span: does not inherit from the agent span, so the chat spans fall to the service.
    assert {e.identity for e in events} == {"support-agent", "report-writer"}


def test_otlp_cost_from_a_mapped_attribute(tmp_path: Path) -> None:
    doc = orjson.loads((DATA / "otlp_collector_two_services.json").read_bytes())
    resource = doc["resourceSpans"][0]["resource"]["attributes"]  # support-agent's
    resource.append({"key": "llm.cost.flat_usd", "value": {"doubleValue": 0.0021}})
    mapping = load(tmp_path, "otlp:\n  cost_usd: [gen_ai.usage.cost, llm.cost.flat_usd]\n")
    events = decode_message(orjson.dumps(doc), None, INGEST, mapping=mapping).events
    # The report-writer span has its own gen_ai.usage.cost (OpenLIT's); the others take the
    # resource's.
    assert [str(e.cost_usd) for e in events] == ["0.0021"] * 4 + ["0.0102"]


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("otlp:\n  identiy: [x]\n", ["otlp.identiy", "Extra inputs are not permitted"]),
        ("openai:\n  identity: []\n", ["openai.identity", "at least 1"]),
        ("litellm:\n  team: ['bogus:x']\n", ["litellm.team", "unknown prefix"]),
        ("cloudevents:\n  identity: ['resource:service.name']\n", ["unknown prefix"]),
        ("otlp:\n  defaults: {colour: red}\n", ["otlp.defaults.colour"]),
        ("- a\n- b\n", ["expected a mapping at the top level"]),
        ("otlp: [\n", ["cannot read mapping file"]),
    ],
)
def test_mapping_file_errors_are_clear(tmp_path: Path, text: str, needles: list[str]) -> None:
    with pytest.raises(ValueError) as caught:  # noqa: PT011 - message checked below, in parts
        load(tmp_path, text)
    message = str(caught.value)
    assert str(tmp_path / "mapping.yaml") in message
    for needle in needles:
        assert needle in message


def test_missing_mapping_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read mapping file"):
        MappingConfig.load(str(tmp_path / "absent.yaml"))


def test_missing_identity_dead_letter_lists_the_configured_paths(tmp_path: Path) -> None:
    mapping = load(tmp_path, "openai:\n  identity: ['header:x-caller', metadata.agent]\n")
    value = (DATA / "openai_chat_completion.json").read_bytes()
    (letter,) = decode_message(value, None, INGEST, mapping=mapping).items
    assert isinstance(letter, DeadLetter)
    assert letter.error == "no identity at any of: header:x-caller, metadata.agent"
