#!/usr/bin/env python3
"""Capture REAL LiteLLM StandardLoggingPayload objects (success + failure, sync + async).

No network: mock_response makes litellm skip the provider call but the full logging
pipeline (Logging object, cost calc, StandardLoggingPayload build, callbacks) still runs.

metadata passed to completion(metadata={...}) imitates what the LiteLLM proxy puts into
request metadata (litellm/proxy/litellm_pre_call_utils.py add_user_api_key_auth_to_request_metadata):
user_api_key = sha256 hex of the virtual key, user_api_key_alias, user_api_key_team_id, ...

Outputs (samples/):
  litellm_slp_success_sync.json    kwargs["standard_logging_object"] from log_success_event
  litellm_slp_success_async.json   ... from async_log_success_event (acompletion)
  litellm_slp_failure_sync.json    ... from log_failure_event (mock RateLimitError)
  litellm_slp_failure_async.json   ... from async_log_failure_event (mock Exception -> MockException 500)
  litellm_slp_no_key_metadata.json success without proxy-style metadata (SDK-only use)
  litellm_generic_api_batch.json   what GenericAPILogger(log_format="json_array") would POST:
                                   safe_dumps(tuple_of_payloads) -> JSON array
  litellm_spend_logs_payload.json  litellm.proxy.spend_tracking.spend_tracking_utils.get_logging_payload()
                                   output for the async success call (SpendLogsPayload). Needs proxy deps:
                                   pip install fastapi backoff redis orjson apscheduler pyjwt python-multipart
                                   cryptography rq websockets semver pynacl expression restrictedpython
                                   tomlkit fastapi-sso mcp soundfile   (litellm[proxy] itself does not resolve
                                   for 1.110.2: litellm-proxy==1.110.2 is not on PyPI)

Run: LITELLM_LOCAL_MODEL_COST_MAP=True /tmp/issue11/venv/bin/python gen_litellm.py
"""
import asyncio
import hashlib
import json
import os
import sys
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch of the cost map

import litellm  # noqa: E402
from litellm.integrations.custom_logger import CustomLogger  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "samples")
RAW_KEY = "sk-meterguard-test-0001"
KEY_HASH = hashlib.sha256(RAW_KEY.encode()).hexdigest()  # == litellm.proxy.utils.hash_token(RAW_KEY)


class Capture(CustomLogger):
    def __init__(self):
        super().__init__()
        self.events = []  # (hook_name, kwargs)

    def _grab(self, name, kwargs, response_obj):
        self.events.append((name, kwargs, response_obj))

    def log_success_event(self, kwargs, response_obj, start_time, end_time):
        self._grab("log_success_event", kwargs, response_obj)

    def log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self._grab("log_failure_event", kwargs, response_obj)

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        self._grab("async_log_success_event", kwargs, response_obj)

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self._grab("async_log_failure_event", kwargs, response_obj)


def proxy_like_metadata(tag):
    return {
        "user_api_key": KEY_HASH,
        "user_api_key_hash": KEY_HASH,  # proxy sets both (get_sanitized_user_information_from_key)
        "user_api_key_alias": "acme-prod-key",
        "user_api_key_team_id": "team-acme",
        "user_api_key_team_alias": "Acme",
        "user_api_key_user_id": "user-42",
        "user_api_key_org_id": "org-1",
        "user_api_key_end_user_id": "enduser-7",
        "tags": ["meterguard", tag],
        "spend_logs_metadata": {"tenant": "acme"},
    }


MSGS = [{"role": "user", "content": "Say hi"}]


def wait_for(cap, names, n, timeout=10.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if sum(1 for e in cap.events if e[0] in names) >= n:
            return
        time.sleep(0.05)


def take(cap, names):
    for i, e in enumerate(cap.events):
        if e[0] in names:
            return cap.events.pop(i)
    return None


def save(name, obj):
    with open(os.path.join(OUT, name), "w") as f:
        json.dump(obj, f, indent=2, default=str, sort_keys=True)


def main():
    os.makedirs(OUT, exist_ok=True)
    cap = Capture()
    litellm.callbacks = [cap]
    results = {}

    # 1) sync success
    r = litellm.completion(model="gpt-4o-mini", messages=MSGS, mock_response="hi",
                           metadata=proxy_like_metadata("sync"), user="enduser-7")
    wait_for(cap, {"log_success_event"}, 1)
    ev = take(cap, {"log_success_event"})
    results["litellm_slp_success_sync.json"] = ev[1]["standard_logging_object"]
    print("sync completion usage:", r.usage)

    # 2) sync failure: the string "litellm.RateLimitError" is litellm's built-in mock error
    try:
        litellm.completion(model="gpt-4o-mini", messages=MSGS, mock_response="litellm.RateLimitError",
                           metadata=proxy_like_metadata("sync-fail"), num_retries=0)
    except Exception as e:  # noqa: BLE001
        print("sync failure raised:", type(e).__name__)
    wait_for(cap, {"log_failure_event"}, 1)
    ev = take(cap, {"log_failure_event"})
    results["litellm_slp_failure_sync.json"] = ev[1]["standard_logging_object"] if ev else None

    # 3) async success + failure
    async def run_async():
        r = await litellm.acompletion(model="gpt-4o-mini", messages=MSGS, mock_response="hi",
                                      metadata=proxy_like_metadata("async"))
        try:
            await litellm.acompletion(model="gpt-4o-mini", messages=MSGS,
                                      mock_response=Exception("upstream exploded"),
                                      metadata=proxy_like_metadata("async-fail"), num_retries=0)
        except Exception as e:  # noqa: BLE001
            print("async failure raised:", type(e).__name__)
        await asyncio.sleep(1.0)  # let async callbacks run
        return r

    r_async = asyncio.run(run_async())
    wait_for(cap, {"async_log_success_event"}, 1)
    wait_for(cap, {"async_log_failure_event"}, 1)
    ev_s = take(cap, {"async_log_success_event"})
    ev_f = take(cap, {"async_log_failure_event"})
    results["litellm_slp_success_async.json"] = ev_s[1]["standard_logging_object"] if ev_s else None
    results["litellm_slp_failure_async.json"] = ev_f[1]["standard_logging_object"] if ev_f else None

    # 4) SDK call without proxy metadata
    litellm.completion(model="gpt-4o-mini", messages=MSGS, mock_response="hi")
    wait_for(cap, {"log_success_event"}, 1)
    ev = take(cap, {"log_success_event"})
    results["litellm_slp_no_key_metadata.json"] = ev[1]["standard_logging_object"] if ev else None

    for name, obj in results.items():
        save(name, obj)
        print(f"{name}: {'OK' if obj else 'MISSING'}")

    # 5) GenericAPILogger json_array body = safe_dumps(tuple(log_queue))
    from litellm.litellm_core_utils.safe_json_dumps import safe_dumps
    batch = tuple(x for x in (results["litellm_slp_success_async.json"], results["litellm_slp_failure_async.json"]) if x)
    with open(os.path.join(OUT, "litellm_generic_api_batch.json"), "w") as f:
        f.write(safe_dumps(batch))

    # 6) SpendLogsPayload as the proxy would write it (needs proxy extras; best effort)
    try:
        from litellm.proxy.spend_tracking.spend_tracking_utils import get_logging_payload
        kw = ev_s[1]
        p = get_logging_payload(kwargs=kw, response_obj=ev_s[2], start_time=kw["start_time"],
                                end_time=kw["end_time"])
        save("litellm_spend_logs_payload.json", dict(p))
        print("SpendLogsPayload: OK, api_key =", p["api_key"])
        # Pitfall demo: without metadata.user_api_key_hash the already-hashed user_api_key is
        # hashed again by redact_logged_api_key() -> api_key = sha256(sha256(raw_key)).
        kw2 = dict(kw)
        lp = dict(kw2["litellm_params"]); md = dict(lp.get("metadata") or {})
        md.pop("user_api_key_hash", None); lp["metadata"] = md; kw2["litellm_params"] = lp
        sl = dict(kw2["standard_logging_object"]); slm = dict(sl["metadata"]); slm["user_api_key_hash"] = None
        sl["metadata"] = slm; kw2["standard_logging_object"] = sl
        p2 = get_logging_payload(kwargs=kw2, response_obj=ev_s[2], start_time=kw["start_time"], end_time=kw["end_time"])
        print("  without user_api_key_hash -> api_key =", p2["api_key"],
              "(double hash)" if p2["api_key"] == hashlib.sha256(KEY_HASH.encode()).hexdigest() else "")
    except Exception as e:  # noqa: BLE001
        print("SpendLogsPayload: not generated:", type(e).__name__, str(e)[:200], file=sys.stderr)

    print("key sha256:", KEY_HASH)


if __name__ == "__main__":
    main()
