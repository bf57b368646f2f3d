"""docs/configuration.md is generated from the settings and policy models (issue 15): it must
be what `meterguard config-reference` writes today, and name every MG_ variable the code
reads, including those read outside `Settings` (the gateway's)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from meterguard.streams.settings import Settings
from meterguard.streams.tools import config_reference
from meterguard.streams.tools.config_reference import UndescribedField, render

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "configuration.md"
CODE = ("meterguard", "streams", "detectors", "sinks")  # streams, detectors, sinks: linked in
COMMAND = [sys.executable, "-m", "meterguard.streams.tools.cli", "config-reference"]


def test_the_reference_is_not_stale():
    assert REFERENCE.read_text(encoding="utf-8") == render(), (
        "docs/configuration.md is stale: run "
        "`meterguard config-reference --out docs/configuration.md`"
    )


def test_the_command_checks_writes_and_refuses_a_stale_file(tmp_path: Path):
    # The command the reference's header shows, on the file itself: nothing to change.
    checked = subprocess.run(
        [*COMMAND, "--out", str(REFERENCE), "--check"], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    written = tmp_path / "configuration.md"
    subprocess.run([*COMMAND, "--out", str(written)], check=True, capture_output=True)
    assert written.read_text(encoding="utf-8") == REFERENCE.read_text(encoding="utf-8")
    written.write_text(written.read_text(encoding="utf-8").replace("MG_WEB_PORT", "MG_PORT"))
    stale = subprocess.run(
        [*COMMAND, "--out", str(written), "--check"], capture_output=True, text=True
    )
    assert stale.returncode == 1
    assert "stale" in stale.stderr


def test_every_setting_and_every_variable_the_code_names_is_in_the_reference():
    text = REFERENCE.read_text(encoding="utf-8")
    for name in Settings.model_fields:
        assert f"| `MG_{name.upper()}` |" in text
    named: set[str] = set()
    for folder in CODE:
        for path in (ROOT / folder).rglob("*.py"):
            named |= set(re.findall(r"\bMG_[A-Z0-9_]*[A-Z0-9]\b", path.read_text("utf-8")))
    assert "MG_GATEWAY_FAIL_MODE" in named  # the scan reads the gateway's own variables
    missing = sorted(n for n in named if f"`{n}`" not in text)
    assert missing == []


def test_every_policy_key_is_in_the_reference():
    text = REFERENCE.read_text(encoding="utf-8")
    for section in config_reference.policy_sections(config_reference.PolicyConfig):
        for key in section.model.model_fields:
            assert f"| `{key}` |" in text, f"{section.paths[0]}.{key}"


def test_a_field_without_a_description_is_refused():
    class Undescribed(BaseModel):
        knob: int = 3

    with pytest.raises(UndescribedField, match=r"Undescribed\.knob"):
        config_reference._policy_section(config_reference.Section(Undescribed, ["x"]))
