"""core/text.py and the speech text splitter built on it (the one splitter: the speech job and every adapter
use it): every word kept, in order, no piece over the limit."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from audiorouter.core.text import pack, split_text

WORDS = st.lists(st.text(alphabet="abcdefghij", min_size=1, max_size=30), max_size=40)
PUNCT = st.sampled_from(["", ",", ".", ";", "!", "?"])


def test_pack_is_greedy():
    assert pack(["aa", "bb", "cc", "dddd"], 5) == ["aa bb", "cc", "dddd"]
    assert pack(["toolongword", "a"], 4) == ["toolongword", "a"]
    assert pack([], 3) == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text(alphabet="abcdefghij", min_size=1, max_size=30), PUNCT), min_size=1, max_size=40),
       st.integers(min_value=5, max_value=80))
def test_splitter_keeps_every_character_and_respects_the_limit(words, limit):
    text = " ".join(w + p for w, p in words)
    pieces = split_text(text, limit)
    assert all(0 < len(p) <= limit for p in pieces), pieces
    assert "".join("".join(pieces).split()) == "".join(text.split())  # nothing lost, doubled or moved


@settings(max_examples=100, deadline=None)
@given(WORDS, st.integers(min_value=1, max_value=50))
def test_pack_never_splits_or_reorders_units(units, limit):
    pieces = pack(units, limit)
    assert " ".join(pieces).split() == units
    assert all(len(p) <= limit or " " not in p for p in pieces)
