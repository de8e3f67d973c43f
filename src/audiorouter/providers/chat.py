"""Which chat client speaks for a provider adapter: OpenAI's chat wire protocol (providers/openai_chat.py) for
the adapters of OpenAI-compatible upstreams, Mistral's variant of it (providers/mistral_chat.py) for `mistral`,
Gemini's generateContent (providers/gemini_chat.py) for `google`,
the in-process LLM (providers/local_chat.py) for `local`. One
client per adapter, made on first use and kept on it."""
from __future__ import annotations

from typing import Any

from .base import ProviderAdapter

# catalog adapter names whose upstream serves POST {base_url}/chat/completions in OpenAI's shape
OPENAI_CHAT_ADAPTERS = ("openai", "openai_compatible", "openrouter", "groq")


def chat_client(adapter: ProviderAdapter | None) -> Any:
    if adapter is None:
        return None
    client = adapter.__dict__.get("_chat_client")
    if client is not None:
        return client
    kind = adapter.spec.adapter
    if kind == "local":
        from .local_chat import LocalChat
        client = LocalChat(adapter.settings)
    elif kind == "google":
        from .gemini_chat import GeminiChat
        client = GeminiChat(adapter)
    elif kind == "mistral" and hasattr(adapter, "post_checked"):
        from .mistral_chat import MistralChat
        client = MistralChat(adapter)  # type: ignore[arg-type]
    elif kind in OPENAI_CHAT_ADAPTERS and hasattr(adapter, "post_checked"):
        from .openai_chat import OpenAIChat
        client = OpenAIChat(adapter)  # type: ignore[arg-type]
    else:
        return None
    adapter.__dict__["_chat_client"] = client
    return client
