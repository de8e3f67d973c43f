"""Text normalisation and word error rate for accuracy tests.

`normalize` puts a reference and a hypothesis into the same plain form before they are compared: lower case,
no punctuation, common abbreviations spelled out ("mr." -> "mister"), digits read out as words ("1813" ->
"eighteen thirteen", "3rd" -> "third", "$5" -> "five dollars"), hyphens and dashes as spaces, apostrophes
dropped ("don't" -> "dont"), hesitation sounds removed and a few British spellings made American.
`wer` pools errors over a list of utterances (total edits / total reference words) with jiwer.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import jiwer

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
         "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = [(10 ** 12, "trillion"), (10 ** 9, "billion"), (10 ** 6, "million"), (1000, "thousand")]
_ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                  "nine": "ninth", "twelve": "twelfth"}

ABBREVIATIONS = {
    "mr": "mister", "mrs": "missus", "ms": "miss", "dr": "doctor", "prof": "professor", "st": "saint",
    "jr": "junior", "sr": "senior", "capt": "captain", "col": "colonel", "gen": "general", "lt": "lieutenant",
    "sgt": "sergeant", "rev": "reverend", "hon": "honourable", "gov": "governor", "vs": "versus",
    "etc": "et cetera",
}  # "no." is only an abbreviation before a number: handled in normalize()
# British -> American spellings that show up in read English; both sides get the same mapping.
SPELLINGS = {
    "colour": "color", "colours": "colors", "coloured": "colored", "honour": "honor", "honours": "honors",
    "honourable": "honorable", "honoured": "honored", "favour": "favor", "favourite": "favorite",
    "favoured": "favored", "labour": "labor", "neighbour": "neighbor", "neighbours": "neighbors",
    "neighbourhood": "neighborhood", "behaviour": "behavior", "humour": "humor", "rumour": "rumor",
    "vapour": "vapor", "parlour": "parlor", "harbour": "harbor", "splendour": "splendor", "valour": "valor",
    "clamour": "clamor", "ardour": "ardor", "endeavour": "endeavor", "armour": "armor", "savour": "savor",
    "odour": "odor", "centre": "center", "theatre": "theater", "metre": "meter", "grey": "gray",
    "realise": "realize", "realised": "realized", "recognise": "recognize", "recognised": "recognized",
    "organise": "organize", "organised": "organized", "apologise": "apologize", "travelled": "traveled",
    "travelling": "traveling", "traveller": "traveler", "jewellery": "jewelry", "defence": "defense",
    "offence": "offense", "cheque": "check", "programme": "program", "towards": "toward",
}
FILLERS = {"um", "umm", "uh", "uhh", "er", "erm", "ah", "hmm", "mm", "mhm"}


def _below_thousand(n: int) -> list[str]:
    words: list[str] = []
    if n >= 100:
        words += [_ONES[n // 100], "hundred"]
        n %= 100
    if n >= 20:
        words.append(_TENS[n // 10])
        n %= 10
        if n:
            words.append(_ONES[n])
    elif n or not words:
        words.append(_ONES[n])
    return words


def cardinal(n: int) -> list[str]:
    if n < 0:
        return ["minus", *cardinal(-n)]
    if n < 1000:
        return _below_thousand(n)
    words: list[str] = []
    for value, name in _SCALES:
        if n >= value:
            words += [*cardinal(n // value), name]
            n %= value
    if n:
        words += _below_thousand(n)
    return words


def year(n: int) -> list[str]:
    """1813 -> eighteen thirteen, 1900 -> nineteen hundred, 1905 -> nineteen oh five; 2000-2009 as cardinals."""
    hi, lo = divmod(n, 100)
    if lo == 0:
        return [*cardinal(hi), "hundred"]
    if lo < 10:
        return [*cardinal(hi), "oh", _ONES[lo]]
    return [*cardinal(hi), *cardinal(lo)]


def ordinal(n: int) -> list[str]:
    words = cardinal(n)
    last = words[-1]
    if last in _ORDINAL_WORDS:
        words[-1] = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return words


def _number_words(token: str) -> str:
    """One digit-bearing token ("1,000", "3.5", "21st", "1813", "$5", "10%") as words."""
    m = re.fullmatch(r"(\d+)(st|nd|rd|th)", token)
    if m:
        return " ".join(ordinal(int(m.group(1))))
    m = re.fullmatch(r"(\d+)\.(\d+)", token)
    if m:
        return " ".join([*cardinal(int(m.group(1))), "point", *(_ONES[int(d)] for d in m.group(2))])
    if re.fullmatch(r"\d+", token):
        n = int(token)
        if len(token) > 1 and token.startswith("0"):
            return " ".join(_ONES[int(d)] for d in token)  # "007" is read digit by digit
        if 1100 <= n <= 1999 or 2010 <= n <= 2099:
            return " ".join(year(n))
        return " ".join(cardinal(n))
    return token


def _expand_numbers(text: str) -> str:
    text = re.sub(r"\$(\d[\d,]*(?:\.\d+)?)", r"\1 dollars", text)    # $5 -> 5 dollars
    text = re.sub(r"£(\d[\d,]*(?:\.\d+)?)", r"\1 pounds", text)
    text = re.sub(r"\b\d{1,3}(?:,\d{3})+\b",                        # 1,200 -> one thousand two hundred
                  lambda m: " ".join(cardinal(int(m.group(0).replace(",", "")))), text)
    text = re.sub(r"(\d)\s*%", r"\1 percent", text)
    text = re.sub(r"\b(\d+)(st|nd|rd|th)\b", lambda m: _number_words(m.group(0)), text)
    text = re.sub(r"\d+\.\d+", lambda m: _number_words(m.group(0)), text)
    text = re.sub(r"\d+", lambda m: _number_words(m.group(0)), text)
    return text


def normalize(text: str | None) -> str:
    if not text:
        return ""
    text = unicodedata.normalize("NFKC", text)
    text = text.lower()
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    text = re.sub(r"\bno\.\s*(?=\d)", "number ", text)
    text = re.sub(r"&", " and ", text)
    text = _expand_numbers(text)
    text = re.sub(r"[\u2010-\u2015\-_/]", " ", text)                 # hyphens, dashes, slashes
    text = re.sub(r"'", "", text)                                      # don't -> dont, 'tis -> tis
    text = re.sub(r"[^\w\s]", " ", text)                               # all other punctuation
    words = []
    for w in text.split():  # abbreviations lost their period with the punctuation above
        w = SPELLINGS.get(w, w)
        exp = ABBREVIATIONS.get(w)
        if exp:
            words.extend(exp.split())
        elif w not in FILLERS:
            words.append(w)
    return " ".join(words)


@dataclass
class WerResult:
    wer: float
    hits: int
    substitutions: int
    deletions: int
    insertions: int
    reference_words: int

    def __str__(self) -> str:
        return (f"WER {self.wer:.2%} over {self.reference_words} words (S={self.substitutions} "
                f"D={self.deletions} I={self.insertions})")


def wer(references: list[str], hypotheses: list[str]) -> WerResult:
    """Pooled WER over utterances after normalising both sides. Empty references are skipped."""
    pairs = [(normalize(r), normalize(h)) for r, h in zip(references, hypotheses, strict=True)]
    pairs = [(r, h) for r, h in pairs if r]
    if not pairs:
        raise ValueError("no non-empty references to score")
    out = jiwer.process_words([r for r, _ in pairs], [h for _, h in pairs])
    n = out.hits + out.substitutions + out.deletions
    return WerResult(out.wer, out.hits, out.substitutions, out.deletions, out.insertions, n)
