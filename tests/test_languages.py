"""The one language table (core/languages.py): every way a client or provider names a language becomes one
code, and the local Whisper's list is faster-whisper's own."""
from __future__ import annotations

from importlib.metadata import version

import pytest

from audiorouter.core import languages


@pytest.mark.parametrize(("given", "want"), [
    ("en", "en"), ("EN-us", "en"), ("en_GB", "en"), ("English", "en"), (" english ", "en"),
    ("eng", "en"), ("deu", "de"), ("cmn-Hans-CN", "zh"), ("iw-IL", "he"), ("fil-PH", "tl"),
    ("haitian creole", "ht"), ("Mandarin", "zh"), ("cantonese", "yue"), ("yue-Hant-HK", "yue"),
    ("", None), ("  ", None), (None, None), (3, None),
])
def test_code(given, want):
    assert languages.code(given) == want


def test_names_round_trip_for_every_whisper_language():
    for c, n in languages.WHISPER_NAMES.items():
        assert languages.code(n) == c
        assert languages.name(c) == n
        assert languages.is_known(c)
    assert languages.name("xx") == "xx" and languages.name(None) == ""


def test_locales_and_joiner():
    assert languages.locale("en") == "en-US" and languages.locale("en-GB") == "en-GB"
    assert languages.locale("he") == "iw-IL"
    assert languages.joiner("ja") == "" and languages.joiner("en") == " " and languages.joiner(None) == " "


def test_unknown_codes_are_not_known():
    assert not languages.is_known("xyz") and not languages.is_known("klingon")


def test_whisper_codes_are_faster_whispers():
    """faster_whisper.tokenizer._LANGUAGE_CODES is private: this pins the version it was read from, and fails
    loudly when an upgrade moves or changes it (then update WHISPER_NAMES and this pin together)."""
    assert version("faster-whisper") == "1.2.1", "faster-whisper moved: re-check its language list"
    from faster_whisper.tokenizer import _LANGUAGE_CODES  # private, pinned above
    assert set(_LANGUAGE_CODES) == set(languages.WHISPER_CODES)
