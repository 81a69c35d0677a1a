"""A provider quota budget: what may be in flight at once (`agent.quotas` applies it).

Its own module so each provider can declare its documented defaults
(`BatchProvider.quota_defaults`) without importing the wave logic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from agent.context import Context

Limit = Literal["tokens", "requests", "jobs", "bytes"]
"""What a budget caps: enqueued input tokens (per model), pending requests, jobs, stored bytes."""

LIMITS: tuple[Limit, ...] = ("tokens", "requests", "jobs", "bytes")


@dataclass(frozen=True)
class Budget:
    """What may be in flight at once; None leaves a limit open."""

    tokens: int | None = None
    """Enqueued (estimated) input tokens of one model's running jobs (OpenAI's pool per model)."""
    requests: int | None = None
    """Requests of running jobs (Mistral: pending requests per workspace)."""
    jobs: int | None = None
    """Running jobs (Gemini: concurrent batch jobs per project)."""
    bytes: int | None = None
    """Input bytes of running jobs (Gemini: file storage per project)."""

    def lowered(self, other: Mapping[str, int | None]) -> Budget:
        """Return this budget with each limit `other` sets taken where it is lower."""
        values = {}
        for f in fields(self):
            mine, theirs = getattr(self, f.name), other.get(f.name)
            values[f.name] = (
                theirs if mine is None or (theirs is not None and theirs < mine) else mine
            )
        return Budget(**values)


# The context field that sets each limit (0 leaves the provider's default).
CONTEXT_FIELDS: dict[Limit, str] = {
    "tokens": "max_enqueued_tokens",
    "requests": "max_pending_requests",
    "jobs": "max_concurrent_jobs",
    "bytes": "max_stored_bytes",
}


def configured_budget(defaults: Budget, ctx: Context) -> Budget:
    """Return a provider's default budget lowered by the run's context settings."""
    return defaults.lowered(
        {limit: getattr(ctx, CONTEXT_FIELDS[limit]) or None for limit in LIMITS}
    )
