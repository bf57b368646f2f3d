"""Per-identity spike detector on calls, tokens and cost per minute (pure).

Right at every volume: nothing here is a number of calls, tokens or dollars. Each metric is
judged by its own distribution, learnt from the identity's history:

* **Expected value** of the minute: an exponentially weighted level (~1 h) whose estimate is
  shrunk towards the identity's day-long level by `prior_events` calls' worth of weight (a
  quiet key's hour holds too few calls to know its rate; a busy one's hour dominates), never
  below half a call over the identity's history (a Jeffreys prior: a key that never called
  is not "rate zero"), and raised to the minute-of-hour profile when a schedule recurs there
  (an hourly job's burst at :07 is normal once seen).
* **Dispersion** φ = variance / mean around that level (≥ 1 for call counts; ≥ the amount
  per call for tokens and cost, which arrive in per-call lumps). Dividing by φ turns any
  metric into "independent arrivals", so counts are judged as counts (over-dispersed Poisson)
  and amounts robustly. Three corrections keep φ honest: it is judged at its upper end for
  the history behind it (× 1 + 2√(2/N), N arrivals seen: a handful of sessions cannot show how
  big sessions get); over a run of minutes it is the long-run variance (× 1 + 2ρ, ρ the lag-1
  autocorrelation: sessions spill across minutes); and a minute teaches it only three minutes
  later, once it is clear it was a burst and not the first minute of a rise.
* **Schedule**: a minute-of-hour slot raises the expectation only where it stands four
  standard errors above the level (chance calls at :07 are no schedule); a surprising minute
  is remembered for an hour, so an hourly batch is expected at its second run.
* **Evidence accumulates** in a CUSUM of log-likelihood ratios for a k-fold rise, one per k in
  `min_ratio`, `min_ratio`², `min_ratio`³ (moderate shifts add up over minutes, huge ones
  quickly). One minute may carry at most a third of the evidence an alert needs unless the
  identity's ordinary minute already holds `min_ratio` independent arrivals (μ/φ): a quiet
  key's minute is one burst, and a single burst is never conclusive; a busy identity's minute
  is many independent calls and can be. Tokens and cost in a minute of ordinary calls carry
  a third at most too (a few large calls: per-call sizes are heavy-tailed), unless 27x.
* **Magnitude**: the rise over the evidence's run and over the last ~10 minutes, whichever is
  smaller, must reach `min_ratio` to score 0.8: a doubling (a deploy, a second consumer) is
  the everyday legitimate change and must not page, and a run of scattered blips is not a rise.

The score is the smaller of the evidence score and the magnitude score. Calibration: with
`alert_evidence` = 14 nats, a score of 0.8 means the minutes since the rise began are about
e¹⁴ ≈ 10⁶ times likelier under a `min_ratio`-fold (or larger) rate than under the identity's
own over-dispersed baseline: under the baseline, a CUSUM crosses that about once in 10⁶
minutes (Siegmund), i.e. well under one false spike per 1,000 identity-hours per metric.
Materiality (whether a statistically sure rise is worth waking someone or throttling) is the
policy's (`materiality` per environment), not this detector's.

A new identity has no history: until `warmup_minutes` it is judged against its peers' rates
(`IdentityContext.peer_rates`, same team and environment) when they are known, else not at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from meterguard.detectors.base import MinuteDetector, Verdict
from meterguard.detectors.features import IdentityContext, MinuteWindow
from meterguard.detectors.rate_state import RECENT, SLOTS, MetricState
from meterguard.detectors.robust import ratio_to_score
from meterguard.detectors.spike_evidence import Expected, Step, describe, ratio_of

METRICS = ("calls", "tokens", "cost_usd")
EVIDENCE_CEILING = 3.0  # x alert_evidence: scores 0.97
# x alert_evidence of evidence that the rate is back at the baseline (e^3.5 ~ 33:1) ends a
# rise: without it a big rise's surplus would keep the evidence high long after it ended.
END_EVIDENCE = 0.25
HOLD_EVIDENCE = 0.5  # x alert_evidence (e^7 ~ 1,000:1 for a rise): the baseline waits
# Minutes a squared deviation waits before it teaches the dispersion: a quiet key's minute
# carries at most a third of an alert, so a rise reaches HOLD_EVIDENCE within two minutes, and
# its first minutes must not teach the spread they are judged by (one minute of 6 calls on a
# 0.3 calls/min key doubled its dispersion and hid the rest of the runaway).
PENDING_MINUTES = 3
# x alert_evidence (e^3.5 ~ 33:1) of a min_ratio-fold rise: the level (not the spread) waits,
# or a quiet key's runaway raises its own expectation by a third before HOLD_EVIDENCE.
RISING_EVIDENCE = 0.25
STATE_VERSION = 2


@dataclass(frozen=True)
class SpikeConfig:
    # The smallest rise that is a spike: scores 0.8 at this ratio (policy: per environment).
    # Why 3: a doubling is the commonest legitimate change (deploy, replica, new consumer).
    min_ratio: float = 3.0
    # CUSUM evidence (nats) that scores 0.8: ~10^6 baseline minutes per false crossing (policy).
    alert_evidence: float = 14.0
    level_span_minutes: int = 60  # follows the daily rhythm, slowly enough to see a rise
    prior_span_minutes: int = 1440  # the identity's day-long level: the quiet key's prior
    dispersion_span_minutes: int = 240  # burstiness is a property of the workload: slow
    # The magnitude test's "recent" minutes: as many as hold `recent_arrivals` arrivals at a
    # `min_ratio`-fold rate (two minutes for a busy identity, up to an hour for a quiet key):
    # fewer and a quiet key's runaway flickers between empty minutes; more and a burst that is
    # over still looks like a rise.
    recent_arrivals: float = 3.0
    # Calls' worth of weight the day-long level adds to the hour's estimate: about the count
    # at which a Poisson rate is known to ±30 %. A statistical constant, not a volume.
    prior_events: float = 10.0
    # One full hour-of-clock cycle: until the profile has seen every minute of the hour, an
    # hourly job's first burst would look like a spike.
    warmup_minutes: int = 60
    profile_alpha: float = 0.3

    @property
    def bank(self) -> tuple[float, ...]:
        return (self.min_ratio, self.min_ratio**2, self.min_ratio**3)


class SpikeDetector(MinuteDetector):
    name = "spike"

    def __init__(self, config: SpikeConfig | None = None) -> None:
        self.config = config or SpikeConfig()
        self.metrics = {m: MetricState(len(self.config.bank)) for m in METRICS}
        self.minutes_seen = 0
        self.peer_rates: dict[str, float] = {}
        self._pending: tuple[MinuteWindow, dict[str, Step]] | None = None

    def configure(self, context: IdentityContext) -> None:
        params = context.detector_params.get(self.name)
        if params:
            overrides: dict[str, Any] = dict(params)  # the policy validated names and ranges
            self.config = replace(SpikeConfig(), **overrides)
        self.peer_rates = dict(context.peer_rates or {})

    # -- scoring ---------------------------------------------------------------------------
    def score_one(self, window: MinuteWindow) -> Verdict:
        steps = self._steps(window)
        cold = self.minutes_seen < self.config.warmup_minutes
        metric = max(steps, key=lambda m: steps[m].score) if steps else ""
        score = steps[metric].score if metric else 0.0
        evidence: dict[str, Any] = {"metric": metric if score > 0 else ""}
        evidence.update({m: s.detail for m, s in steps.items()})
        reason = describe(metric, steps[metric].detail, cold) if score > 0 else ""
        excess = {m: max(0.0, s.value - s.expected.mean) for m, s in steps.items()}
        return Verdict(score=score, evidence=evidence, reason=reason, cold=cold, excess=excess)

    def _steps(self, window: MinuteWindow) -> dict[str, Step]:
        if self._pending is not None and self._pending[0] == window:
            return self._pending[1]
        cfg = self.config
        inflation = self._history_inflation()  # the calls history: once per minute
        calls = self._expected("calls", window, inflation)
        arrivals = 1.0 if calls is None else calls.arrivals  # per ordinary minute
        # A minute is conclusive alone only if an ordinary one holds at least `min_ratio`
        # independent arrivals: then a minute at the smallest alerting rise holds min_ratio²
        # of them, and no single burst can make it. Otherwise it carries a third (and up, with
        # the share): a quiet key's minute is one burst, burst sizes are heavy-tailed and its
        # history has seen few, so at least three minutes of evidence are needed (measured:
        # a half let two big sessions alert, 57 false episodes over three wide-world seeds,
        # a third 16, the same runaways caught).
        share = arrivals / cfg.min_ratio
        cap = cfg.alert_evidence / 3 * (1 + 2 * share) if share < 1 else math.inf
        cold = self.minutes_seen < cfg.warmup_minutes
        if cold:
            cap = cfg.alert_evidence / 2  # a newcomer's minute is its first data point
        wanted = cfg.recent_arrivals / (cfg.min_ratio * max(arrivals, 1e-9))
        recent = int(min(RECENT, max(1, math.ceil(wanted))))
        # Tokens and cost in a minute whose calls are ordinary come from a few larger calls:
        # per-call sizes are heavy-tailed and known from few samples, so such a minute carries
        # a third of an alert at most (every call growing, e.g. an agent's context, alerts in
        # three minutes), unless it holds min_ratio³ (27x) its expected amount: that is not
        # a tail of per-call sizes (a log-normal of σ 1 reaches it once in ~10⁴ calls).
        ordinary_calls = calls is None or window.calls <= cfg.min_ratio * calls.mean
        steps = {}
        for metric in METRICS:
            expected = calls if metric == "calls" else self._expected(metric, window, inflation)
            if expected is not None:
                value = window.metric(metric)
                limit = cap
                if metric != "calls" and ordinary_calls:
                    huge = value >= cfg.min_ratio**3 * expected.mean
                    limit = cap if huge else min(cap, cfg.alert_evidence / 3)
                steps[metric] = self._step(metric, value, expected, limit, recent, cold)
        self._pending = (window, steps)
        return steps

    def _expected(
        self, metric: str, window: MinuteWindow, history_inflation: float = 1.0
    ) -> Expected | None:
        cfg, state = self.config, self.metrics[metric]
        if self.minutes_seen < cfg.warmup_minutes:
            peer = self.peer_rates.get(metric)
            peer_phi = self.peer_rates.get(f"{metric}_phi", 1.0)
            return Expected(peer, max(peer_phi, 1e-12), peer) if peer else None
        calls = self.metrics["calls"]
        per_call = 1.0 if metric == "calls" else ratio_of(state.prior.mean, calls.prior.mean)
        if not per_call or not math.isfinite(per_call):
            return None  # never seen in this metric (e.g. calls without tokens): no yardstick
        # Half a call over the identity's whole history (Jeffreys), in this metric's units.
        floor = 0.5 / max(calls.prior.n, 1.0) * per_call
        weight = cfg.prior_events / max(calls.prior.mean, 0.5 / max(calls.prior.n, 1.0))
        mean = (state.level.x + weight * state.prior.mean) / (state.level.n + weight)
        mean = max(mean, floor)
        level = mean
        slot_mean, slot_n, slot_burst = (row[window.minute % SLOTS] for row in state.profile)
        if slot_n >= 1:
            # The slot's average is a schedule only where it stands out of its own noise: four
            # standard errors of an exponentially weighted mean of this identity's minutes (60
            # slots are tested every hour, and counts at a fraction of a call are skewed: a
            # 0.2 calls/min key shows a 3-call minute about once in 4 hours). A quiet key's
            # chance calls at :07 an hour ago are no schedule, and raising every such slot hid
            # a third of a quiet key's runaway minutes.
            a = cfg.profile_alpha
            spread = max(1.0, state.var.mean / mean) * mean if mean > 0 else 0.0
            if slot_mean > mean + 4 * math.sqrt(spread * a / (2 - a)):
                mean = float(slot_mean)
            mean = max(mean, float(slot_burst))
        lump = 1.0
        if metric != "calls":
            # Sizes vary at least like an exponential's (CV 1: E[t²]/E[t] = 2 E[t]) until the
            # identity's own minutes show more: prompt and completion sizes are heavy-tailed,
            # and a short history underestimates a heavy tail.
            lump = max(2 * per_call, ratio_of(state.per_call_sq.mean, state.per_call.mean) or 0.0)
        phi = max(lump, state.var.mean / mean) if mean > 0 else lump
        inflate = history_inflation
        # Evidence adds up over minutes, and minutes are not independent: sessions spill into
        # the next minute and the level wanders. Over a run of minutes the variance of the sum
        # is the minute's x (1 + 2 rho), rho the lag-1 autocorrelation of this identity's
        # minutes (the long-run variance of a time series; later lags left out).
        # Measured (offline harness, wide world, three seeds): spike false alerts 8 -> 6 in
        # 4,099 identity-hours, the same runaways caught; a Poisson key (rho ~ 0) is as before.
        if state.var.mean > 0:
            rho = min(max(state.cov.mean / state.var.mean, 0.0), 0.9)
            inflate *= 1 + 2 * rho
        return Expected(mean, phi * inflate, level, mean / phi)

    def _history_inflation(self) -> float:
        """1 + 2√(2/N), N the independent arrivals the history holds (its calls over their
        dispersion): a dispersion learnt from N arrivals is known to about ±√(2/N) (the spread
        of a sample variance), so it is judged at its upper end, two standard errors. A bursty
        key whose history holds a handful of sessions has seen too few to know how big they
        get (measured, offline harness, wide world, three seeds: 13 false spikes in 4,099
        identity-hours without this, 2 with it, the same runaways caught)."""
        calls = self.metrics["calls"]
        phi = max(1.0, calls.var.mean / max(calls.level.mean, 1e-12))
        return 1 + 2 * math.sqrt(2 / max(calls.prior.x / phi, 1.0))

    def _step(
        self, metric: str, value: float, expected: Expected, cap: float, recent: int, cold: bool
    ) -> Step:
        cfg, state = self.config, self.metrics[metric]
        x, mu = value / expected.phi, expected.mean / expected.phi
        cusum = [row[:] for row in state.cusum]
        for i, k in enumerate(cfg.bank):
            llr = min(x * math.log(k) - (k - 1) * mu, cap)
            # Bounded: evidence past certainty adds nothing, and a bounded sum sees the end of
            # a rise within minutes instead of draining a huge surplus for hours.
            s = min(max(0.0, cusum[0][i] + llr), EVIDENCE_CEILING * cfg.alert_evidence)
            over = max(0.0, cusum[3][i] - llr) if s else 0.0
            if over >= END_EVIDENCE * cfg.alert_evidence:
                s = 0.0  # minutes back at the baseline outweigh the rise: it is over
            run = (s, cusum[1][i] + value, cusum[2][i] + expected.mean, over)
            for row, part in zip(cusum, run if s else (0.0, 0.0, 0.0, 0.0), strict=True):
                row[i] = part
        best = max(range(len(cusum[0])), key=cusum[0].__getitem__)  # the first largest
        s = cusum[0][best]
        half = cfg.alert_evidence / 2
        strength = s * s / (s * s + half * half)
        run_ratio = ratio_of(cusum[1][best], cusum[2][best]) or 0.0
        start = RECENT - recent + 1  # the minutes before this one that count as recent
        earlier_x = sum(state.recent[0][start:]) if recent > 1 else 0.0
        earlier_mu = sum(state.recent[1][start:]) if recent > 1 else 0.0
        recent_ratio = ratio_of(earlier_x + value, earlier_mu + expected.mean) or 0.0
        ratio = min(run_ratio, recent_ratio)
        # Against peers (a newcomer) the rise must be min_ratio² over the busiest of
        # them: the yardstick is a population whose members differ by orders of magnitude,
        # not the identity's own history.
        needed = cfg.min_ratio**2 if cold else cfg.min_ratio
        size = ratio_to_score(ratio, math.sqrt(needed))
        detail = {
            "value": value,
            "baseline": round(expected.mean, 6),
            "ratio": round(ratio, 2),
            "evidence": round(s, 2),
            "dispersion": round(expected.phi, 3),
        }
        # Hold the baseline while a rise builds: half an alert's evidence of a rise at least
        # min_ratio over its run. Without this a quiet key's runaway, whose evidence grows a
        # little each minute, would leak into its own baseline before it scores.
        hold = s >= HOLD_EVIDENCE * cfg.alert_evidence and run_ratio >= cfg.min_ratio
        rising = s >= RISING_EVIDENCE * cfg.alert_evidence and run_ratio >= cfg.min_ratio
        return Step(value, expected, cusum, min(strength, size), detail, hold, rising)

    # -- learning --------------------------------------------------------------------------
    def learn_one(self, window: MinuteWindow, *, anomalous: bool = False) -> None:
        """The evidence and the recent average always move (they *are* the evidence); the
        level and dispersion do not learn minutes flagged anomalous, so a burst leaves the
        baseline as it was. The minute-of-hour profile learns every minute: what recurs at
        :07 every hour is a schedule, and only the profile can learn it."""
        cfg = self.config
        steps = self._steps(window)
        self._pending = None
        warm = self.minutes_seen >= cfg.warmup_minutes  # cold minutes are always learnt
        building = warm and any(step.hold for step in steps.values())
        rising = warm and any(step.rising for step in steps.values())
        held = anomalous or building
        if building:  # the minutes before were the start of this rise, not the spread
            for state in self.metrics.values():
                state.pending.clear()
        for metric, state in self.metrics.items():
            value = window.metric(metric)
            step = steps.get(metric)
            if step is not None:
                state.cusum = step.cusum
                for row, latest in zip(state.recent, (value, step.expected.mean), strict=True):
                    del row[0]
                    row.append(latest)
            if not held:
                # Spread around what the minute was expected to hold, the level or the
                # schedule at this minute of the hour, whichever is nearer: a recurring cron
                # burst is not noise, and neither is a remembered burst that did not recur.
                if step is not None and warm:
                    to_mean, to_level = value - step.expected.mean, value - step.expected.level
                    near = to_mean if abs(to_mean) <= abs(to_level) else to_level
                    # Learnt PENDING_MINUTES later, once it is clear the minute was a burst
                    # and not the start of a rise (which drops them: see `building`), with its
                    # product with the next minute's (lag-1 autocovariance).
                    state.pending.append(near)
                    if len(state.pending) > PENDING_MINUTES:
                        old = state.pending.pop(0)
                        state.var.add(old * old, cfg.dispersion_span_minutes)
                        state.cov.add(old * state.pending[0], cfg.dispersion_span_minutes)
                elif state.level.n > 0:  # a newcomer's spread is around its own level, never
                    # around its peers' (scoring against them must not teach it their rate)
                    state.var.add((value - state.level.mean) ** 2, cfg.dispersion_span_minutes)
            if not (held or rising):
                state.level.add(value, cfg.level_span_minutes)
                state.prior.add(value, cfg.prior_span_minutes)
                if window.calls and metric != "calls":
                    each = value / window.calls
                    state.per_call.add(each, cfg.prior_span_minutes)
                    state.per_call_sq.add(each * each, cfg.prior_span_minutes)
            slot = window.minute % SLOTS
            mean, n = state.profile[0][slot], state.profile[1][slot]
            weight = max(cfg.profile_alpha, 1.0 / (n + 1))
            # Remember a burst (a minute this detector found surprising, or a schedule that
            # recurred above the level) for an hour on: if it recurs, it is a schedule.
            recurred = step is not None and step.expected.scheduled and value > step.expected.level
            surprising = step is not None and step.score >= 0.5
            keep = anomalous or recurred or surprising
            learnt = (mean + weight * (value - mean), n + 1, value if keep else 0.0)
            for row, part in zip(state.profile, learnt, strict=True):
                row[slot] = part
        if not held:
            self.minutes_seen += 1
            if self.minutes_seen == cfg.warmup_minutes:
                # Evidence gathered against peers is not evidence against the identity's own
                # baseline, which starts now.
                for state in self.metrics.values():
                    state.cusum = [[0.0] * len(row) for row in state.cusum]
                    state.recent = [[0.0] * RECENT, [0.0] * RECENT]

    def rebase(self, minutes: int) -> None:
        """A level that persisted `minutes` (the learning filter's verdict) is the new normal:
        the level and the day-long prior become those minutes' average, the evidence ends."""
        span = max(1, min(minutes, RECENT))
        for state in self.metrics.values():
            average = sum(state.recent[0][-span:]) / span
            for ew in (state.level, state.prior):
                ew.x = average * ew.n
            state.cusum = [[0.0] * len(row) for row in state.cusum]

    def baseline(self, metric: str) -> float:
        """The learnt level in the metric's own units (for throttle limits)."""
        return self.metrics[metric].level.mean

    def levels(self) -> dict[str, float]:
        """Per metric, the level (`baseline`) and its dispersion φ without the schedule, named
        as `IdentityContext.peer_rates` reads them: what a warm identity tells its peers."""
        calls, out = self.metrics["calls"], {}
        for metric, m in self.metrics.items():
            each = ratio_of(m.prior.mean, calls.prior.mean) if metric != "calls" else None
            lump = 1.0
            if each and math.isfinite(each):  # as in _expected: tokens, cost come in lumps
                lump = max(2 * each, ratio_of(m.per_call_sq.mean, m.per_call.mean) or 0.0)
            level = out[metric] = m.level.mean
            out[f"{metric}_phi"] = max(lump, m.var.mean / level) if level > 0 else lump
        return out

    # -- state -----------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {
            "v": STATE_VERSION,
            "minutes_seen": self.minutes_seen,
            "metrics": {m: s.to_state() for m, s in self.metrics.items()},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], config: SpikeConfig | None = None) -> SpikeDetector:
        detector = cls(config)
        if state.get("v") != STATE_VERSION:
            # A checkpoint of the square-root-space detector (before issue 10): its level does
            # not translate; the identity relearns its baseline within `warmup_minutes`.
            return detector
        detector.minutes_seen = int(state["minutes_seen"])
        bank = len(detector.config.bank)
        detector.metrics = {m: MetricState.from_state(state["metrics"][m], bank) for m in METRICS}
        return detector
