"""Fast paths equal the reference LangChain paths: bodies, parsed messages and output lines.

The reference is what the providers do today: `request_body(chat_model(...), request)` for bodies,
`finish_message(llm, llm._create_chat_result(...), key)` for results and `parse_output_line` for
lines. Property tests generate the shapes the fast paths claim to handle and check the fast path
was taken *and* is exact (equal, same key order, same `model_dump`, same fields set, same
checkpoint serialisation); explicit cases check what must fall back still equals the reference.
"""

from __future__ import annotations

import copy
import functools
import json
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from agent.providers.base import finish_message, message_dump, parse_output_line
from agent.providers.fast import message_id
from agent.providers.mistral import reference as mistral_reference
from agent.providers.mistral.fast import MistralBodyBuilder, MistralMessageParser
from agent.providers.openai import reference as openai_reference
from agent.providers.openai.fast import OpenAIBodyBuilder, OpenAIMessageParser
from agent.requests import BatchRequest

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OPENAI_MODELS = ["gpt-4o-mini", "o3-mini"]
MISTRAL_MODEL = "mistral-small-latest"
JOB = "batch_job_1"
# ChatMistralAI warns when a context parameter (penalties, n) goes to `model_kwargs`.
pytestmark = pytest.mark.filterwarnings("ignore:WARNING!:UserWarning")


# ---------------------------------------------------------------------------------------------
# Reference paths and comparisons
# ---------------------------------------------------------------------------------------------


def ref_openai_body(model: str, ctx: dict[str, Any], request: BatchRequest) -> dict[str, Any]:
    return openai_reference.request_body(openai_reference.chat_model(model, ctx), request)


def ref_mistral_body(model: str, ctx: dict[str, Any], request: BatchRequest) -> dict[str, Any]:
    return mistral_reference.request_body(mistral_reference.chat_model(model, ctx), request)


# The reference models without settings, built once per model like the parsers under test
# (building a chat model costs more than the parse checked; parsing leaves it unchanged).
@functools.cache
def ref_openai_llm(model: str) -> Any:
    return openai_reference.chat_model(model, {})


@functools.cache
def ref_mistral_llm(model: str) -> Any:
    return mistral_reference.chat_model(model, {})


def ref_openai_message(model: str, body: dict[str, Any], key: str) -> AIMessage:
    llm = ref_openai_llm(model)
    result = llm._create_chat_result(openai_reference.parse_completion(copy.deepcopy(body)))
    return finish_message(llm, result, key)


def ref_mistral_message(model: str, body: dict[str, Any], key: str) -> AIMessage:
    llm = ref_mistral_llm(model)
    return finish_message(llm, llm._create_chat_result(copy.deepcopy(body)), key)


def ref_line(raw: bytes, parse: Any) -> tuple[Any, ...]:
    custom_id, body, error, retryable = parse_output_line(raw)
    if body is None:
        return custom_id, None, error, retryable
    return custom_id, parse(body, f"{JOB}/{custom_id}"), None, False


def assert_same_body(fast: dict[str, Any], reference: dict[str, Any]) -> None:
    assert fast == reference
    # Same key order too, so the uploaded JSONL bytes are identical.
    assert json.dumps(fast, ensure_ascii=False) == json.dumps(reference, ensure_ascii=False)


SERDE = JsonPlusSerializer()


def assert_same_message(fast: AIMessage, reference: AIMessage, *, serde: bool = False) -> None:
    assert type(fast) is AIMessage
    assert fast == reference
    assert fast.model_dump() == reference.model_dump()
    assert json.dumps(fast.model_dump()) == json.dumps(reference.model_dump())
    # What collect stores: the pydantic-free dump must be the same, key order included.
    assert json.dumps(message_dump(fast)) == json.dumps(reference.model_dump())
    assert fast.model_fields_set == reference.model_fields_set
    assert fast.text == reference.text
    assert fast.usage_metadata == reference.usage_metadata
    if serde:
        dumped = SERDE.dumps_typed(fast)
        assert dumped == SERDE.dumps_typed(reference)
        restored = SERDE.loads_typed(dumped)
        assert restored == reference and type(restored) is AIMessage


def assert_same_parse(got: tuple[Any, ...], expected: tuple[Any, ...]) -> None:
    """Two `parse_line` results agree: custom id, error and retryable, and the same message."""
    assert got[0] == expected[0] and got[2:] == expected[2:]
    assert got[1] is not None and expected[1] is not None
    assert_same_message(got[1], expected[1])


def fallback_cases(
    messages: dict[str, list[dict[str, Any]]], params: dict[str, dict[str, Any]]
) -> pytest.MarkDecorator:
    """Parametrize `messages_, params` over requests the fast path leaves to the reference:
    each named message list with no parameters, then "hi" with each named parameter set."""
    return pytest.mark.parametrize(
        ("messages_", "params"),
        [(m, {}) for m in messages.values()]
        + [([{"role": "user", "content": "hi"}], p) for p in params.values()],
        ids=[*messages, *params],
    )


# ---------------------------------------------------------------------------------------------
# Strategies: requests
# ---------------------------------------------------------------------------------------------

texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "\n", "\t \n", "\u2028", "é", "日本語", "🙂", '"quoted"\\']),
)
text_parts = st.lists(
    st.builds(lambda t: {"type": "text", "text": t}, texts), min_size=1, max_size=3
)
contents = st.one_of(texts, text_parts)
messages = st.lists(
    st.builds(
        lambda role, content: {"role": role, "content": content},
        st.sampled_from(["system", "developer", "user", "assistant"]),
        contents,
    ),
    min_size=1,
    max_size=6,
)
unit = st.floats(min_value=0, max_value=1, allow_nan=False)
stops = st.one_of(st.none(), st.lists(st.text(min_size=1, max_size=4), max_size=3))


def _params(
    draw: st.DrawFn, options: dict[str, st.SearchStrategy[Any]], *, allow_none: bool
) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(sorted(options)), unique=True, max_size=len(options)))
    out: dict[str, Any] = {}
    for key in keys:
        value = options[key]
        out[key] = draw(st.one_of(st.none(), value) if allow_none else value)
    return out


COMMON_PARAMS: dict[str, st.SearchStrategy[Any]] = {
    "temperature": unit,
    "max_tokens": st.integers(1, 4096),
    "top_p": unit,
    "stop": stops,
    "n": st.integers(1, 4),
    "presence_penalty": st.floats(-2, 2, allow_nan=False),
    "frequency_penalty": st.floats(-2, 2, allow_nan=False),
}
OPENAI_PARAMS = {
    **COMMON_PARAMS,
    "seed": st.integers(0, 2**31),
    "logprobs": st.booleans(),
    "user": st.text(max_size=8),
}
OPENAI_CALL_PARAMS = {
    **OPENAI_PARAMS,
    "max_completion_tokens": st.integers(1, 4096),
    "model": st.sampled_from(OPENAI_MODELS),
    "logit_bias": st.dictionaries(st.sampled_from(["50256", "198"]), st.integers(-100, 100)),
    "top_logprobs": st.integers(0, 5),
    "service_tier": st.sampled_from(["auto", "default", "flex", "priority"]),
    "reasoning_effort": st.sampled_from(["low", "medium", "high"]),
    "metadata": st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
    "prompt_cache_key": st.text(max_size=8),
}
# Constructor settings the SDK does not send as they are: `extra_body` is merged into the body
# (over the call's own parameters), int `logit_bias` keys are written as strings.
OPENAI_CTX_PARAMS = {
    **OPENAI_PARAMS,
    "extra_body": st.dictionaries(
        st.sampled_from(["top_k", "temperature", "seed"]), st.integers(0, 3), max_size=2
    ),
    "logit_bias": st.dictionaries(st.sampled_from([50256, 198]), st.integers(-100, 100)),
}
MISTRAL_PARAMS = {**COMMON_PARAMS, "random_seed": st.integers(0, 2**31)}
MISTRAL_CALL_PARAMS = {**MISTRAL_PARAMS, "safe_prompt": st.booleans(), "model": st.just("x")}


@st.composite
def openai_cases(draw: st.DrawFn) -> tuple[str, dict[str, Any], BatchRequest]:
    model = draw(st.sampled_from(OPENAI_MODELS))
    ctx = _params(draw, OPENAI_CTX_PARAMS, allow_none=True)
    call = _params(draw, OPENAI_CALL_PARAMS, allow_none=False)
    if draw(st.booleans()) and "stop" not in call:
        call["stop"] = None  # an explicit "no stop" must not erase the context's stop
    return model, ctx, BatchRequest("r1", draw(messages), call)


@st.composite
def mistral_cases(draw: st.DrawFn) -> tuple[str, dict[str, Any], BatchRequest]:
    ctx = _params(draw, MISTRAL_PARAMS, allow_none=True)
    call = _params(draw, MISTRAL_CALL_PARAMS, allow_none=False)
    return MISTRAL_MODEL, ctx, BatchRequest("r1", draw(messages), call)


# ---------------------------------------------------------------------------------------------
# Bodies
# ---------------------------------------------------------------------------------------------


def _assert_fast_body(
    builder: OpenAIBodyBuilder | MistralBodyBuilder,
    request: BatchRequest,
    reference: dict[str, Any],
) -> None:
    assert builder.fast_enabled
    fast = builder.build_fast(request)
    assert fast is not None, "plain messages and common params must take the fast path"
    assert_same_body(fast, reference)
    assert_same_body(builder.build(request), fast)


@SETTINGS
@given(openai_cases())
def test_openai_fast_body_equals_reference(case: tuple[str, dict[str, Any], BatchRequest]) -> None:
    model, ctx, request = case
    _assert_fast_body(OpenAIBodyBuilder(model, ctx), request, ref_openai_body(model, ctx, request))


@SETTINGS
@given(mistral_cases())
def test_mistral_fast_body_equals_reference(case: tuple[str, dict[str, Any], BatchRequest]) -> None:
    model, ctx, request = case
    _assert_fast_body(
        MistralBodyBuilder(model, ctx), request, ref_mistral_body(model, ctx, request)
    )


TOOL_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "lookup", "arguments": '{"q": "x"}'},
}
FALLBACK_MESSAGES: dict[str, list[dict[str, Any]]] = {
    "tool-call-and-tool-message": [
        {"role": "user", "content": "Look it up."},
        {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
        {"role": "tool", "content": "found", "tool_call_id": "call_1"},
    ],
    "name": [{"role": "user", "content": "hi", "name": "alice"}],
    "image-part": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            ],
        }
    ],
    "string-part": [{"role": "user", "content": ["bare string part"]}],
    "text-part-extra-key": [
        {"role": "user", "content": [{"type": "text", "text": "x", "cache_control": {}}]}
    ],
}
FALLBACK_PARAMS: dict[str, dict[str, Any]] = {
    "tools": {
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {}}}],
        "tool_choice": "auto",
    },
    "response_format": {"response_format": {"type": "json_object"}},
}


@pytest.mark.parametrize("model", [*OPENAI_MODELS, MISTRAL_MODEL])
@fallback_cases(FALLBACK_MESSAGES, FALLBACK_PARAMS)
def test_unhandled_requests_fall_back_and_equal_reference(
    model: str, messages_: list[dict[str, Any]], params: dict[str, Any]
) -> None:
    ctx = {"temperature": 0.3}
    request = BatchRequest("r1", messages_, params)
    if model == MISTRAL_MODEL:
        builder: OpenAIBodyBuilder | MistralBodyBuilder = MistralBodyBuilder(model, ctx)
        reference = ref_mistral_body(model, ctx, request)
    else:
        builder = OpenAIBodyBuilder(model, ctx)
        reference = ref_openai_body(model, ctx, request)
    assert builder.build_fast(request) is None
    assert_same_body(builder.build(request), reference)


# ---------------------------------------------------------------------------------------------
# Strategies: result bodies
# ---------------------------------------------------------------------------------------------

counts = st.integers(0, 200_000)


def optional_keys(draw: st.DrawFn, options: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    return {k: draw(v) for k, v in options.items() if draw(st.booleans())}


@st.composite
def token_details(draw: st.DrawFn, fields: list[str]) -> dict[str, Any] | None:
    if draw(st.booleans()):
        return None
    return optional_keys(draw, {f: st.one_of(counts, st.none()) for f in fields})


URL_CITATION = {
    "type": "url_citation",
    "url_citation": {"start_index": 0, "end_index": 3, "title": "T", "url": "https://e.com"},
}


@st.composite
def openai_bodies(draw: st.DrawFn) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant"}
    message.update(
        optional_keys(
            draw,
            {
                "content": st.one_of(texts, st.none()),
                "refusal": st.one_of(st.none(), texts),
                "annotations": st.sampled_from([[], None, [URL_CITATION]]),
                "audio": st.none(),
                "function_call": st.none(),
                "tool_calls": st.sampled_from([None, []]),
            },
        )
    )
    choice: dict[str, Any] = {
        "index": 0,
        "message": message,
        "finish_reason": draw(st.sampled_from(["stop", "length", "content_filter", None])),
    }
    if draw(st.booleans()):
        choice["logprobs"] = None
    body: dict[str, Any] = {
        "id": draw(st.text(min_size=1, max_size=12)),
        "object": "chat.completion",
        "created": draw(st.integers(0, 2**33)),
        "model": draw(
            st.sampled_from(["gpt-4o-mini-2024-07-18", "o3-mini-2025-01-31", "gpt-4o", ""])
        ),
        "choices": [choice],
    }
    usage = {
        "prompt_tokens": draw(counts),
        "completion_tokens": draw(counts),
        "total_tokens": draw(counts),
    }
    usage.update(
        optional_keys(
            draw,
            {
                "prompt_tokens_details": token_details(
                    ["cached_tokens", "audio_tokens", "cache_write_tokens", "text_tokens"]
                ),
                "completion_tokens_details": token_details(
                    [
                        "reasoning_tokens",
                        "audio_tokens",
                        "accepted_prediction_tokens",
                        "rejected_prediction_tokens",
                    ]
                ),
            },
        )
    )
    body.update(
        optional_keys(
            draw,
            {
                "usage": st.sampled_from([usage, None]),
                "service_tier": st.sampled_from(
                    ["default", "priority", "flex", "auto", "scale", None]
                ),
                "system_fingerprint": st.one_of(st.none(), st.text(max_size=10)),
                "metadata": st.none(),
                # Azure-style extra keys are ignored by the reference, so by us too.
                "prompt_filter_results": st.just([{"prompt_index": 0}]),
            },
        )
    )
    return body


@st.composite
def mistral_bodies(draw: st.DrawFn) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant"}
    message.update(
        optional_keys(
            draw,
            {
                "content": st.one_of(texts, st.none()),
                "tool_calls": st.sampled_from([None, []]),
                "prefix": st.booleans(),
            },
        )
    )
    choice: dict[str, Any] = {"index": 0, "message": message}
    choice.update(optional_keys(draw, {"finish_reason": st.sampled_from(["stop", "length", None])}))
    body: dict[str, Any] = {"choices": [choice]}
    body.update(
        optional_keys(
            draw,
            {
                "id": st.text(max_size=12),
                "object": st.just("chat.completion"),
                "created": st.integers(0, 2**33),
                "model": st.sampled_from(["mistral-small-latest", "mistral-large-2411"]),
                "usage": st.one_of(
                    st.none(),
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "prompt_tokens": counts,
                            "completion_tokens": counts,
                            "total_tokens": counts,
                        },
                    ),
                ),
            },
        )
    )
    return body


custom_ids = st.one_of(st.text(min_size=1, max_size=20), st.sampled_from(["r1", "t-42", "é/ü"]))
OPENAI_PROBE_BODY: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1767225600,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi.", "refusal": None},
            "finish_reason": "stop",
        }
    ],
}

# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------

OPENAI_PARSER = OpenAIMessageParser("gpt-4o-mini")
MISTRAL_PARSER = MistralMessageParser(MISTRAL_MODEL)


def _assert_fast_message(
    parser: OpenAIMessageParser | MistralMessageParser,
    reference: Callable[[dict[str, Any], str], AIMessage],
    body: dict[str, Any],
    line: dict[str, Any],
    serde: bool,
) -> None:
    """`body` takes the fast path to the reference message, alone and inside its result `line`."""
    key = f"{JOB}/{line['custom_id']}"
    fast = parser.parse_fast(copy.deepcopy(body), key)
    assert fast is not None, "the common response shape must take the fast path"
    assert_same_message(fast, reference(body, key), serde=serde)
    raw = orjson.dumps(line)
    assert_same_parse(parser.parse_line(raw, JOB), ref_line(raw, reference))


def test_parsers_self_check_passes() -> None:
    assert OPENAI_PARSER.fast_enabled and MISTRAL_PARSER.fast_enabled


@SETTINGS
@given(openai_bodies(), custom_ids, st.booleans())
def test_openai_fast_message_equals_reference(
    body: dict[str, Any], custom_id: str, serde: bool
) -> None:
    line = {
        "id": "batch_req_1",
        "custom_id": custom_id,
        "response": {"status_code": 200, "request_id": "req_1", "body": body},
        "error": None,
    }
    reference = partial(ref_openai_message, "gpt-4o-mini")
    _assert_fast_message(OPENAI_PARSER, reference, body, line, serde)


@SETTINGS
@given(mistral_bodies(), custom_ids, st.booleans())
def test_mistral_fast_message_equals_reference(
    body: dict[str, Any], custom_id: str, serde: bool
) -> None:
    line = {
        "id": "b-1",
        "custom_id": custom_id,
        "response": {"status_code": 200, "body": body},
        "error": None,
    }
    reference = partial(ref_mistral_message, MISTRAL_MODEL)
    _assert_fast_message(MISTRAL_PARSER, reference, body, line, serde)


# Token-detail counts as some servers send them: the SDK's lenient construction turns "7", 0.0
# and true into ints, keeps 7.5 or "x" as they are; the parser must convert exactly alike.
odd_counts = st.one_of(
    counts,
    st.none(),
    st.integers(0, 500).map(str),
    st.sampled_from([0.0, 7.0, 7.5, -1.0, True, False, "x", "", " 7", "7.0", [1], {}]),
)


@SETTINGS
@example(
    body=copy.deepcopy(OPENAI_PROBE_BODY),
    prompt_details={"cached_tokens": "7"},
    completion_details={"reasoning_tokens": 0.0},
    tier="default",
)
@example(
    body=copy.deepcopy(OPENAI_PROBE_BODY),
    prompt_details={"cached_tokens": "7", "audio_tokens": 0.0},
    completion_details=None,
    tier="priority",
)
@given(
    openai_bodies(),
    st.one_of(
        st.none(),
        st.dictionaries(
            st.sampled_from(["cached_tokens", "audio_tokens", "cache_write_tokens"]), odd_counts
        ),
    ),
    st.one_of(
        st.none(),
        st.dictionaries(st.sampled_from(["reasoning_tokens", "audio_tokens"]), odd_counts),
    ),
    st.sampled_from(["default", "priority", "flex", None]),
)
def test_openai_token_details_are_converted_as_the_reference_converts_them(
    body: dict[str, Any],
    prompt_details: dict[str, Any] | None,
    completion_details: dict[str, Any] | None,
    tier: str | None,
) -> None:
    body["usage"] = {
        "prompt_tokens": 21,
        "completion_tokens": 3,
        "total_tokens": 24,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": completion_details,
    }
    body["service_tier"] = tier
    key = f"{JOB}/r1"
    try:
        expected = ref_openai_message("gpt-4o-mini", body, key)
    except Exception as exc:
        with pytest.raises(type(exc)):
            OPENAI_PARSER.parse(copy.deepcopy(body), key)
        return
    assert_same_message(OPENAI_PARSER.parse(copy.deepcopy(body), key), expected)


error_bodies = st.one_of(
    # OpenAI: {"error": {...}}
    st.builds(
        lambda message, type_, code: {
            "error": {"message": message, "type": type_, "param": None, "code": code}
        },
        st.text(max_size=20),
        st.sampled_from(["invalid_request_error", "server_error", "rate_limit_error", None]),
        st.sampled_from(["rate_limit_exceeded", "context_length_exceeded", None]),
    ),
    # Mistral: flat {"message", "type", "code"}
    st.fixed_dictionaries(
        {},
        optional={
            "object": st.just("error"),
            "message": st.text(max_size=20),
            "type": st.sampled_from(["invalid_request_error", "internal_error", "api_error"]),
            "code": st.sampled_from(["3051", "1000", "service_unavailable", None]),
            "param": st.none(),
        },
    ),
    st.none(),
    st.text(max_size=10),
)
line_errors = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {"code": st.sampled_from(["batch_expired", "batch_cancelled", "timeout", None])},
        optional={"message": st.text(max_size=20)},
    ),
    st.text(min_size=1, max_size=10),
)


@SETTINGS
@given(
    custom_ids,
    st.sampled_from([400, 401, 404, 429, 500, 503, None, 0]),
    error_bodies,
    line_errors,
    st.booleans(),
)
def test_failure_lines_equal_parse_output_line(
    custom_id: str, status: int | None, body: Any, error: Any, null_response: bool
) -> None:
    line: dict[str, Any] = {"id": "batch_req_1", "custom_id": custom_id, "error": error}
    line["response"] = None if null_response else {"status_code": status, "body": body}
    raw = orjson.dumps(line)
    expected = parse_output_line(raw)
    for parser in (OPENAI_PARSER, MISTRAL_PARSER):
        if expected[1] is None:
            assert parser.parse_line(raw, JOB) == (expected[0], None, expected[2], expected[3])
        else:
            # A "success" whose body is not a completion: both paths raise the same error.
            with pytest.raises(Exception) as reference_error:
                parser.parse_reference(expected[1], f"{JOB}/{expected[0]}")
            with pytest.raises(type(reference_error.value)):
                parser.parse_line(raw, JOB)


def _openai_with(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(OPENAI_PROBE)
    message = body["choices"][0]["message"]
    for key, value in changes.items():
        if key == "choice":
            body["choices"][0].update(value)
        elif key == "top":
            body.update(value)
        else:
            message[key] = value
    return body


OPENAI_PROBE: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1767225600,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi.", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
}
LOGPROBS = {"content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}]}
OPENAI_FALLBACKS: dict[str, dict[str, Any]] = {
    "tool-calls": _openai_with(content=None, tool_calls=[TOOL_CALL]),
    "invalid-tool-call": _openai_with(
        content=None,
        tool_calls=[{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{"}}],
    ),
    "function-call": _openai_with(function_call={"name": "f", "arguments": "{}"}),
    "audio": _openai_with(audio={"id": "a1", "data": "", "expires_at": 1, "transcript": "t"}),
    "message-extra-key": _openai_with(name="bot"),
    "logprobs": _openai_with(choice={"logprobs": LOGPROBS}),
    "two-choices": _openai_with(
        top={"choices": [OPENAI_PROBE["choices"][0], {**OPENAI_PROBE["choices"][0], "index": 1}]}
    ),
    "usage-extra-key": _openai_with(
        top={"usage": {**OPENAI_PROBE["usage"], "prompt_cache_hit_tokens": 1}}
    ),
    "missing-finish-reason": _openai_with(choice={"finish_reason": "stop"})
    | {"choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}}]},
}
MISTRAL_PROBE: dict[str, Any] = {
    "id": "cmpl-1",
    "object": "chat.completion",
    "created": 1767225600,
    "model": MISTRAL_MODEL,
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
}
MISTRAL_FALLBACKS: dict[str, dict[str, Any]] = {
    "tool-calls": MISTRAL_PROBE,
    "list-content": {
        **MISTRAL_PROBE,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "A"},
                        {"type": "reference", "text": "B", "reference_ids": [1]},
                    ],
                },
                "finish_reason": "stop",
            }
        ],
    },
}


@pytest.mark.parametrize("name", sorted(OPENAI_FALLBACKS))
def test_openai_unhandled_responses_fall_back_and_equal_reference(name: str) -> None:
    body = OPENAI_FALLBACKS[name]
    assert OPENAI_PARSER.parse_fast(copy.deepcopy(body), "j/r") is None
    assert_same_message(
        OPENAI_PARSER.parse(copy.deepcopy(body), "j/r"),
        ref_openai_message("gpt-4o-mini", body, "j/r"),
        serde=True,
    )


@pytest.mark.parametrize("name", sorted(MISTRAL_FALLBACKS))
def test_mistral_unhandled_responses_fall_back_and_equal_reference(name: str) -> None:
    body = MISTRAL_FALLBACKS[name]
    assert MISTRAL_PARSER.parse_fast(copy.deepcopy(body), "j/r") is None
    fast = MISTRAL_PARSER.parse(copy.deepcopy(body), "j/r")
    reference = ref_mistral_message(MISTRAL_MODEL, body, "j/r")
    if name == "tool-calls":
        assert fast.tool_calls and fast.tool_calls[0]["name"] == "lookup"
    assert_same_message(fast, reference, serde=True)


def test_lines_orjson_rejects_fall_back_to_json() -> None:
    # NaN is valid for `json` but not for `orjson`: the reference semantics still apply.
    body = {**copy.deepcopy(OPENAI_PROBE), "created": float("nan")}
    raw = json.dumps({"custom_id": "r1", "response": {"status_code": 200, "body": body}}).encode()
    got = OPENAI_PARSER.parse_line(raw, JOB)
    expected = ref_line(raw, lambda b, k: ref_openai_message("gpt-4o-mini", b, k))
    assert got[0] == expected[0] and got[2:] == expected[2:]
    assert got[1] is not None and expected[1] is not None
    assert_same_message(got[1], expected[1])


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_message_id_equals_uuid5(key: str) -> None:
    assert message_id(key) == f"lc_run--{uuid.uuid5(uuid.NAMESPACE_URL, key)}-0"
