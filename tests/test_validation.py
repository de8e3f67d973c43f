"""api/validation.py: pydantic models' first error as the house 400 naming the field (the keys API and the
audio requests' options use it; tests/test_keys.py and tests/test_form_routing.py check it over HTTP)."""
from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import AfterValidator, BeforeValidator, Field

from audiorouter.api.validation import Body, FormBool, Strings, as_number, field_name, in_range, kind, validate
from audiorouter.core.errors import InvalidRequest


class Inner(Body):
    ratio: Annotated[float, BeforeValidator(as_number), AfterValidator(in_range(0.0, 1.0))] | None = None


class Outer(Body):
    name: Annotated[str, Field(min_length=1)]
    flag: FormBool | None = None
    tags: Strings | None = None
    inner: Inner | None = None
    table: dict[str, Inner] | None = None


def error(data) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as e:
        validate(Outer, data)
    return e.value


@pytest.mark.parametrize(("data", "param", "message"), [
    ({}, "name", "name: required field is missing"),
    ({"name": 5}, "name", "name: expected a string, got number"),
    ({"name": ""}, "name", "name: must not be empty"),
    ({"name": "x", "flag": "maybe"}, "flag", "flag: expected a boolean (true or false), got 'maybe'"),
    ({"name": "x", "tags": ["a", 3]}, "tags[1]", "tags[1]: expected a string, got number"),
    ({"name": "x", "inner": {"ratio": "2"}}, "inner.ratio", "inner.ratio: 2 is out of range; it must be between 0 and 1"),
    ({"name": "x", "inner": {"ratio": True}}, "inner.ratio", "inner.ratio: expected a number, got boolean"),
    ({"name": "x", "inner": []}, "inner", "inner: expected an object, got array"),
    ({"name": "x", "table": {"a": {"ratio": "x"}}}, "table.a.ratio", "table.a.ratio: expected a number, got 'x'"),
])
def test_first_error_names_the_field(data, param, message):
    e = error(data)
    assert e.param == param and e.status == 400
    if message is not None:
        assert e.message == message


def test_form_strings_are_taken():
    v = validate(Outer, {"name": "x", "flag": "1", "tags": "one", "inner": {"ratio": " 0.5 "}, "other": 1})
    assert v.flag is True and v.tags == ["one"] and v.inner is not None and v.inner.ratio == 0.5


def test_not_an_object():
    with pytest.raises(InvalidRequest) as e:
        validate(Outer, [1])
    assert e.value.param == "body"


def test_helpers():
    assert field_name(("a", 0, "b"), "provider.") == "provider.a[0].b"
    assert field_name(()) == "body"
    assert [kind(v) for v in (None, True, 1, "s", [], {})] == ["null", "boolean", "number", "string", "array",
                                                                "object"]
