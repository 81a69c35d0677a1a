"""The Gemini fast paths equal the reference `ChatGoogleGenerativeAI` paths: requests, messages, lines.

The reference is `agent.providers.gemini.reference`: `request_body(chat_model(...), request,
bound)` for requests, `parse_response(llm, response, key)` (realtime `.invoke()`) for answers and
`GeminiLineParser.parse_line` for result lines; its own parity with realtime is
`test_gemini_parity.py`. Property tests generate the shapes the fast paths claim to handle and
check the fast path was taken *and* is exact (equal, same key order and bytes, same
`model_dump`, same fields set, same checkpoint serialisation); explicit cases check that what
must fall back still equals the reference.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.providers.gemini import reference
from agent.providers.gemini.fast import GeminiBodyBuilder, GeminiMessageParser
from agent.requests import BatchRequest, InputError
from agent.structured import OutputSpec, bind_kwargs
from tests.unit_tests.test_fastpath import (
    assert_same_body,
    assert_same_message,
    assert_same_parse,
    fallback_cases,
)
from tests.unit_tests.test_gemini_parity import comparable

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MODELS = ["gemini-2.5-flash", "gemini-3-flash-preview"]
JOB = "batches/fast1"
# Empty human turns dropped by the reference warn there (and only on fallback here).
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def ref_body(
    model: str, ctx: dict[str, Any], request: BatchRequest, spec: OutputSpec | None = None
) -> dict[str, Any]:
    llm = reference.chat_model(model, ctx)
    return reference.request_body(llm, request, bind_kwargs(llm, spec))


# ---------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------

texts = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", " ", "\n", "x \n", "\u2028", "é", "日本語", "🙂", '"q"\\']),
)
parts = st.lists(st.builds(lambda t: {"type": "text", "text": t}, texts), min_size=1, max_size=3)
contents = st.one_of(texts, parts)
turns = st.lists(
    st.builds(
        lambda role, content: {"role": role, "content": content},
        st.sampled_from(["user", "assistant"]),
        contents,
    ),
    max_size=5,
)
systems = st.lists(st.builds(lambda c: {"role": "system", "content": c}, contents), max_size=2)
last_turns = st.builds(
    lambda c: {"role": "user", "content": c}, st.one_of(st.text(min_size=1, max_size=20), parts)
)
unit = st.floats(min_value=0, max_value=1, allow_nan=False)
stops = st.lists(st.text(min_size=1, max_size=4), max_size=3)
CTX: dict[str, st.SearchStrategy[Any]] = {
    "temperature": st.floats(min_value=0, max_value=2, allow_nan=False),
    "max_output_tokens": st.integers(1, 4096),
    "top_p": unit,
    "top_k": st.integers(1, 40),
    "thinking_budget": st.integers(0, 1024),
    "include_thoughts": st.booleans(),
    "safety_settings": st.just({"HARM_CATEGORY_HARASSMENT": "BLOCK_NONE"}),
    "cached_content": st.just("ctx1"),
}
# Sampling values are set into the cached configuration per request: None (which drops the
# model's value) and ints for float fields included.
CALL: dict[str, st.SearchStrategy[Any]] = {
    "temperature": st.one_of(unit, st.none(), st.integers(0, 2)),
    "top_p": st.one_of(unit, st.none()),
    "max_output_tokens": st.one_of(st.integers(1, 512), st.none()),
    "top_k": st.one_of(st.integers(1, 40), st.floats(1, 40, allow_nan=False)),
    "stop": st.one_of(st.none(), stops),
    "seed": st.one_of(st.integers(0, 9), st.none()),
    "response_mime_type": st.sampled_from(["text/plain", "application/json"]),
    "cached_content": st.just("cachedContents/c2"),
}


@st.composite
def some(draw: st.DrawFn, options: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(sorted(options)), unique=True, max_size=4))
    return {key: draw(options[key]) for key in keys}


@SETTINGS
@given(
    model=st.sampled_from(MODELS),
    system=systems,
    middle=turns,
    last=last_turns,
    ctx=some(CTX),
    call=st.lists(some(CALL), min_size=1, max_size=3),
)
def test_fast_request_equals_reference(
    model: str,
    system: list[dict[str, Any]],
    middle: list[dict[str, Any]],
    last: dict[str, Any],
    ctx: dict[str, Any],
    call: list[dict[str, Any]],
) -> None:
    builder = GeminiBodyBuilder(model, ctx)
    assert builder.fast_enabled
    # Several requests per builder: the configuration cache is shared between them.
    for index, params in enumerate(call * 2):
        request = BatchRequest(f"r{index}", [*system, *middle, last], params)
        fast = builder.build_fast(request)
        assert fast is not None
        assert_same_body(fast, ref_body(model, ctx, request))


SPECS = {
    "tools": OutputSpec(
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "lookup",
                    "description": "Look up.",
                    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
                },
            }
        ],
        tool_choice="lookup",
    ),
    "schema": OutputSpec(
        response_schema={
            "title": "Ticket",
            "type": "object",
            "properties": {"category": {"type": "string"}},
            "required": ["category"],
        }
    ),
}


@pytest.mark.parametrize("name", list(SPECS))
def test_fast_request_with_tools_or_a_schema_equals_reference(name: str) -> None:
    spec = SPECS[name]
    builder = GeminiBodyBuilder(MODELS[0], {"temperature": 0.1}, spec)
    assert builder.fast_enabled
    request = BatchRequest(
        "r1", [{"role": "system", "content": "Classify."}, {"role": "user", "content": "hi"}], {}
    )
    fast = builder.build_fast(request)
    assert fast is not None
    assert_same_body(fast, ref_body(MODELS[0], {"temperature": 0.1}, request, spec))
    assert ("tools" in fast) is (name == "tools")


FALLBACK_MESSAGES: dict[str, list[dict[str, Any]]] = {
    "tool-call": [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c1", "name": "lookup", "args": {"q": "x"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "found"},
    ],
    "image": [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}],
        }
    ],
    "late-system": [
        {"role": "system", "content": "a"},
        {"role": "user", "content": "hi"},
        {"role": "system", "content": "b"},
        {"role": "user", "content": "again"},
    ],
    "prefill": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Sure"}],
    "empty-assistant-list": [
        {"role": "assistant", "content": []},
        {"role": "user", "content": "hi"},
    ],
}
FALLBACK_PARAMS: dict[str, dict[str, Any]] = {
    "extra-body": {"http_options": {"extra_body": {"contents": []}}},
    "http-timeout": {"http_options": {"timeout": 5000}},
    "unjsonable": {"temperature": 0.5, "labels": {"k": {1, 2}}},
}


@fallback_cases(FALLBACK_MESSAGES, FALLBACK_PARAMS)
def test_what_the_fast_builder_leaves_to_the_reference_still_equals_it(
    messages_: list[dict[str, Any]], params: dict[str, Any]
) -> None:
    builder = GeminiBodyBuilder(MODELS[0], {})
    request = BatchRequest("r1", messages_, params)
    assert builder.build_fast(request) is None
    try:
        expected = ref_body(MODELS[0], {}, request)
    except InputError as exc:
        with pytest.raises(InputError) as info:
            builder.build(request)
        assert str(info.value) == str(exc)
    else:
        assert_same_body(builder.build(request), expected)


@pytest.mark.parametrize(
    "params",
    # Sampling values GenerationConfig cannot read.
    [{"max_output_tokens": "many"}, {"temperature": [1]}],
    ids=["tokens", "temperature"],
)
def test_a_request_realtime_refuses_is_refused_by_its_own_id_on_the_fast_path(
    params: dict[str, Any],
) -> None:
    builder = GeminiBodyBuilder(MODELS[0], {})
    bad = BatchRequest("r5", [{"role": "user", "content": "x"}], params)
    with pytest.raises(InputError) as info:
        builder.build(bad)
    assert info.value.request_id == "r5"
    # The refusal is remembered for the configuration, not the request id.
    again = BatchRequest("r6", bad.messages, bad.params)
    with pytest.raises(InputError) as info:
        builder.build(again)
    assert info.value.request_id == "r6"


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------

counts = st.integers(0, 10_000)
modality = st.sampled_from(["TEXT", "IMAGE", "AUDIO"])
details = st.lists(
    st.fixed_dictionaries({"modality": modality, "tokenCount": counts}), min_size=0, max_size=2
)


@st.composite
def usages(draw: st.DrawFn) -> dict[str, Any] | None:
    if draw(st.integers(0, 9)) == 0:
        return None
    usage: dict[str, Any] = {}
    for key in (
        "promptTokenCount",
        "candidatesTokenCount",
        "totalTokenCount",
        "thoughtsTokenCount",
        "cachedContentTokenCount",
        "toolUsePromptTokenCount",
    ):
        if draw(st.booleans()):
            usage[key] = draw(counts)
    for key in ("promptTokensDetails", "candidatesTokensDetails", "cacheTokensDetails"):
        if draw(st.booleans()):
            usage[key] = draw(details)
    return usage


answer_texts = st.one_of(
    st.text(max_size=40), st.sampled_from(["", "\n", "a\n\n", " \n", "é🙂", "x\r\n"])
)


@st.composite
def responses(draw: st.DrawFn) -> dict[str, Any]:
    candidate: dict[str, Any] = {
        "content": {
            "role": "model",
            "parts": [{"text": t} for t in draw(st.lists(answer_texts, min_size=1, max_size=3))],
        },
        "finishReason": draw(st.sampled_from(["STOP", "MAX_TOKENS"])),
    }
    if draw(st.booleans()):
        candidate["index"] = 0
    response: dict[str, Any] = {
        "candidates": [candidate],
        "modelVersion": draw(st.sampled_from([*MODELS, "gemini-2.0-flash-001", ""])),
    }
    usage = draw(usages())
    if usage is not None:
        response["usageMetadata"] = usage
    if draw(st.booleans()):
        response["responseId"] = draw(st.text(max_size=10))
    return response


@SETTINGS
@given(response=responses(), custom_id=st.text(min_size=1, max_size=12))
def test_fast_message_equals_reference(response: dict[str, Any], custom_id: str) -> None:
    parser = GeminiMessageParser(MODELS[0])
    assert parser.fast_enabled
    key = f"{JOB}/{custom_id}"
    fast = parser.parse_fast(copy.deepcopy(response), key)
    assert fast is not None
    expected = reference.parse_response(parser.llm, copy.deepcopy(response), key)
    assert_same_message(fast, expected, serde=True)


@SETTINGS
@given(response=responses(), custom_id=st.text(min_size=1, max_size=12))
def test_fast_line_equals_reference_line(response: dict[str, Any], custom_id: str) -> None:
    parser = GeminiMessageParser(MODELS[0])
    raw = orjson.dumps({"key": custom_id, "response": response})
    expected = reference.GeminiLineParser(MODELS[0]).parse_line(raw, JOB)
    assert_same_parse(parser.parse_line(raw, JOB), expected)


FALLBACK_RESPONSES: dict[str, dict[str, Any]] = {
    "thought": {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"text": "hm", "thought": True}, {"text": "A"}],
                },
                "finishReason": "STOP",
            }
        ],
        "modelVersion": MODELS[0],
    },
    "function-call": {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"functionCall": {"name": "f", "args": {}}}],
                },
                "finishReason": "STOP",
            }
        ],
        "modelVersion": MODELS[0],
    },
    "safety": {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": "A"}]},
                "finishReason": "SAFETY",
                "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH"}],
            }
        ],
        "modelVersion": MODELS[0],
    },
    "blocked": {"promptFeedback": {"blockReason": "SAFETY"}, "modelVersion": MODELS[0]},
    "two-candidates": {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": "A"}]}, "finishReason": "STOP"},
            {"content": {"role": "model", "parts": [{"text": "B"}]}, "finishReason": "STOP"},
        ],
        "modelVersion": MODELS[0],
    },
    "string-count": {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": "A"}]}, "finishReason": "STOP"}
        ],
        "usageMetadata": {"promptTokenCount": "7"},
        "modelVersion": MODELS[0],
    },
}


@pytest.mark.parametrize("name", list(FALLBACK_RESPONSES))
def test_what_the_fast_parser_leaves_to_the_reference_still_equals_it(name: str) -> None:
    response = FALLBACK_RESPONSES[name]
    parser = GeminiMessageParser(MODELS[0])
    assert parser.parse_fast(copy.deepcopy(response), f"{JOB}/r1") is None
    raw = json.dumps({"key": "r1", "response": response})
    got = parser.parse_line(raw, JOB)
    expected = reference.GeminiLineParser(MODELS[0]).parse_line(raw, JOB)
    assert got[0] == expected[0] == "r1" and got[2:] == expected[2:]
    assert got[1] is not None and expected[1] is not None
    assert got[1].id == expected[1].id
    assert comparable(got[1]) == comparable(expected[1])


def test_error_lines_and_output_version_v1_take_the_reference_path() -> None:
    parser = GeminiMessageParser(MODELS[0])
    raw = b'{"key": "r2", "error": {"code": 503, "message": "busy", "status": "UNAVAILABLE"}}'
    assert parser.parse_line(raw, JOB) == (
        "r2",
        None,
        {"code": "UNAVAILABLE", "message": "busy"},
        True,
    )
    assert not GeminiMessageParser(MODELS[0], {"output_version": "v1"}).fast_enabled
    usage = parser.billed_usage(
        {
            "key": "r1",
            "response": {
                "usageMetadata": {
                    "promptTokenCount": 5,
                    "thoughtsTokenCount": 2,
                    "candidatesTokenCount": 1,
                }
            },
        }
    )
    assert usage == {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8}
