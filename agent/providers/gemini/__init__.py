"""The Gemini batch provider (Gemini Developer API, google-genai).

`reference` is the LangChain reference path (requests and answers as `ChatGoogleGenerativeAI`
has them) and `fast` its parity-checked fast paths; the SDK calls (`provider`) come next.
"""
