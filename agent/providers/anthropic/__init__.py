"""The Anthropic batch provider, `AnthropicProvider`.

`provider` makes the SDK calls, `reference` is the LangChain reference path (bodies and answers as
the chat model has them) and `fast` its parity-checked fast paths.
"""

from agent.providers.anthropic.provider import AnthropicProvider

__all__ = ["AnthropicProvider"]
