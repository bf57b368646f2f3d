"""Retry loop: the same failing request hammered again and again (pure).

Right at every volume: nothing here is a number of calls. The statistic is, per minute, the
failures of the identity's most-failing request (its `request_fingerprint`, or the failing
operation when there is none). Its ordinary level is learnt from the identity's own minutes:
a busy service with a few request shapes and a 1 % error rate fails its top request a few
times every minute, a quiet key almost never.

A **loop** is one request failing, again and again, minute after minute. Evidence for it is
the Poisson likelihood ratio of that request's failures over its run (the consecutive minutes
it keeps failing) against the ordinary level: X·ln(X/M) − (X − M), X its failures and M the
ordinary level times the run's minutes. The same calibration as `spike`: `alert_evidence`
nats score 0.8 (e¹⁴ ≈ 10⁶ : 1).

* **No minute is conclusive alone**: a healthy client's backoff (0.1, 0.2, 0.4 … s) retries
  at most BACKOFF_ATTEMPTS times in a minute and then slows down and stops. A minute carries
  at most a third of an alert, or a half when the request failed more often than a backoff
  can: a loop alerts after two minutes of hammering, or three of a slow loop (a capped
  backoff retrying forever, once a minute), whatever the identity's volume.
* **The request that fails most** this minute carries the run: a busy service's ordinary
  failures move from request to request, a loop's stay on one.
* **Mostly failing**: the request's calls in the run fail at least `min_error_share` of the
  time; a busy request that succeeds is the spike detector's business.
* **The level is what the history vouches for**: learnt from N failures it is known to
  ±1/√N, so it is judged at its upper end (two standard errors), and never below half a
  failure over the minutes seen (a Jeffreys floor: a key that never failed is not "rate 0").
* A run survives one minute without the request (a once-a-minute loop's jitter can skip a
  minute) and ends after two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from meterguard.detectors.base import MinuteDetector, Verdict
from meterguard.detectors.features import EventFacts, IdentityContext, MinuteWindow

MAX_KEYS_PER_MINUTE = 256  # bounded state: a minute with more distinct requests is no loop
STATE_VERSION = 2
GAP_MINUTES = 1  # minutes without the request that a run survives
# The most attempts an exponential backoff makes within a minute: base 100 ms doubling, the
# first ten attempts span 0.1 x (2^10 - 1) = 102 s. A property of clients, not of volumes.
BACKOFF_ATTEMPTS = 10
HOLD_EVIDENCE = 0.25  # x alert_evidence: a run this sure keeps out of the level


@dataclass(frozen=True)
class RetryConfig:
    # Nats of evidence that score 0.8: as spike's (policy: per environment).
    alert_evidence: float = 14.0
    # "Mostly failing": a share, not a volume.
    min_error_share: float = 0.5
    # The ordinary level follows the identity over ~4 h: error bursts come and go with
    # upstream incidents, the request mix with the day.
    level_span_minutes: int = 240


def _share(failures: int) -> int:
    """Sixths of an alert one minute of the run may carry: a third, or a half when the request
    failed more often than any exponential backoff can retry in a minute."""
    return 3 if failures > BACKOFF_ATTEMPTS else 2


class RetryLoopDetector(MinuteDetector):
    name = "retry_loop"

    def __init__(self, config: RetryConfig | None = None) -> None:
        self.config = config or RetryConfig()
        # minute -> request key -> [calls, errors]; only minutes not yet scored
        self.counts: dict[int, dict[str, list[int]]] = {}
        self.minutes_seen = 0
        # EW level of the top request's failures per minute: [sum, weight]; and all failures
        # of top requests ever learnt (how much the level is worth).
        self.level = [0.0, 0.0]
        # EW sum of the squared top failures per minute (same weight as `level`): failures come
        # in clumps (a backoff's attempts), and the clump size is the dispersion.
        self.level_sq = 0.0
        self.failures_seen = 0.0
        # The run: its request; minutes, failures, calls, minutes since the request last came,
        # and the sixths of an alert its minutes may carry (_share).
        self.run_key: str | None = None
        self.run = [0, 0, 0, 0, 0]

    def configure(self, context: IdentityContext) -> None:
        params = context.detector_params.get(self.name)
        if params:
            overrides: dict[str, Any] = dict(params)  # the policy validated names and ranges
            self.config = replace(RetryConfig(), **overrides)

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

    # -- scoring ---------------------------------------------------------------------------
    def _expected(self) -> float:
        """The top request's ordinary failures per minute, at the upper end of what the
        history vouches for."""
        total, weight = self.level
        mean = total / weight if weight > 0 else 0.0
        floor = 0.5 / max(self.minutes_seen, 1)
        return max(mean, floor) * (1 + 2 / math.sqrt(max(self.failures_seen, 1.0)))

    def _dispersion(self) -> float:
        """Variance / mean of the top request's failures per minute (≥ 1): a backoff's three to
        five attempts arrive together, so its failures count as one clump, not five."""
        total, weight = self.level
        if weight <= 0 or total <= 0:
            return 1.0
        mean = total / weight
        return max(1.0, (self.level_sq / weight - mean * mean) / mean)

    def _next_run(self, window: MinuteWindow) -> tuple[str | None, list[int], int, int]:
        """The run after this minute, and the run request's (calls, errors) in it."""
        minute = self.counts.get(window.minute, {})
        key, run = self.run_key, list(self.run)
        calls, errors = minute.get(key, (0, 0)) if key is not None else (0, 0)
        most = max((e for _, e in minute.values()), default=0)
        if (
            calls and key is not None and errors >= most
        ):  # the run's request again (a success among the
            # failures of a loop is part of the loop; `min_error_share` judges the run)
            run = [
                run[0] + 1 + run[3],
                run[1] + errors,
                run[2] + calls,
                0,
                run[4] + (_share(errors) if errors else 0),
            ]
        elif not calls and key is not None and run[3] < GAP_MINUTES and most <= run[1] / run[0]:
            # a gap, unless another request fails more than the run does per minute
            run = [run[0], run[1], run[2], run[3] + 1, run[4]]
        else:  # no run, it ended, or another request fails more: that one starts a run
            key, (calls, errors) = max(
                minute.items(), key=lambda kv: (kv[1][1], kv[1][0], kv[0]), default=(None, (0, 0))
            )
            run = [1, errors, calls, 0, _share(errors)] if errors else [0, 0, 0, 0, 0]
            key = key if errors else None
        return key, run, calls, errors

    def _evidence(self, run: list[int]) -> float:
        minutes, failures, calls, _, present = run
        if not minutes or calls == 0 or failures / calls < self.config.min_error_share:
            return 0.0
        expected = self._expected() * minutes
        if failures <= expected:
            return 0.0
        phi = self._dispersion()  # judged in clumps: an over-dispersed Poisson ratio
        glr = (failures * math.log(failures / expected) - (failures - expected)) / phi
        # Each minute adds at most its share of an alert (in sixths, see _share).
        return min(glr, self.config.alert_evidence / 6 * present)

    def score_one(self, window: MinuteWindow) -> Verdict:
        if self.minutes_seen == 0:
            return Verdict(score=0.0)  # no history at all: nothing is "more than usual" yet
        key, run, calls, errors = self._next_run(window)
        # A minute without the request scores nothing (the run is kept: a once-a-minute loop
        # can skip one), so a loop's score ends with the loop.
        s = self._evidence(run) if calls else 0.0
        half = self.config.alert_evidence / 2
        score = s * s / (s * s + half * half)
        minutes, failures, run_calls = run[:3]
        evidence = {
            "request": key,
            "repeats": calls,
            "errors": errors,
            "minutes_in_a_row": minutes,
            "run_failures": failures,
            "error_share": round(failures / run_calls, 3) if run_calls else 0.0,
            "usual_failures_per_min": round(self._expected(), 4),
            "dispersion": round(self._dispersion(), 2),
            "evidence": round(s, 2),
        }
        reason = ""
        if score >= 0.5:
            reason = (
                f"the same request failed {failures} times in {minutes} minute(s) "
                f"({evidence['error_share']:.0%} of its calls), usually "
                f"{evidence['usual_failures_per_min']:g}/min"
            )
        return Verdict(score=score, evidence=evidence, reason=reason)

    def learn_one(self, window: MinuteWindow, *, anomalous: bool = False) -> None:
        minute = self.counts.get(window.minute, {})
        top = max((e for _, e in minute.values()), default=0)
        self.run_key, self.run, _, _ = self._next_run(window)
        # The level does not learn a run that is building (a quarter of an alert's evidence,
        # e^3.5 ~ 33:1), or a slow loop would teach it its own rate before it alerts.
        building = self._evidence(self.run) >= HOLD_EVIDENCE * self.config.alert_evidence
        if not (anomalous or building):
            keep = 1.0 - 2.0 / (self.config.level_span_minutes + 1)
            self.level = [self.level[0] * keep + top, self.level[1] * keep + 1.0]
            self.level_sq = self.level_sq * keep + top * top
            self.failures_seen += top
            self.minutes_seen += 1
        self.counts.pop(window.minute, None)
        for old in [m for m in self.counts if m < window.minute]:
            del self.counts[old]  # a late straggler's minute is final already

    # -- state -----------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {
            "v": STATE_VERSION,
            "counts": {str(m): v for m, v in self.counts.items()},
            "minutes_seen": self.minutes_seen,
            "level": self.level,
            "level_sq": self.level_sq,
            "failures_seen": self.failures_seen,
            "run_key": self.run_key,
            "run": self.run,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RetryLoopDetector:
        detector = cls()
        detector.counts = {
            int(m): {k: list(v) for k, v in keys.items()} for m, keys in state["counts"].items()
        }
        if state.get("v") != STATE_VERSION:
            return detector  # a rate-threshold checkpoint (before issue 10): relearn the level
        detector.minutes_seen = int(state["minutes_seen"])
        detector.level = [float(x) for x in state["level"]]
        detector.level_sq = float(state.get("level_sq", 0.0))
        detector.failures_seen = float(state["failures_seen"])
        detector.run_key = state["run_key"]
        detector.run = [int(x) for x in state["run"]]
        if len(detector.run) != 5:
            detector.run_key, detector.run = None, [0, 0, 0, 0, 0]
        return detector
