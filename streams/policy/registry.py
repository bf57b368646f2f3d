"""The identity registry (MG_REGISTRY_FILE): who owns each identity, for roll-ups and budgets.

A YAML file (`identities: {<identity>: {team, business_unit, environment, owner, workload}}`
plus `defaults`) or a CSV file with an `identity` column and any of those columns (example:
deploy/registry.yaml); or the same served over HTTP (MG_REGISTRY_URL, JSON, YAML or CSV,
refreshed by streams/runtime/registry_feed.py).

An event's owner, per dimension (`attribute`):
1. the registry's entry for its identity, where it names the dimension: the registry is the
   owner's statement of who pays, so a gateway cannot move a key to another team's budget;
2. else the event's own field;
3. else the registry's `defaults`;
4. else empty, reported as "(unassigned)".

An identity missing from a registry that lists some is *unregistered*: it is counted and
listed (store/rollups.py), never dropped. Without a registry file, no identity is.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from meterguard.models import MeteringEvent
from meterguard.yaml_config import describe_errors, load_yaml_model, model_from_yaml

DIMENSIONS = ("team", "business_unit", "environment", "owner", "workload")
# Roll-ups are kept for these (store/rollups.py): the levels budgets and showback ask for.
# `model` and `identity` come from the event itself: showback by model, and by identity for
# periods longer than the identity's minute windows.
ROLLUP_DIMENSIONS = ("team", "business_unit", "environment", "model", "identity")
UNASSIGNED = ""


class Ownership(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    team: str | None = Field(default=None, min_length=1, max_length=256)
    business_unit: str | None = Field(default=None, min_length=1, max_length=256)
    environment: str | None = Field(default=None, min_length=1, max_length=256)
    owner: str | None = Field(default=None, min_length=1, max_length=256)
    workload: str | None = Field(default=None, min_length=1, max_length=256)


class Registry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    identities: dict[str, Ownership] = Field(default_factory=dict)
    defaults: Ownership = Ownership()

    @classmethod
    def load(cls, path: str | Path | None) -> Registry:
        """From YAML or CSV (by extension); none: the empty registry. ValueError says what is
        wrong, per line or key."""
        if path and str(path).lower().endswith(".csv"):
            return _from_csv(Path(path))
        return load_yaml_model(cls, path, "registry file")

    @property
    def configured(self) -> bool:
        return bool(self.identities)

    def registered(self, identity: str) -> bool:
        return not self.configured or identity in self.identities


@dataclass(frozen=True)
class Attributed:
    team: str
    business_unit: str
    environment: str
    owner: str
    workload: str

    def of(self, dimension: str) -> str:
        value: str = getattr(self, dimension)
        return value


def attribute(event: MeteringEvent, registry: Registry) -> Attributed:
    entry = registry.identities.get(event.identity)
    values: dict[str, str] = {}
    for name in DIMENSIONS:
        found = getattr(entry, name) if entry is not None else None
        if found is None:
            found = getattr(event, name, None)
        if found in (None, ""):
            found = getattr(registry.defaults, name)
        values[name] = found or UNASSIGNED
    return Attributed(**values)


def parse(body: str, where: str, csv_format: bool) -> Registry:
    """A registry from text (a file's or an HTTP body's): CSV, else YAML (JSON is YAML)."""
    if csv_format:
        return _from_csv_text(body, where)
    return model_from_yaml(Registry, body, f"registry {where}")


def _from_csv(path: Path) -> Registry:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read registry file {path}: {exc}") from exc
    return _from_csv_text(text, f"file {path}")


def _from_csv_text(text: str, where: str) -> Registry:
    path = where
    reader = csv.DictReader(io.StringIO(text))
    columns = set(reader.fieldnames or ())
    if "identity" not in columns:
        raise ValueError(f"invalid registry {path}: no `identity` column")
    unknown = columns - {"identity", *DIMENSIONS}
    if unknown:
        raise ValueError(f"invalid registry {path}: unknown columns {sorted(unknown)}")
    identities: dict[str, Mapping[str, str]] = {}
    problems: list[str] = []
    for line, row in enumerate(reader, start=2):
        identity = (row.get("identity") or "").strip()
        if not identity:
            problems.append(f"  line {line}: empty identity")
            continue
        if identity in identities:
            problems.append(f"  line {line}: {identity!r} is listed twice")
            continue
        identities[identity] = {k: v.strip() for k, v in row.items() if k in DIMENSIONS and v}
    if problems:
        raise ValueError(f"invalid registry {path}:\n" + "\n".join(problems))
    try:
        return Registry.model_validate({"identities": identities})
    except ValidationError as exc:
        raise ValueError(f"invalid registry {path}:\n{describe_errors(exc)}") from exc


RollupTargets = tuple[tuple[str, str], ...]  # ((dimension, value), ...) an event adds to


def rollup_targets(
    events: list[MeteringEvent], registry: Registry
) -> tuple[list[RollupTargets], list[int]]:
    """One identity's events -> the distinct roll-up target groups and each event's group."""
    groups: dict[RollupTargets, int] = {}
    of_event: list[int] = []
    for event in events:
        owner = attribute(event, registry)
        targets = (
            *((dim, owner.of(dim)) for dim in ("team", "business_unit", "environment")),
            ("model", event.model or UNASSIGNED),
            ("identity", event.identity),
        )
        of_event.append(groups.setdefault(targets, len(groups)))
    return list(groups), of_event
