"""Demo: header-free protobuf-vs-JSON detection for OTLP trace payloads, incl. the 0x0a 0x7b corner case."""
import json
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

def sniff(b: bytes) -> str:
    s = b.lstrip(b" \t\r\n")
    if s[:1] in (b"{", b"["):          # JSON object (or array) after optional JSON whitespace
        try:
            json.loads(b); return "json"
        except ValueError:
            pass                        # e.g. protobuf 0x0a 0x7b... (resource_spans len 123)
    try:
        m = ExportTraceServiceRequest.FromString(b)
        return "protobuf" if b else "empty"
    except DecodeError:
        return "unknown"

pb = open("samples/otlp_traces.pb","rb").read()
js = open("samples/otlp_traces.collector.json","rb").read()
# craft a protobuf whose first bytes are 0x0a 0x7b == "\n{"
for n in range(0, 200):
    rs = ResourceSpans(schema_url="x"*n)
    b = ExportTraceServiceRequest(resource_spans=[rs]).SerializeToString()
    if b[1] == 0x7b: break
print("crafted pb starts", b[:3], "len", len(b))
for name, data in [("pb", pb), ("json", js), ("json_leading_nl", b"\n"+js), ("pb_0a7b", b), ("empty", b"")]:
    print(name, data[:2].hex(), "->", sniff(data))
