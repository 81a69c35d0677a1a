"""The Anthropic fast paths equal the reference `ChatAnthropic` paths: bodies, messages, lines.

The reference is what the provider did before the fast paths: `request_params(chat_model(...),
request)` for bodies, `parse_message(llm, message, key)` (realtime `ChatAnthropic.invoke()`) for
results and `AnthropicLineParser.parse_line` for results lines. Property tests generate the
shapes the fast paths claim to handle and check the fast path was taken *and* is exact (equal,
same key order and bytes, same `model_dump`, same fields set, same checkpoint serialisation);
explicit cases check that what must fall back still equals the reference.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage

from agent.providers.anthropic import reference as anthropic_reference
from agent.providers.anthropic.fast import AnthropicBodyBuilder, AnthropicMessageParser
from agent.providers.anthropic.provider import AnthropicProvider
from agent.providers.base import jsonl_line
from agent.requests import BatchRequest, InputError
from agent.structured import OutputSpec
from tests.unit_tests.test_fastpath import (
    assert_same_body,
    assert_same_message,
    assert_same_parse,
    fallback_cases,
)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MODEL = "claude-haiku-4-5"
JOB = "msgbatch_1"
# Hoisted or dropped system blocks warn in the reference; these cases only reach it on fallback.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def ref_body(ctx: dict[str, Any], request: BatchRequest) -> dict[str, Any]:
    return anthropic_reference.request_params(anthropic_reference.chat_model(MODEL, ctx), request)


def ref_message(message: dict[str, Any], key: str) -> AIMessage:
    llm = anthropic_reference.chat_model(MODEL, {})
    return anthropic_reference.parse_message(llm, copy.deepcopy(message), key)


# ---------------------------------------------------------------------------------------------
# Bodies
# ---------------------------------------------------------------------------------------------

texts = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", " ", "\n", "\t \n", "x \n", "\u2028", "é", "日本語", "🙂", '"q"\\']),
)
messages = st.lists(
    st.builds(
        lambda role, content: {"role": role, "content": content},
        st.sampled_from(["user", "assistant"]),
        texts,
    ),
    min_size=1,
    max_size=6,
)
systems = st.lists(st.builds(lambda t: {"role": "system", "content": t}, texts), max_size=2)
unit = st.floats(min_value=0, max_value=1, allow_nan=False)
stops = st.lists(st.text(min_size=1, max_size=4), max_size=3)
CTX_PARAMS: dict[str, st.SearchStrategy[Any]] = {
    "temperature": unit,
    "max_tokens": st.integers(1, 4096),
    "top_p": unit,
}
CALL_PARAMS: dict[str, st.SearchStrategy[Any]] = {
    **CTX_PARAMS,
    "top_k": st.integers(1, 50),
    "stop": st.one_of(st.none(), stops),
    "stop_sequences": stops,
    "metadata": st.fixed_dictionaries({"user_id": st.text(max_size=8)}),
    "service_tier": st.sampled_from(["auto", "standard_only"]),
    "model": st.just("ignored"),
}


def _params(
    draw: st.DrawFn, options: dict[str, st.SearchStrategy[Any]], *, allow_none: bool
) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(sorted(options)), unique=True, max_size=len(options)))
    return {
        key: draw(st.one_of(st.none(), options[key]) if allow_none else options[key])
        for key in keys
    }


@st.composite
def cases(draw: st.DrawFn) -> tuple[dict[str, Any], BatchRequest]:
    ctx = _params(draw, CTX_PARAMS, allow_none=True)
    call = _params(draw, CALL_PARAMS, allow_none=draw(st.booleans()))
    return ctx, BatchRequest("r1", draw(systems) + draw(messages), call)


def test_builders_self_check_passes() -> None:
    assert AnthropicBodyBuilder(MODEL, {}).fast_enabled
    assert AnthropicBodyBuilder(MODEL, {"temperature": 0.2, "max_tokens": 9}).fast_enabled


@SETTINGS
@given(cases())
def test_fast_body_equals_reference(case: tuple[dict[str, Any], BatchRequest]) -> None:
    ctx, request = case
    builder = AnthropicBodyBuilder(MODEL, ctx)
    assert builder.fast_enabled
    fast = builder.build_fast(request)
    assert fast is not None, "plain string messages and common params must take the fast path"
    reference = ref_body(ctx, request)
    assert_same_body(fast, reference)
    # The uploaded line bytes are identical too.
    assert jsonl_line({"custom_id": "r1", "params": fast}) == jsonl_line(
        {"custom_id": "r1", "params": reference}
    )
    assert_same_body(builder.build(request), fast)


FALLBACK_MESSAGES: dict[str, list[dict[str, Any]]] = {
    "text-part-list": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    "image-part": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        }
    ],
    "mid-conversation-system": [
        {"role": "user", "content": "hi"},
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "again"},
    ],
    "developer-role": [{"role": "developer", "content": "x"}, {"role": "user", "content": "hi"}],
    "tool-call-and-tool-message": [
        {"role": "user", "content": "Look it up."},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q": "x"}'},
                }
            ],
        },
        {"role": "tool", "content": "found", "tool_call_id": "call_1"},
    ],
    "name": [{"role": "user", "content": "hi", "name": "alice"}],
}
FALLBACK_PARAMS: dict[str, dict[str, Any]] = {
    "tools": {
        "tools": [{"name": "lookup", "description": "d", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "auto"},
    },
    "thinking": {"thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 2048},
    "effort": {"reasoning_effort": "low"},
}


@fallback_cases(FALLBACK_MESSAGES, FALLBACK_PARAMS)
def test_unhandled_requests_fall_back_and_equal_reference(
    messages_: list[dict[str, Any]], params: dict[str, Any]
) -> None:
    ctx = {"temperature": 0.3}
    request = BatchRequest("r1", messages_, params)
    builder = AnthropicBodyBuilder(MODEL, ctx)
    assert builder.fast_enabled and builder.build_fast(request) is None
    assert_same_body(builder.build(request), ref_body(ctx, request))


def test_a_spec_sends_every_request_through_the_reference() -> None:
    spec = OutputSpec(
        tools=[{"name": "lookup", "description": "d", "input_schema": {"type": "object"}}]
    )
    builder = AnthropicBodyBuilder(MODEL, {}, spec)
    request = BatchRequest("r1", [{"role": "user", "content": "hi"}], {})
    assert not builder.fast_enabled
    llm = anthropic_reference.chat_model(MODEL, {})
    from agent.structured import bind_kwargs

    expected = anthropic_reference.request_params(llm, request, bind_kwargs(llm, spec))
    assert "tools" in expected
    assert_same_body(builder.build(request), expected)


def test_refused_requests_fail_the_same_way() -> None:
    # A parameter the SDK sends as a header is refused by the reference, never built fast.
    request = BatchRequest("r1", [{"role": "user", "content": "hi"}], {"extra_headers": {}})
    builder = AnthropicBodyBuilder(MODEL, {})
    assert builder.build_fast(request) is None
    with pytest.raises(InputError, match="HTTP headers"):
        builder.build(request)


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------

counts = st.integers(0, 200_000)


@st.composite
def usages(draw: st.DrawFn) -> dict[str, Any]:
    usage: dict[str, Any] = {"input_tokens": draw(counts), "output_tokens": draw(counts)}
    optional: dict[str, st.SearchStrategy[Any]] = {
        "cache_creation_input_tokens": st.one_of(st.none(), counts),
        "cache_read_input_tokens": st.one_of(st.none(), counts),
        "service_tier": st.sampled_from(["standard", "priority", "batch", "other", None]),
        "inference_geo": st.sampled_from(["us", "global", None]),
        "speed": st.sampled_from(["standard", "fast", None]),
        "server_tool_use": st.none(),
        "cache_creation": st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {
                    "ephemeral_5m_input_tokens": st.integers(0, 50),
                    "ephemeral_1h_input_tokens": st.integers(0, 50),
                }
            ),
        ),
        "output_tokens_details": st.one_of(
            st.none(), st.fixed_dictionaries({"thinking_tokens": counts})
        ),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            usage[key] = draw(strategy)
    return usage


@st.composite
def result_messages(draw: st.DrawFn) -> dict[str, Any]:
    def block(text: str, with_citations: bool) -> dict[str, Any]:
        return {"type": "text", "text": text, **({"citations": None} if with_citations else {})}

    content = draw(st.lists(st.builds(block, texts, st.booleans()), min_size=1, max_size=3))
    message: dict[str, Any] = {
        "id": draw(st.text(min_size=1, max_size=12)),
        "type": "message",
        "role": "assistant",
        "model": draw(st.sampled_from(["claude-haiku-4-5-20251001", "claude-sonnet-4-5", ""])),
        "content": content,
        "usage": draw(usages()),
    }
    optional: dict[str, st.SearchStrategy[Any]] = {
        "stop_reason": st.sampled_from(["end_turn", "max_tokens", "stop_sequence", "other", None]),
        "stop_sequence": st.one_of(st.none(), st.text(max_size=4)),
        "container": st.none(),
        "stop_details": st.none(),
        "diagnostics": st.none(),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            message[key] = draw(strategy)
    return message


custom_ids = st.one_of(st.text(min_size=1, max_size=20), st.sampled_from(["r1", "t-42", "é/ü"]))
PARSER = AnthropicMessageParser(MODEL)
REFERENCE = anthropic_reference.AnthropicLineParser(MODEL)


def test_parser_self_check_passes() -> None:
    assert PARSER.fast_enabled


@SETTINGS
@given(result_messages(), custom_ids, st.booleans())
def test_fast_message_equals_reference(
    message: dict[str, Any], custom_id: str, serde: bool
) -> None:
    key = f"{JOB}/{custom_id}"
    fast = PARSER.parse_fast(copy.deepcopy(message), key)
    assert fast is not None, "the common message shape must take the fast path"
    assert_same_message(fast, ref_message(message, key), serde=serde)
    raw = orjson.dumps(
        {"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}
    )
    got = PARSER.parse_line(raw, JOB)
    expected = REFERENCE.parse_line(raw, JOB)
    assert_same_parse(got, expected)


@SETTINGS
@given(
    custom_ids,
    st.one_of(
        st.fixed_dictionaries(
            {
                "type": st.just("errored"),
                "error": st.one_of(
                    st.none(),
                    st.fixed_dictionaries(
                        {
                            "type": st.just("error"),
                            "error": st.fixed_dictionaries(
                                {
                                    "type": st.sampled_from(
                                        ["invalid_request_error", "overloaded_error", "api_error"]
                                    ),
                                    "message": st.text(max_size=10),
                                }
                            ),
                            "request_id": st.one_of(st.none(), st.text(max_size=6)),
                        }
                    ),
                ),
            }
        ),
        st.fixed_dictionaries({"type": st.sampled_from(["canceled", "expired", "weird"])}),
        st.just({}),
        st.none(),
    ),
)
def test_other_lines_equal_the_reference(custom_id: str, result: Any) -> None:
    raw = orjson.dumps({"custom_id": custom_id, "result": result})
    assert PARSER.parse_line(raw, JOB) == REFERENCE.parse_line(raw, JOB)


BASE_MESSAGE: dict[str, Any] = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5-20251001",
    "content": [{"type": "text", "text": "Hi."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 5, "output_tokens": 2},
}
FALLBACK_RESULTS: dict[str, dict[str, Any]] = {
    "tool-use": {
        **BASE_MESSAGE,
        "content": [
            {"type": "text", "text": "Looking."},
            {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}},
        ],
        "stop_reason": "tool_use",
    },
    "thinking": {
        **BASE_MESSAGE,
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": "Hi."},
        ],
    },
    "citations": {
        **BASE_MESSAGE,
        "content": [
            {
                "type": "text",
                "text": "Hi.",
                "citations": [
                    {
                        "type": "char_location",
                        "cited_text": "Hi",
                        "document_index": 0,
                        "document_title": None,
                        "start_char_index": 0,
                        "end_char_index": 2,
                    }
                ],
            }
        ],
    },
    "empty-content": {**BASE_MESSAGE, "content": []},
    "server-tool-use-usage": {
        **BASE_MESSAGE,
        "usage": {
            "input_tokens": 5,
            "output_tokens": 2,
            "server_tool_use": {"web_search_requests": 1},
        },
    },
    "container": {**BASE_MESSAGE, "container": {"id": "c1", "expires_at": "2026-01-01T00:00:00Z"}},
    "extra-message-key": {**BASE_MESSAGE, "surprise": 1},
    "missing-usage": {k: v for k, v in BASE_MESSAGE.items() if k != "usage"},
}


@pytest.mark.parametrize("name", sorted(FALLBACK_RESULTS))
def test_unhandled_results_fall_back_and_equal_reference(name: str) -> None:
    message = FALLBACK_RESULTS[name]
    assert PARSER.parse_fast(copy.deepcopy(message), "j/r") is None
    raw = orjson.dumps({"custom_id": "r", "result": {"type": "succeeded", "message": message}})
    try:
        expected = REFERENCE.parse_line(raw, "j")
    except Exception as exc:  # the reference itself refuses it: so must we, the same way
        with pytest.raises(type(exc)):
            PARSER.parse_line(raw, "j")
        return
    got = PARSER.parse_line(raw, "j")
    assert got[0] == expected[0] and got[2:] == expected[2:]
    assert got[1] is not None and expected[1] is not None
    assert_same_message(got[1], expected[1], serde=True)
    if name == "tool-use":
        assert got[1].tool_calls and got[1].tool_calls[0]["name"] == "lookup"


def test_the_provider_uses_the_fast_paths() -> None:
    provider = AnthropicProvider(emulated=False, base_url="http://unused.invalid")
    parser = provider.message_parser(MODEL)
    assert isinstance(parser, AnthropicMessageParser) and parser.fast_enabled
    build = provider.line_builder(MODEL, {"max_tokens": 32})
    request = BatchRequest("r-1", [{"role": "user", "content": "hi"}], {"temperature": 0.5})
    expected = {"custom_id": "r-1", "params": ref_body({"max_tokens": 32}, request)}
    assert build(request) == jsonl_line(expected)
