"""deploy/collector/otelcol-kafka.yaml: a Collector config that sends what meterguard reads."""

from __future__ import annotations

from pathlib import Path

import yaml

from meterguard.streams.decoding.formats.detect import OTLP, OTLP_PROTOBUF
from meterguard.streams.settings import Settings

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "collector" / "otelcol-kafka.yaml"
# The Kafka exporter's trace encodings, and the format meterguard reads each as.
READ_AS = {"otlp_proto": OTLP_PROTOBUF, "otlp_json": OTLP}


def test_the_collector_config_exports_traces_to_the_raw_topic_in_an_encoding_we_read() -> None:
    doc = yaml.safe_load(CONFIG.read_text())
    kafka = doc["exporters"]["kafka"]
    assert kafka["traces"]["topic"] == Settings().topic_raw
    assert kafka["traces"]["encoding"] in READ_AS
    assert "topic" not in kafka and "encoding" not in kafka  # deprecated top-level keys
    pipeline = doc["service"]["pipelines"]["traces"]
    assert pipeline["exporters"] == ["kafka"]
    assert set(pipeline["receivers"]) <= set(doc["receivers"])
    assert set(pipeline.get("processors", [])) <= set(doc.get("processors", {}))
