"""Which provider a batch goes to: the registry of providers and the rule that picks one.

`resolve_provider` picks the provider for a new submission: the explicit setting first, else the
first provider, in `PROVIDERS` order (OpenAI, Mistral, Anthropic, Gemini), one of whose API key
variables is set (`agent.secrets.API_KEY_ENV`), else the offline emulator (announced once, since
its answers are synthetic). A provider named explicitly without its key (and without a
`base_url`) runs against the emulator's protocol of that provider. `provider_for_job` rebuilds the provider a job was created with, so polling and
collecting keep talking to the same endpoint even if the run context changed.

A job records its endpoint without its password (`agent.secrets.redact_url`): a base URL such
as `http://user:secret@proxy/v1` is kept as `http://user:***@proxy/v1`, and the secret is taken
again from the run that polls, whose `base_url` must be the same URL.
"""

from __future__ import annotations

import importlib
import logging

from agent.context import Context
from agent.providers.base import BatchProvider, ProviderError
from agent.requests import InputError
from agent.secrets import key_variable, key_variables_text, redact_url, url_has_secret
from agent.state import Job

logger = logging.getLogger("batch_agent")

# name -> "module:class"; modules are imported on first use, since each pulls in its SDK and
# LangChain integration (about a second of start-up for a provider the run does not use).
PROVIDERS: dict[str, str] = {
    "openai": "agent.providers.openai.provider:OpenAIProvider",
    "mistral": "agent.providers.mistral.provider:MistralProvider",
    "anthropic": "agent.providers.anthropic.provider:AnthropicProvider",
    "gemini": "agent.providers.gemini.provider:GeminiProvider",
}


def provider_class(name: str) -> type[BatchProvider]:
    """Import and return the provider class registered under `name`."""
    module, _, attribute = PROVIDERS[name].partition(":")
    cls: type[BatchProvider] = getattr(importlib.import_module(module), attribute)
    return cls


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
        choice = next((name for name in PROVIDERS if key_variable(name)), "emulator")
    if choice == "emulator":
        # The emulator speaks several protocols; plain "emulator" means the OpenAI one.
        choice, emulated = "openai", True
    else:
        emulated = not context.base_url and key_variable(choice) is None
    if emulated:
        _announce_emulator(choice)
    base_url = "" if emulated else context.base_url
    return _provider(provider_class(choice), emulated, base_url, context.organization)


def provider_for_job(job: Job, context: Context | None = None) -> BatchProvider:
    """Rebuild the provider client that created `job` (same endpoint, same organization).

    Args:
        job: The job record.
        context: The run's settings, which supply the password of an endpoint that has one
            (None: the running graph's context, else the environment's `BATCH_AGENT_*`).

    Raises:
        ProviderError: The job names an unknown provider, or its endpoint's password is needed
            and the run's `base_url` is not that endpoint.
    """
    try:
        cls = provider_class(job["provider"])
    except KeyError:
        raise ProviderError(
            f"job {job['job_id']} names unknown provider {job['provider']!r}"
        ) from None
    endpoint = job_base_url(job, context)
    return _provider(cls, job["emulated"], endpoint, job.get("organization") or "")


def job_base_url(job: Job, context: Context | None = None) -> str:
    """Return the base URL to reach `job` at, its password supplied by the run's `base_url`.

    Raises:
        ProviderError: The stored endpoint had a password and the run's `base_url` is not the
            same URL (the message says what to pass, and holds no password).
    """
    stored = job["base_url"]
    if not url_has_secret(stored) or redact_url(stored) != stored:
        # No password, or a job recorded before passwords were masked (it holds the whole URL).
        return stored
    current = (context or _run_context()).base_url
    if current and redact_url(current) == stored:
        return current
    name = job["job_id"] or f"intent {job['job_key']}"
    raise ProviderError(
        f"job {name} runs at {stored}, whose password is not stored: pass that URL in full "
        "again (--base-url, BATCH_AGENT_BASE_URL or the run context's base_url)"
    )


def _run_context() -> Context:
    """Return the context of the graph run in progress, else one from the environment."""
    from langgraph.runtime import get_runtime

    try:
        context = get_runtime(Context).context
    except (RuntimeError, AttributeError):  # not inside a graph run
        return Context()
    return context if isinstance(context, Context) else Context()


def _provider(
    cls: type[BatchProvider], emulated: bool, base_url: str, organization: str
) -> BatchProvider:
    if not organization:
        return cls(emulated=emulated, base_url=base_url)
    if cls.name != "openai":
        raise InputError(
            f"organization is an OpenAI setting; the {cls.name} provider has none",
            source="context",
        )
    return cls(emulated=emulated, base_url=base_url, organization=organization)  # type: ignore[call-arg]


def _announce_emulator(protocol: str) -> None:
    if protocol in _announced:
        return
    _announced.add(protocol)
    logger.warning(
        "No %s set: using the offline batch emulator (%s protocol); its answers are synthetic.",
        key_variables_text(protocol),
        protocol,
    )
