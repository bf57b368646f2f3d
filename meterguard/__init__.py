"""meterguard: runtime-metering anomaly pipeline for non-human identities.

The one import root. `meterguard.streams` (Faust, Kafka, Redis, HTTP, tools),
`meterguard.detectors` (pure scoring) and `meterguard.sinks` (delivery) are the repository's
top-level `streams/`, `detectors/` and `sinks/` folders; the map is docs/architecture.md.
"""

__version__ = "0.9.0"
