"""The model catalog: which models exist, which providers serve them (endpoints), at what price and with
which capabilities. A shipped default (catalog.yaml) is merged with an optional user file; both are
validated with pydantic at start-up and a bad entry fails fast with its path."""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from ..core.endpoint import Capabilities, Endpoint, Limits, Pricing, Provider, Strict

__all__ = [
    "DEFAULT_CATALOG",
    "Capabilities",
    "Catalog",
    "CatalogError",
    "CatalogFile",
    "Endpoint",
    "Kind",
    "Limits",
    "Model",
    "Pricing",
    "Provider",
    "VoiceInfo",
]

DEFAULT_CATALOG = Path(__file__).with_name("catalog.yaml")
Kind = Literal["transcription", "speech", "chat"]


class VoiceInfo(Strict):
    """What is known of one voice of a speech model (all optional)."""
    name: str | None = None
    language: str | None = None      # BCP-47 ("en-GB") or ISO-639-1
    gender: str | None = None        # as the provider lists it
    preview_text: str | None = None  # a sentence to preview this voice with (else the model's)


class Model(Strict):
    id: str
    name: str
    kind: Kind
    description: str = ""
    created: int = 1767225600
    expiration_date: str | None = None  # the provider's announced shutdown date (YYYY-MM-DD), OpenRouter's field
    voices: list[str] = Field(default_factory=list)
    voice_details: dict[str, VoiceInfo] = Field(default_factory=dict)  # voice -> what is known of it
    voice_preview_text: str | None = None
    default_voice: str | None = None
    languages: list[str] | None = None
    endpoints: list[Endpoint]

    @model_validator(mode="after")
    def _check(self) -> Model:
        if "/" not in self.id:
            raise ValueError("id must be author/slug")
        if self.kind == "speech" and self.voices and self.default_voice is None:
            self.default_voice = self.voices[0]
        return self

    @property
    def author(self) -> str:
        return self.id.split("/", 1)[0]

    @property
    def slug(self) -> str:
        return self.id.split("/", 1)[1]


class CatalogFile(Strict):
    providers: dict[str, Provider] = Field(default_factory=dict)
    models: list[Model] = Field(default_factory=list)


class CatalogError(RuntimeError):
    pass


def _load_file(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        raise CatalogError(f"{path}: {e}") from None
    if not isinstance(raw, dict):
        raise CatalogError(f"{path}: the top level must be a mapping with 'providers' and 'models'")
    return raw


def _validate(raw: dict[str, Any], path: Path) -> CatalogFile:
    try:
        return CatalogFile.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        loc = first["loc"]
        where = ".".join(str(p) for p in loc)
        # name the model by id when the error is inside models[i]
        if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int):
            try:
                where += f" (model {raw['models'][loc[1]].get('id')!r})"
            except (KeyError, IndexError, AttributeError, TypeError):
                pass
        raise CatalogError(f"{path}: invalid catalog entry at {where}: {first['msg']}") from None


class Catalog:
    def __init__(self, data: CatalogFile):
        self.providers = data.providers
        self.models: dict[str, Model] = {m.id: m for m in data.models}
        for m in self.models.values():
            for e in m.endpoints:
                if e.provider not in self.providers:
                    raise CatalogError(f"model {m.id!r}: endpoint provider {e.provider!r} is not defined under "
                                       "providers")

    @classmethod
    def load(cls, user_path: str | os.PathLike | None = None, *, default_path: Path = DEFAULT_CATALOG) -> Catalog:
        base = _validate(_load_file(default_path), default_path)
        if user_path:
            p = Path(user_path)
            user = _validate(_load_file(p), p)
            base.providers.update(user.providers)
            by_id = {m.id: m for m in base.models}
            for m in user.models:
                by_id[m.id] = m  # a user entry replaces the shipped one whole
            base.models = list(by_id.values())
        return cls(base)

    def find(self, model_id: str) -> Model | None:
        m = self.models.get(model_id)
        if m is not None:
            return m
        if "/" not in model_id:  # bare slug ("whisper-1"), accepted when unambiguous
            hits = [x for x in self.models.values() if x.slug == model_id]
            if len(hits) == 1:
                return hits[0]
        return None

    def suggestions(self, model_id: str, kind: Kind | None = None, n: int = 3) -> list[str]:
        ids = [m.id for m in self.models.values() if kind is None or m.kind == kind]
        close = difflib.get_close_matches(model_id, ids, n=n, cutoff=0.3)
        if not close:
            slug = model_id.split("/")[-1]
            close = [i for i in ids if slug and slug in i][:n]
        return close

    def by_kind(self, kind: Kind) -> list[Model]:
        return [m for m in self.models.values() if m.kind == kind]
