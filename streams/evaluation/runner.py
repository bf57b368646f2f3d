"""`meterguard evaluate`: detection quality of the replay pipeline on labelled synthetic traffic.

`run_evaluation()` does the I/O: simulate to a JSONL file (with the population's registry and
its agent chains' known root costs), replay it through the same path as `meterguard replay`
(with its per-event scores, under that registry), check the namespace's roll-ups and root-
caller cost before it is dropped (streams/evaluation/attribution_run.py), read the alerts
back and score them against the simulator's labels and volume bands (streams/evaluation/
scoring.py), and the scores against the labels at every threshold (streams/evaluation/
calibration.py). One seed per call; `meterguard evaluate --seeds` pools several (scoring.pool).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml

from meterguard.models import Alert
from meterguard.streams.evaluation.attribution_run import replay_and_check
from meterguard.streams.evaluation.calibration import calibrate, minute_scores
from meterguard.streams.evaluation.config import policy_overrides
from meterguard.streams.evaluation.report import Report
from meterguard.streams.evaluation.scoring import DEFAULT_GRACE, IdentitySpans, score
from meterguard.streams.settings import Settings
from meterguard.streams.simulation import simulate
from meterguard.streams.simulation.chains import ChainLedger, chains_jsonl
from meterguard.streams.simulation.config import SimConfig
from meterguard.streams.simulation.registry_plan import population_registry
from meterguard.timeutil import format_time


def run_evaluation(
    cfg: SimConfig,
    settings: Settings,
    redis_url: str,
    workdir: Path,
    *,
    on_phase: Callable[[str], None] = lambda message: None,
    show_progress: bool = True,
    notes: Sequence[str] = (),
    keep_scores: bool = False,
) -> Report:
    """Simulate to workdir/events.jsonl (+ labels.jsonl, registry.yaml, chains.jsonl), replay,
    check attribution, score workdir/alerts.jsonl and workdir/scores.jsonl (deleted afterwards
    unless keep_scores: ~250 bytes an event)."""
    from meterguard.streams.offline.replay import ReplayOutputs
    from meterguard.streams.simulation.traffic import write_jsonl

    workdir.mkdir(parents=True, exist_ok=True)
    incidents = simulate.incidents(cfg)
    details = simulate.incident_details(cfg)
    settings, policy_notes = _with_policy(settings, cfg, workdir)
    settings, registry_notes = _with_registry(settings, cfg, workdir)
    (workdir / "labels.jsonl").write_bytes(
        b"".join(
            orjson.dumps(
                {"kind": i.kind, "identity": i.identity, "start": i.start, "end": i.end, **extra}
            )
            + b"\n"
            for i, extra in zip(incidents, details, strict=True)
        )
    )
    on_phase(
        f"simulating the {cfg.world} world: {cfg.identities} identities x {cfg.minutes} min "
        f"(seed {cfg.seed}, {len(incidents)} incidents) -> {workdir / 'events.jsonl'}"
    )
    spans, ledger = IdentitySpans(), ChainLedger()
    generated = ledger.observe(simulate.generate(cfg))
    events = write_jsonl(_observed(generated, spans), workdir / "events.jsonl", _noop)
    chains = ledger.labels()
    (workdir / "chains.jsonl").write_bytes(chains_jsonl(chains))
    on_phase(f"replaying {events:,} events through the pipeline")
    scores_path = workdir / "scores.jsonl"
    outputs = ReplayOutputs(workdir / "alerts.jsonl", workdir / "throttles.jsonl", scores_path)
    checked = asyncio.run(
        replay_and_check(
            workdir / "events.jsonl",
            outputs,
            settings,
            redis_url,
            chains,
            show_progress=show_progress,
        )
    )
    summary = checked.summary
    on_phase(
        "attribution: "
        + ("exact" if checked.attribution.ok else "MISMATCHES")
        + f" ({len(chains):,} traces, registry {workdir / 'registry.yaml'})"
    )
    on_phase(f"scoring {summary.alerts:,} alerts against {len(incidents)} labelled incidents")
    alerts = [Alert.model_validate_json(line) for line in outputs.alerts.read_bytes().splitlines()]
    report = score(
        alerts,
        incidents,
        spans.hours,
        kinds=cfg.incident_kinds,
        bystanders=simulate.incident_bystanders(cfg),
        base_rates=simulate.base_rates(cfg),
    )
    outcomes = [
        dataclasses.replace(o, details=dict(extra))
        for o, extra in zip(report.outcomes, details, strict=True)
    ]
    on_phase("calibrating: false episodes and detections at each score threshold")
    by_minute = minute_scores(_lines(scores_path), settings.allowed_lateness_s)
    calibration = calibrate(by_minute, incidents, spans.hours, DEFAULT_GRACE)
    if not keep_scores:
        scores_path.unlink(missing_ok=True)
    run = {
        "world": cfg.world,
        "identities": cfg.identities,
        "minutes": cfg.minutes,
        "seed": cfg.seed,
        "start": format_time(simulate.run_start(cfg)),
        "kinds": list(cfg.incident_kinds),
        "traps": getattr(cfg, "traps", None),
        "events": summary.events,
        "dead_letters": summary.dead_letters,
        "alerts": summary.alerts,
        "throttle_commands": summary.commands,
    }
    return dataclasses.replace(
        report,
        outcomes=outcomes,
        notes=[*notes, *policy_notes, *registry_notes],
        run=run,
        calibration=calibration,
        attribution=checked.attribution,
    )


def _with_registry(settings: Settings, cfg: SimConfig, workdir: Path) -> tuple[Settings, list[str]]:
    """The generated population's registry (simulation/registry_plan.py) for the replay."""
    path = workdir / "registry.yaml"
    path.write_text(population_registry(cfg).to_yaml())
    notes = []
    if settings.registry_file:
        notes.append(f"MG_REGISTRY_FILE ignored: the simulated population's registry is {path}")
    updated = type(settings)(**{**settings.model_dump(), "registry_file": str(path)})
    return updated, notes


def _with_policy(settings: Settings, cfg: SimConfig, workdir: Path) -> tuple[Settings, list[str]]:
    overrides, notes = policy_overrides(cfg)
    if not overrides:
        return settings, notes
    base: dict[str, Any] = {}
    if settings.policy_file:
        base = yaml.safe_load(Path(settings.policy_file).read_text()) or {}
    path = workdir / "policy.yaml"
    path.write_text(yaml.safe_dump({**base, **overrides}, sort_keys=False))
    updated = type(settings)(**{**settings.model_dump(), "policy_file": str(path)})
    updated.policy  # noqa: B018 - refuse a policy the pipeline would refuse, before replaying
    notes.append(f"policy with {', '.join(overrides)} from the simulator: {path}")
    return updated, notes


def _observed(events: Iterable[dict[str, Any]], spans: IdentitySpans) -> Iterator[dict[str, Any]]:
    for event in events:
        spans.add(event)
        yield event


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                yield orjson.loads(line)


def _noop(count: int) -> None:
    pass
