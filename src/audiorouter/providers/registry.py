"""Adapter name (as used in the catalog's providers.<slug>.adapter) -> adapter class, imported lazily so a
provider module is only loaded when the catalog uses it."""
from __future__ import annotations

import importlib
from typing import Any

from .base import ProviderAdapter

ADAPTERS: dict[str, str] = {
    "local": "audiorouter.providers.local:LocalProvider",
    "openai": "audiorouter.providers.openai:OpenAIProvider",
    "openai_compatible": "audiorouter.providers.openai_compatible:OpenAICompatibleProvider",
    "groq": "audiorouter.providers.groq:GroqProvider",
    "google": "audiorouter.providers.google:GoogleProvider",
    "mistral": "audiorouter.providers.mistral:MistralProvider",
    "deepgram": "audiorouter.providers.deepgram:DeepgramProvider",
    "elevenlabs": "audiorouter.providers.elevenlabs:ElevenLabsProvider",
    "openrouter": "audiorouter.providers.openrouter:OpenRouterProvider",
}


def adapter_class(name: str) -> type[ProviderAdapter] | None:
    target = ADAPTERS.get(name)
    if target is None:
        return None
    module, _, cls = target.partition(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ModuleNotFoundError as e:
        if e.name == module:  # adapter not written yet / not installed
            return None
        raise


def build_adapters(catalog: Any, settings: Any) -> dict[str, ProviderAdapter]:
    out: dict[str, ProviderAdapter] = {}
    for slug, spec in catalog.providers.items():
        cls = adapter_class(spec.adapter)
        if cls is not None:
            out[slug] = cls(slug, spec, settings)
    return out
