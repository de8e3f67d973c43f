"""Request fields checked by pydantic models: the management API's bodies (api/keys.py), and the options of
the audio requests (api/parsing.py: the `provider` object, a transcription's fields). The first error becomes
the house 400, `InvalidRequest("<field>: <what is wrong>", param=<field>)`, rendered in the caller's dialect
by api/errors.py. Models are strict (no "1" for 1, no 1 for true) and ignore fields they do not know, as the
OpenRouter API does; the form-friendly types below (FormBool, Strings, Number) also take the strings an HTML
form or multipart body carries.

What stays hand-written is what is measured (docs/benchmarks.md): the body scanner (api/json_body.py), the
multipart splitter and the audio field (input_audio.data / file) in api/parsing.py."""
from __future__ import annotations

import math
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from ..core.errors import InvalidRequest

M = TypeVar("M", bound=BaseModel)


class Body(BaseModel):
    """Base of the request-body models: strict types, unknown fields ignored, whitespace kept as sent
    (string fields that strip say so with StringConstraints)."""
    model_config = ConfigDict(strict=True, extra="ignore")


def kind(v: Any) -> str:
    """A JSON value's kind, as the messages name it."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    if hasattr(v, "filename"):  # a form's file part (UploadFile, api/multipart.py's FilePart)
        return "a file upload"
    return type(v).__name__


# ---- form-friendly types ---------------------------------------------------------------------------------
def _form_bool(v: Any) -> Any:
    if isinstance(v, str) and v.strip().lower() in ("true", "false", "1", "0"):
        return v.strip().lower() in ("true", "1")
    if v is None or isinstance(v, bool):
        return v
    got = f"{v[:40]!r}" if isinstance(v, str) else kind(v)
    raise ValueError(f"expected a boolean (true or false), got {got}")


def _one_or_many(v: Any) -> Any:
    return [v] if isinstance(v, str) else v  # a form field sent once is a list of one


def as_number(v: Any) -> Any:
    """Before-validator: a finite number, or a numeric string as forms send it."""
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {v[:40]!r}") from None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"expected a number, got {kind(v)}")
    try:
        v = float(v)
    except OverflowError:
        v = math.inf
    if not math.isfinite(v):
        raise ValueError("expected a finite number")
    return v


def in_range(lo: float | None, hi: float | None) -> Any:
    """After-validator: within [lo, hi], said the way the 400s say it."""
    def check(v: float) -> float:
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            bound = (f"between {lo:g} and {hi:g}" if lo is not None and hi is not None
                     else f"at least {lo:g}" if lo is not None else f"at most {hi:g}")
            raise ValueError(f"{v:g} is out of range; it must be {bound}")
        return v
    return check


FormBool = Annotated[bool, BeforeValidator(_form_bool)]          # true/false, or "true"/"false"/"1"/"0"
Strings = Annotated[list[str], BeforeValidator(_one_or_many)]   # a list of strings; one string is a list of one
# e.g. Annotated[float, BeforeValidator(as_number), AfterValidator(in_range(0, 1))]: a number from 0 to 1


def field_name(loc: tuple[int | str, ...], prefix: str = "") -> str:
    """('allowed_models', 2) -> 'allowed_models[2]'."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out and not out.endswith(".") else part
    return out or "body"


def describe(err: ErrorDetails) -> str:
    """What is wrong, in the words of the hand-written checks this replaced."""
    t, ctx, got = err["type"], err.get("ctx") or {}, err.get("input")
    if t == "missing":
        return "required field is missing"
    if t == "value_error":
        return str(ctx.get("error", err["msg"]))
    if t == "string_type":
        return f"expected a string, got {kind(got)}"
    if t == "bool_type":
        return f"expected true or false, got {kind(got)}"
    if t in ("int_type", "int_from_float", "int_parsing"):
        return f"expected an integer, got {kind(got)}"
    if t in ("float_type", "float_parsing"):
        return f"expected a number, got {kind(got)}"
    if t == "finite_number":
        return "expected a finite number"
    if t == "greater_than_equal":
        return f"must be at least {ctx['ge']:g}"
    if t == "less_than_equal":
        return f"must be at most {ctx['le']:g}"
    if t == "string_too_short":
        return "must not be empty" if ctx.get("min_length") == 1 else f"at least {ctx['min_length']} characters"
    if t == "string_too_long":
        return f"at most {ctx['max_length']} characters"
    if t == "list_type":
        return f"expected a list, got {kind(got)}"
    if t == "dict_type":
        return f"expected an object, got {kind(got)}"
    if t == "too_short":
        return "must not be empty"
    if t == "literal_error":
        return f"{str(got)[:40]!r} is not one of {ctx['expected']}"
    if t == "model_type":
        return f"expected an object, got {kind(got)}"
    return str(err["msg"])


def invalid(e: ValidationError, prefix: str = "") -> InvalidRequest:
    err = e.errors(include_url=False)[0]
    name = field_name(tuple(err["loc"]), prefix)
    return InvalidRequest(f"{name}: {describe(err)}", param=name)


def validate(model: type[M], data: Any, *, prefix: str = "") -> M:
    """`data` as a `model`, or the 400 naming the first bad field."""
    if not isinstance(data, dict):
        raise InvalidRequest(f"body: expected a JSON object, got {kind(data)}", param="body")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise invalid(e, prefix) from None
