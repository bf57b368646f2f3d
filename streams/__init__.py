"""Everything that knows Faust, Kafka, Redis or HTTP, and the command line.

Layers, each importing only from those below (import-linter checks it, docs/architecture.md):
tools > evaluation > simulation | offline > runtime > web | delivery > settings | metrics >
policy | decoding | store.
"""
