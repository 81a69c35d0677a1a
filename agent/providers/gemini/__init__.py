"""The Gemini batch provider (Gemini Developer API, google-genai), `GeminiProvider`.

`provider` makes the SDK calls, `reference` is the LangChain reference path (requests and answers
as `ChatGoogleGenerativeAI` has them) and `fast` its parity-checked fast paths.
"""

from agent.providers.gemini.provider import GeminiProvider

__all__ = ["GeminiProvider"]
