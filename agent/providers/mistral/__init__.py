"""The Mistral batch provider, `MistralProvider`.

`provider` makes the SDK calls, `reference` is the LangChain reference path (bodies and answers as
the chat model has them) and `fast` its parity-checked fast paths.
"""

from agent.providers.mistral.provider import MistralProvider

__all__ = ["MistralProvider"]
