"""README's first command: `meterguard demo` on the embedded default, end to end."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest
from standardwebhooks.webhooks import Webhook

SECRET = "whsec_" + "bWV0ZXJndWFyZC1kZW1vLXRlc3Qtc2VjcmV0"  # base64 of a test-only key


@contextmanager
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    """A local HTTP endpoint standing in for a SIEM webhook or Slack: records every POST."""
    received: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


def test_demo_shows_alerts_and_throttles_within_its_first_minute_and_leaves_nothing_running(
    tmp_path: Path,
):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MG_")}
    with receiver() as (siem_url, siem), receiver() as (slack_url, slack):
        env |= {
            "MG_WEBHOOK_URL": siem_url,
            "MG_WEBHOOK_SECRET": SECRET,
            "MG_SLACK_WEBHOOK_URL": slack_url,
        }
        done = subprocess.run(
            [sys.executable, "-m", "meterguard.streams.tools.cli", "demo", "--duration", "70"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    injected = re.findall(r"injected: (\w+) on (\S+)", out)
    assert sorted(kind for kind, _ in injected) == ["agent_chain", "retry_loop", "runaway_agent"]
    summary = re.search(r"(\d+) alerts, (\d+) identities throttled, ([\d,]+) events counted", out)
    assert summary, out[-3000:]
    alerts, throttled = int(summary[1]), int(summary[2])
    assert alerts >= 3 and throttled >= 1
    assert "critical" in out
    # Spend per team (exact roll-ups) and the roots that drove cost downstream (issue 12).
    spend = re.search(r"spend per team: (.+); top cost driven: (.+)", out)
    assert spend, out[-3000:]
    assert re.search(r"\$[\d,]+\.\d\d", spend[1]) and spend[2] != "none"
    assert "spend per team so far" in out and "cost driven downstream" in out
    for _kind, identity in injected:  # every injected incident shows up as an alert
        assert f"{identity}: " in out
    assert (tmp_path / ".meterguard").is_dir()
    assert running_in(tmp_path) == []  # broker, Redis and worker all stopped
    # The demo delivers to the destinations the environment names (README).
    assert "delivering alerts to: webhook http://127.0.0.1" in out
    verified = [Webhook(SECRET).verify(body, headers) for headers, body in siem]
    delivered = {doc["data"]["identity"] for doc in verified}
    assert {identity for _kind, identity in injected} <= delivered
    assert slack and all("blocks" in orjson.loads(body) for _h, body in slack)
    deliveries = re.search(r"alert deliveries: ([\d,]+) delivered", out)
    assert deliveries and int(deliveries[1].replace(",", "")) >= len(siem)


def running_in(folder: Path) -> list[str]:
    """Processes whose working directory lies in `folder` (the demo's children inherit it)."""
    found = []
    for pid in pids_in(folder):
        try:
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue  # gone meanwhile
    return found


def pids_in(folder: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = (proc / "cwd").resolve()
            if cwd == folder or folder in cwd.parents:
                found.append(int(proc.name))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return found


def start_demo(folder: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MG_")}
    return subprocess.Popen(
        [sys.executable, "-m", "meterguard.streams.tools.cli", "demo"],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def read_until(demo: subprocess.Popen[str], prefix: str) -> None:
    assert demo.stdout is not None
    for line in demo.stdout:
        if line.startswith(prefix):
            return
    raise AssertionError(f"the demo ended before printing {prefix!r}")


def assert_stopped_cleanly(demo: subprocess.Popen[str], folder: Path) -> None:
    try:
        rest = demo.communicate(timeout=60)[0]
    except subprocess.TimeoutExpired:
        demo.kill()  # and what it started (their working directory is `folder`): no leftovers
        for pid in pids_in(folder):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        raise AssertionError("the demo did not stop within 60 s of the signal") from None
    assert demo.returncode == 0, rest[-2000:]
    assert "stopped; logs kept in" in rest
    assert running_in(folder) == []


@pytest.mark.parametrize(
    "signals",
    [(signal.SIGTERM,), (signal.SIGINT,), (signal.SIGINT, signal.SIGINT)],
    ids=["sigterm", "sigint", "sigint-twice"],
)
def test_demo_stops_everything_on_signal(tmp_path: Path, signals: tuple[signal.Signals, ...]):
    """SIGTERM (a supervisor) and SIGINT (Ctrl-C, pressed once or twice) end in the clean
    shutdown: exit 0, nothing left running."""
    demo = start_demo(tmp_path)
    read_until(demo, "injected:")  # everything runs: the traffic plan is printed
    assert running_in(tmp_path), "broker, Redis and worker should be running now"
    for sig in signals:
        demo.send_signal(sig)
    assert_stopped_cleanly(demo, tmp_path)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_demo_stops_everything_on_a_signal_while_starting(tmp_path: Path, sig: signal.Signals):
    """A signal while the servers start (it lands wherever the startup is: spawning the
    broker or Redis, creating topics, spawning the worker) ends the same way."""
    demo = start_demo(tmp_path)
    read_until(demo, "starting embedded Kafka-protocol broker")  # its first line
    demo.send_signal(sig)
    assert_stopped_cleanly(demo, tmp_path)
