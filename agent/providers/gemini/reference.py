"""The LangChain reference path for Gemini: requests and answers exactly as `ChatGoogleGenerativeAI` has them.

Requests are what `ChatGoogleGenerativeAI.invoke()` sends: `_prepare_request` builds the
`model` / `contents` / `GenerateContentConfig` that realtime hands to google-genai's
`models.generate_content`, and google-genai's own batch converter
(`batches._InlinedRequest_to_mldev`) turns them into the REST JSON a batch line carries, then
the same dict conversion realtime applies before sending (`convert_to_dict`,
`encode_unserializable_types`, the per-request `extra_body` merge). The batch request is the
realtime request body without the model, which a Gemini batch job names once, in its URL.

Answers are parsed as realtime parses a `generateContent` response: google-genai's
`_GenerateContentResponse_from_mldev` and `GenerateContentResponse._from_response`, then
`langchain_google_genai`'s `_response_to_result` and what `invoke()` adds (`finish_message`).
A response with no candidates (a blocked prompt) is an empty message with the prompt feedback
in `response_metadata`, as `.invoke()` returns it. `GeminiLineParser` reads a whole result line
(`{"key", "response"}` or `{"key", "error": {"code", "message", "status"}}`).
The fast paths (`agent.providers.gemini.fast`) reproduce this for the common shapes.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Mapping
from typing import Any, Final

import httpx2
import orjson
from google.genai import _common, types
from google.genai.batches import _InlinedRequest_to_mldev
from google.genai.models import _GenerateContentResponse_from_mldev
from langchain_core.messages import AIMessage
from langchain_google_genai import ChatGoogleGenerativeAI
from langchain_google_genai.chat_models import _response_to_result
from pydantic import ValidationError

from agent.providers.base import finish_message, lc_messages, token_usage
from agent.providers.settings import HEADERS, STREAMING, build_chat_model, rules_for
from agent.requests import BatchRequest, InputError
from agent.state import RequestError, Usage
from agent.structured import OutputSpec, bind_kwargs

# gRPC status names of a request that may succeed if sent again (quota, overload, a server
# fault, a deadline), and the HTTP codes / gRPC numbers that carry them. Provider error codes,
# not batch-agent statuses (those live in agent.statuses).
RETRYABLE_GRPC_CODES: Final = frozenset(
    {"RESOURCE_EXHAUSTED", "UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED", "ABORTED"}
)
_RETRYABLE_CODES: Final = frozenset({429, 500, 502, 503, 504, 4, 8, 10, 13, 14})
# The HTTP options of a request that only shape the realtime call (not its body).
_CALL_OPTIONS: Final = frozenset({"timeout", "retry_options", "extra_body"})
VERTEX: Final = "batches go to the Gemini Developer API, not Vertex AI"


def _sdk_base_url(url: Any) -> str | None:
    # `base_url` may also be the deprecated `{"api_endpoint": ...}` client options.
    if isinstance(url, dict) and set(url) == {"api_endpoint"}:
        url = url["api_endpoint"]
    return url if isinstance(url, str) else None


SETTING_RULES: Final = rules_for(
    ChatGoogleGenerativeAI,
    no_effect=frozenset(
        {
            "google_api_key",
            "credentials",
            "client",
            "client_args",
            "max_retries",
            "timeout",
            "api_version",  # which REST version realtime talks to; the body is the same
            "default_metadata",
        }
    ),
    endpoint={"base_url": "base_url"},
    refused={
        "streaming": STREAMING,
        "additional_headers": HEADERS,
        "vertexai": VERTEX,
        "project": VERTEX,
        "location": VERTEX,
    },
    base_url=_sdk_base_url,
)


def _refuse(request: httpx2.Request) -> httpx2.Response:
    raise RuntimeError(
        f"batch-agent's reference ChatGoogleGenerativeAI never calls the API (it tried {request.url})"
    )


# The reference model only builds requests and parses answers: its google-genai client gets a
# transport that refuses to send, so no realtime call can slip out through it, and a TLS context
# without CA certificates (google-genai otherwise loads the CA bundle twice for every chat model,
# about 300 ms; `ssl` is the one its websocket client reads).
NO_TLS: Final = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
"""A TLS context without CA certificates, for google-genai clients that never connect."""
_CLIENT_ARGS: Final = {
    "transport": httpx2.MockTransport(_refuse),
    "verify": NO_TLS,
    "ssl": NO_TLS,
}


def chat_model(model: str, params: Mapping[str, Any]) -> ChatGoogleGenerativeAI:
    """Return the `ChatGoogleGenerativeAI` whose realtime calls our batch requests reproduce.

    Raises:
        InputError: A setting is not one a batch carries, or ChatGoogleGenerativeAI rejects it.
    """
    factory = functools.partial(
        ChatGoogleGenerativeAI,
        model=model,
        api_key="unused-for-body-building",
        client_args=_CLIENT_ARGS,
    )
    return build_chat_model(factory, params, SETTING_RULES)


def call_kwargs(
    llm: ChatGoogleGenerativeAI, request: BatchRequest, bound: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Return the keyword arguments `llm.invoke(messages, **params)` hands to `_prepare_request`.

    `bound` holds what a `bind_tools` / `with_structured_output` wrapper passes on every call
    (`agent.structured.bind_kwargs`); the request's own parameters win. `invoke()` turns
    `code_execution=True` into the code-execution tool, and `_generate` falls back to the
    model's `cached_content`; both are replayed here.

    Raises:
        InputError: `code_execution` is asked for where `invoke()` refuses it.
    """
    kwargs = {**(bound or {}), **request.params}
    # A request's own model is its job's (`batches.create(model=...)`: one job per model, and a
    # Gemini line names none). Realtime `invoke(messages, model=X)` is refused, since
    # GenerateContentConfig has no `model`; as for the other providers' `invoke(model=X)`, the
    # body is the one the run's chat model builds.
    kwargs.pop("model", None)
    code_execution = kwargs.pop("code_execution", None)
    if code_execution is not None:
        # Any value but None adds the tool (False too), as in `invoke()`.
        problem = None
        if not llm._supports_code_execution:
            problem = f"code execution is not supported by {llm.model}"
        elif "tools" in kwargs:
            problem = "code_execution cannot be combined with tools"
        if problem:
            raise InputError(
                f"ChatGoogleGenerativeAI refuses the request: {problem}",
                source="input",
                request_id=request.id,
            )
        kwargs["tools"] = [types.Tool(code_execution=types.ToolCodeExecution())]
    kwargs["cached_content"] = kwargs.get("cached_content") or llm.cached_content
    return kwargs


def prepared_request(
    llm: ChatGoogleGenerativeAI, request: BatchRequest, bound: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Return `_prepare_request`'s `{"model", "contents", "config"}` for one request.

    Raises:
        InputError: ChatGoogleGenerativeAI refuses the request (what realtime raises before
            sending anything).
    """
    kwargs = call_kwargs(llm, request, bound)
    try:
        return llm._prepare_request(lc_messages(request), **kwargs)
    except (ValueError, TypeError, ValidationError) as exc:
        raise InputError(
            f"ChatGoogleGenerativeAI refuses the request: {_one_line(exc)}",
            source="input",
            request_id=request.id,
        ) from None


def wire_request(
    llm: ChatGoogleGenerativeAI, prepared: Mapping[str, Any], request_id: str
) -> dict[str, Any]:
    """Return the REST `GenerateContentRequest` JSON of a prepared request, without the model.

    Raises:
        InputError: The request needs something a batch line cannot carry (HTTP headers, another
            endpoint), or google-genai refuses it (a Vertex-only field).
    """
    config = prepared.get("config")
    http_options = getattr(config, "http_options", None)
    extra_body: dict[str, Any] | None = None
    if http_options is not None:
        options = sorted(http_options.model_fields_set - _CALL_OPTIONS)
        if options:
            raise InputError(
                f"http_options {', '.join(options)} shape the realtime HTTP call, which a batch "
                "request cannot carry",
                source="input",
                request_id=request_id,
            )
        extra_body = http_options.extra_body
    try:
        inlined = types.InlinedRequest(
            model=prepared["model"], contents=prepared["contents"], config=config
        )
        converted = _InlinedRequest_to_mldev(api_client(llm), inlined)
    except (ValueError, TypeError) as exc:
        raise InputError(
            f"google-genai refuses the request: {_one_line(exc)}",
            source="input",
            request_id=request_id,
        ) from None
    body = converted.get("request") or {}
    body.pop("model", None)
    body = _common.encode_unserializable_types(_common.convert_to_dict(body))
    if extra_body:
        _common.recursive_dict_update(body, extra_body)
    return body


def api_client(llm: ChatGoogleGenerativeAI) -> Any:
    """Return the google-genai API client of `llm` (the converters read its backend from it)."""
    client = llm.client
    if client is None:
        raise RuntimeError("ChatGoogleGenerativeAI built no google-genai client")
    return client._api_client


def request_body(
    llm: ChatGoogleGenerativeAI, request: BatchRequest, bound: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Return the `GenerateContentRequest` JSON `llm.invoke(messages, **params)` would send.

    Without the model: a Gemini batch job names it once, in its URL.

    Raises:
        InputError: ChatGoogleGenerativeAI or google-genai refuses the request, or a batch
            cannot carry it.
    """
    return wire_request(llm, prepared_request(llm, request, bound), request.id)


def batch_line(key: str, request: dict[str, Any]) -> bytes:
    """Serialise one batch input line `{"key", "request"}` (compact JSON and a newline)."""
    return orjson.dumps({"key": key, "request": request}) + b"\n"


def response_model(body: Any) -> types.GenerateContentResponse:
    """Build the `GenerateContentResponse` realtime builds from a `generateContent` JSON answer."""
    converted = _GenerateContentResponse_from_mldev(body)
    return types.GenerateContentResponse._from_response(response=converted, kwargs={})


def parse_response(llm: ChatGoogleGenerativeAI, body: Any, message_key: str) -> AIMessage:
    """Parse a `generateContent` JSON answer into the AIMessage `.invoke()` returns.

    Raises:
        Exception: What realtime raises for that answer (`read_outcome` makes it the
            request's failure).
    """
    return finish_message(llm, _response_to_result(response_model(body)), message_key)


def response_usage(response: Any) -> Usage | None:
    """Return the usage billed for a `generateContent` answer, counted as realtime counts it.

    Input includes tool-use prompt tokens and output includes thinking tokens, as
    `usage_metadata` has them (the cached part of the input is in its `input_token_details`).
    """
    usage = response.get("usageMetadata") if isinstance(response, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("promptTokenCount", 0)
    tool_prompt = usage.get("toolUsePromptTokenCount", 0)
    candidates = usage.get("candidatesTokenCount", 0)
    thoughts = usage.get("thoughtsTokenCount", 0)
    counts = (prompt, tool_prompt, candidates, thoughts)
    if any(type(n) is not int for n in counts):
        return None
    return token_usage(prompt + tool_prompt, candidates + thoughts, usage.get("totalTokenCount"))


def unreadable_line() -> RequestError:
    """Return the failure of a result line that is not a JSON object (it names no request)."""
    return RequestError(code="bad_result_line", message="unreadable result line")


def keyed_line(raw: bytes | str) -> tuple[dict[str, Any] | None, str]:
    """Decode a responses-file line: the object (None if it is not one) and its request key.

    A key that is not a string matches no request (""). Chat and embeddings lines alike.
    """
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, ""
    if not isinstance(line, dict):
        return None, ""
    key = line.get("key")
    return line, key if isinstance(key, str) else ""


def line_error(error: Any) -> tuple[RequestError, bool]:
    """Read a failed line's `error` (`{"code", "message", "status"}`): the error and retryability."""
    if not isinstance(error, dict):
        return RequestError(code="error", message=str(error)), False
    status = error.get("status")
    code = error.get("code")
    name = status if isinstance(status, str) and status else None
    if name is None:
        name = f"http_{code}" if type(code) is int and code >= 100 else f"grpc_{code}"
    message = error.get("message")
    retryable = name in RETRYABLE_GRPC_CODES or (type(code) is int and code in _RETRYABLE_CODES)
    return RequestError(code=name, message=str(message) if message else name), retryable


class GeminiLineParser:
    """Parse Gemini batch result lines (`{"key", "response" | "error"}`) into request outcomes."""

    def __init__(
        self, model: str, params: Mapping[str, Any] | None = None, spec: OutputSpec | None = None
    ) -> None:
        """Build the reference `ChatGoogleGenerativeAI` once per job.

        Args:
            model: The model of the job's chat model object (`Job.chat_model`).
            params: That chat model's settings (`Job.params`; `output_version` changes the
                parsed message).
            spec: The request set's tools / response schema (checked to bind, as when built).
        """
        self.llm = chat_model(model, params or {})
        bind_kwargs(self.llm, spec)

    def parse_line(
        self, raw: bytes | str, job_id: str
    ) -> tuple[str, AIMessage | None, RequestError | None, bool]:
        """Return `(custom_id, message, error, retryable)` for one result line.

        A `response` is parsed as realtime parses a `generateContent` answer, and raises what
        that raises (`agent.providers.base.read_outcome` makes it the request's failure).
        """
        line, custom_id = keyed_line(raw)
        if line is None:
            return "", None, unreadable_line(), False
        if line.get("error") is not None:
            return (custom_id, None, *line_error(line["error"]))
        if "response" not in line:
            error = RequestError(code="no_result", message="the result line has no response")
            return custom_id, None, error, False
        message = parse_response(self.llm, line["response"], f"{job_id}/{custom_id}")
        return custom_id, message, None, False

    def billed_usage(self, line: Any) -> Usage | None:
        """Return the usage billed for a decoded result line (`response.usageMetadata`)."""
        return response_usage(line.get("response") if isinstance(line, dict) else None)

    def check_reference(self) -> None:
        """Parse a probe answer through the reference path, raising whatever it raises."""
        parse_response(self.llm, orjson.loads(orjson.dumps(PROBE_RESPONSE)), "probe/r1")


def _one_line(exc: BaseException) -> str:
    """Return an exception's message on one line, bounded (pydantic's can be long)."""
    return " ".join(str(exc).split())[:300] or type(exc).__name__


# A plain-text answer with every usage count the parser reads.
PROBE_RESPONSE: Final[dict[str, Any]] = {
    "candidates": [
        {
            "content": {"role": "model", "parts": [{"text": "Fine."}]},
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 21,
        "candidatesTokenCount": 3,
        "totalTokenCount": 29,
        "thoughtsTokenCount": 5,
        "cachedContentTokenCount": 4,
    },
    "modelVersion": "gemini-probe",
    "responseId": "probe",
}
