#!/usr/bin/env python3
"""Generate CloudEvents-over-Kafka samples with the real `cloudevents` SDK (PyPI 2.2.0).

NOTE: in cloudevents>=2.0 there is no `cloudevents.kafka` module any more:
  * new API:    cloudevents.core.bindings.kafka  (to_structured/to_binary/from_structured/
                from_binary/from_kafka/KafkaMessage + *_event convenience wrappers)
  * legacy API: cloudevents.v1.kafka            (the 1.x functions, moved)
Both are exercised here.

Each sample is written as samples/ce_<name>.json:
  {"headers": {name: base64(bytes)}, "headers_utf8": {name: str}, "key": str|null,
   "key_b64": ..., "value_b64": ..., "value_utf8": ...}
plus ce_<name>.value.bin with the raw Kafka value bytes.

Run: /tmp/issue11/venv/bin/python gen_cloudevents.py
"""
import base64
import json
import os
from datetime import datetime, timezone

from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from cloudevents.v1 import kafka as v1_kafka
from cloudevents.v1.http import CloudEvent as V1CloudEvent

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "samples")
FMT = JSONFormat()
T = datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=timezone.utc)


def usage_data(i=1):
    return {
        "tenant": "acme",
        "model": "gpt-4o-mini",
        "input_tokens": 1200 + i,
        "output_tokens": 35,
        "cost_usd": 0.00021,
        "request_id": f"req-{i:04d}",
    }


def event(i=1, **extra):
    attrs = {
        "id": f"evt-{i:04d}",
        "source": "/llm-gateway/eu-1",
        "type": "com.example.llm.usage.v1",
        "specversion": "1.0",
        "time": T,
        "subject": "acme",
        "datacontenttype": "application/json",
        "partitionkey": "acme",  # partitioning extension -> Kafka key via default key mapper
    }
    attrs.update(extra)
    return CloudEvent(attributes=attrs, data=usage_data(i))


def dump(name, headers, key, value, note=""):
    if isinstance(value, str):
        value = value.encode()
    kb = key.encode() if isinstance(key, str) else key
    rec = {
        "note": note,
        "headers": {k: base64.b64encode(v).decode() for k, v in headers.items()},
        "headers_utf8": {k: v.decode("utf-8") for k, v in headers.items()},
        "key": kb.decode("utf-8") if kb is not None else None,
        "key_b64": base64.b64encode(kb).decode() if kb is not None else None,
        "value_b64": base64.b64encode(value).decode(),
        "value_utf8": value.decode("utf-8"),
    }
    with open(os.path.join(OUT, f"ce_{name}.json"), "w") as f:
        json.dump(rec, f, indent=2)
    with open(os.path.join(OUT, f"ce_{name}.value.bin"), "wb") as f:
        f.write(value)
    print(f"--- {name}: key={rec['key']!r}\n    headers={rec['headers_utf8']}\n    value={rec['value_utf8'][:300]}")
    return rec


def main():
    os.makedirs(OUT, exist_ok=True)

    # 1) structured (new API): content-type = application/cloudevents+json, whole event in value
    m = ce_kafka.to_structured(event(1), FMT)
    dump("structured", m.headers, m.key, m.value, "cloudevents.core.bindings.kafka.to_structured")
    ev = ce_kafka.from_structured(m, FMT)
    assert ev.get_id() == "evt-0001"

    # 2) binary (new API): ce_* headers (UTF-8), content-type = datacontenttype, value = data only
    m_bin = ce_kafka.to_binary(event(2), FMT)
    dump("binary", m_bin.headers, m_bin.key, m_bin.value, "cloudevents.core.bindings.kafka.to_binary")
    ev = ce_kafka.from_binary(m_bin, FMT)
    assert ev.get_id() == "evt-0002" and ev.get_data()["input_tokens"] == 1202

    # 3) structured + ce_* headers (allowed by Kafka binding spec 3.3.3 "MAY include the same
    #    Kafka headers as defined for the binary mode"). Built by merging both SDK outputs.
    e3 = event(3)
    s = ce_kafka.to_structured(e3, FMT)
    b = ce_kafka.to_binary(e3, FMT)
    hdrs = {k: v for k, v in b.headers.items() if k.startswith("ce_")}
    hdrs.update(s.headers)  # content-type: application/cloudevents+json
    dump("structured_with_ce_headers", hdrs, s.key, s.value,
         "structured value + ce_* headers; content-type says structured")
    mixed = ce_kafka.KafkaMessage(headers=hdrs, key=s.key, value=s.value)
    ev_auto = ce_kafka.from_kafka(mixed, FMT)
    # SDK's from_kafka picks BINARY whenever any ce_ header exists, so the *whole envelope*
    # becomes `data` (spec section 3 says: content-type prefix application/cloudevents => structured).
    auto_data = ev_auto.get_data()
    print("    from_kafka() on structured+ce_ headers -> data keys:",
          sorted(auto_data.keys()) if isinstance(auto_data, dict) else type(auto_data))
    ev_ok = ce_kafka.from_structured(mixed, FMT)
    assert ev_ok.get_data()["input_tokens"] == 1203

    # 4) batch: SDK 2.2.0 has no batch API; the Kafka binding does not support batch mode
    #    (kafka-protocol-binding.md 1.3). JSON Batch Format (json-format.md section 4):
    #    JSON array of JSON-format events, media type application/cloudevents-batch+json.
    events = [event(10 + i) for i in range(3)]
    value = b"[" + b",".join(FMT.write(e) for e in events) + b"]"
    dump("batch", {"content-type": b"application/cloudevents-batch+json"}, None, value,
         "hand-built JSON Batch Format from JSONFormat().write() per event; NOT an SDK feature")

    # 5) legacy API cloudevents.v1.kafka (1.x behaviour kept in 2.x)
    v1e = V1CloudEvent.create(
        {"id": "evt-0005", "source": "/llm-gateway/eu-1", "type": "com.example.llm.usage.v1",
         "time": "2026-03-01T12:00:00.123Z", "datacontenttype": "application/json",
         "partitionkey": "acme"},
        usage_data(5),
    )
    m = v1_kafka.to_structured(v1e)
    dump("v1_structured", m.headers, m.key, m.value,
         "cloudevents.v1.kafka.to_structured: content-type header = datacontenttype (application/json),"
         " datacontenttype removed from envelope")
    m = v1_kafka.to_binary(v1e)
    dump("v1_binary", m.headers, m.key, m.value, "cloudevents.v1.kafka.to_binary (partitionkey not a header)")
    v1e_noct = V1CloudEvent.create(
        {"id": "evt-0006", "source": "/s", "type": "t", "time": "2026-03-01T12:00:00Z"}, usage_data(6))
    m = v1_kafka.to_structured(v1e_noct)
    dump("v1_structured_no_datacontenttype", m.headers, m.key, m.value,
         "legacy structured without datacontenttype: NO content-type header at all")


if __name__ == "__main__":
    main()
