"""The model catalog: which models exist, which providers serve them (endpoints), at what price and with
which capabilities. A shipped default (catalog.yaml) is merged with an optional user file; both are
validated with pydantic at start-up and a bad entry fails fast with its path."""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_CATALOG = Path(__file__).with_name("catalog.yaml")
Kind = Literal["transcription", "speech"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Pricing(_Strict):
    """USD. Exactly the units the provider bills in."""
    per_second: float | None = None
    per_minute: float | None = None
    per_million_characters: float | None = None
    per_million_input_tokens: float | None = None
    per_million_output_tokens: float | None = None
    per_request: float = 0.0
    minimum_seconds: float = 0.0  # some providers bill a minimum duration per request

    @model_validator(mode="after")
    def _minute_to_second(self) -> "Pricing":
        if self.per_minute is not None and self.per_second is None:
            self.per_second = self.per_minute / 60.0
        return self

    @property
    def unit(self) -> str:
        if self.per_second is not None:
            return "seconds"
        if self.per_million_characters is not None:
            return "characters"
        if self.per_million_input_tokens is not None or self.per_million_output_tokens is not None:
            return "tokens"
        return "requests"


class Limits(_Strict):
    max_bytes: int | None = None
    max_seconds: float | None = None
    max_characters: int | None = None


class Capabilities(_Strict):
    translation: bool = False
    verbose_json: bool = True
    word_timestamps: bool = False
    diarization: bool = False
    prompt: bool = False
    keyterms: bool = False
    temperature: bool = True
    language: bool = True
    speed: bool = False
    instructions: bool = False
    streaming: bool = False


class Endpoint(_Strict):
    provider: str
    upstream_model: str
    pricing: Pricing = Field(default_factory=Pricing)
    input_formats: list[str] | None = None    # transcription: containers the provider accepts (None = any)
    output_formats: list[str] | None = None   # speech: formats it can produce natively
    limits: Limits = Field(default_factory=Limits)
    capabilities: Capabilities = Field(default_factory=Capabilities)
    zdr: bool = False
    data_collection: Literal["allow", "deny"] = "deny"
    substitute: bool = False  # a local engine standing in for a model whose upstream is not configured
    voice_map: dict[str, str] = Field(default_factory=dict)  # public voice name -> provider voice name

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.upstream_model}"


class Model(_Strict):
    id: str
    name: str
    kind: Kind
    description: str = ""
    created: int = 1767225600
    voices: list[str] = Field(default_factory=list)
    default_voice: str | None = None
    languages: list[str] | None = None
    endpoints: list[Endpoint]

    @model_validator(mode="after")
    def _check(self) -> "Model":
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


class Provider(_Strict):
    name: str
    adapter: str
    base_url: str | None = None
    api_key_env: str | None = None
    api_key: str | None = None
    timeout_s: float = 60.0
    options: dict[str, Any] = Field(default_factory=dict)

    def resolved_key(self) -> str | None:
        if self.api_key:
            return self.api_key
        return os.environ.get(self.api_key_env) if self.api_key_env else None


class CatalogFile(_Strict):
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
                    raise CatalogError(f"model {m.id!r}: endpoint provider {e.provider!r} is not defined under providers")

    @classmethod
    def load(cls, user_path: str | os.PathLike | None = None, *, default_path: Path = DEFAULT_CATALOG) -> "Catalog":
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
