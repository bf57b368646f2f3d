"""Decode cost per input format: prints numbers, asserts nothing.

    .venv/bin/python benchmarks/decode_formats.py [--seconds 0.5]

Each captured sample in tests/data/formats/ (and its native twin, line by line) decoded
repeatedly in this one process: µs per message and per resulting event, side by side, plus
`decode()` vs `decode_message()` on native input (the cost of format detection).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from meterguard.models import utc_now
from meterguard.streams.decoding.decode import decode, decode_message

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "formats"


def per_call_us(call: Callable[[], object], seconds: float) -> float:
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(50):
            call()
        calls += 50
    return elapsed / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="per measurement")
    args = parser.parse_args()
    now = utc_now()
    head = f"{'sample':<26}{'format':<20}{'events':>7}{'µs/msg':>10}{'µs/event':>10}"
    print(f"{head}{'native µs/event':>17}")
    for path in sorted(DATA.glob("*.json")):
        if path.name.endswith(".headers.json"):
            continue
        name = path.name.removesuffix(".json")
        value = path.read_bytes()
        headers_file = DATA / f"{name}.headers.json"
        headers = (
            [(k, v.encode()) for k, v in orjson.loads(headers_file.read_bytes()).items()]
            if headers_file.exists()
            else None
        )
        result = decode_message(value, headers, now)
        events = len(result.events)
        us = per_call_us(lambda v=value, h=headers: decode_message(v, h, now), args.seconds)
        lines = (DATA / f"{name}.native.jsonl").read_bytes().splitlines()
        native_us = per_call_us(
            lambda ls=lines: [decode_message(line, None, now) for line in ls], args.seconds
        ) / max(1, len(lines))
        print(
            f"{name:<26}{result.format:<20}{events:>7}{us:>10.1f}{us / max(1, events):>10.1f}"
            f"{native_us:>17.1f}"
        )
    line = (DATA / "litellm_spend_logs_payload.native.jsonl").read_bytes().splitlines()[0]
    plain = per_call_us(lambda: decode(line, now), args.seconds)
    detected = per_call_us(lambda: decode_message(line, None, now), args.seconds)
    print(
        f"\nnative event: decode() {plain:.1f} µs, decode_message() {detected:.1f} µs "
        f"(detection costs {detected / plain:.2f}x)"
    )


if __name__ == "__main__":
    main()
