"""Every size of a `meterguard bench` run, in one place: the flag defaults (FULL) and
--quick's (QUICK). Light on purpose: the command line imports it to show the defaults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    """Every size of a run: the flag defaults (FULL) and --quick's (QUICK)."""

    identities: int = 100_000  # active identities held in Redis (memory)
    traffic_identities: int = 1_000  # the simulated population of the throughput runs
    events: int = 100_000  # events in each throughput run
    record_size: int = 100  # events per batched record
    latency_probes: int = 50
    memory_templates: int = 300  # identities replayed for the memory fill, then copied
    memory_minutes: int = 60  # minutes of traffic each template identity has
    memory_sample: int = 2_000  # identities whose keys MEMORY USAGE reads
    replay_batch: int = 5_000  # messages per replay batch (replay's default)


FULL = Sizes()
QUICK = Sizes(
    identities=300,
    traffic_identities=50,
    events=3_000,
    latency_probes=3,
    memory_templates=50,
    memory_minutes=20,
    memory_sample=300,
)
