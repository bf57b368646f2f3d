"""LiteLLM proxy callbacks: meter every call to Kafka, enforce throttles before each call.

`MeterguardCallback` is one LiteLLM `CustomLogger`; register an instance in the proxy's
config.yaml (`litellm_settings: {callbacks: ["meterguard_callbacks.meterguard"]}`, module in
deploy/litellm/). Both halves are optional:

- with a `KafkaPublisher`: LiteLLM's standard logging payload of every success and failure
  goes to `metering.raw`, keyed by the identity, with header `mg-format: litellm`
  (`streams/decoding/formats/litellm_spend.py` reads it). Messages and responses are
  redacted by LiteLLM's own per-callback redaction (`turn_off_message_logging`) unless
  `include_content=True`: metering needs none of it, and a long prompt would push a record
  past the 1 MiB message limit. Failures of requests this hook refused are not published:
  no model was called (the ASGI middleware's refusals never reach LiteLLM either);
- with a `ThrottleClient`: `async_pre_call_hook` answers 429 (`MeterguardRefusal`, a fastapi
  `HTTPException` with `Retry-After` and the middleware's JSON body) for a refused identity,
  or 503 while a fail-closed client's throttle view is stale (gateway/fail_mode.py), and
  successes charge their real tokens, so tokens_per_minute limits bite.

Identity of an API key, one scheme everywhere (deploy/README.md): the key's alias where set,
else the SHA-256 hex of the key (LiteLLM's `hash_token`). The hook reads it from the proxy's
`UserAPIKeyAuth`, the logger from the payload's metadata, the worker's decoder from the same
metadata: one key, one identity.

Nothing here blocks or breaks LiteLLM's call path: the producer and the throttle feed start
lazily on the proxy's event loop, publishing never raises (failures are logged and counted),
and a hook that cannot decide (a bug) follows the client's fail mode: open lets the request
through, closed refuses it with 503. Only this module imports litellm
and fastapi (the `meterguard[litellm]` extra); `meterguard.gateway` does not import it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import HTTPException

# litellm/integrations/custom_logger.py: CustomLogger, the proxy's callback base class.
from litellm.integrations.custom_logger import CustomLogger

# litellm/litellm_core_utils/safe_json_dumps.py: what LiteLLM's own HTTP loggers serialise
# payloads with (cycles and depth handled); our fallback when orjson cannot.
from litellm.litellm_core_utils.safe_json_dumps import safe_dumps

# litellm/types/proxy/auth/user_api_key_auth.py: UserAPIKeyAuth, the proxy's authenticated key.
from litellm.types.proxy.auth.user_api_key_auth import UserAPIKeyAuth

from meterguard.gateway.asgi import refusal_body
from meterguard.gateway.client import Decision, ThrottleClient
from meterguard.gateway.fail_mode import FailMode
from meterguard.gateway.publisher import KafkaPublisher

log = logging.getLogger(__name__)

RECORD_HEADERS = (("mg-format", b"litellm"), ("content-type", b"application/json"))


# -- identity --------------------------------------------------------------------------------


def key_identity(alias: object, *key_hashes: object) -> str | None:
    """The alias where set, else the first key hash that is: "set" as meterguard's decoder
    reads it (`formats/common.py` `first`: None and "" are unset)."""
    for value in (alias, *key_hashes):
        if isinstance(value, str) and value != "":
            return value
    return None


def identity_of_auth(auth: UserAPIKeyAuth | None) -> str | None:
    """The identity of the key the proxy authenticated.

    `key_alias` is the key's row (litellm/models/verification_token.py
    LiteLLM_VerificationToken). `token` is the hashed key: `UserAPIKeyAuth.check_api_key`
    (litellm/types/proxy/auth/user_api_key_auth.py) sets `token` and `api_key` to
    `hash_token(key)`, the SHA-256 hex, for every `sk-` key, and the proxy refuses other
    virtual keys (litellm/proxy/auth/user_api_key_auth.py). `api_key` is what the proxy logs
    as `user_api_key_hash` (litellm/proxy/litellm_pre_call_utils.py `get_logged_api_key`):
    the fallback if a custom auth left `token` empty.
    """
    if auth is None:
        return None
    return key_identity(auth.key_alias, auth.token, auth.api_key)


def identity_of_payload(payload: Mapping[str, Any]) -> str | None:
    """The identity of a standard logging payload, as meterguard's decoder names it by
    default (`LiteLLMMapping.identity`: alias, `api_key`, `user_api_key_hash`).

    `metadata` is `StandardLoggingMetadata` (litellm/types/utils.py), whose
    `StandardLoggingUserAPIKeyMetadata` part holds `user_api_key_alias` and
    `user_api_key_hash` ("hash of the litellm virtual key used"), filled by the proxy from
    `UserAPIKeyAuth` (litellm/proxy/litellm_pre_call_utils.py
    `get_sanitized_user_information_from_key`). `api_key` is a spend-log row's name for it.
    """
    metadata = payload.get("metadata")
    if not isinstance(metadata, Mapping):
        metadata = {}
    return key_identity(
        metadata.get("user_api_key_alias"),
        payload.get("api_key"),
        metadata.get("user_api_key_hash"),
    )


# -- the record ------------------------------------------------------------------------------


def encode_payload(payload: Mapping[str, Any]) -> bytes:
    """JSON bytes of a payload. orjson for speed; LiteLLM's own `safe_dumps` for what orjson
    refuses (cycles, very deep objects)."""
    try:
        return orjson.dumps(payload, default=_jsonable, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return safe_dumps(payload).encode()


def _jsonable(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)  # pydantic objects (LiteLLM's response types)
    if callable(dump):
        return dump(mode="json")
    if isinstance(value, set | frozenset):
        return list(value)
    return str(value)


def _payload_of(kwargs: Mapping[str, Any]) -> Mapping[str, Any] | None:
    # litellm/litellm_core_utils/litellm_logging.py: Logging keeps the StandardLoggingPayload
    # (litellm/types/utils.py) in model_call_details["standard_logging_object"]; callbacks
    # get model_call_details as `kwargs`.
    payload = kwargs.get("standard_logging_object")
    return payload if isinstance(payload, Mapping) else None


def _tokens(payload: Mapping[str, Any]) -> int:
    total = payload.get("total_tokens")  # StandardLoggingPayload.total_tokens: int
    return total if isinstance(total, int) and not isinstance(total, bool) else 0


# -- the callback ----------------------------------------------------------------------------


class MeterguardRefusal(HTTPException):
    """429 for a throttled or blocked identity, 503 while a fail-closed client cannot
    decide: the ASGI middleware's status, body and header.

    LiteLLM's proxy turns an `HTTPException` from a pre-call hook into its error response
    with this status, `detail["error"]` as the message and these headers
    (litellm/proxy/common_request_processing.py `proxy_exception_from_http_exception`)."""

    def __init__(self, identity: str, decision: Decision) -> None:
        super().__init__(
            status_code=decision.status,
            detail=refusal_body(identity, decision),
            headers={"Retry-After": str(decision.retry_after_s)},
        )
        self.identity = identity
        self.decision = decision


class MeterguardCallback(CustomLogger):
    def __init__(
        self,
        *,
        publisher: KafkaPublisher | None = None,
        throttle: ThrottleClient | None = None,
        include_content: bool = False,
    ) -> None:
        # turn_off_message_logging: LiteLLM hands this callback a copy of a success's payload
        # with messages and response redacted (CustomLogger.
        # redact_standard_logging_payload_from_model_call_details; failures: see
        # async_log_failure_event); other callbacks and the spend logs keep them.
        super().__init__(turn_off_message_logging=not include_content)
        self.publisher = publisher
        self.throttle = throttle
        self.refusals_not_published = 0  # failures of requests this hook refused
        self.without_payload = 0  # events LiteLLM logged without a standard logging payload

    # -- lifecycle (optional: everything starts by itself on first use) --------------------

    async def start(self) -> None:
        """Start the producer and the throttle feed now rather than on the first call."""
        if self.publisher is not None:
            await self.publisher.start()
        await self._follow_throttles()

    async def flush(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until every record published so far is delivered or failed."""
        if self.publisher is not None:
            await self.publisher.flush(timeout)

    async def aclose(self) -> None:
        if self.publisher is not None:
            await self.publisher.aclose()
        if self.throttle is not None:
            await self.throttle.aclose()

    # -- LiteLLM hooks ---------------------------------------------------------------------
    # Defined on this class itself: the proxy only calls an async_pre_call_hook found in the
    # callback's own class body (litellm/proxy/utils.py ProxyLogging.pre_call_hook checks
    # `"async_pre_call_hook" in vars(callback.__class__)`); subclass with care.

    async def async_pre_call_hook(
        self,
        user_api_key_dict: UserAPIKeyAuth,
        cache: object,
        data: dict[Any, Any],
        call_type: str,
    ) -> None:
        """Refuse a throttled or blocked identity with 429 (503: fail closed, no view);
        anything else passes unchanged (`None`: the proxy keeps `data` as it is)."""
        if self.throttle is None:
            return None
        identity: str | None = None
        try:
            await self._follow_throttles()
            identity = identity_of_auth(user_api_key_dict)
            decision = self.throttle.decide(identity) if identity is not None else None
        except Exception:  # a bug here: the fail mode decides, as for a stale view
            if self.throttle.fail_mode is FailMode.CLOSED:
                log.exception("meterguard pre-call hook failed; refusing (fail closed)")
                raise MeterguardRefusal(identity or "", self.throttle.unavailable()) from None
            log.exception("meterguard pre-call hook failed; letting the request through")
            return None
        if identity is not None and decision is not None and not decision.allowed:
            raise MeterguardRefusal(identity, decision)
        return None

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        try:
            payload = _payload_of(kwargs)
            if payload is None:
                self.without_payload += 1
                return
            identity = identity_of_payload(payload)
            if self.throttle is not None and identity is not None:
                self.throttle.record_tokens(identity, _tokens(payload))
            await self._publish(payload, identity)
        except Exception:
            log.exception("meterguard could not meter a LiteLLM success")

    async def async_log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        try:
            # litellm_logging.py Logging.failure_handler: model_call_details["exception"].
            # The proxy logs a pre-call hook's HTTPException as a failure of the request
            # (litellm/proxy/utils.py ProxyLogging._handle_logging_proxy_only_error).
            if isinstance(kwargs.get("exception"), MeterguardRefusal):
                self.refusals_not_published += 1
                return
            # LiteLLM applies this callback's redaction (turn_off_message_logging, and the
            # global standard_logging_payload_excluded_fields) to successes only: the async
            # failure path hands over model_call_details as they are (litellm_logging.py
            # Logging._async_failure_handler_body). Its own redaction, applied here.
            kwargs = self.redact_standard_logging_payload_from_model_call_details(kwargs)
            payload = _payload_of(kwargs)
            if payload is None:
                self.without_payload += 1
                return
            await self._publish(payload, identity_of_payload(payload))
        except Exception:
            log.exception("meterguard could not meter a LiteLLM failure")

    # -- internals -------------------------------------------------------------------------

    async def _publish(self, payload: Mapping[str, Any], identity: str | None) -> None:
        if self.publisher is None:
            return
        # No identity (an SDK call without a proxy key): still published, so the worker's
        # dead letters say `missing_identity` instead of the call vanishing.
        await self.publisher.publish(encode_payload(payload), identity, RECORD_HEADERS)

    async def _follow_throttles(self) -> None:
        # Idempotent; on the running loop (the instance is built at import, before it).
        if self.throttle is not None:
            await self.throttle.start()
