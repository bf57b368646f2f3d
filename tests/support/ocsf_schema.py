"""Validation of OCSF Detection Findings against the upstream OCSF schema.

The schema comes from the `ocsf-json-schema` package (PyPI, MIT; a dev dependency): it ships
the OCSF schema as exported by the OCSF server (`/export/schema`) for every release from
1.0.0-rc.2 to 1.8.0, and turns a class into a JSON Schema (draft 2020-12, objects embedded,
`additionalProperties: false`, OCSF's `at_least_one` constraints as `anyOf`), like the
server's `/export/json_schema`. Detection Finding (2004) exists from 1.1.0 on; a finding is
checked against every release from there, without profiles, and its captions (`severity`,
`status`, ...) against the ids' captions in the version it declares.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from jsonschema import Draft202012Validator
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

CLASS = "detection_finding"
VERSIONS = ("1.1.0", "1.2.0", "1.3.0", "1.4.0", "1.5.0", "1.6.0", "1.7.0", "1.8.0")
# (id attribute, its caption attribute) of the class itself.
CAPTIONED = (
    ("activity_id", "activity_name"),
    ("severity_id", "severity"),
    ("status_id", "status"),
    ("type_uid", "type_name"),
)


@cache
def raw_schema(version: str) -> dict[str, Any]:
    """The OCSF server's export of `version` (classes, objects, dictionary)."""
    schema: dict[str, Any] = get_ocsf_schema(version=version)
    return schema


@cache
def validator(version: str) -> Draft202012Validator:
    schema = OcsfJsonSchemaEmbedded(raw_schema(version)).get_class_schema(
        class_name=CLASS, profiles=[]
    )
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def schema_errors(finding: dict[str, Any], version: str) -> list[str]:
    return [
        f"{version} {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator(version).iter_errors(finding)
    ]


def caption_errors(finding: dict[str, Any]) -> list[str]:
    """Captions that disagree with their ids, in the OCSF version the finding declares."""
    raw = raw_schema(finding["metadata"]["version"])
    found = raw["classes"][CLASS]
    errors = []
    if finding.get("class_name") != found["caption"]:
        errors.append(f"class_name {finding.get('class_name')!r} != {found['caption']!r}")
    for id_name, caption_name in CAPTIONED:
        enum = found["attributes"][id_name]["enum"]
        expected = enum[str(finding[id_name])]["caption"]
        if finding.get(caption_name) != expected:
            errors.append(f"{caption_name} {finding.get(caption_name)!r} != {expected!r}")
    objects = raw["objects"]
    for i, seen in enumerate(finding.get("observables", [])):
        expected = objects["observable"]["attributes"]["type_id"]["enum"][str(seen["type_id"])]
        if seen.get("type") != expected["caption"]:
            errors.append(f"observables[{i}].type {seen.get('type')!r} != {expected['caption']!r}")
    analytic = finding["finding_info"]["analytic"]
    expected = objects["analytic"]["attributes"]["type_id"]["enum"][str(analytic["type_id"])]
    if analytic.get("type") != expected["caption"]:
        errors.append(f"analytic.type {analytic.get('type')!r} != {expected['caption']!r}")
    return errors


def problems(finding: dict[str, Any]) -> list[str]:
    """Everything wrong with `finding`, in every OCSF version with Detection Finding."""
    found = caption_errors(finding)
    for version in VERSIONS:
        found += schema_errors(finding, version)
    return found
