"""The evaluation world's per-minute data: calls as numpy columns, and per-identity knobs.

`Columns` holds a batch of calls (one row per call: identity, offset, tokens, model, error,
latency, fingerprint, source, workload, trace context) that the world, its traps and its
incident kinds draw and concatenate; `Factors` holds the minute's per-identity multipliers
that traps and incident kinds adjust before the ordinary traffic is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SpanContext = tuple[str, str, str | None, str | None]  # trace, span, parent span, caller


@dataclass
class Factors:
    """Per-identity knobs of one minute (numpy arrays indexed by identity)."""

    rate: np.ndarray  # calls per minute multiplied by this
    boost: np.ndarray  # the part of `rate` due to incidents (not normal traffic)
    tok_in: np.ndarray
    tok_out: np.ndarray
    repeat: np.ndarray
    model: np.ndarray  # model index of the identity's ordinary calls


@dataclass
class Columns:
    """Calls as numpy columns, plus their trace context (a tuple per traced call)."""

    who: np.ndarray
    off: np.ndarray  # ms into the minute
    tin: np.ndarray
    tout: np.ndarray
    model: np.ndarray  # model index
    err: np.ndarray  # ERROR_NAMES index, -1 for ok
    lat: np.ndarray  # ms
    fp: np.ndarray  # World.fingerprints index
    src: np.ndarray  # World.sources index
    wl: np.ndarray  # World.workloads index, -1 for the identity's own
    trace: list[SpanContext | None]

    NAMES = ("who", "off", "tin", "tout", "model", "err", "lat", "fp", "src", "wl")

    @classmethod
    def of(
        cls,
        traces: list[SpanContext | None] | None = None,
        wl: np.ndarray | None = None,
        **cols: np.ndarray,
    ) -> Columns:
        n = cols["who"].size
        ints = {k: np.asarray(v, dtype=np.int64) for k, v in cols.items()}
        wl_col = np.full(n, -1, dtype=np.int64) if wl is None else np.asarray(wl, dtype=np.int64)
        return cls(**ints, wl=wl_col, trace=traces if traces is not None else [None] * n)

    @classmethod
    def empty(cls) -> Columns:
        z = np.zeros(0, dtype=np.int64)
        return cls.of(who=z, off=z, tin=z, tout=z, model=z, err=z, lat=z, fp=z, src=z)

    @classmethod
    def concat(cls, parts: list[Columns]) -> Columns:
        if not parts:
            return cls.empty()
        cols = {k: np.concatenate([getattr(p, k) for p in parts]) for k in cls.NAMES}
        return cls(**cols, trace=[t for p in parts for t in p.trace])
