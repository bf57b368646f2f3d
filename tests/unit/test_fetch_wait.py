"""The worker's consumers wait MG_FETCH_MAX_WAIT_MS per fetch, not Faust's fixed 1.5 s."""

from __future__ import annotations

from meterguard.streams.runtime.app import create_app
from meterguard.streams.settings import Settings


async def test_the_worker_consumer_is_built_with_the_configured_fetch_wait(tmp_path) -> None:
    settings = Settings(
        _env_file=None,
        kafka_broker="kafka://127.0.0.1:1",  # never contacted: the consumer is not started
        redis_url="redis://127.0.0.1:1/0",
        data_dir=str(tmp_path),
        fetch_max_wait_ms=37,
    )
    app = create_app(settings)
    thread = app.consumer._thread
    consumer = thread._create_worker_consumer(app.transport)
    assert consumer._fetch_max_wait_ms == 37
    assert Settings(_env_file=None).fetch_max_wait_ms < 1500
