"""Run-time settings of the batch graph (its `context_schema`).

Every field has a default and a description, so LangGraph Studio can render a usable form and
`batch-agent` can fill it from flags. Secrets are deliberately *not* fields: API keys are read from
the environment by the provider modules when a client is built, so they never enter graph state,
checkpoints or run context.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal

from agent.requests import InputError

ProviderName = Literal["auto", "openai", "mistral", "anthropic", "gemini", "emulator"]


@dataclass(kw_only=True)
class Context:
    """Settings for one run of the batch graph.

    Values left at their default are filled from `BATCH_AGENT_<FIELD>` environment variables when
    those are set (e.g. `BATCH_AGENT_PROVIDER=mistral`), so a deployment can configure the graph
    without touching every client call.
    """

    provider: ProviderName = field(
        default="auto",
        metadata={
            "description": "Batch provider: 'openai', 'mistral', 'anthropic', 'gemini', 'emulator' "
            "(offline, synthetic answers) or 'auto' (the first of openai, mistral, anthropic, "
            "gemini whose API key is set, else the emulator)."
        },
    )
    model: str = field(
        default="",
        metadata={
            "description": "Model id for requests that do not name one. Empty means the "
            "provider's default (openai: gpt-4o-mini, mistral: mistral-small-latest, "
            "anthropic: claude-haiku-4-5, gemini: gemini-2.5-flash; for embeddings: "
            "text-embedding-3-small, mistral-embed, gemini-embedding-001)."
        },
    )
    temperature: float | None = field(
        default=None,
        metadata={"description": "Sampling temperature; empty uses the model's default."},
    )
    max_tokens: int | None = field(
        default=None,
        metadata={"description": "Maximum number of tokens to generate per request."},
    )
    top_p: float | None = field(
        default=None,
        metadata={"description": "Nucleus sampling probability mass; empty uses the default."},
    )
    dimensions: int | None = field(
        default=None,
        metadata={
            "description": "Embeddings: the size of each vector asked of the model (OpenAI "
            "`dimensions`, Gemini `output_dimensionality`, Mistral `output_dimension`); "
            "empty uses the model's own size."
        },
    )
    model_settings: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "description": "Constructor settings of the chat model that builds every body and "
            'parses every answer, as JSON, e.g. {"output_version": "v1", "stop": '
            '["END"]} (`run_batch(model=llm)` fills it from `llm`). Not for keys, timeouts '
            "or the endpoint (see base_url, organization)."
        },
    )
    endpoint: str = field(
        default="",
        metadata={
            "description": "Which API the batch's requests go to: '' (what the chat model "
            "object says: OpenAI's Responses API when its settings route there, e.g. "
            "use_responses_api, reasoning, output_version 'responses/v1'), 'chat' (chat "
            "completions; OpenAI: pins use_responses_api=false) or 'responses' (OpenAI's "
            "/v1/responses: pins use_responses_api=true; other providers refuse it)."
        },
    )
    system_prompt: str = field(
        default="",
        metadata={
            "description": "System message prepended to every request that has none of its own."
        },
    )
    base_url: str = field(
        default="",
        metadata={
            "description": "Point the provider SDK at a compatible endpoint (a proxy, an "
            "OpenAI-compatible server, or the emulator over loopback, e.g. "
            "http://127.0.0.1:8765/openai/v1). Keys still come from the environment."
        },
    )
    organization: str = field(
        default="",
        metadata={
            "description": "OpenAI organization the batch's files and jobs are created in. "
            "Empty means the SDK's default (OPENAI_ORG_ID, else the key's default organization)."
        },
    )
    completion_window: str = field(
        default="24h",
        metadata={
            "description": "How long the provider may take ('24h' for OpenAI and Anthropic; "
            "Mistral takes whole hours, 1h to 168h)."
        },
    )
    max_wait_seconds: float = field(
        default=0.0,
        metadata={
            "description": "How long one run may wait for the job, polling with growing "
            "intervals. 0 means one status check per run: invoke the thread again (or let a "
            "schedule do it) to poll later."
        },
    )
    poll_interval_seconds: float = field(
        default=5.0,
        metadata={"description": "First interval between status checks while waiting."},
    )
    poll_backoff: float = field(
        default=1.5,
        metadata={"description": "Factor by which the interval between checks grows."},
    )
    max_poll_interval_seconds: float = field(
        default=300.0,
        metadata={"description": "Upper bound of the interval between status checks."},
    )

    poll_jitter: float = field(
        default=0.1,
        metadata={
            "description": "Random spread (0.1 = ±10%) applied to each pause, so many threads "
            "polling the same provider do not fall into step."
        },
    )
    self_schedule: bool = field(
        default=True,
        metadata={
            "description": "On a LangGraph server: while a job is in flight, each run books the "
            "thread's next poll as a delayed run (following the poll interval and backoff), so "
            "the batch finishes with no client. Turn off to poll only when invoked. No effect "
            "under the standalone CLI."
        },
    )
    webhook_url: str = field(
        default="",
        metadata={
            "description": "POST a small JSON notice (status, counts, usage, cost, where to fetch "
            "the results) to this URL once, when the thread's results are collected. Set it on "
            "the assistant, or in a thread's run context (self-scheduled runs pass it on)."
        },
    )
    dedupe: bool = field(
        default=True,
        metadata={
            "description": "Pay once for identical requests: requests whose provider bodies are "
            "identical (same model, messages and parameters) are sent once and the answer is "
            "given to each of their ids. Turn off to send every request."
        },
    )
    max_attempts: int = field(
        default=3,
        metadata={
            "description": "How many jobs a request may go through: failed requests of retryable "
            "kinds (expired, rate limit, server error, timeout) are resubmitted in a follow-up job "
            "until this many attempts. 1 disables request-level retry."
        },
    )
    output_wait_seconds: float = field(
        default=1800.0,
        metadata={
            "description": "How long to keep polling a job that reports a terminal status but no "
            "output files yet (some providers publish them late) before collecting it as it is."
        },
    )
    validate_schema: bool = field(
        default=False,
        metadata={
            "description": "With a response schema: also validate each parsed answer against "
            "the JSON schema (jsonschema) and fail the ones that do not match (error code "
            "'schema'). Off by default, because realtime `.invoke()` does not validate: results "
            "are exactly what it returns (or raises)."
        },
    )
    keep_files: bool = field(
        default=False,
        metadata={
            "description": "Keep the batch's files at the provider (input, output and error "
            "files). By default they are deleted once the job's results are stored: they count "
            "against the provider's file storage (Gemini: 20 GB per project). A failed delete "
            "is logged and never fails the run."
        },
    )
    check_models: bool = field(
        default=True,
        metadata={
            "description": "Refuse, before uploading, models the provider's LangChain model "
            "profiles do not know. Turn off for new, fine-tuned or self-hosted models."
        },
    )
    max_requests_per_job: int = field(
        default=0,
        metadata={
            "description": "Cap on requests per job; 0 uses the provider's limit (OpenAI 50,000)."
        },
    )
    max_file_bytes: int = field(
        default=0,
        metadata={
            "description": "Cap on a job's input file size; 0 uses the provider's limit (OpenAI 200 MB)."
        },
    )

    max_enqueued_tokens: int = field(
        default=0,
        metadata={
            "description": "Quota: estimated input tokens one model's running jobs may hold "
            "at once (OpenAI's enqueued-token pool: e.g. 5M for gpt-5-mini at Tier 1). Jobs "
            "over it wait as intents and are sent in waves as earlier ones finish. 0: the "
            "provider's default (OpenAI: none; learned from its token_limit_exceeded refusals)."
        },
    )
    max_pending_requests: int = field(
        default=0,
        metadata={
            "description": "Quota: requests the thread's running jobs may hold at once. 0: the "
            "provider's default (Mistral 1,000,000 pending per workspace; others none)."
        },
    )
    max_concurrent_jobs: int = field(
        default=0,
        metadata={
            "description": "Quota: jobs the thread may have running at once. 0: the provider's "
            "default (Gemini 100 per project; others none)."
        },
    )
    max_stored_bytes: int = field(
        default=0,
        metadata={
            "description": "Quota: input-file bytes of the thread's running jobs. 0: the "
            "provider's default (Gemini 20 GB of file storage per project; others none)."
        },
    )

    deadline: str = field(
        default="",
        metadata={
            "description": "When the results are needed: an ISO 8601 time with its offset "
            "(2026-12-03T18:00:00+00:00) or a duration from when the batch is planned (90m, "
            "2h, 1d, 3600s). At the deadline minus deadline_margin_seconds, the jobs not "
            "finished are cancelled, every result already produced is kept, and (with a "
            "fallback) the missing requests are sent again outside the batch. Empty: none."
        },
    )
    fallback: Literal["none", "realtime", "flex"] = field(
        default="none",
        metadata={
            "description": "At the deadline, how the requests the batch did not answer are "
            "sent: 'realtime' (the provider's chat API, at the standard price), 'flex' "
            "(OpenAI's flex tier, slower, at the batch price; other providers refuse it) or "
            "'none' (they keep their error)."
        },
    )
    deadline_margin_seconds: float = field(
        default=600.0,
        metadata={
            "description": "How long before the deadline the batch is cancelled, so the "
            "fallback has time to send the missing requests."
        },
    )
    fallback_concurrency: int = field(
        default=8,
        metadata={"description": "How many fallback requests are in flight at once."},
    )

    results_in_state: int = field(
        default=1000,
        metadata={
            "description": "Keep results in thread state (as AIMessages) for batches up to this "
            "many requests; larger batches keep them only in the store, in pages."
        },
    )
    max_cost: float | None = field(
        default=None,
        metadata={
            "description": "Budget in USD: refuse, before anything is uploaded, a batch whose "
            "estimated batch cost (input tokens, plus output at max_tokens when every request "
            "has a cap) exceeds this, or whose price is unknown. Empty means no limit."
        },
    )
    price_override: str = field(
        default="",
        metadata={
            "description": "Prices to use instead of genai-prices', as JSON mapping a model "
            '(or "*" for any) to [input, output] USD per million tokens for the batch and/or '
            'realtime price, e.g. {"gpt-4o-mini": {"batch": [0.075, 0.3], "realtime": '
            "[0.15, 0.6]}}. A side left out keeps the database's price."
        },
    )

    def __post_init__(self) -> None:
        """Fill fields still at their default from `BATCH_AGENT_<FIELD>` variables."""
        for f in fields(self):
            env_value = os.environ.get(f"BATCH_AGENT_{f.name.upper()}")
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            if not env_value or getattr(self, f.name) != default:
                continue
            try:
                setattr(self, f.name, _coerce(env_value, default, f.name))
            except ValueError as exc:
                kind = _kind(default, f.name)
                raise InputError(
                    f"{env_value!r} is not {kind} ({exc})", source=f"BATCH_AGENT_{f.name.upper()}"
                ) from None

    def next_poll_interval(self, checks_done: int) -> float:
        """Return the pause before the next status check after `checks_done` waits.

        The pause grows geometrically from `poll_interval_seconds` by `poll_backoff` up to
        `max_poll_interval_seconds`, with `poll_jitter` spread. With the defaults (5 s, x1.5,
        300 s cap) a job that takes 24 hours costs about 300 status calls and is noticed at most
        about 5 minutes after it ends.
        """
        interval = min(
            self.poll_interval_seconds * (self.poll_backoff**checks_done),
            self.max_poll_interval_seconds,
        )
        spread = max(0.0, min(self.poll_jitter, 1.0))
        return float(interval * random.uniform(1.0 - spread, 1.0 + spread))


def _kind(default: Any, name: str) -> str:
    """Name the kind of value a field takes, for an error about its environment variable."""
    if isinstance(default, dict):
        return "a JSON object"
    if isinstance(default, float) or name in {"temperature", "top_p", "max_cost"}:
        return "a number"
    return "an integer"


def _coerce(raw: str, default: Any, name: str) -> Any:
    """Convert an environment string to the type of a field's default."""
    if isinstance(default, bool):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(default, dict):
        return json.loads(raw)
    if isinstance(default, float) or name in {"temperature", "top_p", "max_cost"}:
        return float(raw)
    if isinstance(default, int) or name == "max_tokens":
        return int(raw)
    return raw
