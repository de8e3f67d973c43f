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


def is_generic(label: str) -> bool:
    """A provider's numbering (speaker_0, "Speaker 2", "A"), not a name."""
    return bool(_GENERIC.match(label))


Turn = tuple[str, float, float]  # (speaker label, start s, end s), absolute times


def match_speakers(before: list[Turn], after: list[Turn], lo: float, hi: float,
                   min_shared_s: float = 0.25) -> dict[str, str]:
    """Which speaker of `after` is which speaker of `before`, judged on the stretch [lo, hi] that both
    transcribed (the overlap of two long-audio chunks): each pair of labels scores the seconds in which both
    had them speaking at once; pairs are taken greedily, highest score first, one-to-one, and a pair must
    share at least `min_shared_s`. Returns {label in after: label in before}; a label left out had no
    counterpart in the overlap (it spoke there in one chunk only, or not at all)."""
    score: dict[tuple[str, str], float] = {}
    for a_lab, a0, a1 in after:
        a0, a1 = max(a0, lo), min(a1, hi)
        if a1 <= a0:
            continue
        for b_lab, b0, b1 in before:
            shared = min(a1, b1, hi) - max(a0, b0, lo)
            if shared > 0:
                score[(a_lab, b_lab)] = score.get((a_lab, b_lab), 0.0) + shared
    out: dict[str, str] = {}
    used: set[str] = set()
    for (a_lab, b_lab), s in sorted(score.items(), key=lambda kv: (-kv[1], kv[0])):
        if s < min_shared_s or a_lab in out or b_lab in used:
            continue
        out[a_lab] = b_lab
        used.add(b_lab)
    return out
