"""`meterguard bench`: throughput, latency and memory of the real pipeline, side by side with
its ceilings, in one run; a table, and with --json one JSON object as the last stdout line.

Keys (how each is measured; the phases are in bench_run.py, one at a time):

* raw_consume_eps: aiokafka `getmany` + orjson.loads of every value of the single-event topic,
  no consumer group: the ceiling (bench_traffic.raw_consume).
* faust_baseline_eps: a bare counting Faust agent (bench_faust_baseline.py, a subprocess)
  on the same topic, from the earliest offset; its count is in Redis every 0.1 s.
* pipeline_eps: `meterguard worker --without-web` (subprocess, its own app id, key prefix and
  topics) on the same topic, one native event per record, until the namespace's stats
  (store.stats.pipeline_counters: events_new + events_late + events_duplicate) count them all.
* pipeline_batched_eps: the same on a topic of `--record-size` events per record
  (`--batch-format`: a CloudEvents batch, or a native JSON array).
  All four: the topic is filled first, the counter polled every 50 ms, and the rate is
  (events - count at the first observation that saw any) / (time from that observation to
  the one that saw them all): start-up, group join and the first batch are outside the
  interval for every consumer alike (bench_traffic.Throughput). A run too small to see the
  count move is marked coarse (whole wall time).
* replay_eps: streams/offline/replay.py replay_file in this process, on the same events as a
  file, every detector on, no --scores-out; wall time of the call (dropping its namespace
  afterwards is not timed).
* latency_p50_ms / latency_p99_ms: on the pipeline_eps worker, under background traffic at
  `--latency-load` x pipeline_eps: a probe's two events produced (a fresh offboarded identity,
  and the event that closes its first minute: no detector acts before a minute is final)
  until its block command is PUBLISHed by the script that writes the throttle key; see
  bench_latency.py for exactly what that covers.
* redis_bytes_per_identity / redis_bytes_per_event_id: `--identities` in Redis (templates
  replayed for `--memory-minutes`, then copied), MEMORY USAGE of a sample; see bench_memory.py.
* rss_mb: the pipeline_eps worker's VmRSS after its throughput and latency runs.

Progress goes to stderr. Exit 1 if a key could not be measured; targets missed are reported,
not failed.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from meterguard.streams.tools.bench_sizes import FULL, QUICK
from meterguard.streams.tools.cli_common import err, load_settings


def _size(field: str, what: str) -> Any:
    full, quick = getattr(FULL, field), getattr(QUICK, field)
    return typer.Option(help=f"{what} (default {full:,}; --quick {quick:,})", min=1)


def bench(
    identities: Annotated[
        int | None, _size("identities", "identities held in Redis for the memory figures")
    ] = None,
    traffic_identities: Annotated[
        int | None, _size("traffic_identities", "simulated population of the throughput runs")
    ] = None,
    events: Annotated[int | None, _size("events", "events per throughput run")] = None,
    record_size: Annotated[int | None, _size("record_size", "events per batched record")] = None,
    batch_format: Annotated[
        str, typer.Option(help="batched records: cloudevents or native-array")
    ] = "cloudevents",
    latency_probes: Annotated[int | None, _size("latency_probes", "latency probes")] = None,
    latency_load: Annotated[
        float, typer.Option(help="background traffic during the probes, x pipeline_eps", min=0)
    ] = 0.5,
    probe_interval: Annotated[float, typer.Option(help="seconds between probes", min=0)] = 0.2,
    memory_templates: Annotated[
        int | None, _size("memory_templates", "identities replayed for the memory fill")
    ] = None,
    memory_minutes: Annotated[
        int | None, _size("memory_minutes", "minutes of traffic per identity, memory fill")
    ] = None,
    memory_sample: Annotated[
        int | None, _size("memory_sample", "identities whose keys are measured")
    ] = None,
    replay_batch: Annotated[int | None, _size("replay_batch", "messages per replay batch")] = None,
    seed: int = 3,
    phase_timeout: Annotated[float, typer.Option(help="seconds a phase may take")] = 900.0,
    workdir: Annotated[
        Path | None, typer.Option(help="logs and files here, kept (default: a temporary folder)")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="also print one JSON object as the last stdout line")
    ] = False,
    quick: Annotated[
        bool, typer.Option(help="smoke sizes (CI): every key in seconds, numbers meaningless")
    ] = False,
) -> None:
    """Throughput (raw Kafka, bare Faust, the worker, batched, replay), latency and Redis
    memory side by side, with ratios against the targets."""
    from dataclasses import replace

    from aiokafka.errors import KafkaError
    from redis.exceptions import RedisError
    from rich.console import Console
    from rich.markup import escape

    from meterguard.streams.tools.bench_phases import Options
    from meterguard.streams.tools.bench_procs import BenchError
    from meterguard.streams.tools.bench_report import print_tables
    from meterguard.streams.tools.bench_run import run_bench
    from meterguard.streams.tools.bench_traffic import BATCH_FORMATS

    if batch_format not in BATCH_FORMATS:
        err.print(f"[red]--batch-format {batch_format!r}:[/red] {' or '.join(BATCH_FORMATS)}")
        raise typer.Exit(2)
    given = {
        "identities": identities,
        "traffic_identities": traffic_identities,
        "events": events,
        "record_size": record_size,
        "latency_probes": latency_probes,
        "memory_templates": memory_templates,
        "memory_minutes": memory_minutes,
        "memory_sample": memory_sample,
        "replay_batch": replay_batch,
    }
    sizes = replace(QUICK if quick else FULL, **{k: v for k, v in given.items() if v is not None})
    options = Options(sizes, batch_format, latency_load, probe_interval, seed, phase_timeout)
    folder = workdir or Path(tempfile.mkdtemp(prefix="meterguard-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    def progress(message: str) -> None:
        stamp = f"[dim]{time.monotonic() - started:6.1f}s[/dim]"
        err.print(f"{stamp} {escape(message)}", highlight=False, soft_wrap=True)

    try:
        results = run_bench(load_settings(), options, folder.resolve(), progress)
    except (BenchError, RuntimeError, OSError, RedisError, KafkaError) as exc:
        err.print(f"[red]bench failed:[/red] {escape(str(exc))}\nlogs: {folder}")
        raise typer.Exit(1) from exc
    progress(f"done in {time.monotonic() - started:.0f} s")
    # Not a terminal (a file, CI): wide enough that the tables keep one line per row.
    print_tables(results, Console(highlight=False, width=None if sys.stdout.isatty() else 130))
    missing = results.missing()
    if as_json:
        sys.stdout.flush()
        sys.stdout.buffer.write(results.json_line() + b"\n")
        sys.stdout.flush()
    if missing:
        err.print(f"[red]not measured:[/red] {', '.join(missing)}; logs: {folder}")
        raise typer.Exit(1)
    if workdir is None:
        shutil.rmtree(folder, ignore_errors=True)
