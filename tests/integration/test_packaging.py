"""What `pip install .` puts into a fresh environment: one import root, `meterguard`.

Builds the wheel from a copy of the tracked files (so the check sees what a clean clone
ships, and writes nothing into the work tree), installs it without dependencies into a new
venv and reads that venv's site-packages. Runs no server; it lives here because it builds and
installs (seconds, not milliseconds).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

import meterguard

ROOT = Path(__file__).resolve().parents[2]


def _tracked_copy(dest: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = ROOT / name.decode()
        target = dest / name.decode()
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            target.symlink_to(src.readlink())
        elif src.is_file():
            shutil.copy2(src, target)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = _tracked_copy(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(tree),
        ],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("meterguard-*.whl")
    return built


def test_the_wheel_holds_one_top_level_package_with_the_lua_and_dashboard_files(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert top == {"meterguard"}
    for needed in (
        "meterguard/streams/store/ingest.lua",
        "meterguard/streams/web/static/dashboard.html",
        "meterguard/detectors/spike.py",
        "meterguard/sinks/webhook.py",
    ):
        assert needed in names, needed


def test_a_fresh_venv_with_the_wheel_has_no_top_level_name_but_meterguard(
    wheel: Path, tmp_path: Path
):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    (site,) = (venv / "lib").glob("python3*/site-packages")
    installed = {
        p.name
        for p in site.iterdir()
        if not p.name.endswith((".dist-info", ".pth")) and p.name != "__pycache__"
    }
    assert installed == {"meterguard"}
    (dist_info,) = site.glob("meterguard-*.dist-info")
    top_level = (dist_info / "top_level.txt").read_text().split()
    assert top_level == ["meterguard"]


def test_the_version_has_one_source_and_the_changelog_agrees():
    assert version("meterguard") == meterguard.__version__
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    newest = re.search(r"^## (\d+\.\d+\.\d+)", changelog, flags=re.M)
    assert newest is not None
    assert newest.group(1) == meterguard.__version__


def test_the_console_script_answers_help_and_version():
    script = Path(sys.executable).parent / "meterguard"
    shown = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    for command in ("worker", "demo", "replay", "reconcile", "simulate", "evaluate"):
        assert command in shown.stdout
    said = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert said.stdout.strip() == f"meterguard {meterguard.__version__}"
