"""Private parts of third-party packages this project relies on, pinned: each test names the version the code
was written against and checks that what we use is still there in the shape we use it. An upgrade that moves
one fails here, loudly, instead of somewhere in a request. After re-checking the code that uses it, update the
pin. (tests/test_architecture.py THIRD_PARTY_PRIVATE lists the uses; tests/test_languages.py pins
faster-whisper's language table.)"""
from __future__ import annotations

import inspect
import re
from importlib.metadata import version

import pytest


def pinned(dist: str, want: str) -> None:
    got = version(dist)
    if got != want:
        pytest.fail(f"{dist} is {got}, the private parts we use were read from {want}: re-check them "
                    "(see this file) and update the pin")


def test_faster_whisper_segmenter():
    """providers/local_whisper.py splits a decoded window into segments with WhisperModel's private
    _split_segments_by_timestamps(tokenizer=, tokens=, time_offset=, segment_size=, segment_duration=, seek=)
    and unpacks three values from it."""
    pinned("faster-whisper", "1.2.1")
    from faster_whisper import WhisperModel
    fn = WhisperModel._split_segments_by_timestamps
    params = list(inspect.signature(fn).parameters)
    assert params == ["self", "tokenizer", "tokens", "time_offset", "segment_size", "segment_duration", "seek"]
    assert "return current_segments, seek, single_timestamp_ending" in inspect.getsource(fn)


def test_uvicorn_protocol_hooks():
    """api/protocol.py subclasses uvicorn's HttpToolsProtocol: it overrides the private _should_upgrade_to_ws
    and _unsupported_upgrade_warning (WebSocket upgrades off), and reads the request cycle's disconnected /
    message_event / response_started, self.scope, self.url and self.flow."""
    pinned("uvicorn", "0.54.0")
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
    src = inspect.getsource(HttpToolsProtocol)
    assert "self._should_upgrade_to_ws()" in src and "self._unsupported_upgrade_warning()" in src
    assert inspect.signature(HttpToolsProtocol._should_upgrade_to_ws).parameters.keys() == {"self"}
    assert "self.cycle" in src and "self.scope" in src and "self.url" in src and "self.flow" in src
    cycle = inspect.getsource(RequestResponseCycle.__init__)
    for attr in ("self.disconnected", "self.message_event", "self.response_started"):
        assert attr in cycle


def test_our_protocol_state_does_not_shadow_uvicorns():
    """The guarded protocol keeps its own state in private attributes and methods; none may be one of
    uvicorn's, or the subclass would silently change uvicorn's behaviour."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from audiorouter.api.protocol import GuardedHttpToolsProtocol
    ours = {n for n in vars(GuardedHttpToolsProtocol) if n.startswith("_") and not n.startswith("__")}
    ours |= set(re.findall(r"self\.(_[a-z]\w*)", inspect.getsource(GuardedHttpToolsProtocol)))
    theirs = {n for n in dir(HttpToolsProtocol) if n.startswith("_")}
    theirs |= set(re.findall(r"self\.(_[a-z]\w*)", inspect.getsource(HttpToolsProtocol)))
    clash = (ours & theirs) - {"_should_upgrade_to_ws", "_unsupported_upgrade_warning"}
    assert not clash, f"GuardedHttpToolsProtocol reuses uvicorn's private names: {sorted(clash)}"
