"""Word error rate for the benchmark: both sides are put into one plain form first (upper case, no punctuation,
spelled-out numbers and common titles), then errors are pooled over all clips (total edits / total reference
words). The same function scores the baseline and audiorouter, so their ratio is fair whatever its quirks."""
from __future__ import annotations

import re
import unicodedata

_SMALL = ["ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE", "TEN", "ELEVEN", "TWELVE", "THIRTEEN", "FOURTEEN", "FIFTEEN", "SIXTEEN", "SEVENTEEN", "EIGHTEEN", "NINETEEN"]
_DECADES = ["_", "_", "TWENTY", "THIRTY", "FORTY", "FIFTY", "SIXTY", "SEVENTY", "EIGHTY", "NINETY"]
_TITLES = {"MR": "MISTER", "MRS": "MISSUS", "DR": "DOCTOR", "ST": "SAINT", "MESSRS": "MESSIEURS"}
_ORD = {"1ST": "FIRST", "2ND": "SECOND", "3RD": "THIRD", "4TH": "FOURTH", "5TH": "FIFTH", "6TH": "SIXTH",
        "7TH": "SEVENTH", "8TH": "EIGHTH", "9TH": "NINTH", "10TH": "TENTH", "11TH": "ELEVENTH", "12TH": "TWELFTH"}


def _say(n: int) -> list[str]:
    if n < 20:
        return [_SMALL[n]]
    if n < 100:
        return [_DECADES[n // 10]] + ([_SMALL[n % 10]] if n % 10 else [])
    if n < 1000:
        return [_SMALL[n // 100], "HUNDRED"] + (_say(n % 100) if n % 100 else [])
    if 1100 <= n < 2000 and n % 100:  # years read the usual way: 1813 -> eighteen thirteen
        return _say(n // 100) + _say(n % 100)
    if n < 1_000_000:
        return _say(n // 1000) + ["THOUSAND"] + (_say(n % 1000) if n % 1000 else [])
    return _say(n // 1_000_000) + ["MILLION"] + (_say(n % 1_000_000) if n % 1_000_000 else [])


def normalize(text: str) -> list[str]:
    t = unicodedata.normalize("NFKD", text)
    t = "".join(c for c in t if not unicodedata.combining(c)).upper()
    t = t.replace("’", "'").replace("-", " ").replace("—", " ").replace("–", " ")
    t = re.sub(r"(\d),(\d)", r"\1\2", t)
    words: list[str] = []
    for raw in t.split():
        w = re.sub(r"[^A-Z0-9']", "", raw).strip("'")
        if not w:
            continue
        w = w.replace("'", "")
        if w in _TITLES:
            words.append(_TITLES[w])
        elif w in _ORD:
            words.append(_ORD[w])
        elif w.isdigit():
            words.extend(_say(int(w)))
        else:
            words.extend(_say(int(w[:-1])) if w[:-1].isdigit() and w.endswith("S") else [w])
    return words


def pooled_wer(pairs: list[tuple[str, str]]) -> float:
    """pairs of (reference, hypothesis) -> pooled WER."""
    import jiwer
    refs = [" ".join(normalize(r)) for r, _ in pairs]
    hyps = [" ".join(normalize(h)) for _, h in pairs]
    keep = [(r, h) for r, h in zip(refs, hyps) if r]
    out = jiwer.process_words([r for r, _ in keep], [h for _, h in keep])
    edits = out.substitutions + out.deletions + out.insertions
    total = sum(len(r.split()) for r, _ in keep)
    return edits / total if total else 0.0
