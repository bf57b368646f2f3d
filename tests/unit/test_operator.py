"""Operator actions and the SSE framing: pure logic, no server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from meterguard.models import ThrottleCommand, ThrottleLimits
from meterguard.streams.web.operator import check_bearer, clean_text, release_audit, release_command
from meterguard.streams.web.throttle_feed import format_sse

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
HELD = ThrottleCommand(
    command_id="c1",
    identity="svc-a",
    action="throttle",
    limits=ThrottleLimits(requests_per_minute=10),
    reason="spike",
    alert_id="a1",
    issued_at=T0,
    expires_at=T0 + timedelta(minutes=15),
    version=1_000,
)


def test_bearer_check_fails_closed_without_a_configured_token():
    refusal = check_bearer("Bearer anything", None)
    assert refusal is not None and refusal.status == 503


def test_bearer_check_tells_missing_from_wrong_and_accepts_the_token():
    assert check_bearer(None, "s3cret").status == 401  # type: ignore[union-attr]
    assert check_bearer("Basic s3cret", "s3cret").status == 401  # type: ignore[union-attr]
    assert check_bearer("Bearer ", "s3cret").status == 401  # type: ignore[union-attr]
    assert check_bearer("Bearer s3cre", "s3cret").status == 403  # type: ignore[union-attr]
    assert check_bearer("Bearer s3cret", "s3cret") is None
    assert check_bearer("bearer s3cret", "s3cret") is None  # the scheme is case-insensitive


def test_release_outranks_the_held_command_and_keeps_its_alert():
    now = T0 + timedelta(minutes=2)
    release = release_command(HELD, now, "alice", "false positive")
    assert release.action == "release" and release.version == HELD.version + 1
    assert release.alert_id == "a1" and release.expires_at == HELD.expires_at
    assert release.reason == "released by alice: false positive"
    assert release_command(HELD, now, "alice", "false positive") == release  # stable id
    late = release_command(HELD, T0 + timedelta(hours=1), "alice", "")
    assert late.expires_at == late.issued_at  # never expires before it was issued


def test_audit_names_both_commands_and_the_actor():
    release = release_command(HELD, T0, "bob", "")
    audit = release_audit(HELD, release, "bob", "", "10.0.0.1")
    assert (audit.target_command_id, audit.command_id) == ("c1", release.command_id)
    assert audit.actor == "bob" and audit.remote == "10.0.0.1" and audit.at == T0


def test_operator_text_is_made_printable_and_bounded():
    assert clean_text("a\nb\x1b[31mc", 100) == "a b [31mc"
    assert clean_text("x" * 600, 500) == "x" * 500
    assert clean_text(42, 10) == ""


def test_sse_frames_split_multiline_data_and_carry_the_id():
    assert format_sse("command", '{"a":1}', 7) == b'event: command\nid: 7\ndata: {"a":1}\n\n'
    assert format_sse("note", "one\ntwo") == b"event: note\ndata: one\ndata: two\n\n"
    assert format_sse("ready", "") == b"event: ready\ndata: \n\n"
