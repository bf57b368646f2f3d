"""`meterguard replay --policy CANDIDATE --compare-policy CURRENT` (a policy what-if): the two
policy files, and the report (streams/offline/replay_compare.py, policy_diff*.py)."""

from __future__ import annotations

from pathlib import Path

import orjson
import typer
from rich.console import Console

from meterguard.streams.offline.policy_diff_view import render
from meterguard.streams.offline.replay_compare import Comparison, Policies
from meterguard.streams.policy.config import PolicyConfig
from meterguard.streams.settings import Settings
from meterguard.streams.tools.cli_common import err, load_settings


def replay_policies(
    policy: Path | None, compare_policy: Path | None
) -> tuple[Settings, Policies | None]:
    """The settings with --policy in place of MG_POLICY_FILE, and the two policies of a
    what-if; exit 2 naming the problem (PolicyConfig.load's messages)."""
    if policy is None:
        if compare_policy is not None:
            err.print("[red]--compare-policy needs --policy[/red] (the candidate to compare)")
            raise typer.Exit(2)
        return load_settings(), None
    try:
        settings = Settings(policy_file=str(policy))
        candidate = settings.policy
        current = None if compare_policy is None else PolicyConfig.load(str(compare_policy))
    except ValueError as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc
    return settings, None if current is None else Policies(current, candidate)


def report(result: Comparison, current: str, candidate: str, diff_out: Path | None) -> None:
    console = Console()
    if not console.is_terminal:
        console.width = 120  # a file or a pipe: room for the examples
    render(result.diff, console, current, candidate)
    if diff_out is not None:
        doc = {
            "current_policy": current,
            "candidate_policy": candidate,
            "events": result.candidate.events,
            **result.diff.to_dict(),
        }
        diff_out.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
        err.print(f"diff written to {diff_out}")
