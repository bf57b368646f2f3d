"""Every HTTP route that changes state needs the API token (issue 14, security): the routes
with a mutating method are exactly the ones known to check it, so a new one cannot slip in
unprotected. Their refusals (401 without a token, 403 with a wrong one, 503 when no token is
configured) are tested against a live worker in tests/integration (test_worker.py,
test_http_ingest.py)."""

from __future__ import annotations

from pathlib import Path

from meterguard.streams.runtime.app import create_app
from meterguard.streams.settings import Settings

MUTATING = ("post", "put", "patch", "delete")
# Each of these calls operator.check_bearer before anything else.
TOKEN_CHECKED = {"/api/events", "/v1/traces", "/api/throttles/{identity}/release"}


async def test_every_route_that_changes_state_is_a_token_checked_one(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,
        kafka_broker="kafka://127.0.0.1:1",  # never contacted
        redis_url="redis://127.0.0.1:1/0",
        data_dir=str(tmp_path),
    )
    app = create_app(settings)
    mutating = {
        path
        for path, view in app.web.views.items()
        if any(m in vars(cls) for cls in _ours(type(view)) for m in MUTATING)
    }
    assert mutating == TOKEN_CHECKED
    assert len(app.web.views) > len(TOKEN_CHECKED)  # the read-only routes were seen too


def _ours(view: type) -> list[type]:
    """The view's classes below Faust's View (whose methods answer 405)."""
    return [c for c in view.__mro__ if c.__module__.startswith("meterguard")]
