"""The captured input-format samples in tests/data/formats/ and their native twins.

Each `NAME.json` (or `NAME.pb`, binary) is one Kafka message value as a gateway or collector
emits it, `NAME.headers.json` its Kafka headers (when it has any), and `NAME.native.jsonl` the
same traffic as native events, one per line, in input order. `make_NAME.py` made them with the
real producer library (`.venv/bin/python tests/data/formats/make_NAME.py [OUT_DIR]`; ids and
times fixed, so a run reproduces the committed files byte for byte), writing the twin from its
own inputs, never from our decoder. Every sample has its generator: none is typed by hand. A
test that needs an edge case edits a parsed copy of a sample (tests/unit/test_formats_records.py).
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


def sample_files(name: str) -> list[Path]:
    """The committed files of one sample: value, headers (if any), native twin."""
    candidates = [f"{name}.json", f"{name}.pb", f"{name}.headers.json", f"{name}.native.jsonl"]
    return [DATA / c for c in candidates if (DATA / c).exists()]


def generator(name: str) -> Path | None:
    script = DATA / f"make_{name}.py"
    return script if script.exists() else None
