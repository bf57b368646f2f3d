#!/bin/sh
# Regenerate all samples in /tmp/issue11/samples (sequential; no network needed once venv exists).
set -e
cd "$(dirname "$0")"
PY=./venv/bin/python
$PY gen_otlp.py
$PY detect_demo.py
$PY gen_cloudevents.py
LITELLM_LOCAL_MODEL_COST_MAP=True $PY gen_litellm.py
$PY gen_openai.py
