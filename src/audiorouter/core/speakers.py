"""Speaker labels, one normalisation for every provider that diarizes (diarized_json, srt/vtt): providers'
generic labels (speaker_0, 1, "Speaker 2", "A") become A, B, C... in order of first appearance, as OpenAI's
diarize model labels them; a label that names someone (OpenAI's answer to known_speaker_names) is kept."""
from __future__ import annotations

import re

_GENERIC = re.compile(r"^(?:speaker[ _-]?)?(?:\d+|[A-Z])$", re.IGNORECASE)


class SpeakerLabels:
    """Call with a provider's label (or None: the previous speaker) to get the label to show."""

    def __init__(self) -> None:
        self._letters: dict[str, str] = {}
        self._prev: str | None = None

    def __call__(self, label: str | None) -> str:
        label = label if label is not None else self._prev
        self._prev = label
        if label is not None and not _GENERIC.match(label):
            return label
        key = label or ""
        if key not in self._letters:
            n = len(self._letters)
            self._letters[key] = chr(ord("A") + n) if n < 26 else f"S{n + 1}"
        return self._letters[key]
