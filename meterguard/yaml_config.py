"""Reading a YAML config file into a pydantic model, with errors a person can act on."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def load_yaml_model(model: type[M], path: str | Path | None, what: str) -> M:
    """`model` from the YAML file at `path` (defaults when no path). Raises ValueError naming
    the file and `what` it is ("policy file", "mapping file") for every way it can be wrong."""
    if not path:
        return model()
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {what} {path}: {exc}") from exc
    return model_from_yaml(model, text, f"{what} {path}")


def model_from_yaml(model: type[M], text: str, where: str) -> M:
    """`model` from YAML (or JSON) text; ValueError names `where` ("policy file x.yaml",
    "registry http://…") and every problem."""
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"cannot read {where}: {exc}") from exc
    if not isinstance(doc, dict):
        raise ValueError(f"invalid {where}: expected a mapping at the top level")
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise ValueError(f"invalid {where}:\n{describe_errors(exc)}") from exc


def describe_errors(exc: ValidationError) -> str:
    """One line per problem: where in the file, and what is wrong there."""
    lines = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)
