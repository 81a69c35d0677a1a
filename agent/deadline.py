"""A batch's deadline: parsing the setting, fixing it once, and telling when it is due.

`Context.deadline` is an ISO 8601 time with an offset (`2026-12-03T18:00:00+00:00`, `...Z`) or a
duration (`90m`, `2h`, `1d`, `3600s`, counted from when the thread plans its batch). A duration
is resolved to an absolute time once, when the thread plans (`State.deadline_at`), so invoking
the thread again later never moves it. The deadline is *due* `deadline_margin_seconds` before
it: the graph's `deadline` node then cancels what has not finished, and the `fallback` node
sends the requests the batch did not answer through the provider's chat API (`agent.fallback`).

Every time is read from `agent.pause.now`: the wall clock, or a test's virtual clock.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from agent.context import Context
from agent.providers.base import NOT_RUN_CODES, RETRYABLE_CODES, BatchProvider
from agent.requests import InputError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
FALLBACKS = ("none", "realtime", "flex")
# The codes of a request the batch never answered (cancelled, expired, never sent, lost, or a
# passing fault such as a rate limit): worth sending again. A request error (a 400, a refusal,
# a parse failure) would fail the same way in realtime, and is left alone.
MISSING_CODES = frozenset(RETRYABLE_CODES | NOT_RUN_CODES | {"canceled", "cancelled", "expired"})


def parse_deadline(text: str, now: float) -> float | None:
    """Return the deadline `text` stands for, in epoch seconds (None for an empty setting).

    Args:
        text: An ISO 8601 time with an offset, or a duration (`90m`, `2h`, `1d`, `3600s`).
        now: The time a duration counts from.

    Raises:
        InputError: `text` is neither, has no offset, or is not after `now`.
    """
    text = (text or "").strip()
    if not text:
        return None
    match = _DURATION.match(text)
    if match:
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        if seconds <= 0:
            raise InputError(f"deadline {text!r} must be a positive duration", source="context")
        return now + seconds
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(
            f"deadline {text!r} is neither an ISO 8601 time with an offset "
            "(2026-12-03T18:00:00+00:00) nor a duration (90m, 2h, 1d, 3600s)",
            source="context",
        ) from None
    if when.tzinfo is None:
        raise InputError(
            f"deadline {text!r} has no UTC offset: add one (e.g. +00:00 or Z), so every "
            "process reads the same time",
            source="context",
        )
    at = when.timestamp()
    if at <= now:
        raise InputError(
            f"deadline {text!r} is already past ({datetime.fromtimestamp(now).astimezone().isoformat(timespec='seconds')} now)",
            source="context",
        )
    return at


def check_settings(ctx: Context, provider: BatchProvider, now: float) -> float | None:
    """Check the run's deadline settings before anything is uploaded; return the deadline.

    Args:
        ctx: The run's settings.
        provider: The provider the batch goes to (what fallback it offers).
        now: The time a duration deadline counts from (when the thread plans).

    Returns:
        The absolute deadline (epoch seconds), or None when the run has none.

    Raises:
        InputError: A setting is invalid, or the provider cannot run the chosen fallback.
    """
    if ctx.fallback not in FALLBACKS:
        raise InputError(
            f"fallback {ctx.fallback!r} is not one of: {', '.join(FALLBACKS)}", source="context"
        )
    if ctx.deadline_margin_seconds < 0:
        raise InputError(
            f"deadline_margin_seconds must be 0 or more, got {ctx.deadline_margin_seconds}",
            source="context",
        )
    if ctx.fallback_concurrency < 1:
        raise InputError(
            f"fallback_concurrency must be 1 or more, got {ctx.fallback_concurrency}",
            source="context",
        )
    at = parse_deadline(ctx.deadline, now)
    if ctx.fallback == "none":
        return at
    if at is None:
        raise InputError(
            f"fallback {ctx.fallback!r} needs a deadline (e.g. --deadline 2h)", source="context"
        )
    if ctx.fallback == "flex" and not provider.flex_tier:
        raise InputError(
            f"fallback 'flex' is not available for {provider.name}: its chat API has no flex "
            "tier at the batch price that batch-agent can send (OpenAI and Gemini only); use "
            "--fallback realtime or none",
            source="context",
        )
    if not provider.realtime_fallback:
        raise InputError(
            f"fallback {ctx.fallback!r} is not available for {provider.name} yet: batch-agent "
            "cannot re-send its batch lines in realtime; use --fallback none",
            source="context",
        )
    return at


def deadline_at(state: Mapping[str, Any]) -> float | None:
    """Return the thread's deadline (epoch seconds), fixed when it planned; None: none."""
    at = state.get("deadline_at")
    return float(at) if at is not None else None


def deadline_due(state: Mapping[str, Any], ctx: Context, now: float) -> bool:
    """Tell whether the thread's deadline, less the margin, has come and is not handled yet."""
    left = seconds_until_due(state, ctx, now)
    return left is not None and left <= 0


def has_fallback(state: Mapping[str, Any]) -> bool:
    """Tell whether the thread was planned with a deadline and a fallback to send at it."""
    return deadline_at(state) is not None and state.get("fallback_tier", "none") != "none"


def seconds_until_due(state: Mapping[str, Any], ctx: Context, now: float) -> float | None:
    """Return how long until the deadline (less the margin) is due; None: no deadline pending.

    A served thread books its next poll no later than that (`agent.scheduling`).
    """
    at = deadline_at(state)
    if at is None or state.get("deadline_hit"):
        return None
    return max(0.0, at - max(0.0, ctx.deadline_margin_seconds) - now)


def is_missing(result: Mapping[str, Any]) -> bool:
    """Tell whether a stored result is a request the batch never answered (worth re-sending).

    A copy of an identical request (`duplicate_of`) is answered with its original.
    """
    if result.get("status") != "failed" or result.get("duplicate_of"):
        return False
    error = result.get("error") or {}
    return str(error.get("code") or "") in MISSING_CODES
