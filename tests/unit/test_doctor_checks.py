"""`meterguard doctor`'s verdicts (streams/tools/doctor_checks.py, doctor_destinations.py):
facts in, one line per finding out, and never a secret in a line."""

from __future__ import annotations

import pytest

from meterguard.streams.runtime.topics import TopicSpec
from meterguard.streams.settings import Settings
from meterguard.streams.tools.doctor import destination_views, secret_values, settings_finding
from meterguard.streams.tools.doctor_checks import (
    BrokerProbe,
    Finding,
    RedisProbe,
    TopicsProbe,
    TopicState,
    broker_findings,
    exit_code,
    file_finding,
    public_url,
    redis_findings,
    render,
    spread,
    summary,
    topic_findings,
)
from meterguard.streams.tools.doctor_destinations import (
    DestinationView,
    destination_findings,
    is_local,
)

SPECS = [
    TopicSpec("raw", 4),
    TopicSpec("events", 4),
    TopicSpec("throttle", 4, compacted=True),
]


def lines(findings: list[Finding]) -> list[str]:
    return render(findings)


def test_a_line_is_status_subject_message_on_one_line():
    line = Finding("WARN", "redis", "two\n  lines\tinside").line()
    assert line == "WARN redis: two lines inside"


def test_render_blanks_every_secret_value_wherever_it_appears():
    finding = Finding("FAIL", "broker", "auth failed for hunter22 (token=hunter22abc)")
    assert render([finding], ["hunter22abc", "hunter22", None, ""]) == [
        "FAIL broker: auth failed for *** (token=***)"
    ]


def test_exit_code_fails_on_fail_and_with_strict_on_warn():
    ok, warn, fail = (Finding(s, "x", "y") for s in ("OK", "WARN", "FAIL"))
    assert exit_code([ok, Finding("SKIP", "t", "u")]) == 0
    assert exit_code([ok, warn]) == 0
    assert exit_code([ok, warn], strict=True) == 1
    assert exit_code([ok, fail]) == 1
    assert summary([ok, warn, fail, fail]) == "doctor: 2 FAIL, 1 WARN, 1 OK"


def test_public_url_drops_user_password_query_and_fragment():
    assert public_url("https://u:pw@hooks.example.com:8443/a/b?t=x#f") == (
        "https://hooks.example.com:8443/a/b"
    )
    assert public_url("rediss://u:pw@redis:6380/0?password=x") == "rediss://redis:6380/0"


def test_broker_answer_and_each_failure_name_what_to_check():
    ok = BrokerProbe("k:9092", brokers=3, cluster_id="abc")
    assert lines(broker_findings(ok, "SASL_SSL", 5)) == [
        "OK   broker: k:9092 answered metadata over SASL_SSL (3 brokers, cluster id abc)"
    ]
    down = BrokerProbe("k:9092", failure="unreachable", error="KafkaConnectionError: no")
    [plain] = lines(broker_findings(down, "PLAINTEXT", 5))
    assert plain.startswith("FAIL broker: cannot reach k:9092 (KafkaConnectionError: no)")
    assert "MG_KAFKA_BROKER" in plain and "SASL" not in plain
    [sasl] = lines(broker_findings(down, "SASL_SSL", 5))
    assert "speaks SASL_SSL" in sasl and "MG_KAFKA_SASL_*" in sasl
    [slow] = lines(broker_findings(BrokerProbe("k:9092", failure="timeout"), "PLAINTEXT", 2.5))
    assert "no metadata from k:9092 within 2.5 s" in slow
    [auth] = lines(broker_findings(BrokerProbe("k:9092", failure="auth"), "SASL_SSL", 5))
    assert "refused the SASL credentials" in auth and "MG_KAFKA_SASL_PASSWORD" in auth


def test_topics_all_present_and_compacted_are_ok():
    probe = TopicsProbe(
        {
            "raw": TopicState(4),
            "events": TopicState(4),
            "throttle": TopicState(4, None, "compact"),
        }
    )
    found = topic_findings(SPECS, probe, "raw", "events")
    assert [f.status for f in found] == ["OK"] * 4
    assert found[2].message == "4 partitions; cleanup.policy=compact"
    assert found[3].message.startswith("events (4) spreads evenly over 1, 2 or 4 workers")


def test_missing_topic_unusable_topic_and_uncompacted_throttle_fail():
    probe = TopicsProbe(
        {
            "raw": TopicState(error="TopicAuthorizationFailedError"),
            "events": TopicState(error="UnknownTopicOrPartitionError"),
            "throttle": TopicState(4, None, "delete"),
        }
    )
    found = lines(topic_findings(SPECS, probe, "raw", "events"))
    assert found[0] == (
        "FAIL topic raw: not usable (TopicAuthorizationFailedError): check the user's ACLs"
    )
    assert found[1].startswith("FAIL topic events: missing: create it with 4 partitions (`")
    assert found[2].startswith("FAIL topic throttle: cleanup.policy is delete")
    assert len(found) == 3  # nothing to say about partitions without both counts


def test_a_topic_absent_from_the_answer_is_missing():
    found = topic_findings([TopicSpec("raw", 4)], TopicsProbe({}), "raw", "events")
    assert found[0].status == "FAIL" and "missing" in found[0].message


def test_partition_counts_other_than_configured_and_unequal_stages_warn():
    probe = TopicsProbe(
        {
            "raw": TopicState(6),
            "events": TopicState(4),
            "throttle": TopicState(4, None, "compact,delete"),
        }
    )
    found = lines(topic_findings(SPECS, probe, "raw", "events"))
    assert found[0].startswith("WARN topic raw: 6 partitions; MG_TOPIC_PARTITIONS is 4")
    assert found[2] == "OK   topic throttle: 4 partitions; cleanup.policy=compact,delete"
    assert found[3].startswith("WARN partitions: raw has 6 and events 4: decoding spreads")


def test_with_raw_keyed_by_identity_the_raw_topic_is_the_scored_one():
    probe = TopicsProbe({"raw": TopicState(6), "events": TopicState(4)})
    found = topic_findings(SPECS[:2], probe, "raw", "events", keyed=True)
    assert [f.status for f in found] == ["WARN", "OK", "OK"]  # raw: 6 partitions, not 4
    assert found[2].message.startswith("raw (6) spreads evenly over 1, 2, 3 or 6 workers")


def test_unreadable_configs_are_a_warning_not_a_failure():
    probe = TopicsProbe(
        {"raw": TopicState(4), "events": TopicState(4), "throttle": TopicState(4)},
        configs_error="KafkaConnectionError: connection dropped",
    )
    found = topic_findings(SPECS, probe, "raw", "events")
    assert found[2].status == "WARN"
    assert "cleanup.policy not readable (KafkaConnectionError" in found[2].message


@pytest.mark.parametrize(
    ("partitions", "even"),
    [(1, [1]), (4, [1, 2, 4]), (6, [1, 2, 3, 6]), (7, [1, 7]), (24, [1, 2, 3, 4, 6, 8, 12])],
)
def test_spread_lists_the_worker_counts_that_share_partitions_equally(partitions, even):
    assert spread(partitions) == even


def test_redis_ok_lines_and_warnings_on_persistence_and_eviction():
    probe = RedisProbe("redis://r:6379/0", version="7.2.4", aof_enabled=True)
    assert lines(redis_findings(probe, 5)) == [
        "OK   redis: redis://r:6379/0 answered PING (standalone, version 7.2.4)",
        "OK   redis persistence: appendonly yes",
    ]
    risky = RedisProbe(
        "redis://r:6379/0",
        cluster=True,
        nodes=3,
        aof_enabled=False,
        maxmemory=1 << 30,
        maxmemory_policy="volatile-lru",
    )
    found = lines(redis_findings(risky, 5))
    assert found[0] == "OK   redis: redis://r:6379/0 answered PING (cluster of 3 primaries)"
    assert found[1].startswith("WARN redis persistence: appendonly is off")
    assert found[2].startswith("WARN redis memory: maxmemory-policy volatile-lru evicts keys")
    unlimited = RedisProbe(
        "redis://r", aof_enabled=None, maxmemory=0, maxmemory_policy="allkeys-lru"
    )
    assert [f.status for f in redis_findings(unlimited, 5)] == ["OK"]


def test_redis_failures_are_one_line_naming_the_setting():
    refused = RedisProbe("rediss://r:6380/0", failure="refused", error="Redis at … refused")
    assert lines(redis_findings(refused, 5)) == ["FAIL redis: Redis at … refused"]
    [down] = lines(redis_findings(RedisProbe("redis://r:1/0", failure="unreachable", error="E"), 5))
    assert down == (
        "FAIL redis: cannot reach redis://r:1/0 (E): check MG_REDIS_URL; a TLS port needs rediss://"
    )
    [tls] = lines(redis_findings(RedisProbe("rediss://r:1/0", failure="unreachable", error="E"), 5))
    assert tls.endswith(
        "a rediss:// URL needs a TLS port (a plain port never finishes the handshake)"
    )
    [hang] = lines(redis_findings(RedisProbe("redis://r:1/0", failure="timeout"), 3))
    assert "no answer from redis://r:1/0 within 3 s" in hang
    [node] = lines(redis_findings(RedisProbe("redis://r:1/0", failure="not_cluster"), 3))
    assert node.endswith("unset MG_REDIS_CLUSTER")


def test_file_findings():
    assert file_finding("policy", "MG_POLICY_FILE", None, None).line() == (
        "OK   policy: built-in default (MG_POLICY_FILE not set)"
    )
    assert file_finding("policy", "MG_POLICY_FILE", "p.yaml", None).status == "OK"
    assert file_finding("policy", "MG_POLICY_FILE", "p.yaml", "bad key").line() == (
        "FAIL policy: MG_POLICY_FILE=p.yaml: bad key"
    )
    named = file_finding("policy", "MG_POLICY_FILE", "p.yaml", "invalid policy file p.yaml: x")
    assert named.line() == "FAIL policy: MG_POLICY_FILE: invalid policy file p.yaml: x"


def view(url_host: str, scheme: str = "https", kind: str = "webhook", secret: bool = True):
    return DestinationView(kind, f"{scheme}://{url_host}/hook", scheme, url_host, secret)


def test_destinations_https_signed_reachable_is_ok():
    found = destination_findings([view("siem.example.com")], None, (), {})
    assert lines(found) == [
        "OK   webhook https://siem.example.com/hook: signed webhook (not probed)"
    ]
    reached = destination_findings(
        [view("siem.example.com")], None, (), {"https://siem.example.com/hook": None}
    )
    assert reached[0].message == "signed webhook, reachable"


def test_http_warns_except_to_this_host_and_an_unsigned_webhook_fails():
    remote = lines(destination_findings([view("siem.example.com", "http", secret=False)], None))
    assert remote[0].startswith("WARN webhook http://siem.example.com/hook: plain http")
    assert remote[1].startswith("FAIL webhook http://siem.example.com/hook: no signing secret")
    assert remote[1].endswith("set MG_WEBHOOK_SECRET")
    local = destination_findings([view("127.0.0.1", "http")], None)
    assert [f.status for f in local] == ["OK"]
    slack = destination_findings([view("hooks.slack.com", kind="slack", secret=False)], None)
    assert slack[0].line().startswith("OK   slack https://hooks.slack.com/hook: Slack incoming")


def test_an_unreachable_destination_fails_and_settings_errors_are_one_line():
    name = "https://siem.example.com/hook"
    found = destination_findings([view("siem.example.com")], None, (), {name: "refused"})
    assert lines(found) == [f"FAIL webhook {name}: not reachable: refused"]
    assert lines(
        destination_findings([], "MG_SLACK_BOT_TOKEN and MG_SLACK_CHANNEL go together")
    ) == ["FAIL destinations: MG_SLACK_BOT_TOKEN and MG_SLACK_CHANNEL go together"]
    assert destination_findings([], None)[0].message.startswith("none configured")
    assert destination_findings([], None, ["ignored"])[0].status == "WARN"


@pytest.mark.parametrize(
    ("host", "local"),
    [("localhost", True), ("127.0.0.1", True), ("::1", True), ("10.0.0.1", False), ("a.b", False)],
)
def test_is_local(host, local):
    assert is_local(host) is local


def test_destination_views_from_the_settings_carry_no_secret():
    settings = Settings(
        webhook_url="https://u:pw-one@siem.example.com/in?token=tok-two,http://127.0.0.1:9/h",
        webhook_secret="sig-three",
        slack_webhook_url="https://hooks.slack.com/services/T0/B0/slack-four",
        slack_bot_token="xoxb-five",
        slack_channel="C0ALERTS",
    )
    views, error, notes = destination_views(settings, Settings().policy.routing)
    assert error is None
    assert [v.name for v, _ in views] == [
        "https://siem.example.com/in",
        "http://127.0.0.1:9/h",
        "https://slack.com/api/#C0ALERTS",
    ]
    assert notes and "MG_SLACK_WEBHOOK_URL is ignored" in notes[0]
    found = destination_findings([v for v, _ in views], error, notes)
    text = "\n".join(render(found, secret_values(settings)))
    for secret in ("pw-one", "tok-two", "sig-three", "slack-four", "xoxb-five"):
        assert secret not in text
    assert set(secret_values(settings)) >= {"pw-one", "token=tok-two", "sig-three", "xoxb-five"}


def test_a_bot_token_without_channel_is_the_destinations_error():
    _, error, _ = destination_views(Settings(slack_bot_token="xoxb-x"), Settings().policy.routing)
    assert error == "MG_SLACK_BOT_TOKEN and MG_SLACK_CHANNEL go together: set both"


def test_a_settings_error_names_the_variable_not_the_value():
    error = {"loc": ("web_port",), "msg": "Input should be a valid integer", "input": "s3cr3t"}
    assert settings_finding(error).line() == (
        "FAIL settings: MG_WEB_PORT: Input should be a valid integer"
    )
