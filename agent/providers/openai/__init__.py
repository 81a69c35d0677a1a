"""The OpenAI batch provider, `OpenAIProvider`.

`provider` makes the SDK calls, `reference` is the LangChain reference path (bodies and answers as
the chat model has them) and `fast` its parity-checked fast paths.
"""

from agent.providers.openai.provider import OpenAIProvider

__all__ = ["OpenAIProvider"]
