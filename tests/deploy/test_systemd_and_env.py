"""deploy/systemd/meterguard-worker@.service and deploy/meterguard.env.example: the unit is
verified by systemd itself (`systemd-analyze verify`, with the paths pointed at this checkout),
and every variable of the example is a real setting that the worker accepts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from meterguard.streams.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNIT = DEPLOY / "systemd" / "meterguard-worker@.service"
ENV_EXAMPLE = DEPLOY / "meterguard.env.example"


def env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"not KEY=VALUE: {line!r}"
            pairs[key] = value
    return pairs


def test_every_variable_of_the_env_example_is_a_setting_the_worker_accepts():
    pairs = env_example()
    assert pairs and all(k.startswith("MG_") for k in pairs), pairs
    unknown = {k for k in pairs if k[3:].lower() not in Settings.model_fields}
    assert not unknown, f"not settings: {unknown}"
    settings = Settings.model_validate({k[3:].lower(): v for k, v in pairs.items()})
    assert settings.kafka_broker and settings.redis_url
    # Faust's assignor: partitions divisible by the worker counts one runs (1, 2, 3, 4).
    assert settings.topic_partitions % 12 == 0


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path):
    text = UNIT.read_text()
    assert "ExecStart=/opt/meterguard/.venv/bin/meterguard worker --web-port" in text
    assert "EnvironmentFile=/etc/meterguard/meterguard.env" in text
    # The same unit with its two paths pointed at this checkout (verify checks they exist).
    local = text.replace(
        "/opt/meterguard/.venv/bin/meterguard", str(Path(sys.executable).parent / "meterguard")
    )
    local = local.replace("/etc/meterguard/meterguard.env", str(ENV_EXAMPLE))
    unit = tmp_path / UNIT.name
    unit.write_text(local)
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"{tmp_path}/meterguard-worker@1.service"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    complaints = [line for line in done.stderr.splitlines() if UNIT.name in line]
    assert done.returncode == 0 and not complaints, done.stderr


def test_the_units_command_line_is_one_the_cli_takes():
    done = subprocess.run(
        [str(Path(sys.executable).parent / "meterguard"), "worker", "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0 and "--web-port" in done.stdout
