"""Refusals before upload: every error about a request names its file, line and id.

Checks made after a record is read (planning: unknown model, context window, file-size limit;
the providers' documented parameter ranges; what a line builder refuses) must still point at
the line to fix, and nothing may reach the provider.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore
from typer.testing import CliRunner

from agent.cli.app import app
from agent.context import Context
from agent.emulator import read_access_log
from agent.graph import build_graph
from agent.planning import plan_requests
from agent.providers import provider_class
from agent.requests import InputError, iter_file_requests


def _write(tmp_path: Path, records: list[dict[str, Any]], name: str = "in.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _plan(path: Path, provider: str = "openai", **context: Any) -> None:
    chosen = provider_class(provider)(emulated=True, base_url="")
    plan_requests(iter_file_requests(path), provider=chosen, context=Context(**context)).discard()


GOOD = {"id": "ok", "prompt": "Classify: my invoice is wrong"}


@pytest.mark.parametrize(
    ("record", "context", "problem"),
    [
        (
            {"id": "m", "prompt": "hi", "params": {"model": "no-such-model"}},
            {},
            "unknown model 'no-such-model' for openai",
        ),
        (
            {"id": "big", "prompt": "word " * 200_000},
            {"model": "gpt-3.5-turbo"},
            "larger than gpt-3.5-turbo's context window",
        ),
        (
            {"id": "wide", "prompt": "x" * 2_000},
            {"max_file_bytes": 1_000},
            "1,000-byte batch file limit",
        ),
    ],
)
def test_planning_errors_name_file_line_and_id(
    tmp_path: Path, record: dict[str, Any], context: dict[str, Any], problem: str
) -> None:
    path = _write(tmp_path, [GOOD, GOOD | {"id": "ok2"}, record])
    with pytest.raises(InputError) as caught:
        _plan(path, **context)
    message = str(caught.value)
    assert message.startswith("in.jsonl:3: "), message
    assert problem in message and message.endswith(f"(request id {record['id']!r})")
    assert (caught.value.source, caught.value.line) == ("in.jsonl", 3)


def test_a_line_builder_refusal_names_the_line(tmp_path: Path) -> None:
    # ChatAnthropic refuses this request while its body is built (not while it is read).
    path = _write(tmp_path, [GOOD, {"id": "bad", "prompt": "hi", "params": {"betas": ["x"]}}])
    with pytest.raises(InputError, match=r"^in\.jsonl:2: .*'betas'.*\(request id 'bad'\)$"):
        _plan(path, "anthropic")


def test_inline_records_name_the_record_number() -> None:
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    records = [GOOD, {"id": "hot", "prompt": "hi", "params": {"temperature": 9}}]
    with pytest.raises(InputError, match=r"^input:2: 'temperature' is 9, .*\(request id 'hot'\)"):
        graph.invoke(
            {"requests": records},
            {"configurable": {"thread_id": "t"}},
            context=Context(provider="emulator"),
        )
    assert read_access_log() == []


def test_tool_message_without_tool_call_id_is_a_sentence(tmp_path: Path) -> None:
    conversation = [
        {"role": "user", "content": "What is the weather?"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function"}]},
        {"role": "tool", "content": "sunny"},
    ]
    path = _write(tmp_path, [GOOD, {"id": "conv", "messages": conversation}])
    with pytest.raises(InputError) as caught:
        list(iter_file_requests(path))
    assert str(caught.value) == (
        "in.jsonl:2: message 2 has role 'tool' but no 'tool_call_id' (the id of the "
        "assistant's tool call it answers) (request id 'conv')"
    )


# Values each provider documents as invalid (see the PARAM_RULES tables), and the range the
# message must give.
INVALID = [
    ("openai", "temperature", "hot", "a number from 0 to 2"),
    ("openai", "temperature", 2.5, "a number from 0 to 2"),
    ("openai", "top_p", 1.5, "a number from 0 to 1"),
    ("openai", "max_tokens", -5, "an integer of at least 1"),
    ("openai", "max_completion_tokens", 0, "an integer of at least 1"),
    ("openai", "max_tokens", 10.5, "an integer of at least 1"),
    ("openai", "n", 0, "an integer of at least 1"),
    ("openai", "presence_penalty", -3, "a number from -2 to 2"),
    ("openai", "frequency_penalty", True, "a number from -2 to 2"),
    ("openai", "top_logprobs", 21, "an integer from 0 to 20"),
    ("anthropic", "temperature", 1.5, "a number from 0 to 1"),
    ("anthropic", "top_p", -0.1, "a number from 0 to 1"),
    ("anthropic", "top_k", -1, "an integer of at least 0"),
    ("anthropic", "max_tokens", -1, "an integer of at least 0"),
    ("mistral", "temperature", -0.5, "a number of at least 0"),
    ("mistral", "top_p", 2, "a number from 0 to 1"),
    ("mistral", "max_tokens", "100", "an integer of at least 0"),
    ("mistral", "n", 0, "an integer of at least 1"),
    ("gemini", "temperature", 2.5, "a number from 0 to 2"),
    ("gemini", "top_p", 1.5, "a number from 0 to 1"),
    ("gemini", "top_k", 0, "an integer of at least 1"),
    ("gemini", "max_output_tokens", 0, "an integer of at least 1"),
    ("gemini", "max_tokens", "100", "an integer of at least 1"),
    ("gemini", "candidate_count", 1.5, "an integer of at least 1"),
    ("gemini", "presence_penalty", -3, "a number from -2 to 2"),
    ("gemini", "logprobs", 21, "an integer from 0 to 20"),
]


@pytest.mark.parametrize(("provider", "key", "value", "allowed"), INVALID)
def test_documented_invalid_parameters_are_refused(
    tmp_path: Path, provider: str, key: str, value: Any, allowed: str
) -> None:
    path = _write(tmp_path, [GOOD, {"id": "p", "prompt": "hi", "params": {key: value}}])
    with pytest.raises(InputError) as caught:
        _plan(path, provider)
    assert str(caught.value) == (
        f"in.jsonl:2: '{key}' is {json.dumps(value)}, but {provider} takes {allowed} "
        "(request id 'p')"
    )


@pytest.mark.parametrize(
    ("provider", "params"),
    [
        ("openai", {"temperature": 0, "top_p": 1, "max_tokens": 1, "n": 2, "seed": 7}),
        ("openai", {"temperature": 2.0, "presence_penalty": -2, "max_completion_tokens": 50}),
        ("anthropic", {"temperature": 1, "top_k": 0, "top_p": 0.5, "max_tokens": 300}),
        ("mistral", {"temperature": 1.0, "top_p": 0, "max_tokens": 100, "random_seed": 1}),
        ("gemini", {"temperature": 2, "top_p": 1, "top_k": 40, "max_output_tokens": 1, "seed": 3}),
        ("openai", {"temperature": None, "logit_bias": {"50256": -100}}),
    ],
)
def test_values_inside_the_ranges_pass(
    tmp_path: Path, provider: str, params: dict[str, Any]
) -> None:
    _plan(_write(tmp_path, [GOOD, {"id": "p", "prompt": "hi", "params": params}]), provider)


def test_the_run_context_parameters_are_checked_naming_the_flag(tmp_path: Path) -> None:
    path = _write(tmp_path, [GOOD])
    with pytest.raises(InputError) as caught:
        _plan(path, "anthropic", temperature=1.7)
    assert str(caught.value) == (
        "context: 'temperature' is 1.7, but anthropic takes a number from 0 to 1 (set by "
        "--temperature, BATCH_AGENT_TEMPERATURE or the run context's 'temperature')"
    )
    with pytest.raises(InputError, match="'max_tokens' is -1, .* --max-tokens"):
        _plan(path, "openai", max_tokens=-1)


def test_cli_refuses_a_bad_parameter_before_uploading(tmp_path: Path) -> None:
    path = _write(tmp_path, [GOOD, {"id": "hot", "prompt": "hi", "params": {"temperature": "hot"}}])
    db = str(tmp_path / "db.sqlite")
    result = CliRunner().invoke(app, ["run", str(path), "--provider", "emulator", "--db", db])
    assert result.exit_code != 0
    assert str(result.exception) == (
        "in.jsonl:2: 'temperature' is \"hot\", but openai takes a number from 0 to 2 "
        "(request id 'hot')"
    )
    assert read_access_log() == []


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("BATCH_AGENT_TEMPERATURE", "hot", "BATCH_AGENT_TEMPERATURE: 'hot' is not a number"),
        ("BATCH_AGENT_MAX_TOKENS", "1.5", "BATCH_AGENT_MAX_TOKENS: '1.5' is not an integer"),
        (
            "BATCH_AGENT_MODEL_SETTINGS",
            "{oops",
            "BATCH_AGENT_MODEL_SETTINGS: '{oops' is not a JSON",
        ),
    ],
)
def test_a_bad_environment_setting_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(InputError) as caught:
        Context()
    assert str(caught.value).startswith(message)


# Real models newer than LangChain's profile data (the profile lists neither).
UNPROFILED_MODELS = ["claude-opus-4-1", "claude-3-5-haiku-latest"]


@pytest.mark.parametrize("model", UNPROFILED_MODELS)
def test_a_served_model_unknown_to_the_profiles_is_planned(tmp_path: Path, model: str) -> None:
    chosen = provider_class("anthropic")(emulated=True, base_url="")
    assert chosen.model_profile(model) is None
    path = _write(tmp_path, [GOOD])
    plan = plan_requests(iter_file_requests(path), provider=chosen, context=Context(model=model))
    assert [job.model for job in plan.jobs] == [model]
    plan.discard()


PREFIX = {
    "openai": "/openai/v1",
    "mistral": "/mistral",
    "anthropic": "/anthropic",
    "gemini": "/gemini",
}
# Where a model is named: a request's own `params.model`, or the run's model. Gemini has only the
# run's: realtime `ChatGoogleGenerativeAI.invoke(messages, model=X)` is refused before anything is
# sent (GenerateContentConfig has no `model`), and so is such a request (test_gemini_fastpath).
MODEL_LOOKUPS = [
    (provider, named_by)
    for provider in PREFIX
    for named_by in ("params", "run")
    if (provider, named_by) != ("gemini", "params")
]


@pytest.mark.parametrize(("provider", "named_by"), MODEL_LOOKUPS)
def test_the_provider_is_asked_whether_it_serves_a_model(
    tmp_path: Path, provider: str, named_by: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a key, the model lookup (`models.retrieve`) decides, before anything is uploaded."""
    from agent.emulator import running_emulator
    from agent.providers import API_KEY_ENV

    monkeypatch.setenv(API_KEY_ENV[provider][0], "sk-test-key-1234")

    def plan(model: str) -> None:
        """Plan the run's default model's request and one of `model`, named as `named_by` says."""
        if named_by == "params":
            other = {"id": "x", "prompt": "hi", "params": {"model": model}}
            path = _write(tmp_path, [GOOD, other])
            plan_requests(iter_file_requests(path), provider=chosen, context=Context()).discard()
        else:
            path = _write(tmp_path, [GOOD])
            plan_requests(iter_file_requests(path), provider=chosen, context=Context()).discard()
            path = _write(tmp_path, [{"id": "x", "prompt": "hi"}, GOOD])
            plan_requests(
                iter_file_requests(path), provider=chosen, context=Context(model=model)
            ).discard()

    with running_emulator(tmp_path / "served") as url:
        chosen = provider_class(provider)(emulated=False, base_url=url + PREFIX[provider])
        plan("brand-new-1")
        with pytest.raises(InputError) as caught:
            plan("gpt-no-such-model")
        calls = read_access_log(tmp_path / "served")
    message = str(caught.value)
    line = 2 if named_by == "params" else 1  # the first request of that model
    assert message.startswith(f"in.jsonl:{line}: unknown model 'gpt-no-such-model'"), message
    assert "--check-models/--no-check-models" in message and "check_models" in message
    # Only the models the profiles do not list are looked up; nothing was uploaded.
    assert chosen.model_profile(chosen.default_model) is not None
    assert [(c["method"], c["path"].rpartition("/")[2], c["status"]) for c in calls] == [
        ("GET", "brand-new-1", 200),
        ("GET", "gpt-no-such-model", 404),
    ]
