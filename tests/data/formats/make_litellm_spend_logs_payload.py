"""Regenerate litellm_spend_logs_payload.json and its native twin from the spend-log row real
LiteLLM recorded earlier.

    .venv/bin/python tests/data/formats/make_litellm_spend_logs_payload.py [OUT_DIR]

A spend-log row (`SpendLogsPayload`, litellm/proxy/_types.py) is made by the proxy's
`litellm.proxy.spend_tracking.spend_tracking_utils.get_logging_payload`. That function cannot
be imported in this venv: the module imports `litellm.proxy.utils`, which raises
`ImportError: backoff is not installed` (litellm/proxy/utils.py, line 129, litellm 1.110.2),
and `litellm[proxy]` does not resolve for 1.110.2 (`litellm-proxy==1.110.2` is not on PyPI;
docs/research/producers/README.md, section 0: some 18 extra packages plus Prisma).

So the row is the one `get_logging_payload` really returned, in the research venv that had
those packages (docs/research/producers/gen_litellm.py, saved as
tests/data/litellm/spend_logs_row.json): litellm's field set, `metadata` and `request_tags` as
the JSON strings `safe_dumps` wrote, the sha256 `api_key`. Two things in that file are not
litellm's: its layout (indent 2, sorted keys) and the text of its datetimes
(`str(datetime)`), both from gen_litellm.py's `json.dump(..., default=str, sort_keys=True)`.

The only edit: `startTime`, `endTime` and `completionStartTime` are moved, by one fixed
offset, from the machine clock of that run (2026-12-03) to the other samples' morning
(2025-06-03), in the same text form. Everything else is byte for byte the recorded row. The
native twin is written from the row's own fields by name, never from our decoder.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
NAME = "litellm_spend_logs_payload"
RECORDED = HERE.parent / "litellm" / "spend_logs_row.json"
NEW_END = datetime.fromisoformat("2025-06-03 14:22:17.335733+00:00")
TIMES = ("startTime", "endTime", "completionStartTime")


def main(out: Path = HERE) -> None:
    raw = RECORDED.read_bytes()
    row = json.loads(raw)
    offset = NEW_END - datetime.fromisoformat(row["endTime"])
    for old in sorted({row[key] for key in TIMES}):
        new = str(datetime.fromisoformat(old) + offset)
        # Each time text is only ever the value of those fields (checked, not assumed).
        fields = sum(row[key] == old for key in TIMES)
        assert raw.count(f'"{old}"'.encode()) == fields, old
        raw = raw.replace(f'"{old}"'.encode(), f'"{new}"'.encode())
    (out / f"{NAME}.json").write_bytes(raw)
    row = json.loads(raw)
    metadata = json.loads(row["metadata"])  # SpendLogsPayload.metadata: str  # json str
    twin = {
        "event_id": row["request_id"],
        "identity": metadata["user_api_key_alias"],
        "event_time": datetime.fromisoformat(row["endTime"]).isoformat(),
        "credential_id": row["api_key"],
        "team": metadata["user_api_key_team_alias"],
        "model": row["model"],
        "provider": row["custom_llm_provider"],
        "operation": row["call_type"],
        "input_tokens": row["prompt_tokens"],
        "output_tokens": row["completion_tokens"],
        "cost_usd": row["spend"],
        "latency_ms": row["request_duration_ms"],
    }
    (out / f"{NAME}.native.jsonl").write_bytes(orjson.dumps(twin) + b"\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
