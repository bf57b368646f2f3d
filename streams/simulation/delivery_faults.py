"""Delivery faults on a generated stream: what gateways, collectors and consumers do to it.

`with_faults(events, seed)` returns the events as a flaky path would deliver them:

* **redeliveries**: a share of the events again, with the same `event_id`, some right after
  the first delivery (the same batch), the rest anywhere later; some of the untraced ones with
  other figures (a gateway that re-sent a recomputed record: the first occurrence counts);
* **a late flush**: copies of a share of the untraced events under new ids (`flush-<id>`),
  after the end of the run: late for their identities, counted in the hour they belong to;
* **spans out of order**: a share of the multi-span traces delivered children first, in
  place, and a share held back and delivered children first after the end of the run (late,
  and their chains wait for their roots).

Traced spans are redelivered only as exact copies, so a span's first delivery carries its
generated figures and the chain labels (chains.py) stay the costs the roots must be credited.
Pure and deterministic from the seed (FAULT_STREAM).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from meterguard.streams.simulation.random_streams import FAULT_STREAM

Event = dict[str, Any]


@dataclass(frozen=True)
class Faults:
    redeliver: float = 0.03  # share of events delivered twice
    soon: float = 0.5  # of the redeliveries: right after the first delivery
    changed: float = 0.3  # of the untraced redeliveries: with other figures
    late_flush: float = 0.01  # share of untraced events flushed again under new ids
    reversed_traces: float = 0.2  # share of multi-span traces delivered children first
    held_traces: float = 0.05  # ... children first, after the end of the run


@dataclass(frozen=True)
class FaultLog:
    """What `with_faults` did."""

    redelivered: int
    changed: int
    flushed: int
    reversed_traces: int
    held_traces: int
    held_spans: int

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def with_faults(
    events: list[Event], seed: int, faults: Faults | None = None
) -> tuple[list[Event], FaultLog]:
    f = faults if faults is not None else Faults()
    rng = np.random.default_rng([seed, FAULT_STREAM])
    n = len(events)
    slot = np.arange(n, dtype=float)  # where each generated event is delivered first
    by_trace: dict[str, list[int]] = {}
    for i, e in enumerate(events):
        if e.get("trace_id") and e.get("span_id"):
            by_trace.setdefault(e["trace_id"], []).append(i)
    multi = [idx for idx in by_trace.values() if len(idx) > 1]
    pick = rng.random(len(multi))
    held = [idx for idx, p in zip(multi, pick, strict=True) if p < f.held_traces]
    turned = [
        idx
        for idx, p in zip(multi, pick, strict=True)
        if f.held_traces <= p < f.held_traces + f.reversed_traces
    ]
    for idx in turned:
        slot[idx] = slot[idx][::-1]  # the same places, children first
    tail = float(n + 1)
    for h, idx in enumerate(held):
        slot[idx] = tail + h + np.arange(len(idx))[::-1] / (len(idx) + 1)
    end = tail + len(held)
    items: list[tuple[float, int, Event]] = [(float(slot[i]), i, e) for i, e in enumerate(events)]

    untraced = np.array([not e.get("trace_id") for e in events], dtype=bool)
    flush = np.flatnonzero(untraced & (rng.random(n) < f.late_flush))
    for k, i in enumerate(flush.tolist()):
        copy = {**events[i], "event_id": f"flush-{events[i]['event_id']}"}
        items.append((end + (k + 1) / (flush.size + 1), n + k, copy))

    again = np.flatnonzero(rng.random(n) < f.redeliver)
    soon = rng.random(again.size) < f.soon
    changed = untraced[again] & (rng.random(again.size) < f.changed)
    last = end + 1.0
    for k, i in enumerate(again.tolist()):
        first = float(slot[i])
        at = first + 0.5 * rng.random() if soon[k] else first + (last - first) * rng.random()
        copy = _changed(events[i]) if changed[k] else dict(events[i])
        items.append((at, n + flush.size + k, copy))
    items.sort(key=lambda item: (item[0], item[1]))
    log = FaultLog(
        redelivered=int(again.size),
        changed=int(changed.sum()),
        flushed=int(flush.size),
        reversed_traces=len(turned),
        held_traces=len(held),
        held_spans=sum(len(idx) for idx in held),
    )
    return [e for _, _, e in items], log


def _changed(event: Event) -> Event:
    """A re-sent record whose figures were recomputed: more tokens, another cost."""
    cost = float(event.get("cost_usd", 0))
    return {
        **event,
        "input_tokens": int(event.get("input_tokens", 0)) + 7,
        "cost_usd": round(cost * 2 + 0.0001, 8),
    }
