"""Parity with tools and structured output: batch bodies and results equal realtime ones.

The realtime side is the real `ChatOpenAI` / `ChatMistralAI` / `ChatAnthropic` /
`ChatGoogleGenerativeAI` wrapped by
`.bind_tools(tools)` or `.with_structured_output(schema)` and `.invoke()`d with its HTTP client
swapped for a recording mock transport (as `test_parity.py` does). The batch side is our
provider's `prepare` with the request set's `OutputSpec` (the input we upload), and `results`
reading a result file served through the real SDK, followed by the parse/validate step collect
applies (`AnswerCheck`).

Parametrized by provider (`CASES`): a new provider is one more `Case`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest
from langchain_core.messages import AIMessage

from agent.planning import new_intent
from agent.providers.base import BatchProvider, RequestOutcome
from agent.providers.gemini import GeminiProvider
from agent.providers.mistral import MistralProvider
from agent.providers.openai import OpenAIProvider
from agent.requests import BatchRequest
from agent.structured import AnswerCheck, OutputSpec
from tests.realtime import (
    anthropic_response,
    gemini_response,
    message_batch,
    mistral_response,
    openai_response,
    recording_anthropic,
    recording_gemini,
    recording_mistral,
    recording_openai,
)
from tests.support import built_lines

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
                "required": ["city"],
            },
        },
    },
    {
        "title": "lookup_order",
        "description": "Find an order by its number.",
        "type": "object",
        "properties": {"order_id": {"type": "integer"}},
        "required": ["order_id"],
    },
]
SCHEMA: dict[str, Any] = {
    "title": "Ticket",
    "description": "A classified support ticket.",
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": ["billing", "bug", "other"]},
        "urgent": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["category", "urgent"],
}
MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "You triage support tickets."},
    {"role": "user", "content": "My invoice is wrong and I need it today"},
]
ANSWER = {"category": "billing", "urgent": True, "tags": ["invoice"]}
WRONG = {"category": "refund", "urgent": "yes"}
BROKEN_JSON = '{"category": "bill'
BATCH_ID = "batch_01"

# ----------------------------------------------------------------------------- providers


@dataclass(frozen=True)
class Case:
    """How one provider is called in realtime and read in batch."""

    model: str
    realtime: Callable[..., tuple[Any, list[dict[str, Any]]]]
    """(response body, constructor params, monkeypatch) -> (chat model on a mock, sent bodies)."""
    provider: Callable[[httpx2.Client | None], BatchProvider]
    text: Callable[[str, bool], dict[str, Any]]
    """(text, cut off?) -> a realtime response body with a text answer."""
    call: Callable[[str, str], dict[str, Any]]
    """(tool name, JSON arguments) -> a realtime response body calling that tool."""
    tool_call_id: str
    default_method: str
    """`with_structured_output`'s default method on this model."""
    body_of: Callable[[dict[str, Any]], dict[str, Any]] = lambda line: line["body"]
    """The request body inside one uploaded input line."""
    result_line: Callable[[dict[str, Any]], dict[str, Any]] = lambda response: {
        "id": "batch_req_1",
        "custom_id": "r1",
        "response": {"status_code": 200, "request_id": "req_1", "body": response},
        "error": None,
    }
    files_client: Callable[[bytes], httpx2.Client] = lambda content: httpx2.Client(
        transport=httpx2.MockTransport(lambda request: httpx2.Response(200, content=content))
    )
    output_file_id: str = "file-out"
    tool_count: Callable[[dict[str, Any]], int] = lambda body: len(body["tools"])
    """How many tools a request body declares."""
    call_params: dict[str, Any] = field(default_factory=lambda: {"seed": 7})
    methods: tuple[str | None, ...] = (None, "json_schema", "function_calling", "json_mode")

    def structured_answer(self, answer: dict[str, Any]) -> dict[str, Any]:
        """Return the response to the default `with_structured_output(SCHEMA)` call."""
        if self.default_method == "json_schema":
            return self.text(json.dumps(answer), False)
        return self.call("Ticket", json.dumps(answer))

    def broken_answer(self) -> dict[str, Any]:
        """Return a response the default structured call cannot turn into an answer."""
        if self.default_method == "json_schema":
            return self.text(BROKEN_JSON, True)  # cut off at max tokens
        if self.model.startswith("claude"):
            return self.text("I would rather not say.", False)  # no tool call at all
        return self.call("Ticket", BROKEN_JSON)


def _function_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _anthropic_files(content: bytes) -> httpx2.Client:
    """The Message Batches API as the SDK reads results: the batch, then its results URL."""
    state = message_batch(BATCH_ID)

    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/results"):
            return httpx2.Response(200, content=content)
        return httpx2.Response(200, json=state)

    return httpx2.Client(transport=httpx2.MockTransport(handler))


def _anthropic_provider(client: httpx2.Client | None) -> BatchProvider:
    from agent.providers.anthropic import AnthropicProvider

    return AnthropicProvider(emulated=False, base_url="https://api.invalid", http_client=client)


CASES: dict[str, Case] = {
    "openai": Case(
        model="gpt-4o-mini",
        realtime=lambda response, ctor, _: recording_openai(response, ctor),
        provider=lambda client: OpenAIProvider(
            emulated=False, base_url="http://files.invalid/v1", http_client=client
        ),
        text=lambda text, cut: openai_response({"content": text}, "length" if cut else "stop"),
        call=lambda name, arguments: openai_response(
            {"content": None, "tool_calls": [_function_call("call_Ab12Cd34", name, arguments)]},
            "tool_calls",
        ),
        tool_call_id="call_Ab12Cd34",
        default_method="json_schema",
    ),
    "mistral": Case(
        model="mistral-small-latest",
        realtime=lambda response, ctor, _: recording_mistral(response, ctor),
        provider=lambda client: MistralProvider(
            emulated=False, base_url="http://files.invalid", http_client=client
        ),
        text=lambda text, cut: mistral_response({"content": text}, "length" if cut else "stop"),
        call=lambda name, arguments: mistral_response(
            {"content": "", "tool_calls": [_function_call("Ab12Cd34e", name, arguments)]},
            "tool_calls",
        ),
        tool_call_id="Ab12Cd34e",
        default_method="function_calling",
    ),
    "anthropic": Case(
        model="claude-haiku-4-5",
        realtime=recording_anthropic,
        provider=_anthropic_provider,
        text=lambda text, cut: anthropic_response(
            [{"type": "text", "text": text}], "max_tokens" if cut else "end_turn"
        ),
        call=lambda name, arguments: anthropic_response(
            [
                {
                    "type": "tool_use",
                    "id": "toolu_01Ab12Cd34",
                    "name": name,
                    "input": json.loads(arguments),
                }
            ],
            "tool_use",
        ),
        tool_call_id="toolu_01Ab12Cd34",
        default_method="function_calling",
        body_of=lambda line: line["params"],
        result_line=lambda response: {
            "custom_id": "r1",
            "result": {"type": "succeeded", "message": response},
        },
        files_client=_anthropic_files,
        output_file_id=f"https://files.invalid/v1/messages/batches/{BATCH_ID}/results",
        call_params={"top_k": 5},
        methods=(None, "json_schema", "function_calling"),
    ),
    "gemini": Case(
        model="gemini-2.5-flash",
        realtime=lambda response, ctor, _: recording_gemini(response, ctor),
        provider=lambda client: GeminiProvider(
            emulated=False, base_url="http://files.invalid", http_client=client
        ),
        text=lambda text, cut: gemini_response([{"text": text}], "MAX_TOKENS" if cut else "STOP"),
        # With the call id the API may give: without one, both sides draw a uuid4.
        call=lambda name, arguments: gemini_response(
            [{"functionCall": {"id": "fc-Ab12Cd34", "name": name, "args": json.loads(arguments)}}]
        ),
        tool_call_id="fc-Ab12Cd34",
        default_method="json_schema",
        body_of=lambda line: line["request"],
        result_line=lambda response: {"key": "r1", "response": response},
        output_file_id="files/batch-out-1",
        # One `Tool` holds every function declaration, as realtime sends them.
        tool_count=lambda body: sum(len(tool["functionDeclarations"]) for tool in body["tools"]),
    ),
}
PROVIDERS = list(CASES)

# ----------------------------------------------------------------------------- helpers


def _batch_body(
    case: Case, spec: OutputSpec, ctor: dict[str, Any], call: dict[str, Any]
) -> dict[str, Any]:
    batch = built_lines(
        case.provider(None), [BatchRequest("r1", MESSAGES, call)], case.model, ctor, spec
    )
    (raw,) = batch.splitlines()
    assert case.provider(None).line_id(raw) == "r1"
    return dict(case.body_of(json.loads(raw)))


def _batch_outcome(case: Case, spec: OutputSpec, response: dict[str, Any]) -> RequestOutcome:
    content = json.dumps(case.result_line(response)).encode() + b"\n"
    provider = case.provider(case.files_client(content))
    job = new_intent(provider, key="k", attempt=1, model=case.model, params={}, request_count=1)
    job.update(job_id=BATCH_ID, status="done", output_file_id=case.output_file_id)
    (outcome,) = list(provider.results(job, spec))
    assert outcome.custom_id == "r1"
    return outcome


def _batch_message(case: Case, spec: OutputSpec, response: dict[str, Any]) -> AIMessage:
    outcome = _batch_outcome(case, spec, response)
    assert outcome.error is None and outcome.message is not None
    return outcome.message


def _check(case: Case, spec: OutputSpec, *, validate: bool = False) -> AnswerCheck:
    return AnswerCheck(case.provider(None).chat_model(case.model, {}), spec, validate=validate)


def _comparable(message: AIMessage) -> dict[str, Any]:
    # `invoke()` ids embed a random run id; everything else must match exactly.
    dumped = message.model_dump()
    dumped.pop("id")
    return dumped


def _sent_body(sent: list[dict[str, Any]]) -> dict[str, Any]:
    return sent_body(sent[0])


def sent_body(sent: dict[str, Any]) -> dict[str, Any]:
    """A recorded realtime body as a batch line carries it.

    Without realtime's `stream=False` (a batch line carries no streaming flag), and without the
    model Gemini's realtime call names in its URL (`_model`), which a Gemini job names once.
    """
    body = dict(sent)
    body.pop("stream", None)
    body.pop("_model", None)
    return body


def _params(case: Case, with_params: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """(constructor parameters from the run context, per-call parameters of the request)."""
    if not with_params:
        return {}, {}
    return {"temperature": 0.2, "max_tokens": 64}, case.call_params


# ----------------------------------------------------------------------------- tests

TOOL_OPTIONS: list[dict[str, Any]] = [{}, {"tool_choice": "get_weather"}, {"tool_choice": "any"}]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("options", TOOL_OPTIONS, ids=["auto", "named", "any"])
@pytest.mark.parametrize("with_params", [False, True], ids=["defaults", "params"])
def test_tools_batch_body_equals_realtime_body(
    provider: str, options: dict[str, Any], with_params: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = CASES[provider]
    ctor, call = _params(case, with_params)
    llm, sent = case.realtime(case.call("get_weather", '{"city": "Paris"}'), ctor, monkeypatch)
    llm.bind_tools(TOOLS, **options).invoke(MESSAGES, **call)
    spec = OutputSpec(tools=TOOLS, tool_choice=options.get("tool_choice"))
    body = _batch_body(case, spec, ctor, call)
    assert body == _sent_body(sent)
    assert case.tool_count(body) == 2


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("method", [None, "json_schema", "function_calling", "json_mode"])
@pytest.mark.parametrize("with_params", [False, True], ids=["defaults", "params"])
def test_structured_batch_body_equals_realtime_body(
    provider: str, method: str | None, with_params: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = CASES[provider]
    if method not in case.methods:
        pytest.skip(f"{provider} has no structured-output method {method!r}")
    ctor, call = _params(case, with_params)
    llm, sent = case.realtime(case.structured_answer(ANSWER), ctor, monkeypatch)
    options = {"method": method} if method else {}
    try:
        llm.with_structured_output(SCHEMA, **options).invoke(MESSAGES, **call)
    except Exception:
        pass  # the canned answer may not fit this method; only the request matters here
    spec = OutputSpec(response_schema=SCHEMA, schema_method=method)
    assert _batch_body(case, spec, ctor, call) == _sent_body(sent)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tool_call_result_equals_realtime_message(
    provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = CASES[provider]
    response = case.call("get_weather", '{"city": "Paris"}')
    llm, _ = case.realtime(response, {}, monkeypatch)
    realtime = llm.bind_tools(TOOLS).invoke(MESSAGES)
    ours = _batch_message(case, OutputSpec(tools=TOOLS), response)
    assert _comparable(ours) == _comparable(realtime)
    expected = {"name": "get_weather", "args": {"city": "Paris"}, "id": case.tool_call_id}
    assert ours.tool_calls == realtime.tool_calls == [{**expected, "type": "tool_call"}]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_structured_result_equals_realtime_answer(
    provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = CASES[provider]
    response = case.structured_answer(ANSWER)
    llm, _ = case.realtime(response, {}, monkeypatch)
    realtime = llm.with_structured_output(SCHEMA, include_raw=True).invoke(MESSAGES)
    assert realtime["parsing_error"] is None
    spec = OutputSpec(response_schema=SCHEMA)
    ours = _batch_message(case, spec, response)
    # The raw message, including what realtime adds for a response format (OpenAI's
    # `additional_kwargs["parsed"]` from the SDK's `chat.completions.parse`) and tool calls.
    assert _comparable(ours) == _comparable(realtime["raw"])
    assert _check(case, spec).check(ours, "r1") == (ANSWER, None)
    assert realtime["parsed"] == ANSWER


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_answer_breaking_the_schema_is_a_per_request_error_only_when_validated(
    provider: str,
) -> None:
    case = CASES[provider]
    spec = OutputSpec(response_schema=SCHEMA)
    wrong = _batch_message(case, spec, case.structured_answer(WRONG))
    # Realtime `.invoke()` does not validate: the answer is returned as parsed.
    assert _check(case, spec).check(wrong, "r1") == (WRONG, None)
    parsed, error = _check(case, spec, validate=True).check(wrong, "r1")
    assert parsed == WRONG and error is not None and error["code"] == "schema"
    assert error["message"].startswith("schema: the answer does not match")
    assert "(request id 'r1')" in error["message"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_broken_answer_gets_what_realtime_raises(
    provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = CASES[provider]
    spec = OutputSpec(response_schema=SCHEMA)
    broken = case.broken_answer()
    llm, _ = case.realtime(broken, {}, monkeypatch)
    try:
        answer, raised = llm.with_structured_output(SCHEMA).invoke(MESSAGES), None
    except Exception as exc:
        answer, raised = None, exc
    outcome = _batch_outcome(case, spec, broken)
    if outcome.error is not None:
        # Realtime raises before any output parser runs (OpenAI's `parse` of a cut answer).
        assert raised is not None and outcome.error["code"] == "invalid_response"
        assert outcome.error["message"] == f"{type(raised).__name__}: {raised}"
        assert outcome.message is not None  # the plain message is kept
        return
    assert outcome.message is not None
    parsed, error = _check(case, spec).check(outcome.message, "r1")
    if raised is None:
        assert (parsed, error) == (answer, None)  # e.g. None: no call of the schema's tool
    else:
        assert parsed is None and error is not None and error["code"] == "output_parsing"
        assert error["message"] == f"{type(raised).__name__}: {raised}"
