"""The captured input-format samples in tests/data/formats/ and their native twins.

Each `NAME.json` (or `NAME.pb`, binary) is one Kafka message value as a gateway or collector
emits it (`NAME.headers.json`: its Kafka headers, when it has any; `make_NAME.py`: the script
that made it with the real producer library, where there is one); `NAME.native.jsonl` is the same
traffic written by hand as native events, one per line, in input order.
"""

from __future__ import annotations

from pathlib import Path

import orjson

DATA = Path(__file__).resolve().parents[1] / "data" / "formats"
SAMPLES = sorted(
    [
        p.name.removesuffix(".json")
        for p in DATA.glob("*.json")
        if not p.name.endswith(".headers.json")
    ]
    + [p.name.removesuffix(".pb") for p in DATA.glob("*.pb")]
)


def sample(name: str) -> tuple[bytes, list[tuple[str, bytes]] | None]:
    """The message value and its Kafka headers (None when it has none)."""
    binary = DATA / f"{name}.pb"  # a protobuf value, made by its make_*.py script
    value = binary.read_bytes() if binary.exists() else (DATA / f"{name}.json").read_bytes()
    headers_file = DATA / f"{name}.headers.json"
    if not headers_file.exists():
        return value, None
    headers = orjson.loads(headers_file.read_bytes())
    return value, [(k, v.encode()) for k, v in headers.items()]


def native_lines(name: str) -> list[bytes]:
    return (DATA / f"{name}.native.jsonl").read_bytes().splitlines()
