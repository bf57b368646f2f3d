"""Shared test helpers for tests/unit and tests/integration (no test_ modules: never collected).

- `polling`: `eventually`, the one poll-until-true (or fail with a log tail) for every test.
- `alerts`: `make_alert`, the one `meterguard.models.Alert` factory, and `HOSTILE`.
- `slack_blocks`: walks a Slack message's Block Kit blocks for its texts.
- `traffic`, `format_traffic`, `format_samples`: hand-made and captured input traffic.
- `detector_scenarios`: labelled minute-by-minute traffic per detector.
- `slack_emulator`: a local Slack Web API (a real HTTP server: integration tests only).
- `worker_process`: `meterguard worker` as a child process (integration tests only).
"""
