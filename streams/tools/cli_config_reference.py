"""`meterguard config-reference`: docs/configuration.md from the settings and policy models
(streams/tools/config_reference.py), printed, written, or checked."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from meterguard.streams.tools.cli_common import err
from meterguard.streams.tools.config_reference import render


def config_reference(
    out: Annotated[
        Path | None, typer.Option(help="write it to this file (default: print it)")
    ] = None,
    check: Annotated[
        bool, typer.Option(help="with --out: exit 1 if the file differs, write nothing")
    ] = False,
) -> None:
    """The configuration reference: every MG_ variable and policy-file key, generated."""
    text = render()
    if out is None:
        if check:
            err.print("[red]--check needs --out FILE[/red]")
            raise typer.Exit(2)
        print(text, end="")
        return
    if check:
        current = out.read_text(encoding="utf-8") if out.exists() else None
        if current != text:
            err.print(
                f"[red]{escape(str(out))} is stale[/red]: run "
                f"`meterguard config-reference --out {escape(str(out))}`"
            )
            raise typer.Exit(1)
        return
    out.write_text(text, encoding="utf-8")
