"""The LangChain reference path for OpenAI: bodies and answers exactly as `ChatOpenAI` has them.

Request bodies are built by `ChatOpenAI._get_request_payload`, the same method `ChatOpenAI.invoke()`
uses, then turned into the JSON the SDK's `chat.completions.create` puts on the wire
(`wire_body`); output bodies are parsed by the SDK's lenient `ChatCompletion` construction and
`ChatOpenAI._create_chat_result` (`parse_completion`, `parse_structured` for a response format),
so a batch request and its result are exactly what the realtime call would send and return.
A model (or request) routed to the Responses API instead is `agent.providers.openai.responses`'s.
The fast paths (`agent.providers.openai.fast`) reproduce this for the common shapes.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Mapping
from typing import Any, Final, cast

import httpx2
from langchain_openai import ChatOpenAI
from langchain_openai.chat_models.base import _model_prefers_responses_api
from openai import omit
from openai._models import construct_type
from openai.lib._parsing._completions import (
    parse_chat_completion,
    type_to_response_format_param,
    validate_input_tools,
)
from openai.resources.chat.completions import Completions
from openai.types.chat import ChatCompletion

from agent.providers.base import lc_messages
from agent.providers.settings import HEADERS, PROXY, STREAMING, build_chat_model, rules_for
from agent.requests import BatchRequest, InputError
from agent.structured import OutputSpec, bind_kwargs

# `chat.completions.create` keyword arguments that are request options, not body fields.
REQUEST_OPTIONS: Final = frozenset({"extra_body", "extra_headers", "extra_query", "timeout"})
# Every keyword argument `chat.completions.create` (and `.parse`) takes: realtime raises a
# TypeError for any other, before sending anything.
CREATE_ARGS: Final = frozenset(inspect.signature(Completions.create).parameters) - {"self"}
# The reference decides between chat completions and the Responses API as realtime does
# (`use_responses_api` left to ChatOpenAI); a chat-completions job refuses a request it would
# send to the Responses API (`responses_trigger`): that one belongs in a `responses` job
# (`agent.providers.openai.responses`).
_CHAT_MODEL_DEFAULTS: dict[str, Any] = {"api_key": "unused-for-body-building"}
# Parameters only the Responses API has (`langchain_openai`'s own routing list), to name the
# cause in a refusal; the decision itself is `ChatOpenAI._use_responses_api`.
_RESPONSES_PARAMS: Final = (
    "context_management",
    "include",
    "previous_response_id",
    "reasoning",
    "text",
    "truncation",
)


SETTING_RULES: Final = rules_for(
    ChatOpenAI,
    no_effect=frozenset(
        {
            "client",
            "async_client",
            "root_client",
            "root_async_client",
            "openai_api_key",
            "request_timeout",
            "max_retries",
            "http_client",
            "http_async_client",
            "http_socket_options",
            "stream_chunk_timeout",
            "stream_usage",  # only read when streaming, which is refused
            "tiktoken_model_name",  # token counting only
        }
    ),
    endpoint={"openai_api_base": "base_url", "openai_organization": "organization"},
    refused={
        "include_response_headers": "a batch answer carries no HTTP response headers",
        "streaming": STREAMING,
        "default_headers": HEADERS,
        "default_query": "a batch request cannot carry query parameters",
        "openai_proxy": PROXY,
    },
)


def chat_model(model: str, params: Mapping[str, Any]) -> ChatOpenAI:
    """Return the `ChatOpenAI` whose realtime calls our batch lines reproduce.

    `params` are the run's settings of that model (`agent.providers.settings`). It only builds
    request bodies and parses answers, so it gets HTTP clients that refuse to send: no realtime
    call can slip out through it, and it skips building its own TLS clients (loading the CA
    bundle twice, about 70 ms of every run's start-up).

    Raises:
        InputError: A setting is not one a batch carries, or ChatOpenAI rejects it.
    """
    factory = functools.partial(
        ChatOpenAI,
        model=model,
        **_CHAT_MODEL_DEFAULTS,
        http_client=_REFUSING_CLIENTS[0],
        http_async_client=_REFUSING_CLIENTS[1],
    )
    return build_chat_model(factory, params, SETTING_RULES)


def _refuse(request: httpx2.Request) -> httpx2.Response:
    raise RuntimeError(
        f"batch-agent's reference ChatOpenAI never calls the API (it tried {request.url})"
    )


_REFUSING_CLIENTS: Final = (
    httpx2.Client(transport=httpx2.MockTransport(_refuse), trust_env=False),
    httpx2.AsyncClient(transport=httpx2.MockTransport(_refuse), trust_env=False),
)


def request_body(
    llm: ChatOpenAI, request: BatchRequest, bound: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Return the chat-completions body `llm.invoke(messages, **params)` would send.

    `bound` holds what a `bind_tools` / `with_structured_output` wrapper passes to the model on
    every call (`bound_kwargs`); the request's own parameters win, as call kwargs do.
    """
    # A request's own `model` is a call kwarg too: only the model sent changes, not `llm`'s rules.
    kwargs = {**(bound or {}), **request.params}
    trigger = responses_trigger(llm, kwargs)
    if trigger is not None:
        raise InputError(responses_refusal(trigger), source="input", request_id=request.id)
    body = llm._get_request_payload(lc_messages(request), **kwargs)
    # `invoke()` sends stream=False; a batch line must not carry streaming flags at all.
    body.pop("stream", None)
    if isinstance(body.get("response_format"), type):
        # A Pydantic response format goes through the SDK's `chat.completions.parse`, which
        # sends it as this strict JSON schema.
        body["response_format"] = type_to_response_format_param(body["response_format"])
    return wire_body(body, request.id)


def responses_trigger(llm: ChatOpenAI, kwargs: Mapping[str, Any]) -> str | None:
    """Return what would make `llm.invoke(messages, **kwargs)` use the Responses API, or None.

    The decision is ChatOpenAI's own (`_use_responses_api` on the payload it builds: the
    `use_responses_api` setting, Responses-only parameters and settings, built-in tools,
    models served by the Responses API only). One case is added: a request naming its own
    Responses-only model, which realtime would send to chat completions under `llm`'s routing
    and the API would refuse; unless `llm` is pinned to chat completions
    (`use_responses_api=False`), which is then what was asked for.
    """
    model = kwargs.get("model")
    if (
        isinstance(model, str)
        and llm.use_responses_api is not False
        and responses_only_model(model)
    ):
        return f"model {model!r} (served by the Responses API only)"
    payload = {**llm._default_params, **kwargs}
    if not llm._use_responses_api(payload):
        return None
    # Only words for the cause from here on: the decision above was ChatOpenAI's.
    builtin = sorted(
        str(tool.get("type"))
        for tool in payload.get("tools") or ()
        if isinstance(tool, Mapping) and tool.get("type", "function") != "function"
    )
    if builtin:
        return f"built-in tool {', '.join(builtin)}"
    params = [key for key in _RESPONSES_PARAMS if key in payload]
    if params:
        return f"parameter {', '.join(params)}"
    if responses_only_model(llm.model_name):
        return f"model {llm.model_name!r} (served by the Responses API only)"
    if llm.output_version == "responses/v1":
        return "output_version='responses/v1'"
    if llm.use_previous_response_id:
        return "use_previous_response_id=True"
    return "use_responses_api=True"


def routes_to_responses(llm: ChatOpenAI, kwargs: Mapping[str, Any]) -> bool:
    """Tell whether `llm.invoke(messages, **kwargs)` goes to the Responses API (ChatOpenAI's rule)."""
    return bool(llm._use_responses_api({**llm._default_params, **kwargs}))


def responses_only_model(model: str | None) -> bool:
    """Tell whether ChatOpenAI sends every request for `model` to the Responses API."""
    return _model_prefers_responses_api(model)


def responses_refusal(trigger: str) -> str:
    """Return the words of a refusal of a request realtime would send to the Responses API."""
    return (
        f"{trigger} makes ChatOpenAI send this request to OpenAI's Responses API, but its "
        "job's requests go to /v1/chat/completions: run the batch with --endpoint responses "
        "(run context endpoint='responses'; or use_responses_api=True in model_settings), or "
        "use chat-completions parameters and models (e.g. reasoning_effort rather than reasoning)"
    )


def wire_body(
    payload: dict[str, Any],
    request_id: str,
    create_args: frozenset[str] = CREATE_ARGS,
    api: str = "chat completions",
) -> dict[str, Any]:
    """Return the JSON body `client.chat.completions.create(**payload)` puts on the wire.

    `create_args` and `api` name another SDK call of the same rules (`responses.create`, the
    Responses API's, takes the same request options).

    The SDK takes `extra_body`, `extra_headers`, `extra_query` and `timeout` as request
    options, not body fields: it merges `extra_body` over the named parameters and sends the
    others as headers, query string and client timeout. A batch line is the body alone, so
    headers and query parameters cannot travel with it and are refused; the timeout only
    bounds how long the realtime client waits, and is dropped. JSON has string keys only, so
    `logit_bias` token ids given as ints go out as strings, as the SDK's encoder writes them.

    Raises:
        InputError: The payload has a parameter the SDK's `create` does not take (realtime
            raises before sending), sets HTTP headers or query parameters, or a non-object
            `extra_body`.
    """
    unknown = sorted(payload.keys() - create_args)
    if unknown:
        raise InputError(
            f"OpenAI's {api} API takes no parameter {', '.join(unknown)} (the SDK "
            "refuses it in realtime); send extra body fields in 'extra_body'",
            source="input",
            request_id=request_id,
        )
    if not REQUEST_OPTIONS.isdisjoint(payload):
        refused = sorted(key for key in ("extra_headers", "extra_query") if payload.get(key))
        if refused:
            raise InputError(
                f"{' and '.join(refused)} travel as HTTP headers or query parameters in "
                "realtime, which a batch line cannot carry; remove them (the body may take "
                "extra fields through 'extra_body')",
                source="input",
                request_id=request_id,
            )
        extra = payload.get("extra_body")
        if extra is not None and not isinstance(extra, Mapping):
            raise InputError(
                "'extra_body' must be an object (the SDK merges it into the request body)",
                source="input",
                request_id=request_id,
            )
        body = {key: value for key, value in payload.items() if key not in REQUEST_OPTIONS}
        body.update(extra or {})
    else:
        body = payload
    bias = body.get("logit_bias")
    if isinstance(bias, Mapping) and not all(type(key) is str for key in bias):
        body["logit_bias"] = {_json_key(key): value for key, value in bias.items()}
    return body


def _json_key(key: Any) -> str:
    """Return a dict key as JSON writes it (`json.dumps` turns 50256 into "50256")."""
    return key if isinstance(key, str) else json.dumps(key)


def parse_completion(body: dict[str, Any]) -> ChatCompletion:
    """Build the `ChatCompletion` the SDK builds from a realtime response body.

    `ChatOpenAI.invoke()` parses the HTTP body with the SDK (lenient construction, no
    validation) before `_create_chat_result`; doing the same keeps defaults such as
    `refusal: None` and the full usage details identical to realtime.
    """
    return cast(ChatCompletion, construct_type(type_=ChatCompletion, value=body))


def bound_kwargs(llm: ChatOpenAI, spec: OutputSpec | None) -> dict[str, Any]:
    """Return what the spec's LangChain wrapper passes to `llm`, checked as `.invoke()` checks it.

    With a `response_format`, realtime `.invoke()` calls the SDK's `chat.completions.parse`,
    which refuses non-strict tools before sending anything; so do we, before anything is uploaded.
    """
    kwargs = bind_kwargs(llm, spec)
    if "response_format" in kwargs and kwargs.get("tools"):
        try:
            validate_input_tools(kwargs["tools"])
        except ValueError as exc:
            raise InputError(
                f"tools with a response_schema: {exc} (OpenAI needs '\"strict\": true' in every "
                "function tool given alongside a response schema)",
                source="input",
            ) from None
    return kwargs


def parse_structured(
    completion: ChatCompletion, response_format: Any, tools: list[Any] | None
) -> ChatCompletion:
    """Return the `ParsedChatCompletion` realtime `.invoke()` gets when it sends a response format.

    `chat.completions.parse` adds `parsed` (and parsed tool arguments) to the SDK's completion,
    which `_create_chat_result` copies into `additional_kwargs`. It raises where realtime raises
    (a cut-off or filtered answer, unparseable strict tool arguments); the fast parser reports that
    for the one request (`agent.providers.base.UnusableAnswer`).
    """
    return parse_chat_completion(
        response_format=response_format,
        input_tools=tools if tools else omit,
        chat_completion=completion,
    )
