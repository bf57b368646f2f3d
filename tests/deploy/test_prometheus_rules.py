"""deploy/prometheus/: the scrape config and the alert rules. With `promtool` on PATH (Debian's
`prometheus` package): `promtool check config`, `promtool check rules`, and `promtool test
rules` on synthetic series (tests/deploy/prometheus_rules_test.yaml: each alert fires when
it should and not before). Without it those three skip, and the YAML is still checked here.
The metric names the rules query are compared with a live worker's in
test_grafana_metrics_live.py."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.deploy.deploy_files import (
    PROMETHEUS_CONFIG,
    RULES,
    RULES_TEST,
    dashboard_exprs,
    metric_names,
    rules,
)

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not on PATH (apt-get install prometheus)"
)
REQUIRED = {"MeterguardWorkerDown", "MeterguardConsumerLagGrowing", "MeterguardSinkDeadLetters"}


def promtool(*args: str) -> str:
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=RULES_TEST.parent,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@needs_promtool
def test_promtool_accepts_the_scrape_config_and_its_rule_file():
    out = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert "SUCCESS: 1 rule files found" in out


@needs_promtool
def test_promtool_accepts_the_rules():
    out = promtool("check", "rules", str(RULES))
    assert f"SUCCESS: {len(rules())} rules found" in out


@needs_promtool
def test_each_alert_fires_on_its_condition_and_not_before():
    assert "SUCCESS" in promtool("test", "rules", RULES_TEST.name)


def test_lag_worker_down_and_sink_dlq_alerts_are_there_with_severity_and_summary():
    found = {rule["alert"]: rule for rule in rules()}
    assert set(found) >= REQUIRED
    for name, rule in found.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert metric_names(rule["expr"]), name


def test_metric_names_are_read_out_of_promql():
    assert metric_names('sum by (topic) (rate(meterguard_events_total{status!="x"}[5m]))') == {
        "meterguard_events_total"
    }
    assert metric_names(
        "histogram_quantile(0.99, sum by (le, sink) (rate(a_bucket[5m]))) / ignoring (x) b"
    ) == {"a_bucket", "b"}
    assert metric_names("(x > 1000) and (deriv(sum by (t) (y)[10m:1m]) > 0) unless z") == {
        "x",
        "y",
        "z",
    }
    assert all(metric_names(expr) for expr in dashboard_exprs())
