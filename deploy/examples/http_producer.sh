#!/usr/bin/env bash
# A generic HTTP producer: send a JSON Lines file of metering events (native, CloudEvents,
# OpenAI or LiteLLM records, one per line) to a worker's ingest route (README "HTTP").
#   MG_URL=http://127.0.0.1:6066 MG_API_TOKEN=... deploy/examples/http_producer.sh events.jsonl
# Prints {"messages", "accepted", "dead_lettered"}; exits non-zero on 4xx/5xx (503: the broker
# took nothing, send again: event ids make a resend count once).
# Exercised by tests/integration/test_http_ingest.py.
set -euo pipefail
curl --fail-with-body --silent --show-error -X POST "${MG_URL:-http://127.0.0.1:6066}/api/events" \
  -H "Authorization: Bearer ${MG_API_TOKEN:?set MG_API_TOKEN}" \
  -H "Content-Type: application/x-ndjson" \
  --data-binary @"${1:?usage: http_producer.sh FILE.jsonl}"
