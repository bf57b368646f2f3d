"""Real LiteLLM calls for the tests: `litellm.acompletion` with `mock_response`, no network.

`mock_response` skips only the provider request: LiteLLM's whole logging path still runs
(Logging object, cost, StandardLoggingPayload, callbacks). Request metadata is what the proxy
itself puts there for a key: its own `add_user_api_key_auth_to_request_metadata`
(litellm/proxy/litellm_pre_call_utils.py) applied to a real `UserAPIKeyAuth`. The model cost
map is LiteLLM's bundled copy (LITELLM_LOCAL_MODEL_COST_MAP, set in tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import litellm
from litellm.integrations.custom_logger import CustomLogger
from litellm.proxy.litellm_pre_call_utils import LiteLLMProxyRequestSetup
from litellm.types.proxy.auth.user_api_key_auth import UserAPIKeyAuth
from litellm.types.utils import ModelResponse

litellm.suppress_debug_info = True  # no "Give Feedback / Get Help" banner per mocked error

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Say hi to the meter"}]
REPLY = "hello from the mock"


@contextmanager
def registered(*callbacks: CustomLogger) -> Iterator[None]:
    """These callbacks, and only these, for the calls inside.

    LiteLLM copies `litellm.callbacks` into its own success and failure lists on the next call
    and keeps them there; it adds no second instance of a class it already holds
    (litellm/litellm_core_utils/logging_callback_manager.py `_add_custom_logger_to_list`).
    So the lists are emptied on the way in and out, or a later test's new instance would
    never be called."""
    manager = litellm.logging_callback_manager
    manager._reset_all_callbacks()
    litellm.callbacks = list(callbacks)
    try:
        yield
    finally:
        manager._reset_all_callbacks()


def key(raw: str, alias: str | None = None, **fields: object) -> UserAPIKeyAuth:
    """The proxy's object for an authenticated virtual key (it hashes `sk-` keys itself)."""
    return UserAPIKeyAuth(api_key=raw, key_alias=alias, **fields)


def proxy_metadata(auth: UserAPIKeyAuth) -> dict[str, object]:
    """The request metadata the proxy sets for this key."""
    data: dict[str, dict[str, object]] = {"metadata": {}}
    LiteLLMProxyRequestSetup.add_user_api_key_auth_to_request_metadata(data, auth, "metadata")
    return data["metadata"]


async def complete(auth: UserAPIKeyAuth) -> ModelResponse:
    response = await litellm.acompletion(
        model=MODEL, messages=MESSAGES, mock_response=REPLY, metadata=proxy_metadata(auth)
    )
    assert isinstance(response, ModelResponse)
    return response


async def fail(auth: UserAPIKeyAuth, message: str = "upstream exploded") -> Exception:
    """A failed call: LiteLLM raises a mocked exception as the provider's error (500)."""
    try:
        await litellm.acompletion(
            model=MODEL,
            messages=MESSAGES,
            mock_response=Exception(message),
            metadata=proxy_metadata(auth),
            num_retries=0,
        )
    except Exception as exc:
        return exc
    raise AssertionError("the mocked failure did not raise")


class Capture(CustomLogger):
    """Keeps the standard logging payload of every async success and failure it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.payloads: list[dict] = []

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        self.payloads.append(kwargs["standard_logging_object"])

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self.payloads.append(kwargs["standard_logging_object"])
