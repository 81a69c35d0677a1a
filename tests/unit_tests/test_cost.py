"""What a batch costs: priced after collection, estimated before submission, refused over budget.

Every batch runs on the in-process emulator through the real SDKs. Expected prices are computed
here straight from `genai-prices` (or by hand for overrides), never with `agent.pricing`.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import genai_prices
import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore
from typer.testing import CliRunner

from agent.cli.app import app
from agent.cli.render import status_report
from agent.context import Context
from agent.emulator import list_jobs, read_access_log
from agent.graph import build_graph
from agent.pricing import TokenTally, quote
from agent.requests import InputError

RECORDS: list[dict[str, Any]] = [
    {"id": f"t{i}", "prompt": f"Classify ticket {i}: my invoice is wrong and I want a refund"}
    for i in range(8)
]
FAST = {"max_wait_seconds": 20.0, "poll_interval_seconds": 0.05, "max_poll_interval_seconds": 0.3}


def _run(records: list[dict[str, Any]] = RECORDS, **context: Any) -> dict[str, Any]:
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    config = {"configurable": {"thread_id": "cost"}}
    ctx = Context(**{"provider": "emulator", **FAST, **context})
    graph.invoke({"requests": records}, config, context=ctx)
    deadline = time.monotonic() + 60
    values = dict(graph.get_state(config).values)
    while values.get("status") not in {"completed", "failed", "error"}:
        assert time.monotonic() < deadline, values.get("status")
        graph.invoke({}, config, context=ctx)
        values = dict(graph.get_state(config).values)
    assert values["status"] == "completed", values.get("error")
    return values


def _genai_price(
    provider: str, model: str, usage: dict[str, int], when: datetime, *, batch: bool
) -> Decimal:
    calc = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=usage["input_tokens"], output_tokens=usage["output_tokens"]
        ),
        model,
        provider_id=provider,
        genai_request_timestamp=when,
        price_context={"processing": "batch"} if batch else None,
    )
    return calc.total_price


@pytest.mark.parametrize(
    ("provider", "protocol", "model"),
    [
        ("emulator", "openai", "gpt-4o-mini"),
        ("mistral", "mistral", "mistral-small-latest"),
        # Not Anthropic: its default model (claude-haiku-4-5) has a tiered price, left unpriced.
        ("gemini", "google", "gemini-2.5-flash"),
    ],
)
def test_collected_batch_costs_half_the_realtime_price(
    provider: str, protocol: str, model: str
) -> None:
    values = _run(provider=provider)
    usage = values["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    created = datetime.fromtimestamp(values["jobs"][0]["created_at"], tz=UTC)
    realtime = _genai_price(protocol, model, usage, created, batch=False)
    batch = _genai_price(protocol, model, usage, created, batch=True)
    assert realtime > 0 and batch == realtime / 2  # what the database says for these models

    cost = values["cost"]
    assert (cost["input_tokens"], cost["output_tokens"]) == (
        usage["input_tokens"],
        usage["output_tokens"],
    )
    assert cost["batch_usd"] == pytest.approx(float(realtime) / 2, rel=1e-12)
    assert cost["realtime_usd"] == pytest.approx(float(realtime), rel=1e-12)
    assert cost["saving_usd"] == pytest.approx(float(realtime) / 2, rel=1e-12)
    assert cost["source"].startswith("genai-prices ") and cost["note"] is None
    # Per job too, and shown by `status --json`.
    [job] = values["jobs"]
    assert job["cost"] == cost
    report = status_report("cost", values)
    assert report["cost"] == cost and report["jobs"][0]["cost"] == cost


def test_cost_is_summed_over_retry_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    # Half the requests fail with 429/500 and are retried in follow-up jobs of the same thread.
    monkeypatch.setenv("BATCH_AGENT_EMULATOR_FAULTS", "request_fail_rate=0.5,seed=3")
    values = _run()
    jobs = values["jobs"]
    assert len(jobs) > 1
    cost, usage = values["cost"], values["usage"]
    assert (
        cost["input_tokens"]
        == usage["input_tokens"]
        == sum(j["cost"]["input_tokens"] for j in jobs)
    )
    assert cost["batch_usd"] == pytest.approx(sum(j["cost"]["batch_usd"] for j in jobs))
    created = datetime.fromtimestamp(jobs[0]["created_at"], tz=UTC)
    realtime = _genai_price("openai", "gpt-4o-mini", usage, created, batch=False)
    assert cost["batch_usd"] == pytest.approx(float(realtime) / 2, rel=1e-12)


def test_unknown_model_gives_no_number() -> None:
    values = _run(model="in-house-model-7", check_models=False)
    assert values["usage"]["input_tokens"] > 0  # tokens were used, yet no price is known
    cost = values["cost"]
    assert cost["batch_usd"] is None and cost["realtime_usd"] is None
    assert cost["saving_usd"] is None
    assert "in-house-model-7 is not in genai-prices" in cost["note"]


def test_a_model_without_a_batch_price_has_an_unknown_batch_cost() -> None:
    # genai-prices knows mistral-large-latest's realtime price but lists no batch variant for it.
    values = _run(provider="mistral", model="mistral-large-latest")
    cost = values["cost"]
    assert cost["batch_usd"] is None and cost["saving_usd"] is None
    assert cost["realtime_usd"] is not None and cost["realtime_usd"] > 0
    assert "no batch price" in cost["note"]


def test_price_override_replaces_the_database() -> None:
    override = json.dumps({"*": {"batch": [1.0, 2.0], "realtime": [3.0, 5.0]}})
    values = _run(model="in-house-model-7", check_models=False, price_override=override)
    usage = values["usage"]
    tokens_in, tokens_out = usage["input_tokens"], usage["output_tokens"]
    assert values["cost"]["batch_usd"] == pytest.approx((tokens_in * 1 + tokens_out * 2) / 1e6)
    assert values["cost"]["realtime_usd"] == pytest.approx((tokens_in * 3 + tokens_out * 5) / 1e6)
    assert values["cost"]["source"] == "price_override"


def test_plan_over_max_cost_is_refused_before_any_upload(isolated_env: Path) -> None:
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    ctx = Context(provider="emulator", max_tokens=100, max_cost=0.0001)
    with pytest.raises(InputError) as info:
        graph.invoke({"requests": RECORDS}, {"configurable": {"thread_id": "t"}}, context=ctx)
    message = str(info.value)
    assert "exceeds max_cost $0.000100" in message
    assert "estimated batch cost $" in message and "800 output tokens at max_tokens" in message
    assert read_access_log() == [] and list_jobs() == []  # nothing uploaded, no job
    assert not any((isolated_env.parent / "spool").glob("*"))  # no built file left behind


def test_unknown_price_with_max_cost_is_refused(isolated_env: Path) -> None:
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    ctx = Context(provider="emulator", model="in-house-model-7", check_models=False, max_cost=5.0)
    with pytest.raises(InputError, match="cannot check max_cost .* not in genai-prices"):
        graph.invoke({"requests": RECORDS}, {"configurable": {"thread_id": "t"}}, context=ctx)
    assert read_access_log() == []


def test_under_max_cost_submits_and_keeps_the_estimate() -> None:
    values = _run(max_cost=1.0, max_tokens=50)
    estimate = values["estimate"]
    assert estimate["requests"] == len(RECORDS)
    assert estimate["max_output_tokens"] == 50 * len(RECORDS)
    assert 0 < estimate["batch_usd"] < 1.0
    assert estimate["batch_usd"] == pytest.approx(estimate["realtime_usd"] / 2)
    assert len(list_jobs()) == 1


def test_invalid_price_override_is_refused_before_any_upload() -> None:
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    ctx = Context(provider="emulator", price_override='{"gpt-4o-mini": {"batch": [1]}}')
    with pytest.raises(InputError, match=r"price_override\['gpt-4o-mini'\]\['batch'\]"):
        graph.invoke({"requests": RECORDS}, {"configurable": {"thread_id": "t"}}, context=ctx)
    assert read_access_log() == []


def test_dry_run_counts_openai_tokens_with_the_model_tokenizer() -> None:
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    records = [{"id": "a", "prompt": "Hello world"}, {"id": "b", "prompt": "Hello world"}]
    out = graph.invoke(
        {"requests": records, "dry_run": True},
        {"configurable": {"thread_id": "t"}},
        context=Context(provider="emulator", max_tokens=10, dedupe=False),
    )
    estimate = out["estimate"]
    # OpenAI chat framing: 3 per message + role "user" (1) + "Hello world" (2) + 3 reply priming.
    assert estimate["tokens_by"] == "tokenizer o200k_base"
    assert estimate["input_tokens"] == 2 * 9
    assert estimate["max_output_tokens"] == 20
    assert out["plan"][0]["input_tokens"] == 18 and out["plan"][0]["batch_usd"] > 0
    assert read_access_log() == []


def test_dry_run_uses_the_documented_heuristic_without_a_tokenizer() -> None:
    graph = build_graph().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    records = [{"id": "a", "prompt": "abcdefgh"}, {"id": "b", "prompt": "é" * 5}]
    out = graph.invoke(
        {"requests": records, "dry_run": True},
        {"configurable": {"thread_id": "t"}},
        context=Context(provider="mistral"),
    )
    estimate = out["estimate"]
    # 4 per message + ceil(UTF-8 bytes / 4): 8 bytes -> 2, 10 bytes ("é" is 2 bytes) -> 3.
    assert estimate["tokens_by"].startswith("heuristic")
    assert estimate["input_tokens"] == (4 + 2) + (4 + 3)
    assert estimate["max_output_tokens"] is None and "output not included" in estimate["note"]


def test_cli_plan_shows_the_estimate_and_refuses_over_max_cost(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    runner = CliRunner()
    ok = runner.invoke(app, ["plan", str(source), "--provider", "emulator", "--json"])
    assert ok.exit_code == 0, ok.output
    report = json.loads(ok.stdout)
    assert report["estimate"]["batch_usd"] > 0 and report["refused"] is None
    refused = runner.invoke(
        app, ["plan", str(source), "--provider", "emulator", "--max-cost", "0.0000001"]
    )
    assert refused.exit_code != 0
    assert "estimate:" in refused.stdout and "batch $" in refused.stdout
    assert "exceeds max_cost" in str(refused.exception)
    assert read_access_log() == []


# -- prices right to the token ---------------------------------------------------------------

AFTER_BATCH_PRICES = datetime(2026, 12, 2, tzinfo=UTC)
BEFORE_BATCH_PRICES = datetime(2026, 10, 1, tzinfo=UTC)  # genai-prices' variants start 2026-10-14
PRICED = [
    ("openai", "gpt-4o-mini", "openai"),
    ("openai", "gpt-5-mini", "openai"),
    ("anthropic", "claude-haiku-4-5", "anthropic"),
    ("gemini", "gemini-2.5-flash", "google"),
    ("mistral", "mistral-small-latest", "mistral"),
]


def _genai_prices(
    provider_id: str, model: str, when: datetime, batch: bool, **tokens: int
) -> Decimal:
    """What genai-prices itself charges for these tokens (the independent reference)."""
    context = {"price_context": {"processing": "batch"}} if batch else {}
    found = genai_prices.calc_price(
        genai_prices.Usage(**tokens),
        model,
        provider_id=provider_id,
        genai_request_timestamp=when,
        **context,
    )
    return Decimal(str(found.total_price))


@pytest.mark.parametrize(("provider", "model", "provider_id"), PRICED)
def test_cache_reads_and_writes_are_priced_at_their_own_batch_and_realtime_rates(
    provider: str, model: str, provider_id: str
) -> None:
    tally = TokenTally()
    tally.add(
        {
            "usage": {"input_tokens": 10_000, "output_tokens": 700},
            "message": {
                "usage_metadata": {
                    "input_token_details": {"cache_read": 4_000, "cache_creation": 2_500}
                }
            },
        }
    )
    cost = tally.cost(provider, model, when=AFTER_BATCH_PRICES, price_override="")
    assert cost["cached_input_tokens"] == 4_000 and cost["cache_write_tokens"] == 2_500
    tokens = {
        "input_tokens": 10_000,
        "cache_read_tokens": 4_000,
        "cache_write_tokens": 2_500,
        "output_tokens": 700,
    }
    for side, batch in (("batch_usd", True), ("realtime_usd", False)):
        expected = _genai_prices(provider_id, model, AFTER_BATCH_PRICES, batch, **tokens)
        assert Decimal(str(cost[side])) == pytest.approx(expected, rel=1e-9), side


def test_anthropic_one_hour_cache_writes_cost_the_one_hour_rate() -> None:
    def cost(details: dict[str, int]) -> Any:
        tally = TokenTally()
        tally.add(
            {
                "usage": {"input_tokens": 3_000, "output_tokens": 0},
                "message": {"usage_metadata": {"input_token_details": details}},
            }
        )
        return tally.cost(
            "anthropic", "claude-haiku-4-5", when=AFTER_BATCH_PRICES, price_override=""
        )

    five_minutes = cost({"cache_creation": 0, "ephemeral_5m_input_tokens": 2_000})
    one_hour = cost({"cache_creation": 0, "ephemeral_1h_input_tokens": 2_000})
    rates = quote("anthropic", "claude-haiku-4-5", when=AFTER_BATCH_PRICES).batch
    assert rates is not None and rates.cache_write_1h_mtok and rates.cache_write_mtok
    extra = 2_000 * (rates.cache_write_1h_mtok - rates.cache_write_mtok) / Decimal(1_000_000)
    assert Decimal(str(one_hour["batch_usd"])) - Decimal(str(five_minutes["batch_usd"])) == (
        pytest.approx(extra)
    )
    assert one_hour["cache_write_tokens"] == five_minutes["cache_write_tokens"] == 2_000


@pytest.mark.parametrize(("provider", "model", "provider_id"), PRICED)
def test_a_batch_price_never_falls_back_to_the_standard_price(
    provider: str, model: str, provider_id: str
) -> None:
    after = quote(provider, model, when=AFTER_BATCH_PRICES)
    before = quote(provider, model, when=BEFORE_BATCH_PRICES)
    tokens = (100_000, 0, 10_000)
    if after.batch is None:
        # No batch variant at all: unknown, and said so, never the standard price.
        assert after.note is not None and "no batch price" in after.note
        assert after.price(*tokens)["batch_usd"] is None
    else:
        # The variant in force at the job's creation: below the realtime price, and exactly
        # what genai-prices charges with the batch context at that time.
        batch = after.price(*tokens)
        assert batch["batch_usd"] is not None and batch["realtime_usd"] is not None
        assert batch["batch_usd"] < batch["realtime_usd"]
        expected = _genai_prices(
            provider_id, model, AFTER_BATCH_PRICES, True, input_tokens=100_000, output_tokens=10_000
        )
        assert Decimal(str(batch["batch_usd"])) == pytest.approx(expected, rel=1e-9)
    # Created before any batch variant was in force: genai-prices would silently give the
    # standard price for the batch context; we give none, and say why.
    assert before.batch is None and before.realtime is not None
    assert before.note is not None and BEFORE_BATCH_PRICES.strftime("%Y-%m-%d") in before.note
    assert before.price(*tokens)["batch_usd"] is None
    standard = _genai_prices(
        provider_id, model, BEFORE_BATCH_PRICES, True, input_tokens=100_000, output_tokens=10_000
    )
    assert standard == Decimal(str(before.price(*tokens)["realtime_usd"]))  # the trap we avoid
