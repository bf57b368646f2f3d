"""`meterguard` command line: the Typer app, `worker` and `demo`; the offline and traffic
commands live in cli_offline.py and cli_traffic.py and are registered here."""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import Annotated

import typer

from meterguard.streams.tools.bench import bench
from meterguard.streams.tools.cli_common import err, load_settings, require_redis
from meterguard.streams.tools.cli_config_reference import config_reference
from meterguard.streams.tools.cli_offline import reconcile, replay
from meterguard.streams.tools.cli_report import report
from meterguard.streams.tools.cli_traffic import evaluate, simulate
from meterguard.streams.tools.doctor import doctor

cli = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Runtime-metering anomaly pipeline for non-human identities.",
)


def _print_version(value: bool) -> None:
    if value:
        from meterguard import __version__

        print(f"meterguard {__version__}")
        raise typer.Exit()


@cli.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Runtime-metering anomaly pipeline for non-human identities."""


@cli.command()
def worker(
    web_port: Annotated[int | None, typer.Option(help="HTTP port (default MG_WEB_PORT)")] = None,
    without_web: Annotated[
        bool, typer.Option(help="serve no HTTP (several workers, one host)")
    ] = False,
    loglevel: str = "info",
) -> None:
    """Run a Faust worker: metering.raw -> windows in Redis -> alerts and throttle commands."""
    from meterguard.streams.runtime import log_format
    from meterguard.streams.runtime.app import create_app
    from meterguard.streams.runtime.topics import ensure_topics, topic_specs

    settings = load_settings()
    log_format.install(settings.log_format, loglevel)  # MG_LOG_FORMAT=json: before Faust too
    if not settings.kafka_broker:
        err.print("[red]MG_KAFKA_BROKER is not set[/red] (e.g. kafka://127.0.0.1:9092)")
        raise typer.Exit(2)
    require_redis(settings)  # a wrong password, CA or MG_REDIS_CLUSTER: one line, exit 2
    security = settings.kafka_security.aiokafka_options()  # MG_KAFKA_SECURITY_PROTOCOL...
    asyncio.run(ensure_topics(settings.bootstrap, topic_specs(settings), client_options=security))
    app = create_app(settings)
    # json: Faust's start-up banner (a text table, not a log record) left out with --quiet.
    quiet = ["--quiet"] if settings.log_format == "json" else []
    argv = ["meterguard", *quiet, "worker", "--loglevel", loglevel]
    argv += ["--without-web"] if without_web else ["--web-port", str(web_port or settings.web_port)]
    sys.argv = argv
    app.main()


@cli.command()
def demo(
    duration: Annotated[
        float | None, typer.Option(help="stop after S seconds (default: Ctrl-C)")
    ] = None,
    identities: int = 150,
    speed: Annotated[
        float | None, typer.Option(help="simulated minutes per wall minute (default: auto)")
    ] = None,
    seed: Annotated[int, typer.Option(help="traffic seed (which identities run away)")] = 7,
) -> None:
    """The embedded default: broker + Redis + worker + synthetic traffic, live on screen."""
    from meterguard.streams.tools.demo import run_demo

    raise typer.Exit(
        run_demo(load_settings(), duration=duration, identities=identities, speed=speed, seed=seed)
    )


for command in (simulate, replay, reconcile, report, evaluate, bench, doctor, config_reference):
    cli.command()(command)


def main() -> None:
    tune_gc()
    cli()


# The cyclic collector's defaults (700, 10, 10) run a young collection every 700 container
# allocations; a batch of events allocates hundreds of thousands of short-lived, acyclic
# objects (models, rows, scores), so collections ran constantly and full ones walked every
# long-lived object (a profile of replay: 12 % of wall time, 11 full collections freeing 25
# objects). Freezing what start-up loaded moves it out of the collector's walk, and a young
# threshold of 50,000 collects per batch rather than per event. benchmarks/throughput.py
# measures both side by side: replay 1.25-1.27x (4,141 -> 5,266 events/s at batch 5000), the
# same outputs.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


if __name__ == "__main__":
    main()
