"""`meterguard report` and GET /api/report as a user runs them: simulated traffic (with a late
gateway flush and redeliveries) replayed into a kept namespace, then the report of that
namespace must equal what `reconcile` recomputes from the raw events, to the nano-dollar, per
identity, per team (the sum of its identities, registry attribution) and per hour of late
events; CSV, Parquet, the terminal table and the worker's HTTP routes say the same."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import aiohttp
import orjson
import pytest

from meterguard.models import MeteringEvent
from meterguard.streams.offline.reconcile import Ledger, Totals
from meterguard.streams.offline.reconcile_run import recompute_file
from meterguard.streams.policy.registry import Registry, attribute
from meterguard.streams.settings import Settings
from meterguard.streams.store.showback import HOUR_S, Period, hour_text, usd
from meterguard.streams.tools.embedded import EmbeddedBroker, EmbeddedRedis
from tests.support.worker_process import start_worker

START = "2026-03-02T09:00:00Z"
WHOLE = ("2026-03-02T09:00:00Z", "2026-03-02T12:00:00Z")
LATE_HOUR = ("2026-03-02T10:00:00Z", "2026-03-02T11:00:00Z")
FIELDS = ("calls", "input_tokens", "output_tokens", "cached_tokens", "cost_nano_usd", "errors")


@dataclass
class Kept:
    events: Path
    registry: Path
    namespace: str
    env: dict[str, str]
    ledgers: dict[str, Ledger]  # reconcile's recomputation from the raw events
    team_of: dict[str, str]  # identity -> its team (the registry's, else the event's own)
    unregistered: list[str]


def cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "meterguard.streams.tools.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, timeout=300, check=check)


@pytest.fixture(scope="module")
async def kept(redis_server: EmbeddedRedis, tmp_path_factory) -> Kept:
    work = tmp_path_factory.mktemp("report")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MG_")}
    env |= {"MG_REDIS_URL": redis_server.url, "COLUMNS": "200"}
    events = work / "events.jsonl"
    cli(env, "simulate", "--out", str(events), "--identities", "12", "--minutes", "150",
        "--seed", "5", "--start", START)  # fmt: skip
    lines = events.read_bytes().splitlines()
    # A gateway flushes a buffer of 10:1x calls at the end (new ids: late for their
    # identities), and the first 100 lines are redelivered (the same ids: counted once).
    flushed = [line.replace(b'"event_id":"sim', b'"event_id":"flush-sim') for line in lines
               if b'"event_time":"2026-03-02T10:1' in line][:150]  # fmt: skip
    events.write_bytes(b"\n".join([*lines, *flushed, *lines[:100]]) + b"\n")
    docs = [MeteringEvent.model_validate_json(line) for line in events.read_bytes().splitlines()]
    identities = sorted({e.identity for e in docs})
    unregistered, listed = identities[:2], identities[2:]
    registry = work / "registry.csv"
    rows = [f"{name},{'moved' if n == 0 else ''},bu-{n % 3}" for n, name in enumerate(listed)]
    registry.write_text("identity,team,business_unit\n" + "\n".join(rows) + "\n")
    env["MG_REGISTRY_FILE"] = str(registry)
    replayed = cli(env, "replay", str(events), "--alerts-out", str(work / "alerts.jsonl"),
                   "--throttles-out", str(work / "throttles.jsonl"), "--keep-namespace",
                   "--no-progress")  # fmt: skip
    namespace = replayed.stdout.decode().strip()
    assert namespace.startswith("mg:replay:"), replayed.stderr.decode()
    assert b"150 late" in replayed.stderr and b"100 duplicates" in replayed.stderr
    owners = Registry.load(registry)
    team_of = {e.identity: attribute(e, owners).team for e in docs}
    assert len({(e.identity, attribute(e, owners).team) for e in docs}) == len(team_of)
    settings = Settings.model_validate({"redis_url": redis_server.url})
    recomputed = await recompute_file(events, settings, show_progress=False)
    return Kept(events, registry, namespace, env, recomputed.ledgers, team_of, unregistered)


def report(kept: Kept, *args: str, period: tuple[str, str] = WHOLE) -> bytes:
    done = cli(kept.env, "report", "--namespace", kept.namespace, "--from", period[0],
               "--to", period[1], *args)  # fmt: skip
    return done.stdout


def recomputed(ledger: Ledger, period: Period) -> tuple[Totals, dict[int, Totals]]:
    """reconcile's totals of one identity over the period: its on-time minutes and its late
    hours (every unique event once), and the late hours alone."""
    total = Totals()
    for minute, row in ledger.minutes.items():
        if minute // 60 in period.hours:
            total += row
    late = {h: row for h, row in ledger.late_hours.items() if h in period.hours}
    for row in late.values():
        total += row
    return total, late


def figures(row: dict) -> tuple[int, ...]:
    assert row["cost_usd"] == format(usd(row["cost_nano_usd"]), "f")  # exact, as text
    return tuple(row[f] for f in FIELDS)


def period_of(bounds: tuple[str, str]) -> Period:
    from datetime import datetime

    start, end = (int(datetime.fromisoformat(b).timestamp()) // HOUR_S for b in bounds)
    return Period(start, end)


@pytest.mark.parametrize("bounds", [WHOLE, LATE_HOUR])
def test_the_report_equals_reconciles_recomputation_by_identity_and_by_team(kept, bounds):
    period = period_of(bounds)
    by_identity = orjson.loads(report(kept, "--by", "identity", "--format", "json", period=bounds))
    by_team = orjson.loads(report(kept, "--by", "team", "--format", "json", period=bounds))
    assert by_identity["period"] == by_team["period"] == period.to_dict()

    want: dict[str, Totals] = {}
    want_late: dict[tuple[str, str], Totals] = {}
    for identity, ledger in kept.ledgers.items():
        total, late = recomputed(ledger, period)
        if total.calls:
            want[identity] = total
        want_late |= {(identity, hour_text(h)): row for h, row in late.items()}
    rows = {r["group"]: r for r in by_identity["rows"]}
    assert {k: figures(r) for k, r in rows.items()} == {k: t.astuple() for k, t in want.items()}
    assert {(x["group"], x["hour"]): figures(x) for x in by_identity["late"]} == {
        k: t.astuple() for k, t in want_late.items()
    }
    everything = sum(want.values(), Totals())
    assert figures(by_identity["totals"]) == figures(by_team["totals"]) == everything.astuple()
    assert everything.calls > 1000 and everything.errors > 0 and everything.cost_nano_usd > 0
    late_calls = sum(t.calls for t in want_late.values())
    assert by_identity["totals"]["late"]["calls"] == by_team["totals"]["late"]["calls"]
    assert by_team["totals"]["late"]["calls"] == late_calls == 150  # all in 10:1x

    # Each team is the sum of its identities (the registry moved one to "moved").
    teams: dict[str, Totals] = defaultdict(Totals)
    late_teams: dict[str, Totals] = defaultdict(Totals)
    for identity, total in want.items():
        teams[kept.team_of[identity] or "(unassigned)"] += total
    for (identity, _), row in want_late.items():
        late_teams[kept.team_of[identity] or "(unassigned)"] += row
    got = {r["group"]: r for r in by_team["rows"]}
    assert "moved" in got
    assert {k: figures(r) for k, r in got.items()} == {k: t.astuple() for k, t in teams.items()}
    assert {k: figures(r["late"]) for k, r in got.items() if r["late"]["calls"]} == {
        k: t.astuple() for k, t in late_teams.items()
    }
    # Sorted by cost, highest first; identities the registry does not list, with their use.
    costs = [r["cost_nano_usd"] for r in by_team["rows"]]
    assert costs == sorted(costs, reverse=True)
    assert [u["identity"] for u in by_team["unregistered"]] == kept.unregistered
    for u in by_team["unregistered"]:
        assert figures(u) == want.get(u["identity"], Totals()).astuple()


def test_the_kept_namespace_reconciles_with_the_raw_events(kept):
    done = cli({**kept.env, "MG_KEY_PREFIX": kept.namespace}, "reconcile", str(kept.events),
               "--no-progress", check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout.decode()[-3000:]
    assert b"no unexplained difference" in done.stdout


def test_csv_parquet_and_the_terminal_table_say_what_the_json_says(kept, tmp_path: Path):
    import pyarrow.parquet as pq

    doc = orjson.loads(report(kept, "--by", "business_unit", "--format", "json"))
    table = list(csv.DictReader(io.StringIO(report(kept, "--by", "business_unit",
                                                   "--format", "csv").decode())))  # fmt: skip
    groups = [r for r in table if r["section"] == "group"]
    assert [(r["group"], int(r["calls"]), r["cost_usd"]) for r in groups] == [
        (r["group"], r["calls"], r["cost_usd"]) for r in doc["rows"]
    ]
    assert [r["cost_usd"] for r in table if r["section"] == "total"] == [doc["totals"]["cost_usd"]]
    assert sum(int(r["calls"]) for r in table if r["section"] == "late") == 150
    assert len([r for r in table if r["section"] == "unregistered"]) == 2

    out = tmp_path / "report.parquet"
    report(kept, "--by", "business_unit", "--format", "parquet", "--out", str(out))
    rows = pq.read_table(out).to_pylist()
    assert [(r["group"], r["cost_usd"]) for r in rows if r["section"] == "group"] == [
        (r["group"], Decimal(r["cost_usd"])) for r in doc["rows"]
    ]
    assert sum(r["cost_usd"] for r in rows if r["section"] == "group") == Decimal(
        doc["totals"]["cost_usd"]
    )

    screen = report(kept, "--by", "business_unit").decode()
    assert "showback by business_unit" in screen and "late events by the hour" in screen
    assert doc["totals"]["cost_usd"].rstrip("0") in screen.replace(",", "")
    assert "unregistered identities (the registry does not list them): 2" in screen


def test_parquet_without_pyarrow_and_bad_options_exit_2_saying_why(kept, tmp_path: Path):
    hide = "import sys; sys.modules['pyarrow'] = None; sys.argv[0] = 'meterguard'; "
    code = hide + "from meterguard.streams.tools.cli import main; main()"
    args = ["report", "--format", "parquet", "--out", str(tmp_path / "r.parquet")]
    done = subprocess.run([sys.executable, "-c", code, *args], env=kept.env, capture_output=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 2 and b"pip install 'meterguard[report]'" in done.stderr
    for bad, says in [
        (["--by", "owner"], b"unknown --by"),
        (["--from", "2026-03-02T09:30:00Z", "--to", "2026-03-02T12:00:00Z"], b"not a whole hour"),
        (["--last", "7d", "--from", "2026-03-02T09:00:00Z"], b"not both"),
        (["--format", "xlsx"], b"unknown --format"),
    ]:
        done = cli(kept.env, "report", *bad, check=False)
        assert done.returncode == 2 and says in done.stderr, (bad, done.stderr)
    # A namespace is kept in MG_REDIS_URL only (without it replay runs its own, thrown away).
    no_redis = {k: v for k, v in kept.env.items() if k != "MG_REDIS_URL"}
    done = cli(no_redis, "replay", str(kept.events), "--alerts-out", str(tmp_path / "a"),
               "--throttles-out", str(tmp_path / "t"), "--keep-namespace", check=False)  # fmt: skip
    assert done.returncode == 2 and b"--keep-namespace keeps one replay" in done.stderr


@pytest.fixture(scope="module")
async def worker(kept: Kept, broker: EmbeddedBroker, redis_server: EmbeddedRedis,
                 tmp_path_factory):  # fmt: skip
    extra = {"MG_KEY_PREFIX": kept.namespace, "MG_REGISTRY_FILE": str(kept.registry)}
    w = await start_worker(broker, redis_server.url, tmp_path_factory, extra)
    await w.wait_ready()
    yield w
    await w.stop()


async def get(url: str) -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.read()


async def test_the_worker_serves_the_same_report_over_http(kept, worker):
    query = f"from={WHOLE[0]}&to={WHOLE[1]}"
    status, kind, body = await get(f"{worker.web}/api/report?by=team&{query}")
    assert status == 200 and kind.startswith("application/json")
    assert body == report(kept, "--by", "team", "--format", "json")  # the same bytes
    status, kind, body = await get(f"{worker.web}/api/report?by=identity&{query}&format=csv")
    assert status == 200 and kind.startswith("text/csv")
    assert body == report(kept, "--by", "identity", "--format", "csv")
    status, _, body = await get(f"{worker.web}/api/report/unregistered?{query}")
    doc = orjson.loads(body)
    assert status == 200 and doc["count"] == 2
    assert doc["identities"] == orjson.loads(report(kept, "--format", "json"))["unregistered"]
    # The default period is the last 24 hours: this namespace's traffic is older.
    status, _, body = await get(f"{worker.web}/api/report")
    assert status == 200 and orjson.loads(body)["rows"] == []


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("by=owner", "by must be one of"),
        ("format=xml", "format must be json or csv"),
        ("from=2026-03-02T09:15:00Z&to=2026-03-02T12:00:00Z", "not a whole hour"),
        ("last=401d", "longer than 9600 hours"),
        ("from=2026-03-02T09:00:00Z", "give both"),
    ],
)
async def test_bad_report_queries_answer_400(worker, query, says):
    status, _, body = await get(f"{worker.web}/api/report?{query}")
    assert status == 400 and says in orjson.loads(body)["error"]
