"""The captured input-format samples in tests/data/formats/ and their native twins.

Each `NAME.json` is one Kafka message value as a gateway or collector emits it
(`NAME.headers.json`: its Kafka headers, when it has any); `NAME.native.jsonl` is the same
traffic written by hand as native events, one per line, in input order.
"""

from __future__ import annotations

from pathlib import Path

import orjson

DATA = Path(__file__).resolve().parents[1] / "data" / "formats"
SAMPLES = sorted(
    p.name.removesuffix(".json")
    for p in DATA.glob("*.json")
    if not p.name.endswith(".headers.json")
)


def sample(name: str) -> tuple[bytes, list[tuple[str, bytes]] | None]:
    """The message value and its Kafka headers (None when it has none)."""
    value = (DATA / f"{name}.json").read_bytes()
    headers_file = DATA / f"{name}.headers.json"
    if not headers_file.exists():
        return value, None
    headers = orjson.loads(headers_file.read_bytes())
    return value, [(k, v.encode()) for k, v in headers.items()]


def native_lines(name: str) -> list[bytes]:
    return (DATA / f"{name}.native.jsonl").read_bytes().splitlines()
