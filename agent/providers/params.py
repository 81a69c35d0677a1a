"""Refuse, before anything is uploaded, model parameters a provider documents as invalid.

Each provider module keeps one table (`PARAM_RULES`) of the numeric parameters whose type and
range its SDK or API reference states; `param_problem` checks a request's parameters against it
and `check_context_params` the run context's own (`--temperature`, `--max-tokens`, `top_p`).
A wrong value would otherwise be uploaded and come back as one failed request per line (or a
failed job), after the batch has waited in the provider's queue.

Only what a table names is checked, and only its type and bounds: a parameter the table does
not know is passed on as it is, for the provider to judge.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from agent.requests import InputError

# Where each run-context parameter is set, for the message that refuses it.
CONTEXT_SETTINGS: Mapping[str, str] = {
    "temperature": "--temperature, BATCH_AGENT_TEMPERATURE or the run context's 'temperature'",
    "max_tokens": "--max-tokens, BATCH_AGENT_MAX_TOKENS or the run context's 'max_tokens'",
    "top_p": "BATCH_AGENT_TOP_P or the run context's 'top_p'",
}
# Long values (a pasted prompt in the wrong field) are cut in messages.
_SHOWN_CHARS = 60


@dataclass(frozen=True)
class Allowed:
    """What one parameter may be: a number (or an integer) within inclusive bounds."""

    integer: bool = False
    minimum: float | None = None
    maximum: float | None = None

    def admits(self, value: Any) -> bool:
        """Tell whether `value` has the right type and lies within the bounds."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if isinstance(value, float):
            if math.isnan(value) or (self.integer and not value.is_integer()):
                return False
        if self.minimum is not None and value < self.minimum:
            return False
        return self.maximum is None or value <= self.maximum

    def describe(self) -> str:
        """Say what is allowed, e.g. "a number from 0 to 2" or "an integer of at least 1"."""
        kind = "an integer" if self.integer else "a number"
        low, high = self.minimum, self.maximum
        if low is not None and high is not None:
            return f"{kind} from {_number(low)} to {_number(high)}"
        if low is not None:
            return f"{kind} of at least {_number(low)}"
        if high is not None:
            return f"{kind} of at most {_number(high)}"
        return kind


ParamRules = Mapping[str, Allowed]


def param_problem(params: Mapping[str, Any], rules: ParamRules, provider: str) -> str | None:
    """Return a sentence about the first parameter `rules` refuse, or None if all pass.

    A None value means "not set" (the model's default applies) and is never refused.
    """
    for key, value in params.items():
        allowed = rules.get(key)
        if allowed is None or value is None or allowed.admits(value):
            continue
        return f"'{key}' is {_shown(value)}, but {provider} takes {allowed.describe()}"
    return None


def check_request_params(
    params: Mapping[str, Any],
    rules: ParamRules,
    provider: str,
    *,
    source: str,
    line: int | None,
    request_id: str,
) -> None:
    """Refuse a request whose own parameters break the provider's table.

    Raises:
        InputError: Naming the file, line, request id, parameter, value and allowed range.
    """
    problem = param_problem(params, rules, provider)
    if problem is not None:
        raise InputError(problem, source=source, line=line, request_id=request_id)


def check_context_params(params: Mapping[str, Any], rules: ParamRules, provider: str) -> None:
    """Refuse run-context parameters (the CLI's flags) that break the provider's table.

    Raises:
        InputError: Naming the parameter, its value, the allowed range and where it is set.
    """
    for key, value in params.items():
        problem = param_problem({key: value}, rules, provider)
        if problem is not None:
            where = CONTEXT_SETTINGS.get(key, f"the run context's {key!r}")
            raise InputError(f"{problem} (set by {where})", source="context")


def _number(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def _shown(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # JSON would say null
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."
