"""What tokens cost: the batch price, the realtime price of the same tokens, and the saving.

Prices come from `genai-prices` (the snapshot bundled with the installed version; upgrade the
package to refresh it), looked up by the job's provider protocol and model. A batch price is only
ever the database's own batch variant (`processing: batch`) in force at the job's creation time:
when the database knows the model but has no batch variant for it, the batch cost is unknown
rather than guessed. A model the database does not know gives no number at all (`None`,
"unknown price"), never a wrong one.

Thinking tokens are output tokens (Gemini bills them at the output rate, and its usage counts
them in the output). Cache reads and cache writes (Anthropic's `cache_control`; 1-hour writes
apart) are priced at the database's own cache rates, which a batch variant without its own
keeps from the standard price (genai-prices merges a variant over the standard prices: Gemini
2.5 Flash keeps context caching at the standard rate, Anthropic's batch halves both). A batch
variant is only the one in force when the job was created: before its start date (genai-prices
0.2.3's begin 2026-10-14) the batch cost is unknown, never the standard price genai-prices
itself would silently give for the batch context then.

Costs are computed from token totals (per job, then summed per thread), which is exact only for
prices linear in tokens; a model whose price has tiers by prompt size or a per-request fee is
reported as unknown. The `price_override` context setting replaces the database's prices for the
models it names (see `parse_price_override`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NotRequired

from pydantic import ConfigDict, with_config
from typing_extensions import TypedDict  # pydantic needs this TypedDict on Python < 3.12

BATCH_PRICE_CONTEXT = {"processing": "batch"}
"""The genai-prices price context that selects a model's batch price variant."""
PRICE_PROVIDERS = {"gemini": "google"}
"""genai-prices' provider id of each of our provider protocols whose name it spells otherwise
(the Gemini Developer API is its `google`; Vertex AI would be `google-vertex`)."""
OVERRIDE_SOURCE = "price_override"
# Price keys whose cost is linear in the token totals we keep (anything else is not priced).
_LINEAR_TOKEN_PRICES = frozenset(
    {"input_mtok", "cache_read_mtok", "cache_write_mtok", "cache_write_1h_mtok", "output_mtok"}
)
_MILLION = Decimal(1_000_000)


@with_config(ConfigDict(use_attribute_docstrings=True))
class Cost(TypedDict):
    """What a job's (or a thread's) tokens cost in USD, at the batch and at the realtime price."""

    input_tokens: int
    """Input (prompt) tokens of the collected results."""
    cached_input_tokens: int
    """Input tokens the provider reported as prompt-cache reads (priced at the cache rate)."""
    cache_write_tokens: NotRequired[int]
    """Input tokens written to the prompt cache (Anthropic `cache_control`), priced at the
    cache-write rates (the 1-hour ones for 1-hour writes). Absent in records written before."""
    output_tokens: int
    """Output (completion) tokens of the collected results."""
    batch_usd: float | None
    """The batch cost; None means unknown price (never a guessed number)."""
    realtime_usd: float | None
    """What the same tokens cost through the realtime API; None means unknown price."""
    saving_usd: float | None
    """realtime_usd - batch_usd, when both are known."""
    source: str
    """Where the prices come from, e.g. 'genai-prices 0.2.3' or 'price_override'."""
    note: str | None
    """Why a price is unknown, when it is."""


@dataclass(frozen=True)
class Tokens:
    """A job's billed token counts, by how each is priced.

    `input` counts every input token, the cached and cache-written ones too (LangChain's
    `usage_metadata["input_tokens"]` is that total for every provider); `cache_read`,
    `cache_write` (5-minute or unspecified writes) and `cache_write_1h` are the parts of it
    priced at their own rates.
    """

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    cache_write_1h: int = 0


@dataclass(frozen=True)
class Rates:
    """USD per million tokens: input, output, and the prompt-cache rates (None: as input)."""

    input_mtok: Decimal
    output_mtok: Decimal
    cache_read_mtok: Decimal | None = None
    cache_write_mtok: Decimal | None = None
    cache_write_1h_mtok: Decimal | None = None

    def cost(self, tokens: Tokens) -> Decimal:
        """Return the cost of these token counts at these rates."""
        read = _or(self.cache_read_mtok, self.input_mtok)
        write = _or(self.cache_write_mtok, self.input_mtok)
        write_1h = _or(self.cache_write_1h_mtok, write)
        cached = tokens.cache_read + tokens.cache_write + tokens.cache_write_1h
        uncached = max(tokens.input - cached, 0)
        return (
            uncached * self.input_mtok
            + tokens.cache_read * read
            + tokens.cache_write * write
            + tokens.cache_write_1h * write_1h
            + tokens.output * self.output_mtok
        ) / _MILLION


@dataclass(frozen=True)
class Quote:
    """One model's batch and realtime rates at one moment; a side is None when unknown."""

    batch: Rates | None
    realtime: Rates | None
    source: str
    note: str | None = None

    def price(
        self,
        input_tokens: int,
        cached_input_tokens: int,
        output_tokens: int,
        cache_write_tokens: int = 0,
        cache_write_1h_tokens: int = 0,
    ) -> Cost:
        """Return the cost of these tokens at both prices, and the saving."""
        tokens = Tokens(
            input=input_tokens,
            output=output_tokens,
            cache_read=cached_input_tokens,
            cache_write=cache_write_tokens,
            cache_write_1h=cache_write_1h_tokens,
        )
        batch = self.batch.cost(tokens) if self.batch else None
        realtime = self.realtime.cost(tokens) if self.realtime else None
        saving = realtime - batch if batch is not None and realtime is not None else None
        return Cost(
            input_tokens=input_tokens,
            cached_input_tokens=cached_input_tokens,
            cache_write_tokens=cache_write_tokens + cache_write_1h_tokens,
            output_tokens=output_tokens,
            batch_usd=_usd(batch),
            realtime_usd=_usd(realtime),
            saving_usd=_usd(saving),
            source=self.source,
            note=self.note,
        )


def parse_price_override(text: str) -> dict[str, dict[str, Rates]]:
    """Parse the `price_override` setting.

    The setting is a JSON object mapping a model id (or `"*"` for any model) to its prices in USD
    per million tokens, as `[input, output]` pairs for either side or both, e.g.
    `{"gpt-4o-mini": {"batch": [0.075, 0.3], "realtime": [0.15, 0.6]}}`. A side it gives
    replaces the database's price for that side; a side it leaves out keeps the database's.

    Returns:
        `{model: {"batch"|"realtime": Rates}}`; empty for an empty setting.

    Raises:
        ValueError: The setting is not of that shape (the message says what is wrong).
    """
    if not text.strip():
        return {}
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"price_override is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(
            'price_override must be a JSON object like {"MODEL": {"batch": [IN, OUT]}}'
        )
    overrides: dict[str, dict[str, Rates]] = {}
    for model, sides in raw.items():
        if not isinstance(sides, dict) or not sides or set(sides) - {"batch", "realtime"}:
            raise ValueError(
                f"price_override[{model!r}] must hold 'batch' and/or 'realtime' [input, output] USD per million tokens"
            )
        overrides[model] = {side: _rates(model, side, value) for side, value in sides.items()}
    return overrides


def quote(
    provider: str,
    model: str,
    *,
    when: datetime | None = None,
    overrides: Mapping[str, Mapping[str, Rates]] | None = None,
) -> Quote:
    """Return the batch and realtime rates of `model` at `provider` in force at `when`.

    Args:
        provider: The job's provider protocol ('openai', 'mistral', 'anthropic', 'gemini');
            looked up under genai-prices' id for it (`PRICE_PROVIDERS`).
        model: The model id as sent to the provider.
        when: When the job was created (default: now); prices change over time.
        overrides: Parsed `price_override` setting.
    """
    override = dict((overrides or {}).get(model) or (overrides or {}).get("*") or {})
    batch, realtime = override.get("batch"), override.get("realtime")
    if batch is not None and realtime is not None:
        return Quote(batch=batch, realtime=realtime, source=OVERRIDE_SOURCE)
    found = _database_rates(
        PRICE_PROVIDERS.get(provider, provider), model, when or datetime.now(tz=UTC)
    )
    source = f"genai-prices {_version()}" + (f" + {OVERRIDE_SOURCE}" if override else "")
    return Quote(
        batch=batch or found.batch,
        realtime=realtime or found.realtime,
        source=source,
        note=None if (batch or found.batch) and (realtime or found.realtime) else found.note,
    )


def unknown_cost(
    input_tokens: int, cached_input_tokens: int, output_tokens: int, note: str
) -> Cost:
    """Return a cost record that says the price is unknown, and why."""
    return Quote(batch=None, realtime=None, source="unknown price", note=note).price(
        input_tokens, cached_input_tokens, output_tokens
    )


def total_cost(costs: Iterable[Cost]) -> Cost | None:
    """Sum cost records; a side any of them does not know is unknown in the total."""
    items = list(costs)
    if not items:
        return None
    sources = sorted({c["source"] for c in items})
    notes = sorted({c["note"] for c in items if c["note"]})
    return Cost(
        input_tokens=sum(c["input_tokens"] for c in items),
        cached_input_tokens=sum(c["cached_input_tokens"] for c in items),
        cache_write_tokens=sum(c.get("cache_write_tokens", 0) for c in items),
        output_tokens=sum(c["output_tokens"] for c in items),
        batch_usd=_sum([c["batch_usd"] for c in items]),
        realtime_usd=_sum([c["realtime_usd"] for c in items]),
        saving_usd=_sum([c["saving_usd"] for c in items]),
        source=", ".join(sources),
        note="; ".join(notes) or None,
    )


def format_usd(value: float | None) -> str:
    """Format a cost for people: 'unknown price' for None, enough decimals for small batches."""
    if value is None:
        return "unknown price"
    return f"${value:,.2f}" if abs(value) >= 100 else f"${value:,.6f}"


class TokenTally:
    """Token totals of one job's results, as the provider reported them."""

    def __init__(self) -> None:
        """Start from zero."""
        self.input_tokens = 0
        self.cached_input_tokens = 0
        self.cache_write_tokens = 0
        self.cache_write_1h_tokens = 0
        self.output_tokens = 0

    def add(self, result: Mapping[str, Any]) -> None:
        """Count one stored result (failed requests report no tokens and are not billed)."""
        usage = result.get("usage") or {}
        self.input_tokens += int(usage.get("input_tokens") or 0)
        self.output_tokens += int(usage.get("output_tokens") or 0)
        message = result.get("message") or {}
        # A stored result is plain JSON: `dict`, whose check is far cheaper than `Mapping`'s.
        meta = message.get("usage_metadata") if isinstance(message, dict) else None
        details = (meta or {}).get("input_token_details") or {}
        self.cached_input_tokens += int(details.get("cache_read") or 0)
        # ChatAnthropic reports cache writes as `cache_creation`, or by their time to live
        # (then `cache_creation` is 0): 1-hour writes are priced apart.
        self.cache_write_tokens += int(details.get("cache_creation") or 0) + int(
            details.get("ephemeral_5m_input_tokens") or 0
        )
        self.cache_write_1h_tokens += int(details.get("ephemeral_1h_input_tokens") or 0)

    def cost(
        self,
        provider: str,
        model: str,
        *,
        when: datetime | None,
        price_override: str,
    ) -> Cost:
        """Price the tally; an invalid `price_override` gives an unknown price that says so."""
        counts = (self.input_tokens, self.cached_input_tokens, self.output_tokens)
        writes = (self.cache_write_tokens, self.cache_write_1h_tokens)
        try:
            overrides = parse_price_override(price_override)
        except ValueError as exc:
            return unknown_cost(*counts, note=str(exc))
        return quote(provider, model, when=when, overrides=overrides).price(*counts, *writes)


@dataclass(frozen=True)
class _Found:
    batch: Rates | None
    realtime: Rates | None
    note: str | None


def _database_rates(provider: str, model: str, when: datetime) -> _Found:
    """Look the model up in genai-prices; explain what is missing when a side is unknown."""
    import genai_prices
    from genai_prices.types import ModelPrice

    version = _version()
    try:
        # A zero usage only resolves the model and provider (the public lookup API).
        found = genai_prices.calc_price(
            genai_prices.Usage(input_tokens=0, output_tokens=0),
            model,
            provider_id=provider,
            genai_request_timestamp=when,
        )
    except LookupError:
        note = f"{provider}/{model} is not in genai-prices {version} (set price_override)"
        return _Found(batch=None, realtime=None, note=note)
    info = found.model
    realtime = _linear(found.model_price)
    if realtime is None:
        note = f"{provider}/{model} has a tiered or per-request price, not priced from token totals"
        return _Found(batch=None, realtime=None, note=note)
    # genai-prices ignores the price context for a model found through a fallback provider.
    own_model = any(m is info for m in found.provider.models)
    has_batch = own_model and any(
        variant.when.get("processing") == "batch"
        and (variant.constraint is None or variant.constraint.active(when))
        for variant in info.price_variants or ()
    )
    if not has_batch:
        note = f"genai-prices {version} has no batch price for {provider}/{model} at {when:%Y-%m-%d} (set price_override)"
        return _Found(batch=None, realtime=realtime, note=note)
    batch_prices: ModelPrice = info.get_prices(when, BATCH_PRICE_CONTEXT)
    batch = _linear(batch_prices)
    tiered = f"{provider}/{model} has a tiered batch price, not priced from token totals"
    return _Found(batch=batch, realtime=realtime, note=None if batch else tiered)


def _linear(prices: Any) -> Rates | None:
    """Return token rates when every non-zero price is a plain per-token rate, else None."""
    values = {k: v for k, v in vars(prices).items() if not k.startswith("_") and v}
    if set(values) - _LINEAR_TOKEN_PRICES - _UNUSED_PRICES:
        return None
    if not all(isinstance(values.get(k, Decimal(0)), Decimal) for k in _LINEAR_TOKEN_PRICES):
        return None
    return Rates(
        input_mtok=values.get("input_mtok", Decimal(0)),
        output_mtok=values.get("output_mtok", Decimal(0)),
        cache_read_mtok=values.get("cache_read_mtok"),
        cache_write_mtok=values.get("cache_write_mtok"),
        cache_write_1h_mtok=values.get("cache_write_1h_mtok"),
    )


# Prices of things a chat-completions batch never uses (tool calls we do not send); they cost 0.
# Gemini's audio-input rates apply to audio parts only: a text batch never pays them (a batch
# whose requests carry audio is priced at the text input rate, since results do not report
# input tokens by modality).
_UNUSED_PRICES = frozenset(
    {"web_searches_kcount", "storage_searches_kcount"}
    | {"input_audio_mtok", "cache_audio_read_mtok"}
)


def _rates(model: str, side: str, value: Any) -> Rates:
    pair_ok = (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in value)
    )
    if not pair_ok:
        raise ValueError(
            f"price_override[{model!r}][{side!r}] must be [input, output] USD per million tokens, got {value!r}"
        )
    return Rates(input_mtok=Decimal(str(value[0])), output_mtok=Decimal(str(value[1])))


def _or(rate: Decimal | None, default: Decimal) -> Decimal:
    return default if rate is None else rate


def _usd(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _sum(values: list[float | None]) -> float | None:
    if any(v is None for v in values):
        return None
    return float(sum(Decimal(str(v)) for v in values if v is not None))


def _version() -> str:
    from importlib.metadata import version

    return version("genai-prices")
