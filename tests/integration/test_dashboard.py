"""The live dashboard in a real headless Chromium, served by a real worker process.

One worker on the real broker and Redis, mixed traffic with a runaway agent, a second runaway
whose identity is an XSS payload, and identities holding "/", spaces, "%" and non-ASCII
letters. The browser waits for the page to show what the worker decided (no sleeps).

The identities belong to known teams (one unassigned, one whose name is markup), two root
agents start traced chains of other identities' calls, one late event arrives after its
minute was final, and the policy gives one team a daily budget: the spend panels must show
the numbers computed here from the events alone.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from playwright.async_api import Browser, Dialog, Page, async_playwright, expect

from meterguard.streams.store import Store
from meterguard.streams.tools.embedded import EmbeddedBroker, EmbeddedRedis
from meterguard.timeutil import parse_event_time, to_ms
from tests.support.polling import eventually
from tests.support.traffic import mixed, series
from tests.support.worker_process import produce, start_worker

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
RUNAWAY = "agent-runaway"
XSS = '<img src=x onerror="window.__pwned=1">'
SCRIPT = "<script>window.__pwned=2</script>"
ODD = "team/ä bot 🤖 100%"  # "/", space, "%" and non-ASCII in one identity
UI_TIMEOUT_MS = 60_000
ORCHESTRATOR = "agent-orchestrator"  # root of chains through tool-search and tool-ledger
PLANNER = "agent-planner"  # root of smaller chains through tool-search
MARKUP_TEAM = 'ops <b>night</b> & "co"/100%'  # a team name is event data too
TEAMS = {  # identity -> team; None: no team on its events, "(unassigned)"
    "svc-quiet-0": "payments",
    "svc-quiet-1": "payments",
    ORCHESTRATOR: "payments",
    "tool-ledger": "payments",
    "svc-quiet-2": "search",
    "svc-quiet-3": "search",
    RUNAWAY: "search",
    "tool-search": "search",
    PLANNER: "search",
    ODD: "platform",
    SCRIPT: MARKUP_TEAM,
    XSS: None,
}
PAYMENTS_BUDGET_USD = 10.0
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

# Skipped only on a developer machine where scripts/bootstrap could not install Debian's
# chromium (not root, or no apt-get); in CI a missing browser fails the test instead.
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"),
    reason=f"no Chromium at {CHROMIUM} (Debian package chromium; scripts/bootstrap installs it "
    "when run as root with apt-get)",
)


@dataclass
class Run:
    web: str
    store: Store
    tmp: Path
    docs: list[dict]  # every event the worker counted, the late one included


def span(tag: str, trace: str, span_id: str, parent: str | None, identity: str, at: datetime,
         cost: str) -> dict:  # fmt: skip
    return {
        "event_id": f"{tag}-{trace}-{span_id}",
        "identity": identity,
        "event_time": at.isoformat().replace("+00:00", "Z"),
        "trace_id": f"{tag}-{trace}",
        "span_id": span_id,
        **({"parent_span_id": parent} if parent else {}),
        "input_tokens": 200,
        "output_tokens": 50,
        "cost_usd": cost,
    }


def chains(tag: str, start: datetime, minutes: int = 75) -> list[dict]:
    """Each minute, one trace per root: the orchestrator calls tool-search and tool-ledger
    (tool-search calls tool-ledger again); the planner calls tool-search."""
    out = []
    for m in range(minutes):
        at = start + timedelta(minutes=m, seconds=5)
        o, p = f"o{m}", f"p{m}"
        out += [
            span(tag, o, "s0", None, ORCHESTRATOR, at, "0.001"),
            span(tag, o, "s1", "s0", "tool-search", at + timedelta(seconds=5), "0.003"),
            span(tag, o, "s2", "s0", "tool-ledger", at + timedelta(seconds=6), "0.002"),
            span(tag, o, "s3", "s1", "tool-ledger", at + timedelta(seconds=9), "0.0005"),
            span(tag, p, "s0", None, PLANNER, at + timedelta(seconds=20), "0.0002"),
            span(tag, p, "s1", "s0", "tool-search", at + timedelta(seconds=25), "0.001"),
        ]
    return out


def traffic(tag: str, start: datetime) -> list[dict]:
    docs = mixed(quiet=4, prefix=f"{tag}-", start=start)
    docs += series(XSS, 75, 6, start=start, burst=(65, 75, 180), prefix=f"{tag}-")
    docs += series(SCRIPT, 75, 2, start=start, prefix=f"{tag}-")
    docs += series(ODD, 75, 2, start=start, prefix=f"{tag}-")
    docs += chains(tag, start)
    for doc in docs:
        team = TEAMS[doc["identity"]]
        if team is None:
            doc.pop("team", None)
        else:
            doc["team"] = team
    return sorted(docs, key=lambda e: (e["event_time"], e["event_id"]))


def late_event(tag: str, start: datetime) -> dict:
    """A payments call from 30 minutes before svc-quiet-0's newest event: late (its minute
    was final long ago), counted in its own hour and in the late part."""
    doc = series("svc-quiet-0", 1, 1, start=start + timedelta(minutes=45), prefix=f"{tag}-late-")[0]
    return {**doc, "team": "payments", "cost_usd": 0.0123}


# -- what the spend panels must show, from the events alone ---------------------------------
def nano(doc: dict) -> int:
    return int(Decimal(str(doc.get("cost_usd", 0))).scaleb(9))


def ms(doc: dict) -> int:
    return to_ms(parse_event_time(doc["event_time"]))


def team_label(doc: dict) -> str:
    return doc.get("team") or "(unassigned)"


def sums(docs: list[dict]) -> dict[str, int]:
    return {
        "calls": len(docs),
        "tokens": sum(d.get("input_tokens", 0) + d.get("output_tokens", 0) for d in docs),
        "cost_nano_usd": sum(nano(d) for d in docs),
        "errors": sum(d.get("status") == "error" for d in docs),
    }


def expected_teams(docs: list[dict], late: dict) -> dict[str, dict[str, int]]:
    by_team: dict[str, list[dict]] = defaultdict(list)
    for doc in docs:
        by_team[team_label(doc)].append(doc)
    out = {}
    for team, held in by_team.items():
        late_part = [d for d in held if d["event_id"] == late["event_id"]]
        out[team] = {
            **sums(held),
            "late_calls": len(late_part),
            "late_cost_nano_usd": sum(nano(d) for d in late_part),
        }
    return out


def picked(row: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    return {k: row[k] for k in keys}


TEAM_KEYS = ["calls", "tokens", "cost_nano_usd", "errors", "late_calls", "late_cost_nano_usd"]


@pytest.fixture(scope="module")
async def run(
    broker: EmbeddedBroker, redis_server: EmbeddedRedis, tmp_path_factory
) -> AsyncIterator[Run]:
    policy = tmp_path_factory.mktemp("policy") / "policy.yaml"
    budget = f"{{limit_usd: {PAYMENTS_BUDGET_USD}, period: day}}"
    policy.write_text(f"group_budgets:\n  team:\n    payments: {budget}\n")
    worker = await start_worker(
        broker, redis_server.url, tmp_path_factory, extra_env={"MG_POLICY_FILE": str(policy)}
    )
    # The 75 minutes of traffic end a minute before now: the runaways' throttles, issued
    # ~10 minutes ago in event time for 15 minutes, are still live when the browser looks.
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=76)
    tag = worker.settings.key_prefix
    docs = traffic(tag, start)
    late = late_event(tag, start)
    try:
        await produce(broker.bootstrap, worker.settings.topic_raw, docs)
        await worker.wait_counted(len(docs))
        await produce(broker.bootstrap, worker.settings.topic_raw, [late])
        await worker.wait_counted(len(docs) + 1, ("events_new", "events_late"))

        async def credited() -> bool:  # every span of the 2 x 75 traces under its root
            roots = [ORCHESTRATOR, PLANNER]
            driven = [await worker.store.traces.driven(root) for root in roots]
            return [sum(r.calls for r in hours.values()) for hours in driven] == [225, 75]

        await eventually(credited, "the chains' cost credited to their roots", log=worker.log)
        yield Run(worker.web, worker.store, tmp_path_factory.mktemp("dashboard"), [*docs, late])
    finally:
        await worker.stop()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        chromium = await p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@dataclass
class Watched:
    page: Page
    dialogs: list[str]
    errors: list[str]


@pytest.fixture
async def watched(browser: Browser, run: Run) -> AsyncIterator[Watched]:
    """A fresh page that records every dialog (an XSS would open one) and script error."""
    page = await browser.new_page(viewport={"width": 1440, "height": 1000})
    dialogs: list[str] = []
    errors: list[str] = []

    async def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield Watched(page, dialogs, errors)
    finally:
        await page.close()


async def test_dashboard_route_is_wired_into_the_worker(run: Run):
    async with aiohttp.ClientSession() as session, session.get(f"{run.web}/") as response:
        body = await response.text()
    assert response.status == 200 and "dashboard.js" in body, (
        "GET / is not the dashboard: streams/web/routes.py must call "
        "register_dashboard_routes(app, store) from streams/web/dashboard.py"
    )
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]


async def test_page_shows_the_runaway_agents_live_alert_and_active_throttle(
    run: Run, watched: Watched
):
    page = watched.page
    await page.goto(f"{run.web}/")
    alert_row = page.locator(f"#firing tr[data-identity='{RUNAWAY}']")
    await expect(alert_row).to_be_visible(timeout=UI_TIMEOUT_MS)
    await expect(alert_row).to_contain_text("critical")
    await expect(alert_row).to_contain_text("spike")
    throttle_row = page.locator(f"#throttles tr[data-identity='{RUNAWAY}']")
    await expect(throttle_row).to_contain_text("throttle")
    await expect(throttle_row).to_contain_text(re.compile(r"\d\d:\d\d UTC"))
    tokens_row = page.locator(f"#top-tokens tr[data-identity='{RUNAWAY}']")
    await expect(tokens_row.locator("svg.spark polyline")).to_have_count(1)
    await expect(page.locator(f"#top-cost tr[data-identity='{RUNAWAY}']")).to_contain_text("$")
    for quiet in ("svc-quiet-0", "svc-quiet-3"):
        await expect(page.locator(f"#firing tr[data-identity='{quiet}']")).to_have_count(0)
    assert watched.errors == []


async def test_attacker_controlled_identities_render_as_text_and_never_run(
    run: Run, watched: Watched
):
    page = watched.page
    await page.goto(f"{run.web}/")
    for name in (XSS, SCRIPT):
        await expect(page.locator("#top-tokens").get_by_text(name, exact=True)).to_be_visible(
            timeout=UI_TIMEOUT_MS
        )
    # The XSS identity is a runaway too: its alert title and summary carry the payload.
    await expect(page.locator("#firing").get_by_text(XSS, exact=True)).to_be_visible(
        timeout=UI_TIMEOUT_MS
    )
    await page.goto(f"{run.web}/?identity={quote(XSS, safe='')}")
    await expect(page.locator("#detail-identity")).to_have_text(XSS)
    card = page.locator("#detail-alerts .alert-card").first
    await expect(card).to_contain_text(f"Spike on {XSS}", timeout=UI_TIMEOUT_MS)
    assert await page.locator("main img, main script").count() == 0
    assert await page.evaluate("typeof window.__pwned") == "undefined"
    assert watched.dialogs == []
    assert watched.errors == []


async def test_identity_with_slash_space_percent_and_unicode_opens_by_url(
    run: Run, watched: Watched
):
    page = watched.page
    await page.goto(f"{run.web}/?identity={quote(ODD, safe='')}")
    await expect(page.locator("#detail-identity")).to_have_text(ODD)
    await expect(page.locator("#detail-chart rect.bar")).to_have_count(60, timeout=UI_TIMEOUT_MS)
    await expect(page.locator("#detail-throttle")).to_have_text("not throttled")
    async with aiohttp.ClientSession() as session:
        url = f"{run.web}/api/identities/{quote(ODD, safe='')}"
        async with session.get(url) as response:
            assert response.status == 200
            assert (await response.json())["identity"] == ODD
        async with session.get(f"{run.web}/api/identities/nobody-at-all") as response:
            assert response.status == 404
        async with session.get(f"{run.web}/static/..%2Fweb.py") as response:
            assert response.status == 404


async def test_detail_view_of_the_runaway_shows_its_chart_and_alert_evidence(
    run: Run, watched: Watched
):
    page = watched.page
    await page.goto(f"{run.web}/")
    button = page.locator(f"#firing tr[data-identity='{RUNAWAY}'] .id-link")
    await button.click(timeout=UI_TIMEOUT_MS)
    await expect(page).to_have_url(re.compile(rf"\?identity={RUNAWAY}$"))
    await expect(page.locator("#detail-identity")).to_have_text(RUNAWAY)
    await expect(page.locator("#detail-chart rect.bar")).to_have_count(60, timeout=UI_TIMEOUT_MS)
    await expect(page.locator("#detail-chart rect.bar.alerted").first).to_be_attached()
    await expect(page.locator("#detail-chart polygon.marker").first).to_be_attached()
    card = page.locator("#detail-alerts .alert-card.status-firing").first
    await expect(card).to_contain_text(f"Spike on {RUNAWAY}")
    await expect(card.locator(".evidence")).to_contain_text("episode_start_minute")
    await expect(page.locator("#detail-throttle")).to_contain_text("throttle")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for target in (ARTIFACTS / "dashboard.png", run.tmp / "dashboard.png"):
        await page.screenshot(path=str(target), full_page=True)
    assert watched.errors == []


async def dashboard_json(run: Run, query: str = "") -> dict[str, Any]:
    url = f"{run.web}/api/dashboard{query}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        return await response.json()


async def test_spend_by_team_and_root_agents_are_the_events_sums_over_24_hours(run: Run):
    late = run.docs[-1]
    want = expected_teams(run.docs, late)
    doc = await dashboard_json(run)
    newest_hour = max(ms(d) for d in run.docs) // HOUR_MS  # the rankings' "now"
    assert doc["spend_period"]["to"] == datetime.fromtimestamp(
        (newest_hour + 1) * 3600, UTC
    ).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert doc["spend_period"]["hours"] == 24
    rows = doc["spend_by_team"]
    assert {r["team"]: picked(r, TEAM_KEYS) for r in rows} == want
    by_cost = sorted(want, key=lambda t: (-want[t]["cost_nano_usd"], t))
    assert [r["team"] for r in rows] == by_cost
    unassigned = next(r for r in rows if r["team"] == "(unassigned)")
    assert unassigned["value"] == ""
    assert want["payments"]["late_calls"] == 1  # the late call is in its team's late part
    # Root agents: the cost their chains made other identities spend, and their own.
    driven = doc["top_driven"]
    assert [r["identity"] for r in driven] == [ORCHESTRATOR, PLANNER]
    own = {i: sums([d for d in run.docs if d["identity"] == i]) for i in (ORCHESTRATOR, PLANNER)}
    assert picked(driven[0]["driven"], ["calls", "cost_nano_usd"]) == {
        "calls": 225,
        "cost_nano_usd": 75 * 5_500_000,
    }
    assert picked(driven[1]["driven"], ["calls", "cost_nano_usd"]) == {
        "calls": 75,
        "cost_nano_usd": 75 * 1_000_000,
    }
    for row in driven:
        mine = own[row["identity"]]
        assert picked(row["own"], ["calls", "cost_nano_usd"]) == picked(
            mine, ["calls", "cost_nano_usd"]
        )
    assert driven[0]["driven_per_own"] == 5.5 and driven[1]["driven_per_own"] == 5.0
    assert doc["team"] is None


async def test_team_filter_shows_members_spend_and_budget(run: Run):
    want = expected_teams(run.docs, run.docs[-1])
    doc = await dashboard_json(run, "?team=payments")
    team = doc["team"]
    assert (team["team"], team["value"]) == ("payments", "payments")
    assert picked(team, TEAM_KEYS) == want["payments"]
    members = [i for i, t in TEAMS.items() if t == "payments"]
    assert team["members_count"] == len(members)
    got = {m["identity"]: picked(m, ["calls", "cost_nano_usd"]) for m in team["members"]}
    assert got == {
        i: picked(sums([d for d in run.docs if d["identity"] == i]), ["calls", "cost_nano_usd"])
        for i in members
    }
    costs = [m["cost_nano_usd"] for m in team["members"]]
    assert costs == sorted(costs, reverse=True)
    # The daily budget: what the team spent in the UTC day holding the newest hour.
    newest = max(ms(d) for d in run.docs)
    day = newest - newest % DAY_MS
    spent = sum(nano(d) for d in run.docs
                if team_label(d) == "payments" and day <= ms(d) < day + DAY_MS)  # fmt: skip
    budget = team["budget"]
    assert budget["period"] == "day" and budget["limit_usd"] == PAYMENTS_BUDGET_USD
    assert budget["spent_nano_usd"] == spent
    assert budget["fraction"] == (spent / 1e9) / PAYMENTS_BUDGET_USD
    # A team without a budget, the unassigned team (`?team=`), a team named with markup.
    search = (await dashboard_json(run, "?team=search"))["team"]
    assert search["budget"] is None and search["members_count"] == 5
    unassigned = (await dashboard_json(run, "?team="))["team"]
    assert unassigned["team"] == "(unassigned)"
    assert [m["identity"] for m in unassigned["members"]] == [XSS]
    odd = (await dashboard_json(run, f"?team={quote(MARKUP_TEAM, safe='')}"))["team"]
    assert [m["identity"] for m in odd["members"]] == [SCRIPT]
    assert odd["calls"] == want[MARKUP_TEAM]["calls"]


async def test_page_shows_spend_by_team_root_agents_and_a_teams_members_and_budget(
    run: Run, watched: Watched
):
    want = expected_teams(run.docs, run.docs[-1])
    page = watched.page
    await page.goto(f"{run.web}/")
    payments = page.locator("#spend-teams tr[data-team='payments']")
    await expect(payments.locator("td.cost")).to_have_attribute(
        "title", f"{want['payments']['cost_nano_usd']} nano-USD", timeout=UI_TIMEOUT_MS
    )
    await expect(payments).to_contain_text(f"{want['payments']['calls']:,}")
    await expect(payments.locator("td.late")).to_have_attribute("title", "1 late calls")
    teams = page.locator("#spend-teams tbody tr[data-team] .team-link")
    by_cost = sorted(want, key=lambda t: (-want[t]["cost_nano_usd"], t))
    await expect(teams).to_have_text(by_cost)
    await expect(page.locator("#spend-teams").get_by_text(MARKUP_TEAM, exact=True)).to_be_visible()
    assert await page.locator("#spend-teams b").count() == 0
    first = page.locator("#root-agents tbody tr").first
    await expect(first).to_have_attribute("data-identity", ORCHESTRATOR)
    await expect(first.locator("td.driven")).to_have_attribute(
        "title", f"{75 * 5_500_000} nano-USD · 225 calls"
    )
    await expect(first.locator("td.own")).to_have_attribute("title", f"{75 * 1_000_000} nano-USD")
    await expect(page.locator("#team")).to_be_hidden()
    # Choosing a team: its members and budget, and the URL says which team.
    await payments.locator(".team-link").click()
    await expect(page).to_have_url(re.compile(r"\?team=payments$"))
    await expect(page.locator("#team")).to_be_visible()
    await expect(page.locator("#team-name")).to_have_text("payments")
    member = page.locator("#team-members tr[data-identity='svc-quiet-0']")
    quiet = sums([d for d in run.docs if d["identity"] == "svc-quiet-0"])
    await expect(member.locator("td.cost")).to_have_attribute(
        "title", f"{quiet['cost_nano_usd']} nano-USD", timeout=UI_TIMEOUT_MS
    )
    await expect(page.locator("#team-members tbody tr")).to_have_count(4)
    await expect(page.locator("#team-budget")).to_contain_text("day budget")
    await expect(page.locator("#team-budget")).to_contain_text("/ $10.00")
    await expect(page.locator("#team-budget meter")).to_have_count(1)
    await expect(page.locator("#team-budget .fraction")).to_have_text(re.compile(r"^\d+\.\d %$"))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-team.png"), full_page=True)
    # An identity opened from the team keeps the team in the URL; closing the team drops it.
    await member.locator(".id-link").click()
    await expect(page).to_have_url(re.compile(r"\?team=payments&identity=svc-quiet-0$"))
    await expect(page.locator("#detail-identity")).to_have_text("svc-quiet-0")
    await page.locator("#team-close").click()
    await expect(page.locator("#team")).to_be_hidden()
    await expect(page).to_have_url(re.compile(r"\?identity=svc-quiet-0$"))
    # The markup-named team opens by URL and renders as text.
    await page.goto(f"{run.web}/?team={quote(MARKUP_TEAM, safe='')}")
    await expect(page.locator("#team-name")).to_have_text(MARKUP_TEAM)
    await expect(page.locator("#team-members").get_by_text(SCRIPT, exact=True)).to_be_visible(
        timeout=UI_TIMEOUT_MS
    )
    await expect(page.locator("#team-budget")).to_have_text("no group budget")
    assert await page.locator("main b, main img, main script").count() == 0
    assert await page.evaluate("typeof window.__pwned") == "undefined"
    assert watched.dialogs == []
    assert watched.errors == []
