"""OpenAI's Responses API (`/v1/responses`) batch lines and answers, exactly as `ChatOpenAI` has them.

A `ChatOpenAI` routes a call to the Responses API by its own rule (`_use_responses_api`: the
`use_responses_api` setting, `reasoning` / `include` / `text` / ..., built-in tools, models served
by that API only, `output_version="responses/v1"`). A job whose reference chat model routes there
is a `responses` job (`agent.endpoints`): every body is `ChatOpenAI._get_request_payload(...)` for
that API turned into the JSON `client.responses.create(**payload)` puts on the wire
(`responses_body`), and every answer is parsed by the SDK's lenient `Response` construction and
`langchain_openai`'s `_construct_lc_result_from_responses_api` with the model's `output_version`
(`ResponsesMessageParser`), so a batch line and its result are what realtime `.invoke()` sends and
returns. There is no fast path: every line takes this reference path.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Final, cast

from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI
from langchain_openai.chat_models.base import _construct_lc_result_from_responses_api
from openai._models import construct_type
from openai.lib._parsing._responses import type_to_text_format_param
from openai.resources.responses import Responses
from openai.types.responses import Response

from agent.endpoints import CHAT, RESPONSES, Endpoint
from agent.providers.base import chat_completion_usage, finish_message, lc_messages
from agent.providers.fast import BodyBuilder, MessageParser
from agent.providers.openai.reference import (
    bound_kwargs,
    chat_model,
    request_body,
    routes_to_responses,
    wire_body,
)
from agent.requests import BatchRequest, InputError
from agent.state import Usage
from agent.structured import OutputSpec

# Every keyword argument `responses.create` takes: realtime raises a TypeError for any other.
RESPONSES_CREATE_ARGS: Final = frozenset(inspect.signature(Responses.create).parameters) - {"self"}


def openai_endpoint(model: str, params: dict[str, Any], spec: OutputSpec | None) -> Endpoint:
    """Return the endpoint of a job whose reference chat model is `chat_model(model, params)`.

    `responses` exactly when that model, with the request set's tools / schema bound, routes a
    call without per-request parameters to the Responses API; else `chat`.

    Raises:
        InputError: A setting is not one a batch carries, or the model refuses the spec.
    """
    llm = chat_model(model, params)
    return RESPONSES if routes_to_responses(llm, bound_kwargs(llm, spec)) else CHAT


def responses_body(
    llm: ChatOpenAI, request: BatchRequest, bound: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Return the Responses-API body `llm.invoke(messages, **params)` would send.

    `bound` holds what a `bind_tools` / `with_structured_output` wrapper passes on every call;
    the request's own parameters win, as call kwargs do.

    Raises:
        InputError: The request's own parameters would send it to chat completions instead
            (its job's lines all go to /v1/responses), or it has a parameter, header or query
            option `responses.create` does not send in a body.
    """
    kwargs = {**(bound or {}), **request.params}
    if not routes_to_responses(llm, kwargs):
        raise InputError(
            "this request's parameters make ChatOpenAI send it to chat completions, but its "
            "job's requests go to OpenAI's Responses API (/v1/responses); remove the parameter "
            "or run the request in a job with --endpoint chat",
            source="input",
            request_id=request.id,
        )
    payload = llm._get_request_payload(lc_messages(request), **kwargs)
    # `invoke()` sends stream=False; a batch line carries no streaming flag at all.
    payload.pop("stream", None)
    text_format = payload.pop("text_format", None)
    if text_format is not None:
        # A Pydantic schema goes through the SDK's `responses.parse`, which sends it as this
        # strict JSON schema in `text.format`.
        payload["text"] = {
            **(payload.get("text") or {}),
            "format": type_to_text_format_param(text_format),
        }
    return wire_body(payload, request.id, RESPONSES_CREATE_ARGS, "Responses")


def realtime_body(
    llm: ChatOpenAI, request: BatchRequest, bound: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Return the body `llm.invoke(...)` sends, to whichever API it routes the call."""
    if routes_to_responses(llm, {**(bound or {}), **request.params}):
        return responses_body(llm, request, bound)
    return request_body(llm, request, bound)


def parse_response(body: dict[str, Any]) -> Response:
    """Build the `Response` the SDK builds from a realtime response body (lenient, unvalidated)."""
    return cast(Response, construct_type(type_=Response, value=body))


def responses_usage(line: Any) -> Usage | None:
    """Return the billed usage of a Responses-API output line (`response.body.usage`)."""
    return chat_completion_usage(line, "input_tokens", "output_tokens")


class ResponsesBodyBuilder(BodyBuilder):
    """Build `/v1/responses` batch bodies equal to `responses_body` (reference path only).

    Attributes:
        llm: The reference `ChatOpenAI`.
    """

    fast_enabled = False

    def __init__(
        self, model: str, ctx_params: dict[str, Any], spec: OutputSpec | None = None
    ) -> None:
        """Build the reference model and what the spec's wrapper binds to it."""
        self.llm: ChatOpenAI = chat_model(model, ctx_params)
        self._bound: dict[str, Any] = bound_kwargs(self.llm, spec)

    def build_reference(self, request: BatchRequest) -> dict[str, Any]:
        """Build the body through `ChatOpenAI._get_request_payload` (the reference path)."""
        return responses_body(self.llm, request, self._bound)


class ResponsesMessageParser(MessageParser):
    """Parse Responses-API result bodies into the AIMessage `ChatOpenAI.invoke()` returns.

    Attributes:
        llm: The reference `ChatOpenAI` (its `output_version` shapes the message).
    """

    fast_enabled = False

    def __init__(
        self, model: str, spec: OutputSpec | None = None, params: Mapping[str, Any] | None = None
    ) -> None:
        """Build the reference model; a response schema is handed to LangChain as realtime does.

        Args:
            model: The model of the job's chat model object (`Job.chat_model`).
            spec: The request set's tools / response schema.
            params: That chat model's settings (`Job.params`).
        """
        self.llm: ChatOpenAI = chat_model(model, dict(params or {}))
        # `_generate` passes the call's `response_format` as `schema` (the parsed answer).
        self._schema: Any = bound_kwargs(self.llm, spec).get("response_format")
        self.probes = _RESPONSES_PROBES

    def parse_reference(self, body: dict[str, Any], message_key: str) -> AIMessage:
        """Parse through the SDK's `Response` and `_construct_lc_result_from_responses_api`."""
        result = _construct_lc_result_from_responses_api(
            parse_response(body),
            schema=self._schema,
            metadata={},
            output_version=self.llm.output_version,
        )
        return finish_message(self.llm, result, message_key)

    def billed_usage(self, line: Any) -> Usage | None:
        """Return the usage billed for a decoded output line (`input_tokens`, `output_tokens`)."""
        return responses_usage(line)


_RESPONSES_PROBES: Final[list[dict[str, Any]]] = [
    {
        "id": "resp_probe",
        "object": "response",
        "created_at": 1767225600,
        "status": "completed",
        "model": "gpt-probe",
        "output": [
            {"id": "rs_probe", "type": "reasoning", "summary": []},
            {
                "id": "msg_probe",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Fine.", "annotations": []}],
            },
            {
                "id": "fc_probe",
                "type": "function_call",
                "call_id": "call_probe",
                "name": "probe",
                "arguments": "{}",
                "status": "completed",
            },
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": 21,
            "input_tokens_details": {"cached_tokens": 5},
            "output_tokens": 3,
            "output_tokens_details": {"reasoning_tokens": 1},
            "total_tokens": 24,
        },
    }
]
