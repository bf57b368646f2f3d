"""deploy/Dockerfile, read by BuildKit's own parser (the `dockerfile` package): no Docker engine
here, so the build itself is not run (tests/integration/test_packaging.py builds the same
wheel). What is checked: a pinned base, two stages, the wheel built with `pip wheel .` and
installed without the `embedded` extra, a non-root numeric USER, a HEALTHCHECK on /healthz,
the `meterguard` entry point, and every COPY source present in the context and not left out
by deploy/Dockerfile.dockerignore. The HEALTHCHECK's command itself runs against a live
worker in test_grafana_metrics_live.py."""

from __future__ import annotations

import re

from tests.deploy.deploy_files import DOCKERIGNORE, ROOT, ignore_patterns, ignored, instructions

# An exact Python 3.11 patch release of the slim image, or any tag pinned by digest.
PINNED = re.compile(
    r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?$|.+@sha256:[0-9a-f]{64}$"
)


def by_cmd(name: str) -> list:
    return [c for c in instructions() if c.cmd == name]


def base_image() -> str:
    (arg,) = [c.value[0] for c in by_cmd("ARG") if c.value[0].startswith("PYTHON_IMAGE=")]
    return arg.split("=", 1)[1]


def test_every_stage_starts_from_one_pinned_base_image():
    assert PINNED.match(base_image()), base_image()
    stages = [c.value for c in by_cmd("FROM")]
    assert stages == [("${PYTHON_IMAGE}", "AS", "build"), ("${PYTHON_IMAGE}", "AS", "runtime")]


def test_the_wheel_is_built_then_installed_offline_without_the_embedded_extra():
    runs = [" ".join(c.value) for c in by_cmd("RUN")]
    assert any(r.startswith("pip wheel ") and r.endswith(" .") for r in runs), runs
    (install,) = [c for c in by_cmd("RUN") if "pip install" in c.value[0]]
    assert "--no-index" in install.value[0] and "meterguard" in install.value[0].split()
    assert "embedded" not in install.value[0]
    assert "--mount=type=bind,from=build,source=/wheels,target=/wheels" in install.flags


def test_the_runtime_stage_runs_as_a_numeric_non_root_user():
    commands = instructions()
    runtime = commands[[c.value[-1] for c in commands].index("runtime") :]
    users = [c.value[0] for c in runtime if c.cmd == "USER"]
    assert users, "no USER in the runtime stage"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0


def test_healthcheck_asks_healthz_with_the_images_own_python():
    (check,) = by_cmd("HEALTHCHECK")
    assert check.json and check.value[0] == "CMD"
    assert check.value[1:3] == ("python", "-c")
    assert "/healthz" in check.value[3] and "MG_WEB_PORT" in check.value[3]
    assert {f.split("=")[0] for f in check.flags} >= {"--interval", "--timeout", "--retries"}


def test_entry_point_is_meterguard_and_the_default_command_a_worker():
    (entry,) = by_cmd("ENTRYPOINT")
    (cmd,) = by_cmd("CMD")
    assert entry.json and entry.value == ("meterguard",)
    assert cmd.json and cmd.value == ("worker",)


def test_every_copy_source_exists_in_the_context_and_is_not_ignored():
    patterns = ignore_patterns()
    sources = [src for c in by_cmd("COPY") if not c.flags for src in c.value[:-1]]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: not in the build context (repository root)"
        assert not ignored(src, patterns), f"COPY {src}: excluded by {DOCKERIGNORE.name}"


def test_the_dockerignore_keeps_local_state_and_caches_out_of_the_context():
    patterns = ignore_patterns()
    for path in (".venv", ".git", "tests", ".meterguard", "streams/__pycache__", "deploy"):
        assert ignored(path, patterns), path
    for path in ("pyproject.toml", "README.md", "streams/store/ingest.lua", "meterguard/models.py"):
        assert not ignored(path, patterns), path
