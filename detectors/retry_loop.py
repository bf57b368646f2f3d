"""Retry loop: the same failing request hammered again and again (pure).

Evidence per minute: how often the most repeated request (its `request_fingerprint`, or the
failing operation when there is none) was sent, and what share of those calls failed. A
healthy client backs off (1, 2, 4, 8 s…): it cannot send one request more than a handful of
times a minute, and it stops. A loop sends it at a steady high rate, mostly failing. So the
score rises with the repeat count per minute, needs mostly errors, and grows with the number
of minutes in a row the same request keeps coming.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meterguard.detectors.base import MinuteDetector, Verdict
from meterguard.detectors.features import EventFacts, MinuteWindow

MAX_KEYS_PER_MINUTE = 256  # bounded state: a minute with more distinct requests is no loop


@dataclass(frozen=True)
class RetryConfig:
    repeats_half: float = 10.0  # repeats/min of one request that score 0.5 (20 -> 0.8)
    min_error_share: float = 0.5
    min_repeats: int = 8  # below this a minute is never a loop (a backoff's handful)


class RetryLoopDetector(MinuteDetector):
    name = "retry_loop"

    def __init__(self, config: RetryConfig | None = None) -> None:
        self.config = config or RetryConfig()
        # minute -> request key -> [calls, errors]; only minutes not yet scored
        self.counts: dict[int, dict[str, list[int]]] = {}
        self.streak_key: str | None = None
        self.streak_minutes = 0

    def observe_one(self, facts: EventFacts) -> None:
        key = facts.fingerprint
        if key is None:
            return
        minute = self.counts.setdefault(facts.minute, {})
        entry = minute.get(key)
        if entry is None:
            if len(minute) >= MAX_KEYS_PER_MINUTE:
                return
            entry = minute[key] = [0, 0]
        entry[0] += 1
        entry[1] += int(facts.is_error)

    def score_one(self, window: MinuteWindow) -> Verdict:
        cfg = self.config
        minute = self.counts.get(window.minute, {})
        key, (calls, errors) = max(
            minute.items(), key=lambda kv: (kv[1][1], kv[1][0], kv[0]), default=("", (0, 0))
        )
        share = errors / calls if calls else 0.0
        streak = self.streak_minutes + 1 if key and key == self.streak_key else 1
        score = 0.0
        if calls >= cfg.min_repeats and share >= cfg.min_error_share:
            x = calls / cfg.repeats_half * (1 + 0.25 * min(streak - 1, 4))
            score = x * x / (1 + x * x)
        evidence = {
            "request": key or None,
            "repeats": calls,
            "errors": errors,
            "error_share": round(share, 3),
            "minutes_in_a_row": streak,
        }
        reason = (
            (
                f"the same request sent {calls} times in a minute, {share:.0%} failing, "
                f"{streak} minute(s) in a row"
            )
            if score
            else ""
        )
        return Verdict(score=score, evidence=evidence, reason=reason)

    def learn_one(self, window: MinuteWindow, *, anomalous: bool = False) -> None:
        minute = self.counts.pop(window.minute, {})
        looping = [
            k
            for k, (c, e) in minute.items()
            if c >= self.config.min_repeats and e / c >= self.config.min_error_share
        ]
        if self.streak_key in looping:
            self.streak_minutes += 1
        elif looping:
            self.streak_key, self.streak_minutes = max(looping, key=lambda k: minute[k][1]), 1
        else:
            self.streak_key, self.streak_minutes = None, 0
        for old in [m for m in self.counts if m < window.minute]:
            del self.counts[old]  # a late straggler's minute is final already

    def to_state(self) -> dict[str, Any]:
        return {
            "counts": {str(m): v for m, v in self.counts.items()},
            "streak_key": self.streak_key,
            "streak_minutes": self.streak_minutes,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RetryLoopDetector:
        detector = cls()
        detector.counts = {
            int(m): {k: list(v) for k, v in keys.items()} for m, keys in state["counts"].items()
        }
        detector.streak_key = state["streak_key"]
        detector.streak_minutes = int(state["streak_minutes"])
        return detector
