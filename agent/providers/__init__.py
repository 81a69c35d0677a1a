"""Batch providers behind one interface, and the rule that picks one.

`resolve_provider` picks the provider for a new submission: the explicit setting first, else the
provider whose API key is set, else the offline emulator (announced once, since its answers are
synthetic). `provider_for_job` rebuilds the provider a job was created with, so polling and
collecting keep talking to the same endpoint even if the run context changed.
"""

from __future__ import annotations

import logging
import os

from agent.context import Context
from agent.providers.base import BatchProvider, ProviderError
from agent.providers.mistral import MistralProvider
from agent.providers.openai import OpenAIProvider
from agent.requests import InputError
from agent.state import Job

__all__ = ["BatchProvider", "ProviderError", "resolve_provider", "provider_for_job", "PROVIDERS"]

logger = logging.getLogger("batch_agent")

PROVIDERS: dict[str, type[BatchProvider]] = {"openai": OpenAIProvider, "mistral": MistralProvider}
API_KEY_ENV = {"openai": "OPENAI_API_KEY", "mistral": "MISTRAL_API_KEY"}
_announced: set[str] = set()


def resolve_provider(context: Context) -> BatchProvider:
    """Return the provider a new batch should be sent to.

    Args:
        context: The run's settings (`provider`, `base_url`).

    Raises:
        InputError: The provider name is unknown (a setting to fix, not a provider fault).
    """
    choice = (context.provider or "auto").strip().lower()
    if choice not in {"auto", "emulator", *PROVIDERS}:
        raise InputError(
            f"unknown provider {context.provider!r} (expected one of: auto, emulator, {', '.join(PROVIDERS)})",
            source="context",
        )
    if choice == "auto":
        choice = next(
            (name for name, env in API_KEY_ENV.items() if os.environ.get(env)), "emulator"
        )
    if choice == "emulator":
        # The emulator speaks several protocols; plain "emulator" means the OpenAI one.
        choice, emulated = "openai", True
    else:
        emulated = not context.base_url and not os.environ.get(API_KEY_ENV[choice])
    if emulated:
        _announce_emulator(choice)
    return PROVIDERS[choice](emulated=emulated, base_url="" if emulated else context.base_url)


def provider_for_job(job: Job) -> BatchProvider:
    """Rebuild the provider client that created `job`."""
    try:
        cls = PROVIDERS[job["provider"]]
    except KeyError:
        raise ProviderError(
            f"job {job['job_id']} names unknown provider {job['provider']!r}"
        ) from None
    return cls(emulated=job["emulated"], base_url=job["base_url"])


def _announce_emulator(protocol: str) -> None:
    if protocol in _announced:
        return
    _announced.add(protocol)
    logger.warning(
        "No %s set: using the offline batch emulator (%s protocol); its answers are synthetic.",
        API_KEY_ENV[protocol],
        protocol,
    )
