"""Labelled minute-by-minute traffic per detector, for the registry-wide conformance suite.

Each scenario is what that detector exists to catch, in ordinary surroundings: a list of
minutes, each with its events (EventFacts, for event-level detectors), its aggregate window
and a label (True: the incident is visible in this minute), plus the policy context.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from meterguard.detectors.features import EventFacts, IdentityContext, MinuteWindow

T0 = 29_000_040  # an epoch minute at :00 of the hour (2025-02-20T13:00Z)
TOKENS_PER_CALL = 800
NANO_USD_PER_TOKEN = 2_000  # $2 per million tokens
WARM_UP = 120  # minutes before any incident and before labels count


@dataclass
class Minute:
    events: list[EventFacts]
    window: MinuteWindow
    label: bool


@dataclass
class Scenario:
    minutes: list[Minute]
    context: IdentityContext = field(default_factory=IdentityContext)


def minute_of(m: int, calls: list[EventFacts], label: bool) -> Minute:
    tokens = sum(e.tokens for e in calls)
    window = MinuteWindow(
        minute=m,
        calls=len(calls),
        input_tokens=tokens * 3 // 4,
        output_tokens=tokens - tokens * 3 // 4,
        cost_nano_usd=sum(e.cost_nano_usd for e in calls),
        errors=sum(e.is_error for e in calls),
    )
    return Minute(calls, window, label)


def call(m: int, k: int, rng: np.random.Generator, **over) -> EventFacts:
    tokens = int(over.pop("tokens", TOKENS_PER_CALL))
    price = over.pop("price", NANO_USD_PER_TOKEN)
    base = dict(
        time_ms=m * 60_000 + k,
        minute=m,
        is_error=bool(rng.random() < 0.01),
        fingerprint=f"fp{int(rng.integers(0, 40))}",
        model="small-model",
        workload="api",
        source="10.0.0.1",
        tokens=tokens,
        cost_nano_usd=tokens * price,
    )
    return EventFacts(**{**base, **over})


def ordinary(m: int, rate: float, rng: np.random.Generator) -> list[EventFacts]:
    return [call(m, k, rng) for k in range(int(rng.poisson(rate)))]


def spike(seed: int) -> Scenario:
    rng = np.random.default_rng(seed)
    rate = [2, 3, 5, 10, 40][seed % 5]
    out, m = [], 0
    while m < 360:
        if m > WARM_UP and rng.random() < 0.03:
            for _ in range(int(rng.integers(1, 5))):
                out.append(
                    minute_of(T0 + m, ordinary(T0 + m, rate * rng.uniform(20, 30), rng), True)
                )
                m += 1
        out.append(minute_of(T0 + m, ordinary(T0 + m, rate, rng), False))
        m += 1
    return Scenario(out)


def slow_ramp(seed: int) -> Scenario:
    rng = np.random.default_rng(seed)
    rate = [20, 40, 80][seed % 3]
    out = []
    for m in range(480):
        level = 1.0
        if 240 <= m < 420:  # 1x -> 7x over three hours
            level = 1 + 6 * (m - 240) / 180
        # Labelled once it has at least tripled: before that it is indistinguishable.
        out.append(minute_of(T0 + m, ordinary(T0 + m, rate * level, rng), level >= 3))
    return Scenario(out)


def retry_loop(seed: int) -> Scenario:
    rng = np.random.default_rng(seed)
    out, m = [], 0
    while m < 360:
        events = ordinary(T0 + m, 8, rng)
        looping = m > WARM_UP and rng.random() < 0.02
        if looping:
            for length in range(int(rng.integers(2, 6))):
                loop = [
                    call(
                        T0 + m,
                        1000 + k,
                        rng,
                        fingerprint="same-request",
                        is_error=k % 10 != 0,
                        tokens=50,
                    )
                    for k in range(int(rng.integers(20, 90)))
                ]
                # A loop is a request failing minute after minute: its first minute alone is
                # one burst (retry_loop.py), so it is labelled from its second (this loop fails
                # more often than a backoff can: two minutes are enough).
                out.append(minute_of(T0 + m, ordinary(T0 + m, 8, rng) + loop, length > 0))
                m += 1
            continue
        if rng.random() < 0.05:  # a healthy backoff: 5 failures, widening gaps, then success
            events += [
                call(T0 + m, 2000 + k, rng, fingerprint="flaky", is_error=k < 5) for k in range(6)
            ]
        out.append(minute_of(T0 + m, events, False))
        m += 1
    return Scenario(out)


def drift(seed: int) -> Scenario:
    rng = np.random.default_rng(seed)
    out = []
    for m in range(360):
        events = ordinary(T0 + m, 5, rng)
        label = False
        if m > WARM_UP and m % 50 == 0:  # a new workload every 50 minutes
            events.append(call(T0 + m, 999, rng, workload=f"stranger-{m}"))
            label = True
        if m > WARM_UP and m % 50 == 25:  # a jump to a 20x pricier model
            events.append(call(T0 + m, 998, rng, model=f"frontier-{m}", price=40_000))
            label = True
        out.append(minute_of(T0 + m, sorted(events, key=lambda e: e.time_ms), label))
    return Scenario(out)


def agent_chain(seed: int) -> Scenario:
    rng = np.random.default_rng(seed)
    out, m = [], 0
    while m < 360:
        # Ordinary: called by one of two known agents, at depth 1-3, small fan-out.
        events = [
            call(
                T0 + m,
                k,
                rng,
                caller=f"agent-{int(rng.integers(0, 2))}",
                depth=int(rng.integers(1, 4)),
                fanout=int(rng.integers(1, 4)),
            )
            for k in range(int(rng.poisson(6)))
        ]
        looping = m > WARM_UP and rng.random() < 0.03
        if looping:  # a loop through this agent: cycles, deep, wide, via a new caller
            events += [
                call(
                    T0 + m,
                    100 + k,
                    rng,
                    caller="agent-loop",
                    depth=8 + k,
                    cycle=True,
                    fanout=25,
                    trace_root="agent-root",
                )
                for k in range(int(rng.integers(3, 9)))
            ]
        out.append(minute_of(T0 + m, events, looping))
        m += 1
    return Scenario(out)


def budget(seed: int) -> Scenario:
    rng = np.random.default_rng(seed)
    rate = 10.0
    usd_per_minute = rate * TOKENS_PER_CALL * NANO_USD_PER_TOKEN / 1e9
    daily = usd_per_minute * 600  # lasts 600 ordinary minutes; the burn below reaches it first
    out, spent = [], 0.0
    for m in range(420):
        burning = m >= 200
        events = ordinary(T0 + m, rate * (6 if burning else 1), rng)
        current = minute_of(T0 + m, events, False)
        spent += current.window.cost_usd
        # The warning is due at 80 % spent, or earlier once the forecast reaches the cap.
        current.label = burning and spent >= 0.5 * daily
        out.append(current)
    return Scenario(out, IdentityContext(daily_budget_usd=daily))


SCENARIOS: dict[str, Callable[[int], Scenario]] = {
    "spike": spike,
    "slow_ramp": slow_ramp,
    "retry_loop": retry_loop,
    "agent_chain": agent_chain,
    "drift": drift,
    "budget": budget,
}
