"""The evaluation world, minute by minute: traps and incidents on top of the planned World.

`WorldTraffic` is what `SimPlan.world` holds for an enriched run. At plan time it adds the
traps (streams/simulation/traps.py) and one `Spec` per incident (SPECS); every minute it
draws the classic Poisson traffic, turns agents' traced calls into real traces down the call
graph, adds the backoff retries and the incidents' own calls, and renders the events: each
carries `credential_id` and `source`, and a model, workload or trace context where they
differ from the identity's usual ones.

Determinism: per-minute draws come from (seed, EXTRA_STREAM, minute) after the classic
traffic's own stream, so a minute rebuilt on its own matches the full run.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from meterguard.streams.simulation.baseline import MINUTE_MS, BaselinePlan, base_calls, format_times
from meterguard.streams.simulation.call_graph import MAX_TRACE_DEPTH
from meterguard.streams.simulation.columns import Columns, Factors, SpanContext
from meterguard.streams.simulation.config import Incident
from meterguard.streams.simulation.drift_incidents import DriftModel, DriftWorkload, Offboarded
from meterguard.streams.simulation.incident_spec import Spec
from meterguard.streams.simulation.load_incidents import (
    AgentChain,
    BudgetBurn,
    RetryLoop,
    RunawayAgent,
    SlowRamp,
)
from meterguard.streams.simulation.profiles import (
    ERROR_NAMES,
    MODEL_NAMES,
    MS_PER_TOKEN,
    PRICE_IN,
    PRICE_OUT,
    PROVIDERS,
)
from meterguard.streams.simulation.random_streams import (
    EXTRA_STREAM,
    SPEC_STREAM,
    WORLD_STREAM,
    random_stream,
)
from meterguard.streams.simulation.traps import backoff_calls, deploy_factor, plan_traps
from meterguard.streams.simulation.world import World

HOP_DELAY_MS = 1500.0  # median delay between a span and its child

SPECS: dict[str, type[Spec]] = {
    "runaway_agent": RunawayAgent,
    "retry_loop": RetryLoop,
    "slow_ramp": SlowRamp,
    "agent_chain": AgentChain,
    "drift_model": DriftModel,
    "drift_workload": DriftWorkload,
    "offboarded": Offboarded,
    "budget_burn": BudgetBurn,
}


class WorldTraffic(World):
    """The planned World with its traps and incidents, drawing each minute's events."""

    def __init__(self, plan: BaselinePlan) -> None:
        super().__init__(plan)
        cfg = self.cfg
        traps = plan_traps(self, random_stream(cfg, WORLD_STREAM, 1))
        self.first_minute, self.quiet, self.deploys = traps.first_minute, traps.quiet, traps.deploys
        self.base_model[traps.premium] = traps.premium_models
        self.specs = [
            SPECS[inc.kind](self, inc, random_stream(cfg, SPEC_STREAM, k))
            for k, inc in enumerate(plan.incidents)
        ]
        self.static = [
            {
                "identity": p.name,
                "kind": "llm.call",
                "team": p.team,
                "environment": p.environment,
                "workload": p.workload,
                "model": MODEL_NAMES[self.base_model[i]],
                "provider": PROVIDERS[self.base_model[i]],
                "credential_id": self.credentials[i],
                "source": "",  # set per call: one of the identity's sources
            }
            for i, p in enumerate(self.profiles)
        ]

    # queries

    def offboarded_identities(self) -> list[str]:
        names = {self.names[i] for i in np.flatnonzero(self.quiet)}
        names |= {s.incident.identity for s in self.specs if isinstance(s, Offboarded)}
        return sorted(names)

    def bystanders(self) -> dict[Incident, tuple[str, ...]]:
        return {s.incident: tuple(self.names[b] for b in s.bystanders) for s in self.specs}

    # per minute

    def factors(self, minute: int) -> Factors:
        rate_f, tok_f, repeat = self.plan.effects(minute)
        live = (self.first_minute <= minute) & ~self.quiet
        f = Factors(
            rate=rate_f * live, boost=np.ones_like(rate_f), tok_in=tok_f.copy(),
            tok_out=tok_f.copy(), repeat=repeat, model=self.base_model.copy(),
        )  # fmt: skip
        for i, first in self.deploys:  # up over 10 minutes, an hour at 2x, down over 10
            f.rate[i] *= deploy_factor(minute - first)
        for spec in self.specs:
            spec.scale(minute, f)
        return f

    def _base(self, minute: int, rng: np.random.Generator, f: Factors) -> list[Columns]:
        """The classic Poisson traffic, whose traced agent calls start real traces."""
        calls = base_calls(self.plan, minute, f.rate, f.tok_in, f.tok_out, f.repeat)
        who, n = calls.who, calls.who.size
        err = np.full(n, -1, dtype=np.int64)
        err[calls.error] = [ERROR_NAMES.index(e) for e in calls.error_types]
        model = f.model[who]
        # Calls added by an incident (runaway, ramp, ...) are not agent executions: only the
        # normal share of the calls starts a trace, so callees see their usual load.
        roots = np.flatnonzero(calls.traced & (rng.random(n) * f.boost[who] < 1.0))
        ids = rng.bytes(24 * roots.size).hex()
        trace_ids = [ids[48 * k : 48 * k + 32] for k in range(roots.size)]
        span_ids = [ids[48 * k + 32 : 48 * k + 48] for k in range(roots.size)]
        traces: list[SpanContext | None] = [None] * n
        for k, r in enumerate(roots.tolist()):
            traces[r] = (trace_ids[k], span_ids[k], None, self.callers[who[r]])
        base = Columns.of(
            who=who, off=calls.offsets, tin=calls.tok_in, tout=calls.tok_out, model=model,
            err=err, lat=np.rint((150 + calls.tok_out * MS_PER_TOKEN[model]) * calls.latency_noise),
            fp=calls.fp, src=self.pick_sources(rng, who), traces=traces,
        )  # fmt: skip
        return [base, self._children(rng, who[roots], calls.offsets[roots], trace_ids, span_ids, f)]

    def _children(
        self,
        rng: np.random.Generator,
        who: np.ndarray,
        off: np.ndarray,
        trace_ids: list[str],
        span_ids: list[str],
        f: Factors,
    ) -> Columns:
        """Child spans of these root spans down the call graph, level by level."""
        g = self.graph
        p_who, p_rel, p_root, p_span = who, np.zeros(who.size), np.arange(who.size), span_ids
        out_who, out_rel, out_root = [], [], []
        out_trace: list[SpanContext | None] = []
        for _ in range(MAX_TRACE_DEPTH - 1):
            counts = g.out_count[p_who]
            total = int(counts.sum())
            if total == 0:
                break
            rep = np.repeat(np.arange(p_who.size), counts)
            edge = (
                g.out_start[p_who][rep]
                + np.arange(total)
                - np.repeat(np.cumsum(counts) - counts, counts)
            )
            keep = rng.random(total) < g.prob[edge]
            rep, edge = rep[keep], edge[keep]
            c_who = g.dst[edge]
            c_rel = p_rel[rep] + rng.lognormal(math.log(HOP_DELAY_MS), 0.5, rep.size)
            ids = rng.bytes(8 * rep.size).hex()
            c_span = [ids[16 * k : 16 * k + 16] for k in range(rep.size)]
            c_root = p_root[rep]
            for k, (r, root) in enumerate(zip(rep.tolist(), c_root.tolist(), strict=True)):
                out_trace.append((trace_ids[root], c_span[k], p_span[r], self.names[p_who[r]]))
            out_who.append(c_who)
            out_rel.append(c_rel)
            out_root.append(c_root)
            p_who, p_rel, p_root, p_span = c_who, c_rel, c_root, c_span
        if not out_trace:
            return Columns.empty()
        c_who, rel, root = (
            np.concatenate(out_who),
            np.concatenate(out_rel),
            np.concatenate(out_root),
        )
        # A trace that starts late in the minute runs faster, so it ends inside the minute.
        longest = np.zeros(who.size)
        np.maximum.at(longest, root, rel)
        room = (MINUTE_MS - 1 - off).astype(float)
        squeeze = np.minimum(1.0, room / np.maximum(longest, 1.0))
        c_off = off[root] + np.floor(rel * squeeze[root])
        return self.ordinary(rng, c_who, c_off, f, traces=out_trace)

    def minute_events(self, minute: int, first_seq: int) -> list[dict[str, Any]]:
        """The events of one run minute, sorted by event_time, ids counted from first_seq."""
        f = self.factors(minute)
        rng = random_stream(self.cfg, EXTRA_STREAM, minute)
        parts = self._base(minute, rng, f)
        if self.cfg.traps:
            parts.append(backoff_calls(self, minute, rng, f))
        parts.extend(spec.extra(self, minute, rng, f) for spec in self.specs)
        c = Columns.concat(parts)
        order = np.argsort(c.off, kind="stable")
        return self._events(minute, first_seq, c, order)

    def _events(
        self, minute: int, first_seq: int, c: Columns, order: np.ndarray
    ) -> list[dict[str, Any]]:
        who, model = c.who[order], c.model[order]
        cost = np.round(
            (c.tin[order] * PRICE_IN[model] + c.tout[order] * PRICE_OUT[model]) / 1e6, 8
        )
        times = format_times(self.plan.start_ms + minute * MINUTE_MS + c.off[order])
        usual = (model == self.base_model[who]).tolist()
        cols = zip(
            who.tolist(), times, c.tin[order].tolist(), c.tout[order].tolist(), cost.tolist(),
            c.err[order].tolist(), c.lat[order].tolist(), c.fp[order].tolist(),
            c.src[order].tolist(), c.wl[order].tolist(), model.tolist(), usual,
            [c.trace[k] for k in order.tolist()], strict=True,
        )  # fmt: skip
        prefix, static, fps, sources = (
            f"sim{self.cfg.seed}-",
            self.static,
            self.fingerprints,
            self.sources,
        )
        events = []
        for k, (i, time, tin, tout, cost_k, err, lat, fp, src, wl, m, same, trace) in enumerate(
            cols
        ):
            event = {
                "event_id": f"{prefix}{first_seq + k:09d}",
                **static[i],
                "event_time": time,
                "input_tokens": tin,
                "output_tokens": tout,
                "cost_usd": cost_k,
                "status": "ok" if err < 0 else "error",
                "latency_ms": lat,
                "request_fingerprint": fps[fp],
            }
            event["source"] = sources[src]
            if not same:
                event["model"], event["provider"] = MODEL_NAMES[m], PROVIDERS[m]
            if wl >= 0:
                event["workload"] = self.workloads[wl]
            if err >= 0:
                event["error_type"] = ERROR_NAMES[err]
            if trace is not None:
                event["trace_id"], event["span_id"], parent, caller = trace
                if parent is not None:
                    event["parent_span_id"] = parent
                if caller is not None:
                    event["caller_identity"] = caller
            events.append(event)
        return events
