"""Batch providers behind one interface (`BatchProvider`), and the rule that picks one.

Each provider is a package (`agent.providers.openai`, `.mistral`, `.anthropic`, `.gemini`) of its SDK calls
(`provider`), its LangChain reference path (`reference`) and its parity-checked fast paths
(`fast`, on the shared kit `agent.providers.fast`); `agent.providers.base` holds the interface
and what providers share, `agent.providers.registry` the lookup.
"""

from agent.providers.base import BatchProvider
from agent.providers.errors import ProviderError
from agent.providers.registry import (
    PROVIDERS,
    provider_class,
    provider_for_job,
    resolve_provider,
)
from agent.secrets import API_KEY_ENV

__all__ = [
    "API_KEY_ENV",
    "PROVIDERS",
    "BatchProvider",
    "ProviderError",
    "provider_class",
    "provider_for_job",
    "resolve_provider",
]
