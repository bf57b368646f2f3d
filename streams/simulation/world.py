"""The evaluation world as planned: attribution, the agent call graph, and expected spend.

Built once per run on top of a BaselinePlan when `SimConfig.enriched` is true (traps on, or
any incident kind besides runaway_agent); the classic runaway-only run never touches it. On
top of the classic population, every identity gets a credential, a few sources its calls come
from and a place in the agent call graph. `World` also offers what traps and incident kinds
build on: adding sources, workloads and fingerprints, the expected spend of an identity or a
trace, and `ordinary()`, calls drawn like an identity's usual traffic.

Determinism as in the classic world: plan-time draws come from their own streams
(GRAPH_STREAM, WORLD_STREAM), so planning the incidents and building the world agree. The
traps and incidents, and each minute's events, are added in streams/simulation/world_traffic.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from meterguard.streams.simulation.baseline import MINUTE_MS, BaselinePlan
from meterguard.streams.simulation.budgets import (
    daily_budget,
    expected_cost_parts,
    shape_by_minute,
)
from meterguard.streams.simulation.call_graph import build_call_graph, incoming_span_rate
from meterguard.streams.simulation.columns import Columns, Factors, SpanContext
from meterguard.streams.simulation.profiles import (
    ERROR_NAMES,
    ERROR_P,
    ERROR_RATE,
    MODEL_INDEX,
    MS_PER_TOKEN,
)
from meterguard.streams.simulation.random_streams import WORLD_STREAM, random_stream

CI_RUNNERS = 40


class World:
    """Everything the evaluation world adds to a BaselinePlan at plan time, but traps and
    incidents (see world_traffic.WorldTraffic)."""

    def __init__(self, plan: BaselinePlan) -> None:
        self.plan, cfg = plan, plan.cfg
        self.cfg, self.profiles = cfg, plan.profiles
        self.names = [p.name for p in self.profiles]
        self.index = {name: i for i, name in enumerate(self.names)}
        self.callers = [p.caller for p in self.profiles]
        self.in_med, self.out_med = plan.in_med, plan.out_med
        self.base_model = np.array([MODEL_INDEX[p.model] for p in self.profiles])
        self.graph = build_call_graph(cfg, self.profiles)
        self._attribution(random_stream(cfg, WORLD_STREAM, 0))
        self.incident_index = {self.index[inc.identity] for inc in plan.incidents}
        self.incoming_rate = incoming_span_rate(self.graph, self.plan.rate)
        minutes = np.arange(cfg.minutes)
        self.minute_day = (plan.start_ms + minutes * MINUTE_MS) // 86_400_000

    def _attribution(self, rng: np.random.Generator) -> None:
        n = len(self.profiles)
        blob = rng.bytes(6 * n).hex()
        self.credentials = [f"cred-{blob[12 * i : 12 * i + 12]}" for i in range(n)]
        family = {"ci": "ci", "key": "partner"}
        self.sources: list[str] = []
        offsets, counts = [], []
        for p in self.profiles:
            own = dict.fromkeys(
                self.random_source(rng, family.get(p.category, "int"))
                for _ in range(int(rng.integers(1, 4)))
            )
            offsets.append(len(self.sources))
            counts.append(len(own))
            self.sources.extend(own)
        self._source_index = {s: k for k, s in enumerate(self.sources)}
        self.src_offset, self.src_count = np.array(offsets), np.array(counts)
        self.fingerprints = list(self.plan.fingerprints)
        self.fp_offset, self.fp_count = self.plan.fp_offset, self.plan.fp_count
        self.workloads: list[str] = []

    # helpers for traps and incident kinds

    def run_minute(self, at: Any) -> int:
        return int((at - self.cfg.start).total_seconds() // 60)

    def random_source(self, rng: np.random.Generator, family: str) -> str:
        a, b, c = rng.integers(0, 256, 3).tolist()
        if family == "ci":
            return f"ci-runner-{int(rng.integers(1, CI_RUNNERS + 1)):02d}"
        if family == "partner":
            return f"198.51.100.{c}"
        if family == "ext":
            return f"203.0.113.{c}"
        return f"10.{a}.{b}.{c}"

    def sources_of(self, i: int) -> list[str]:
        return self.sources[self.src_offset[i] : self.src_offset[i] + self.src_count[i]]

    def add_source(self, source: str) -> int:
        if source not in self._source_index:
            self._source_index[source] = len(self.sources)
            self.sources.append(source)
        return self._source_index[source]

    def add_workload(self, workload: str) -> int:
        self.workloads.append(workload)
        return len(self.workloads) - 1

    def new_fingerprints(self, rng: np.random.Generator, count: int) -> list[int]:
        first = len(self.fingerprints)
        self.fingerprints.extend(rng.bytes(16).hex() for _ in range(count))
        return list(range(first, first + count))

    # expected spend (no draw involved)

    def expected_spend_per_minute(self, i: int) -> np.ndarray:
        """Expected USD per run minute of identity i's normal traffic (no draw involved)."""
        return self.plan_rate(i) * self.cost_per_call(i) * shape_by_minute(self.plan, i)

    def plan_rate(self, i: int) -> float:
        return float(self.plan.rate[i] + self.incoming_rate[i])

    def cost_per_call(self, i: int) -> float:
        return sum(self.cost_parts(i))

    def cost_parts(self, i: int) -> tuple[float, float]:
        """Expected USD of an ordinary call's (prompt, answer)."""
        return expected_cost_parts(self.in_med[i], self.out_med[i], self.base_model[i])

    def expected_trace_cost(self, i: int) -> float:
        """Expected USD of a normal trace rooted at agent i (its span and its subtree)."""
        g = self.graph
        edges = range(g.out_start[i], g.out_start[i] + g.out_count[i])
        below = sum(g.prob[e] * self.expected_trace_cost(int(g.dst[e])) for e in edges)
        return self.cost_per_call(i) + float(below)

    def budget_of(self, i: int) -> float:
        return daily_budget(self.plan, self.plan_rate(i), self.cost_per_call(i), i)

    # drawing calls

    def pick_sources(self, rng: np.random.Generator, who: np.ndarray) -> np.ndarray:
        # Fancy indexing is typed Any in numpy's stubs: name the array it yields.
        picked: np.ndarray = self.src_offset[who] + (
            rng.random(who.size) * self.src_count[who]
        ).astype(np.int64)
        return picked

    def ordinary(
        self,
        rng: np.random.Generator,
        who: np.ndarray,
        off: np.ndarray,
        f: Factors,
        *,
        in_scale: float | np.ndarray = 1.0,
        fp: np.ndarray | None = None,
        src: np.ndarray | None = None,
        wl: np.ndarray | None = None,
        traces: list[SpanContext | None] | None = None,
    ) -> Columns:
        """Calls of these identities drawn like their ordinary traffic."""
        n = who.size
        failed = rng.random(n) < ERROR_RATE
        noise_in, noise_out = rng.lognormal(0, 0.5, n), rng.lognormal(0, 0.5, n)
        tin = np.maximum(1, np.rint(self.in_med[who] * f.tok_in[who] * in_scale * noise_in))
        tout = np.maximum(1, np.rint(self.out_med[who] * f.tok_out[who] * noise_out))
        tout = np.where(failed, 0, tout)
        model = f.model[who]
        lat = np.rint((150 + tout * MS_PER_TOKEN[model]) * rng.lognormal(0, 0.3, n))
        err = np.where(failed, rng.choice(len(ERROR_NAMES), n, p=ERROR_P), -1)
        if fp is None:
            fp = self.fp_offset[who] + (rng.random(n) * self.fp_count[who]).astype(np.int64)
        return Columns.of(
            who=who, off=off, tin=tin, tout=tout, model=model, err=err, lat=lat, fp=fp,
            src=self.pick_sources(rng, who) if src is None else src, wl=wl, traces=traces,
        )  # fmt: skip
