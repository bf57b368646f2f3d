"""The wide simulated world (streams/simulation/wide_*.py): volume bands, noise, traps and
stratified incidents. Pure and fast: the plan is checked directly, and only chosen minutes of
traffic are drawn (a minute rebuilt on its own matches the full run)."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pytest

from meterguard.models import MeteringEvent
from meterguard.streams.simulation import simulate
from meterguard.streams.simulation.config import WIDE_INCIDENT_KINDS, SimConfig
from meterguard.streams.simulation.volume_bands import BAND_LABELS, BAND_RANGES, band_of
from meterguard.streams.simulation.wide_incidents import (
    INCIDENT_GAP,
    RATE_CEILING,
    RETRY_FLOOR,
)
from meterguard.streams.simulation.wide_population import (
    BAND_CAPS,
    COLD,
    CRON,
    DEPLOY_DOWN,
    DEPLOY_UP,
    PLAIN,
    QUIET,
    band_counts,
    rhythm,
    trap_factor,
    wide_start,
)
from meterguard.streams.simulation.wide_world import (
    WIDE_DEFAULT_IDENTITIES,
    WIDE_DEFAULT_MINUTES,
    WidePlan,
)

START = datetime(2025, 1, 6, 5, 50, tzinfo=UTC)
WARMUP = 90


def wide(**overrides) -> SimConfig:
    fields = {
        "world": "wide",
        "identities": WIDE_DEFAULT_IDENTITIES,
        "start": START,
        "minutes": WIDE_DEFAULT_MINUTES,
        "seed": 11,
        "incidents": 30,
        "incident_after_minutes": WARMUP,
        "incident_kinds": WIDE_INCIDENT_KINDS,
        "traps": True,
    } | overrides
    return SimConfig(**fields)


@pytest.fixture(scope="module")
def plan() -> WidePlan:
    return WidePlan(wide())


def minute_of(event: dict, plan: WidePlan) -> int:
    at = datetime.fromisoformat(event["event_time"])
    return (at - plan.start) // timedelta(minutes=1)


def test_base_rates_span_five_decades_band_by_band(plan):
    pop = plan.pop
    assert 0.01 <= pop.rate.min() < 0.02 and 300 < pop.rate.max() <= 500
    for b, (lo, hi) in enumerate(BAND_RANGES):
        rates = pop.rate[pop.band == b]
        assert rates.size >= 7, BAND_LABELS[b]
        assert ((rates >= lo) & (rates < hi)).all()
        assert all(band_of(r) == b for r in rates)
        # Stratified: one rate per equal slice of the band's log-range.
        slices = np.floor((np.log(rates) - np.log(lo)) / (np.log(hi) - np.log(lo)) * rates.size)
        assert sorted(slices.tolist()) == list(range(rates.size))
    counts = band_counts(WIDE_DEFAULT_IDENTITIES)
    assert sum(counts) == WIDE_DEFAULT_IDENTITIES
    assert counts[3] == BAND_CAPS[3] and counts[4] == BAND_CAPS[4]  # the busy bands are capped


def test_tokens_prices_and_noise_vary_per_identity(plan):
    pop = plan.pop
    assert 50 <= pop.tokens.min() < 200 and 10_000 < pop.tokens.max() <= 50_000
    assert len(set(pop.model.tolist())) >= 5  # several price tiers
    assert len(set(np.round(pop.session, 3).tolist())) > 100  # per-identity burst sizes
    assert (pop.level_sigma > 0).all()


def test_a_seed_is_deterministic_and_another_seed_differs():
    cfg = wide(identities=40, minutes=20, incidents=0)
    first = [orjson.dumps(e) for e in simulate.generate(cfg)]
    assert first == [orjson.dumps(e) for e in simulate.generate(cfg)]
    other = wide(identities=40, minutes=20, incidents=0, seed=12)
    assert first != [orjson.dumps(e) for e in simulate.generate(other)]
    assert simulate.incidents(wide()) == simulate.incidents(wide())
    assert simulate.incidents(wide()) != simulate.incidents(wide(seed=12))


def test_a_minute_rebuilt_on_its_own_matches_the_full_run():
    cfg = wide(identities=40, minutes=15, incidents=0)
    events = list(simulate.generate(cfg))
    plan = WidePlan(cfg)
    minute_9 = [e for e in events if minute_of(e, plan) == 9]
    first_seq = int(minute_9[0]["event_id"].split("-")[1])
    assert plan.minute_events(9, first_seq) == minute_9


def test_the_start_is_a_seeded_weekday_and_hour_at_or_before_cfg_start():
    starts = [wide_start(wide(seed=s)) for s in range(40)]
    assert all(START - timedelta(days=7) < s <= START for s in starts)
    assert all(s.minute == START.minute for s in starts)
    assert len({s.weekday() for s in starts}) == 7
    assert len({s.hour for s in starts}) >= 15
    assert wide_start(wide(seed=3)) == wide_start(wide(seed=3))


def test_incidents_are_stratified_over_bands_and_kinds(plan):
    cells = Counter((w.label.kind, int(plan.pop.band[w.who])) for w in plan.incidents)
    assert cells == {(k, b): 2 for k in WIDE_INCIDENT_KINDS for b in range(len(BAND_LABELS))}
    assert [w.label for w in plan.incidents] == simulate.incidents(wide())
    assert all(plan.pop.role[w.who] == PLAIN for w in plan.incidents)  # never on a trap


def test_incidents_start_after_the_warm_up_and_never_overlap_on_one_identity(plan):
    by_host = defaultdict(list)
    for w in plan.incidents:
        assert WARMUP <= w.first < w.end <= plan.cfg.minutes
        assert w.label.start == plan.start + timedelta(minutes=w.first)
        assert w.label.end == plan.start + timedelta(minutes=w.end)
        assert w.label.identity == plan.pop.names[w.who]
        by_host[w.who].append((w.first, w.end))
    for windows in by_host.values():
        for (_, earlier_end), (later_start, _) in itertools.combinations(sorted(windows), 2):
            assert earlier_end + INCIDENT_GAP <= later_start


@pytest.mark.parametrize("seed", [11, 12, 13, 14, 15])
def test_incident_sizes_follow_their_rules_at_every_volume(seed):
    plan = WidePlan(wide(seed=seed))
    for w in plan.incidents:
        rate, minutes = plan.pop.rate[w.who], w.end - w.first
        if w.label.kind == "runaway_agent":
            assert 3 <= w.magnitude <= 50 and w.magnitude * rate <= RATE_CEILING + 1e-6
            assert 5 <= minutes <= 120
        elif w.label.kind == "retry_loop":
            assert RETRY_FLOOR <= w.retry_rate <= RATE_CEILING
            assert w.retry_rate == pytest.approx(w.magnitude * rate)
            assert w.magnitude >= 3 and 10 <= minutes <= 120
            assert 0.75 <= w.retry_error_share <= 0.97
        else:
            assert 5 <= w.magnitude <= 10 and 60 <= minutes <= 120


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_a_default_seed_stays_affordable(seed):
    assert WidePlan(wide(seed=seed)).expected_events() <= 1_500_000


def test_events_are_valid_metering_events_and_retry_loops_repeat_one_failing_request(plan):
    loop = next(w for w in plan.incidents if w.label.kind == "retry_loop" and w.retry_rate >= 5)
    in_loop = plan.minute_events(loop.first + 1, 0)
    events = in_loop + plan.minute_events(WARMUP, len(in_loop))
    ids = [e["event_id"] for e in events]
    assert len(set(ids)) == len(ids)
    for event in events:
        parsed = MeteringEvent.model_validate(event)
        assert parsed.environment == "prod" and parsed.model and parsed.provider
        assert isinstance(event["cost_usd"], float) and event["request_fingerprint"]
        assert (event["status"] == "error") == ("error_type" in event)
    times = [e["event_time"] for e in in_loop]
    assert times == sorted(times)
    looped = [
        e
        for e in in_loop
        if e["identity"] == loop.label.identity
        and e["request_fingerprint"] == loop.retry_fingerprint
    ]
    # A steady loop: its rate every minute (give or take one call), mostly failing.
    assert abs(len(looped) - loop.retry_rate) <= 0.02 * loop.retry_rate + 1
    assert sum(e["status"] == "error" for e in looped) >= 0.6 * len(looped)


def test_traps_are_in_every_band(plan):
    pop = plan.pop
    for b in range(len(BAND_LABELS)):
        roles = Counter(pop.role[pop.band == b].tolist())
        assert all(roles[r] == 1 for r in (DEPLOY_UP, DEPLOY_DOWN, CRON, COLD))
    assert (pop.role == QUIET).sum() >= 2 and (pop.band[pop.role == QUIET] == 0).all()


def test_deploy_steps_are_sustained_and_1_5_to_2_fold(plan):
    pop = plan.pop
    for i in np.flatnonzero((pop.role == DEPLOY_UP) | (pop.role == DEPLOY_DOWN)):
        step = int(pop.step_minute[i])
        before = trap_factor(pop, step - 1, 0)[i]
        after = [trap_factor(pop, m, 0)[i] for m in (step, step + 30, plan.cfg.minutes - 1)]
        assert before == 1.0 and len(set(after)) == 1
        ratio = after[0] if pop.role[i] == DEPLOY_UP else 1 / after[0]
        assert 1.5 <= ratio <= 2.0
        assert WARMUP <= step <= plan.cfg.minutes - 60


def test_hourly_batches_burst_at_their_minute_and_cold_starts_appear_mid_run(plan):
    pop = plan.pop
    cron = int(np.flatnonzero((pop.role == CRON) & (pop.band == 2))[0])
    cold = int(np.flatnonzero((pop.role == COLD) & (pop.band == 3))[0])
    counts: Counter[tuple[str, int]] = Counter()
    first_cold = int(pop.step_minute[cold])
    minutes = [*range(120, 180), first_cold - 2, first_cold - 1, first_cold]
    for m in minutes:
        for e in plan.minute_events(m, 0):
            counts[e["identity"], m] += 1
    of_hour = {m: (plan.start_ms // 60_000 + m) % 60 for m in range(120, 180)}
    name, at = pop.names[cron], int(pop.cron_minute[cron])
    burst = [counts[name, m] for m in range(120, 180) if of_hour[m] == at]
    rest = [counts[name, m] for m in range(120, 180) if of_hour[m] != at]
    assert burst[0] >= 10 * max(1.0, float(np.mean(rest)))
    assert counts[pop.names[cold], first_cold - 1] == counts[pop.names[cold], first_cold - 2] == 0
    assert first_cold >= plan.cfg.minutes // 10 and counts[pop.names[cold], first_cold] > 0


def test_quiet_keys_call_in_bursts_of_three_to_five():
    plan = WidePlan(wide(identities=300, minutes=60, incidents=0))
    pop = plan.pop
    quiet = np.flatnonzero(pop.role == QUIET).tolist()
    pop.rate[quiet] = 0.2  # busier than they are, to see many bursts in a short test
    times = defaultdict(list)
    for m in range(60):
        for e in plan.minute_events(m, 0):
            times[e["identity"]].append(datetime.fromisoformat(e["event_time"]).timestamp())
    bursts = []
    for i in quiet:
        calls = times[pop.names[i]]
        if not calls:
            continue
        # A burst: calls less than a minute apart; the last one may run past the end.
        cuts = [0, *(k + 1 for k, gap in enumerate(np.diff(calls)) if gap > 60), len(calls)]
        bursts.extend(b - a for a, b in itertools.pairwise(cuts[:-1]))
    assert len(bursts) >= 10
    # Two bursts less than a minute apart count as one here: most are a single burst.
    assert min(bursts) >= 3 and sum(b <= 5 for b in bursts) >= 0.75 * len(bursts)
    assert all(pop.session[i] in (3, 4, 5) for i in quiet)
    assert all(pop.fixed_session[i] for i in quiet)


def test_rhythm_is_diurnal_and_lower_on_weekends(plan):
    pop = plan.pop
    monday = int(datetime(2025, 1, 6, tzinfo=UTC).timestamp() * 1000)
    hours = monday + np.arange(7 * 24) * 3_600_000
    r = rhythm(pop, hours)
    i = int(np.argmin(pop.weekend))
    weekday, weekend = r[i, : 5 * 24].mean(), r[i, 5 * 24 + 4 : 7 * 24 - 4].mean()
    assert weekend / weekday == pytest.approx(pop.weekend[i], rel=0.05)
    j = int(np.argmax(pop.amplitude))
    peak = int(np.argmax(r[j, :24]))
    assert abs(((peak - pop.peak_hour[j] + 12) % 24) - 12) <= 1


def test_the_wide_world_refuses_what_it_cannot_simulate():
    with pytest.raises(ValueError, match="unknown incident kinds"):
        wide(incident_kinds=("agent_chain",))
    with pytest.raises(ValueError, match="at least"):
        wide(identities=20)
    with pytest.raises(ValueError, match="no room"):
        wide(minutes=200)
    with pytest.raises(ValueError, match="world"):
        SimConfig(start=START, world="flat")  # type: ignore[arg-type]


def test_the_wide_world_lists_base_rates_and_labels_with_their_band(plan):
    rates = simulate.base_rates(wide())
    assert len(rates) == WIDE_DEFAULT_IDENTITIES
    details = simulate.incident_details(wide())
    for w, extra in zip(plan.incidents, details, strict=True):
        assert extra["band"] == BAND_LABELS[band_of(rates[w.label.identity])]
    assert simulate.budgets(wide()) == {} and simulate.offboarded_identities(wide()) == []
    assert simulate.run_start(wide()) == plan.start
