"""Process-wide test settings, applied before any test module is imported."""

from __future__ import annotations

import os

# LiteLLM reads its model cost map when it is imported: the bundled copy, never the network
# (the tests run offline; tests/support/litellm_calls.py).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
