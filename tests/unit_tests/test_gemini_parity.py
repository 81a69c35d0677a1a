"""Parity for Gemini: a batch request is what realtime `ChatGoogleGenerativeAI` sends, a result its AIMessage.

The realtime side is the real `ChatGoogleGenerativeAI.invoke()` (plain, `bind_tools`,
`with_structured_output`) with google-genai's HTTP transport swapped for a recording mock that
answers a canned `generateContent` response (`tests.realtime.recording_gemini`). The batch side
is `agent.providers.gemini.reference`: the request body of a batch line, and the parse of a
result line. Property tests draw conversations (system, multi-turn, text parts, tool calls and
tool results), model settings, call parameters and answers.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage

from agent.providers.base import read_outcome
from agent.providers.gemini import reference
from agent.requests import BatchRequest, InputError
from agent.structured import AnswerCheck, OutputSpec, bind_kwargs, bound_runnable
from tests.realtime import GEMINI_RESPONSE, gemini_response, recording_gemini

MODEL = "gemini-2.5-flash"
JOB = "batches/abc123"
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Empty human turns and superseded thinking settings warn on both sides alike.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def realtime(
    messages: list[dict[str, Any]],
    ctor: dict[str, Any],
    call: dict[str, Any],
    response: dict[str, Any] = GEMINI_RESPONSE,
    spec: OutputSpec | None = None,
) -> tuple[dict[str, Any], Any]:
    """Invoke the realtime chat model (wrapped as `spec` says); return the body sent and its answer."""
    llm, sent = recording_gemini(copy.deepcopy(response), ctor)
    runnable: Any = llm if spec is None else bound_runnable(llm, spec)
    answer = runnable.invoke(messages, **call)
    (body,) = sent
    assert body.pop("_model") == MODEL
    return body, answer


def batch_body(
    messages: list[dict[str, Any]],
    ctor: dict[str, Any],
    call: dict[str, Any],
    spec: OutputSpec | None = None,
) -> dict[str, Any]:
    llm = reference.chat_model(MODEL, ctor)
    body = reference.request_body(llm, BatchRequest("r1", messages, call), bind_kwargs(llm, spec))
    # What is uploaded is JSON: compare what it decodes to.
    line = json.loads(reference.batch_line("r1", body))
    assert line.keys() == {"key", "request"} and line["key"] == "r1"
    return dict(line["request"])


def batch_message(
    response: dict[str, Any], ctor: dict[str, Any] | None = None, spec: OutputSpec | None = None
) -> AIMessage:
    parser = reference.GeminiLineParser(MODEL, ctor or {}, spec)
    raw = json.dumps({"key": "r1", "response": copy.deepcopy(response)}).encode()
    outcome = read_outcome(parser, raw, JOB)
    assert outcome.custom_id == "r1" and outcome.error is None and outcome.message is not None
    return outcome.message


def comparable(message: AIMessage) -> dict[str, Any]:
    """A message's dump without what realtime draws at random (run id, missing call ids)."""
    dumped = message.model_dump()
    assert dumped.pop("id").startswith("lc_run-")
    # A function call without an id gets a uuid4 (realtime too), wherever it is repeated.
    text = json.dumps(dumped, default=str)
    for index, call in enumerate(message.tool_calls):
        if call["id"]:
            text = text.replace(call["id"], f"call-{index}")
    return dict(json.loads(text))


# ---------------------------------------------------------------------------------------------
# Conversations and settings
# ---------------------------------------------------------------------------------------------

texts = st.one_of(
    st.text(min_size=1, max_size=20),
    st.sampled_from(["Hello", "é\u2028", "日本語", "🙂", '"q"\\', " x "]),
)
parts = st.lists(st.builds(lambda t: {"type": "text", "text": t}, texts), min_size=1, max_size=3)
contents = st.one_of(texts, parts)
tool_names = st.sampled_from(["lookup", "get_weather"])
args = st.dictionaries(st.sampled_from(["q", "city", "n"]), st.one_of(texts, st.integers(0, 9)))


@st.composite
def tool_exchange(draw: st.DrawFn) -> list[dict[str, Any]]:
    """An assistant turn calling tools, then one tool result per call."""
    calls = [
        {"id": f"call_{i}", "name": draw(tool_names), "args": draw(args)}
        for i in range(draw(st.integers(1, 2)))
    ]
    said = draw(st.sampled_from(["", "Let me check."]))
    out: list[dict[str, Any]] = [{"role": "assistant", "content": said, "tool_calls": calls}]
    for call in calls:
        out.append({"role": "tool", "tool_call_id": call["id"], "content": draw(texts)})
    return out


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(contents)})
    for _ in range(draw(st.integers(0, 2))):
        messages.append({"role": "user", "content": draw(contents)})
        if draw(st.booleans()):
            messages.extend(draw(tool_exchange()))
        else:
            messages.append({"role": "assistant", "content": draw(contents)})
    messages.append({"role": "user", "content": draw(contents)})
    return messages


unit = st.floats(min_value=0, max_value=1, allow_nan=False)
stops = st.lists(st.text(min_size=1, max_size=4), min_size=1, max_size=3)
SAFETY = {"HARM_CATEGORY_HARASSMENT": "BLOCK_NONE", "HARM_CATEGORY_HATE_SPEECH": "BLOCK_ONLY_HIGH"}
CTOR: dict[str, st.SearchStrategy[Any]] = {
    "temperature": st.floats(min_value=0, max_value=2, allow_nan=False),
    "top_p": unit,
    "top_k": st.integers(1, 40),
    "max_output_tokens": st.integers(1, 4096),
    "stop": stops,
    "seed": st.integers(0, 99),
    "presence_penalty": st.sampled_from([0.5, -1.0]),
    "thinking_budget": st.integers(0, 2048),
    "include_thoughts": st.booleans(),
    "thinking_level": st.sampled_from(["low", "high"]),
    "safety_settings": st.just(SAFETY),
    "response_mime_type": st.sampled_from(["text/plain", "application/json"]),
    "cached_content": st.sampled_from(["cachedContents/ctx1", "ctx2"]),
    "labels": st.just({"team": "support"}),
    "convert_system_message_to_human": st.booleans(),
}
CALL: dict[str, st.SearchStrategy[Any]] = {
    "temperature": unit,
    "top_p": unit,
    "top_k": st.integers(1, 40),
    "max_output_tokens": st.integers(1, 64),
    "stop": stops,
    "seed": st.integers(0, 99),
    "thinking_budget": st.integers(0, 512),
    "include_thoughts": st.booleans(),
    "cached_content": st.just("cachedContents/ctx3"),
    "safety_settings": st.just({"HARM_CATEGORY_DANGEROUS_CONTENT": "BLOCK_NONE"}),
    "generation_config": st.just({"temperature": 0.1, "candidate_count": 1}),
}


@st.composite
def some(draw: st.DrawFn, options: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(sorted(options)), unique=True, max_size=5))
    return {key: draw(options[key]) for key in keys}


@SETTINGS
@given(messages=conversations(), ctor=some(CTOR), call=some(CALL))
def test_batch_request_equals_the_realtime_request_body(
    messages: list[dict[str, Any]], ctor: dict[str, Any], call: dict[str, Any]
) -> None:
    sent, _ = realtime(messages, ctor, call)
    assert batch_body(messages, ctor, call) == sent


def test_the_request_lifts_config_to_the_request_level_as_realtime_does() -> None:
    messages = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
    ]
    ctor = {"temperature": 0.3, "thinking_budget": 64, "safety_settings": SAFETY}
    call = {"stop": ["\n"], "cached_content": "ctx"}
    body = batch_body(messages, ctor, call)
    assert body == realtime(messages, ctor, call)[0]
    assert "model" not in body  # a batch job names its model once, in its URL
    assert body["systemInstruction"] == {"parts": [{"text": "Be terse."}]}
    assert body["contents"] == [{"parts": [{"text": "a"}, {"text": "b"}], "role": "user"}]
    assert body["cachedContent"] == "cachedContents/ctx"
    assert [s["category"] for s in body["safetySettings"]] == list(SAFETY)
    assert body["generationConfig"]["stopSequences"] == ["\n"]
    assert body["generationConfig"]["temperature"] == 0.3


def test_a_request_realtime_refuses_is_refused_by_its_id() -> None:
    llm = reference.chat_model(MODEL, {})
    # A sampling value GenerationConfig cannot read.
    request = BatchRequest("r9", [{"role": "user", "content": "x"}], {"temperature": [1]})
    with pytest.raises(InputError) as info:
        reference.request_body(llm, request)
    assert info.value.request_id == "r9" and "ChatGoogleGenerativeAI refuses" in str(info.value)
    headers = BatchRequest(
        "r8", [{"role": "user", "content": "x"}], {"http_options": {"headers": {"a": "b"}}}
    )
    with pytest.raises(InputError, match="headers"):
        reference.request_body(llm, headers)


def test_a_request_http_extra_body_reaches_the_request_as_realtime_merges_it() -> None:
    messages = [{"role": "user", "content": "x"}]
    call = {"http_options": {"extra_body": {"generationConfig": {"topK": 3}}}}
    sent, _ = realtime(messages, {}, call)
    body = batch_body(messages, {}, call)
    assert body == sent and body["generationConfig"]["topK"] == 3


@pytest.mark.parametrize(
    ("key", "value"),
    [("additional_headers", {"x": "y"}), ("vertexai", True), ("streaming", True)],
)
def test_settings_a_batch_cannot_reproduce_are_refused(key: str, value: Any) -> None:
    with pytest.raises(InputError, match=key):
        reference.chat_model(MODEL, {key: value})


@pytest.mark.parametrize(
    "key", ["api_key", "google_api_key", "timeout", "max_retries", "client_args"]
)
def test_client_settings_never_reach_the_run(key: str) -> None:
    with pytest.raises(InputError, match="configures the client"):
        reference.chat_model(MODEL, {key: "secret"})


# ---------------------------------------------------------------------------------------------
# Answers
# ---------------------------------------------------------------------------------------------

counts = st.integers(0, 5000)


@st.composite
def usages(draw: st.DrawFn) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "promptTokenCount": draw(counts),
        "candidatesTokenCount": draw(counts),
    }
    for key in ("thoughtsTokenCount", "cachedContentTokenCount", "toolUsePromptTokenCount"):
        if draw(st.booleans()):
            usage[key] = draw(counts)
    usage["totalTokenCount"] = sum(usage.values())
    return usage


answer_parts = st.lists(
    st.one_of(
        st.builds(lambda t: {"text": t}, texts),
        st.builds(lambda t: {"text": t, "thought": True}, texts),
        st.builds(lambda n, a: {"functionCall": {"name": n, "args": a}}, tool_names, args),
    ),
    min_size=1,
    max_size=3,
)


@st.composite
def answers(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.integers(0, 9)) == 0:
        # A blocked prompt: no candidates, the reason in promptFeedback.
        return {
            "promptFeedback": {"blockReason": draw(st.sampled_from(["SAFETY", "OTHER"]))},
            "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
            "modelVersion": MODEL,
        }
    response = gemini_response(
        draw(answer_parts),
        draw(st.sampled_from(["STOP", "MAX_TOKENS", "SAFETY", "RECITATION"])),
        draw(usages()),
    )
    if draw(st.booleans()):
        response["candidates"][0]["safetyRatings"] = [
            {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}
        ]
    return response


@SETTINGS
@given(
    response=answers(),
    ctor=some({"include_thoughts": st.booleans(), "output_version": st.sampled_from(["v0", "v1"])}),
)
def test_batch_result_equals_the_realtime_message(
    response: dict[str, Any], ctor: dict[str, Any]
) -> None:
    _, message = realtime([{"role": "user", "content": "Hi"}], ctor, {}, response)
    assert comparable(batch_message(response, ctor)) == comparable(message)


def test_usage_counts_thinking_and_cached_tokens_as_realtime_does() -> None:
    _, message = realtime([{"role": "user", "content": "Hi"}], {}, {})
    ours = batch_message(GEMINI_RESPONSE)
    assert comparable(ours) == comparable(message)
    assert ours.usage_metadata == {
        "input_tokens": 21,
        "output_tokens": 9,
        "total_tokens": 30,
        "input_token_details": {"cache_read": 8},
        "output_token_details": {"reasoning": 6},
    }
    assert ours.response_metadata["finish_reason"] == "STOP"
    assert ours.response_metadata["model_name"] == "gemini-2.5-flash"
    parser = reference.GeminiLineParser(MODEL)
    assert parser.billed_usage({"key": "r1", "response": GEMINI_RESPONSE}) == {
        "input_tokens": 21,
        "output_tokens": 9,
        "total_tokens": 30,
    }


def test_a_blocked_prompt_is_the_empty_message_realtime_returns() -> None:
    blocked = {
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
    }
    _, message = realtime([{"role": "user", "content": "Hi"}], {}, {}, blocked)
    ours = batch_message(blocked)
    assert comparable(ours) == comparable(message)
    assert (
        ours.content == "" and ours.response_metadata["prompt_feedback"]["block_reason"] == "SAFETY"
    )


@pytest.mark.parametrize(
    ("error", "code", "retryable"),
    [
        (
            {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"},
            "RESOURCE_EXHAUSTED",
            True,
        ),
        ({"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}, "UNAVAILABLE", True),
        ({"code": 500, "message": "boom", "status": "INTERNAL"}, "INTERNAL", True),
        ({"code": 13, "message": "boom"}, "grpc_13", True),
        ({"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}, "INVALID_ARGUMENT", False),
        ({"code": 3, "message": "bad"}, "grpc_3", False),
    ],
)
def test_an_error_line_fails_its_request_with_a_retryable_kind(
    error: dict[str, Any], code: str, retryable: bool
) -> None:
    parser = reference.GeminiLineParser(MODEL)
    raw = json.dumps({"key": "r7", "error": error}).encode()
    outcome = read_outcome(parser, raw, JOB)
    assert outcome.custom_id == "r7" and outcome.message is None
    assert outcome.error == {"code": code, "message": error["message"]}
    assert outcome.retryable is retryable


def test_an_odd_line_fails_its_own_request_only() -> None:
    parser = reference.GeminiLineParser(MODEL)
    assert read_outcome(parser, b"not json", JOB).error == {
        "code": "bad_result_line",
        "message": "unreadable result line",
    }
    missing = read_outcome(parser, b'{"key": "r3"}', JOB)
    assert missing.custom_id == "r3" and missing.error is not None
    broken = read_outcome(parser, b'{"key": "r4", "response": {"candidates": 5}}', JOB)
    assert broken.error is not None and broken.error["code"] == "invalid_response"


# ---------------------------------------------------------------------------------------------
# Tools and structured output
# ---------------------------------------------------------------------------------------------

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look an order up.",
            "parameters": {
                "type": "object",
                "properties": {"q": {"type": "string"}, "n": {"type": "integer"}},
                "required": ["q"],
            },
        },
    }
]
SCHEMA = {
    "title": "Ticket",
    "description": "A support ticket.",
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": ["billing", "refund"]},
        "urgent": {"type": "boolean"},
    },
    "required": ["category", "urgent"],
}
SPECS = {
    "tools": OutputSpec(tools=TOOLS),
    "tools-choice": OutputSpec(tools=TOOLS, tool_choice="lookup"),
    "tools-any": OutputSpec(tools=TOOLS, tool_choice="any"),
    "schema": OutputSpec(response_schema=SCHEMA),
    "schema-function": OutputSpec(response_schema=SCHEMA, schema_method="function_calling"),
    "schema-json-mode": OutputSpec(response_schema=SCHEMA, schema_method="json_mode"),
}
CONVERSATION = [
    {"role": "system", "content": "Classify tickets."},
    {"role": "user", "content": "My invoice is wrong"},
]


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize(
    ("ctor", "call"), [({}, {}), ({"temperature": 0.1}, {"max_output_tokens": 9})]
)
def test_tools_and_structured_requests_equal_realtime(
    name: str, ctor: dict[str, Any], call: dict[str, Any]
) -> None:
    spec = SPECS[name]
    sent, _ = realtime(CONVERSATION, ctor, call, structured_answer(name), spec)
    assert batch_body(CONVERSATION, ctor, call, spec) == sent


ANSWER = {"category": "billing", "urgent": True}


def structured_answer(name: str) -> dict[str, Any]:
    """The answer a spec's realtime output parser accepts."""
    if name == "schema-function":
        return gemini_response([{"functionCall": {"name": "Ticket", "args": ANSWER}}])
    if name.startswith("schema"):
        return gemini_response([{"text": json.dumps(ANSWER)}])
    return GEMINI_RESPONSE


@pytest.mark.parametrize("name", ["schema", "schema-json-mode", "schema-function"])
def test_structured_answers_equal_realtime(name: str) -> None:
    spec = SPECS[name]
    response = structured_answer(name)
    _, parsed = realtime(CONVERSATION, {}, {}, response, spec)
    message = batch_message(response, spec=spec)
    llm = reference.chat_model(MODEL, {})
    ours, error = AnswerCheck(llm, spec).check(message, "r1")
    assert error is None and ours == parsed == ANSWER


def test_a_tool_call_answer_equals_realtime() -> None:
    response = gemini_response([{"functionCall": {"name": "lookup", "args": {"q": "A-1"}}}])
    _, message = realtime(CONVERSATION, {}, {}, response, SPECS["tools"])
    ours = batch_message(response, spec=SPECS["tools"])
    assert comparable(ours) == comparable(message)
    assert [(c["name"], c["args"]) for c in ours.tool_calls] == [("lookup", {"q": "A-1"})]
