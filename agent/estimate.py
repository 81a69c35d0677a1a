"""Estimate a batch's tokens and cost before it is submitted, and enforce `max_cost`.

Input tokens are counted while the requests are planned (one streaming pass, nothing held in
memory but running totals):

- OpenAI models: exactly, with the model's tiktoken encoding (`tiktoken` names it; the
  `quicktok` package ships the `o200k_base` / `cl100k_base` vocabularies, byte-identical to
  tiktoken's, so counting works offline and is several times faster than tiktoken), plus
  OpenAI's chat framing: 3 tokens per message, the role, and 3 for the reply's priming.
- Every other model (Mistral's tokenizers are not shipped in any package we can use offline):
  a heuristic, one token per 4 UTF-8 bytes of text plus 4 per message, rounded up. English
  averages about 4 characters a token; other scripts take 2-3 bytes a character and fewer
  characters a token, so counting bytes rather than characters keeps them from being
  underestimated.

Non-text content parts (images, audio) and tool definitions are not counted. Output tokens are
unknown before the batch runs: when every request has a `max_tokens` cap, the estimate adds
output at that cap (an upper bound); otherwise it covers input only and says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ConfigDict, with_config
from typing_extensions import TypedDict  # pydantic needs this TypedDict on Python < 3.12

from agent.pricing import Quote, format_usd, parse_price_override, quote
from agent.requests import BatchRequest, InputError

HEURISTIC_BYTES_PER_TOKEN = 4
HEURISTIC_TOKENS_PER_MESSAGE = 4
HEURISTIC = f"heuristic (UTF-8 bytes / {HEURISTIC_BYTES_PER_TOKEN} + {HEURISTIC_TOKENS_PER_MESSAGE} per message)"
HEURISTIC_TEXT = f"heuristic (UTF-8 bytes / {HEURISTIC_BYTES_PER_TOKEN})"
# OpenAI chat framing (OpenAI cookbook, "How to count tokens with tiktoken").
OPENAI_TOKENS_PER_MESSAGE = 3
OPENAI_REPLY_PRIMING = 3
# Encodings whose vocabulary ships with quicktok (no download at run time).
SHIPPED_ENCODINGS = frozenset({"o200k_base", "cl100k_base"})


# Attribute docstrings become JSON-schema descriptions, which Studio shows next to each field.
@with_config(ConfigDict(use_attribute_docstrings=True))
class Estimate(TypedDict):
    """Estimated tokens and cost of a planned batch (or one planned job), before submitting."""

    requests: int
    """Requests estimated."""
    input_tokens: int
    """Estimated input tokens of those requests."""
    tokens_by: str
    """How input tokens were counted: 'tokenizer o200k_base' or the documented heuristic."""
    max_output_tokens: int | None
    """Output at every request's `max_tokens` cap; None when some request has no cap."""
    batch_usd: float | None
    """Estimated cost at the batch price (input, plus output at the cap when known); None: unknown price."""
    realtime_usd: float | None
    """The same tokens at the realtime price; None: unknown price."""
    saving_usd: float | None
    """realtime_usd - batch_usd, when both are known."""
    source: str
    """Where the prices come from, e.g. 'genai-prices 0.2.3' or 'price_override'."""
    note: str | None
    """What the estimate leaves out, or why a price is unknown."""


class TokenCounter:
    """Counts one request's input tokens for one model."""

    def __init__(
        self, provider: str, model: str, *, exact: bool = True, framing: bool = True
    ) -> None:
        """Pick the model's tokenizer when one ships offline (and `exact`), else the heuristic.

        `exact=False` skips loading the vocabulary (about 0.8 s and 77 MiB per process): a
        plain `run` without `max_cost` only shows its estimate until the real usage arrives.
        `framing=False` counts the text alone, as an embeddings model bills it (no chat
        framing per message, no reply priming): exact for OpenAI's embeddings models.
        """
        self.framing = framing
        self.method = HEURISTIC if framing else HEURISTIC_TEXT
        self._count: Callable[[str], int] | None = None
        if provider == "openai" and exact:
            encoding = _openai_encoding(model)
            if encoding is not None:
                self.method = f"tokenizer {encoding.name}"
                self._count = encoding.count

    def count(self, request: BatchRequest) -> int:
        """Return the estimated input tokens of one request."""
        if not self.framing:
            text = "".join(_text(m) for m in request.messages)
            if self._count is None:
                return math.ceil(len(text.encode()) / HEURISTIC_BYTES_PER_TOKEN)
            return self._count(text)
        if self._count is None:
            return sum(
                HEURISTIC_TOKENS_PER_MESSAGE
                + math.ceil(len(_text(m).encode()) / HEURISTIC_BYTES_PER_TOKEN)
                for m in request.messages
            )
        count = self._count
        total = OPENAI_REPLY_PRIMING
        for message in request.messages:
            total += OPENAI_TOKENS_PER_MESSAGE + count(str(message.get("role", "")))
            total += count(_text(message))
            if message.get("name"):
                total += 1 + count(str(message["name"]))
        return total


@dataclass
class JobTokens:
    """Running token estimate of one planned job."""

    counter: TokenCounter
    default_max_tokens: int | None
    input_tokens: int = 0
    max_output_tokens: int | None = 0
    requests: int = 0

    def add(self, request: BatchRequest, tokens: int | None = None) -> None:
        """Count one request in (`tokens`: its input tokens, when already counted)."""
        self.requests += 1
        self.input_tokens += self.counter.count(request) if tokens is None else tokens
        cap = _output_cap(request.params, self.default_max_tokens)
        if cap is None or self.max_output_tokens is None:
            self.max_output_tokens = None
        else:
            self.max_output_tokens += cap

    def summary(self) -> dict[str, Any]:
        """Return the token fields of a plan entry."""
        return {
            "input_tokens": self.input_tokens,
            "max_output_tokens": self.max_output_tokens,
            "tokens_by": self.counter.method,
        }


def price_plan(
    jobs: Iterable[Mapping[str, Any]], provider: str, price_override: str
) -> tuple[list[dict[str, Any]], Estimate]:
    """Add estimated costs to plan entries and return them with the batch's total estimate.

    Args:
        jobs: Plan entries with `model`, `requests`, `input_tokens`, `max_output_tokens`,
            `tokens_by` (from `agent.planning.Plan.summary`).
        provider: The provider protocol whose prices apply ('openai', 'mistral').
        price_override: The context's `price_override` setting.

    Raises:
        InputError: `price_override` is invalid.
    """
    try:
        overrides = parse_price_override(price_override)
    except ValueError as exc:
        raise InputError(str(exc), source="context") from None
    quotes: dict[str, Quote] = {}
    priced = []
    for job in jobs:
        model = str(job["model"])
        if model not in quotes:
            quotes[model] = quote(provider, model, overrides=overrides)
        estimate = _estimate(
            quotes[model],
            requests=int(job["requests"]),
            input_tokens=int(job.get("input_tokens", 0)),
            max_output_tokens=job.get("max_output_tokens"),
            tokens_by=str(job.get("tokens_by", HEURISTIC)),
        )
        priced.append(
            {
                **job,
                "batch_usd": estimate["batch_usd"],
                "realtime_usd": estimate["realtime_usd"],
                "saving_usd": estimate["saving_usd"],
            }
        )
    return priced, total_estimate(priced, quotes)


def check_budget(estimate: Estimate, max_cost: float | None) -> None:
    """Refuse a batch whose estimated batch cost exceeds `max_cost` (USD), before any upload.

    Raises:
        InputError: The estimate is over the limit, or unknown while a limit is set.
    """
    if max_cost is None:
        return
    cost = estimate["batch_usd"]
    tokens = f"{estimate['input_tokens']:,} input tokens by {estimate['tokens_by']}"
    if estimate["max_output_tokens"] is not None:
        tokens += f" + up to {estimate['max_output_tokens']:,} output tokens at max_tokens"
    else:
        tokens += ", output not included (no max_tokens)"
    if cost is None:
        raise InputError(
            f"cannot check max_cost {format_usd(max_cost)}: {estimate['note'] or 'unknown price'}; nothing was uploaded",
            source="input",
        )
    if cost > max_cost:
        raise InputError(
            f"estimated batch cost {format_usd(cost)} ({tokens}) exceeds max_cost {format_usd(max_cost)}; nothing was uploaded",
            source="input",
        )


def describe(estimate: Estimate) -> str:
    """Return the estimate in one line, for people."""
    line = (
        f"estimate: {estimate['requests']:,} requests, {estimate['input_tokens']:,} input tokens "
        f"({estimate['tokens_by']})"
    )
    if estimate["max_output_tokens"] is not None:
        line += f" + up to {estimate['max_output_tokens']:,} output tokens"
    line += f"; batch {format_usd(estimate['batch_usd'])}, realtime {format_usd(estimate['realtime_usd'])}"
    if estimate["saving_usd"] is not None:
        line += f", saving {format_usd(estimate['saving_usd'])}"
    if estimate["note"]:
        line += f" ({estimate['note']})"
    return line


def total_estimate(jobs: list[dict[str, Any]], quotes: Mapping[str, Quote]) -> Estimate:
    """Sum priced plan entries into the batch's estimate."""
    methods = sorted({str(j.get("tokens_by", HEURISTIC)) for j in jobs})
    caps = [j.get("max_output_tokens") for j in jobs]
    max_output = None if any(c is None for c in caps) else sum(int(c or 0) for c in caps)
    notes = sorted({q.note for q in quotes.values() if q.note})
    if max_output is None:
        notes.append("output not included: no max_tokens cap")
    return Estimate(
        requests=sum(int(j["requests"]) for j in jobs),
        input_tokens=sum(int(j.get("input_tokens", 0)) for j in jobs),
        tokens_by=", ".join(methods),
        max_output_tokens=max_output,
        batch_usd=_sum(j["batch_usd"] for j in jobs),
        realtime_usd=_sum(j["realtime_usd"] for j in jobs),
        saving_usd=_sum(j["saving_usd"] for j in jobs),
        source=", ".join(sorted({q.source for q in quotes.values()})) or "none",
        note="; ".join(notes) or None,
    )


def _estimate(
    price: Quote, *, requests: int, input_tokens: int, max_output_tokens: Any, tokens_by: str
) -> Estimate:
    cost = price.price(input_tokens, 0, int(max_output_tokens or 0))
    return Estimate(
        requests=requests,
        input_tokens=input_tokens,
        tokens_by=tokens_by,
        max_output_tokens=max_output_tokens,
        batch_usd=cost["batch_usd"],
        realtime_usd=cost["realtime_usd"],
        saving_usd=cost["saving_usd"],
        source=cost["source"],
        note=cost["note"],
    )


def _sum(values: Iterable[float | None]) -> float | None:
    items = list(values)
    if any(v is None for v in items):
        return None
    return float(sum(v for v in items if v is not None))


def _output_cap(params: Mapping[str, Any], default: int | None) -> int | None:
    """Return the request's output cap: its own `max_completion_tokens`/`max_tokens`, else the run's."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = params.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return default


def _text(message: Mapping[str, Any]) -> str:
    """Return the text a message carries (string content or its text parts)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _openai_encoding(model: str) -> Any:
    """Return the shipped tiktoken-compatible encoding for an OpenAI model, or None."""
    import tiktoken.model

    try:
        name = tiktoken.model.encoding_name_for_model(model)
    except KeyError:
        return None
    if name not in SHIPPED_ENCODINGS:
        return None
    import quicktok

    return quicktok.get_encoding(name)
