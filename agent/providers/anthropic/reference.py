"""The LangChain reference path for Anthropic: bodies and answers exactly as `ChatAnthropic` has them.

Bodies are what `ChatAnthropic.invoke()` sends: `ChatAnthropic._get_request_payload` builds the
keyword arguments of `client.messages.create`, and `wire_params` turns them into the JSON body
that call puts on the wire (the SDK merges `extra_body`, where langchain-anthropic moves the
sampling parameters, over the named ones). Results are parsed the way `.invoke()` parses a
response: the SDK's lenient `Message` construction, then `ChatAnthropic._format_output`
(`parse_message`; `AnthropicLineParser` reads a whole results line). The fast paths
(`agent.providers.anthropic.fast`) reproduce this for the common shapes.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from typing import Any, Final, cast

import orjson
from anthropic._models import construct_type
from anthropic.resources.messages import Messages
from anthropic.types import Message
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessage

from agent.providers.base import finish_message, is_retryable, lc_messages, token_usage
from agent.providers.settings import HEADERS, PROXY, STREAMING, build_chat_model, rules_for
from agent.requests import BatchRequest, InputError
from agent.state import RequestError, Usage

# What `client.messages.create(**payload)` accepts, and what of it is not body JSON.
CREATE_ARGS = frozenset(inspect.signature(Messages.create).parameters) - {"self"}
_CLIENT_OPTIONS = frozenset({"extra_body", "timeout"})
_NOT_IN_A_BATCH = frozenset({"user_profile_id", "workspace_id", "extra_headers", "extra_query"})


SETTING_RULES: Final = rules_for(
    ChatAnthropic,
    no_effect=frozenset(
        {"default_request_timeout", "max_retries", "anthropic_api_key", "stream_usage"}
    ),
    endpoint={"anthropic_api_url": "base_url"},
    refused={
        "streaming": STREAMING,
        "default_headers": HEADERS,
        "anthropic_proxy": PROXY,
        "betas": "requests needing Anthropic's beta Messages API are not batched yet",
    },
)


def chat_model(model: str, params: Mapping[str, Any]) -> ChatAnthropic:
    """Return the `ChatAnthropic` whose realtime calls our batch requests reproduce.

    Raises:
        InputError: A setting is not one a batch carries, or ChatAnthropic rejects it.
    """
    factory = functools.partial(ChatAnthropic, model=model, api_key="unused-for-body-building")  # type: ignore[call-arg,arg-type]
    return build_chat_model(factory, params, SETTING_RULES)


def wire_params(payload: dict[str, Any], request_id: str) -> dict[str, Any]:
    """Return the JSON body `client.messages.create(**payload)` sends, as a batch `params`.

    Raises:
        InputError: The payload needs something a batch request cannot carry (the beta API,
            HTTP headers) or that the SDK itself would refuse (an unknown parameter).
    """
    if "betas" in payload:
        raise InputError(
            "the request needs Anthropic's beta Messages API ('betas'), which batch-agent does "
            "not batch",
            source="input",
            request_id=request_id,
        )
    unknown = sorted(set(payload) - CREATE_ARGS)
    if unknown:
        raise InputError(
            f"Anthropic's Messages API takes no parameter {', '.join(unknown)}",
            source="input",
            request_id=request_id,
        )
    headers = sorted(_NOT_IN_A_BATCH & payload.keys())
    if headers:
        raise InputError(
            f"{', '.join(headers)} travel as HTTP headers or query parameters in realtime, "
            "which a batch request cannot carry",
            source="input",
            request_id=request_id,
        )
    body = {k: v for k, v in payload.items() if k not in _CLIENT_OPTIONS}
    # The SDK merges `extra_body` over the named parameters (langchain-anthropic puts
    # temperature / top_p / top_k there, since anthropic>=1 dropped them as arguments).
    body.update(payload.get("extra_body") or {})
    return body


def request_params(
    llm: ChatAnthropic, request: BatchRequest, bound: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Return the Messages body `llm.invoke(messages, **params)` would send.

    `bound` holds what a `bind_tools` / `with_structured_output` wrapper passes to the model on
    every call (`agent.structured.bind_kwargs`); the request's own parameters win.

    Raises:
        InputError: ChatAnthropic refuses the request, or a batch cannot carry it.
    """
    # A request's own `model` is a call kwarg too: only the model sent changes, not `llm`'s rules.
    kwargs = {**(bound or {}), **request.params}
    try:
        payload = llm._get_request_payload(lc_messages(request), **kwargs)
    except (ValueError, TypeError) as exc:
        raise InputError(
            f"ChatAnthropic refuses the request: {exc}", source="input", request_id=request.id
        ) from None
    return wire_params(payload, request.id)


def parse_message(llm: ChatAnthropic, body: dict[str, Any], message_key: str) -> AIMessage:
    """Parse a `succeeded` result's message into the AIMessage `.invoke()` returns.

    Realtime builds the SDK's `Message` leniently (no validation) from the response JSON, then
    calls `_format_output`; `finish_message` applies what `invoke()` adds after that.
    """
    message = cast(Message, construct_type(type_=Message, value=body))
    return finish_message(llm, llm._format_output(message), message_key)


class AnthropicLineParser:
    """Parse results lines (`{"custom_id", "result": {...}}`) into request outcomes."""

    def __init__(self, model: str, params: Mapping[str, Any] | None = None) -> None:
        """Build the reference `ChatAnthropic` once per job (`params`: its settings)."""
        self.llm = chat_model(model, params or {})

    def parse_line(
        self, raw: bytes | str, job_id: str
    ) -> tuple[str, AIMessage | None, RequestError | None, bool]:
        """Return `(custom_id, message, error, retryable)` for one results line.

        A `succeeded` message is parsed as realtime parses a response, and raises what that
        raises (`agent.providers.base.read_outcome` makes it the request's failure).
        """
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            line = None
        if not isinstance(line, dict):
            error = RequestError(code="bad_result_line", message="unreadable results line")
            return "", None, error, False
        custom_id = line.get("custom_id")
        # A custom_id that is not a string matches no request.
        custom_id = custom_id if isinstance(custom_id, str) else ""
        result = line.get("result")
        if not isinstance(result, dict):
            result = {}
        kind = result.get("type")
        if kind == "succeeded":
            # Whatever `message` holds, it is parsed as realtime would parse it (and may raise).
            body: Any = result.get("message")
            message = parse_message(self.llm, body, f"{job_id}/{custom_id}")
            return custom_id, message, None, False
        if kind == "errored":
            return (custom_id, None, *_errored(result.get("error")))
        if kind == "canceled":
            error = RequestError(
                code="canceled", message="the batch was canceled before this request was processed"
            )
            return custom_id, None, error, False
        if kind == "expired":
            error = RequestError(
                code="expired",
                message="the request was not processed within the batch's 24-hour window",
            )
            return custom_id, None, error, True
        error = RequestError(code="unknown_result", message=f"unknown result type {kind!r}")
        return custom_id, None, error, False

    def billed_usage(self, line: Any) -> Usage | None:
        """Return the usage billed for a decoded `succeeded` line, counted as realtime counts it.

        `usage_metadata` adds cache reads and writes to the input tokens; so does this.
        """
        result = line.get("result") if isinstance(line, dict) else None
        message = result.get("message") if isinstance(result, dict) else None
        usage = message.get("usage") if isinstance(message, dict) else None
        if not isinstance(usage, dict):
            return None
        cached = [usage.get(k) for k in ("cache_read_input_tokens", "cache_creation_input_tokens")]
        extra = sum(n for n in cached if type(n) is int and n > 0)
        input_tokens = usage.get("input_tokens")
        return token_usage(
            input_tokens + extra if type(input_tokens) is int else None, usage.get("output_tokens")
        )


def _errored(envelope: Any) -> tuple[RequestError, bool]:
    """Read `{"type": "error", "error": {"type", "message"}, "request_id"}` of an errored result."""
    inner = envelope.get("error") if isinstance(envelope, dict) else None
    if not isinstance(inner, dict):
        return RequestError(code="errored", message=str(envelope)), False
    code = str(inner.get("type") or "errored")
    message = str(inner.get("message") or code)
    if isinstance(envelope, dict) and envelope.get("request_id"):
        message += f" (request_id {envelope['request_id']})"
    return RequestError(code=code, message=message), is_retryable(code)
