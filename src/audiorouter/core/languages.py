"""Languages: the one table. Requests name a language by ISO 639-1 code ("en"), a locale ("en-US", "en_GB") or
an English name ("English"); providers answer with codes, locales, ISO 639-2/3 codes ("eng", "cmn") or Whisper's
names. Everything becomes the neutral code here (`code`), OpenAI's verbose_json gets the name back (`name`),
and the adapters that need a locale ask `locale`."""
from __future__ import annotations

from typing import Any

# Whisper's 100 languages (code -> the English name Whisper, and so OpenAI's verbose_json, reports), in
# Whisper's order. The local engine knows exactly these (tests/test_languages.py checks faster-whisper's list).
WHISPER_NAMES: dict[str, str] = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian", "ko": "korean",
    "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish", "pl": "polish", "ca": "catalan",
    "nl": "dutch", "ar": "arabic", "sv": "swedish", "it": "italian", "id": "indonesian", "hi": "hindi",
    "fi": "finnish", "vi": "vietnamese", "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay",
    "cs": "czech", "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian", "la": "latin",
    "mi": "maori", "ml": "malayalam", "cy": "welsh", "sk": "slovak", "te": "telugu", "fa": "persian",
    "lv": "latvian", "bn": "bengali", "sr": "serbian", "az": "azerbaijani", "sl": "slovenian", "kn": "kannada",
    "et": "estonian", "mk": "macedonian", "br": "breton", "eu": "basque", "is": "icelandic", "hy": "armenian",
    "ne": "nepali", "mn": "mongolian", "bs": "bosnian", "kk": "kazakh", "sq": "albanian", "sw": "swahili",
    "gl": "galician", "mr": "marathi", "pa": "punjabi", "si": "sinhala", "km": "khmer", "sn": "shona",
    "yo": "yoruba", "so": "somali", "af": "afrikaans", "oc": "occitan", "ka": "georgian", "be": "belarusian",
    "tg": "tajik", "sd": "sindhi", "gu": "gujarati", "am": "amharic", "yi": "yiddish", "lo": "lao", "uz": "uzbek",
    "fo": "faroese", "ht": "haitian creole", "ps": "pashto", "tk": "turkmen", "nn": "nynorsk", "mt": "maltese",
    "sa": "sanskrit", "lb": "luxembourgish", "my": "myanmar", "bo": "tibetan", "tl": "tagalog", "mg": "malagasy",
    "as": "assamese", "tt": "tatar", "haw": "hawaiian", "ln": "lingala", "ha": "hausa", "ba": "bashkir",
    "jw": "javanese", "su": "sundanese", "yue": "cantonese",
}
WHISPER_CODES = frozenset(WHISPER_NAMES)

# ISO 639-1, plus the codes Whisper uses that are not in it (haw, yue; jw is its Javanese). A request naming a
# code outside this set is a 400 at parse time; whether the serving engine knows the language is the
# provider's business.
ISO_639_1 = frozenset("""
aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy da de dv dz ee
el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig ii ik io is
it iu ja jv jw ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr
ms mt my na nb nd ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si
sk sl sm sn so sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh
yi yo za zh zu haw yue
""".split())

# English names -> code: Whisper's names and the other names Whisper accepts for them
NAME_CODES: dict[str, str] = {name: c for c, name in WHISPER_NAMES.items()} | {
    "mandarin": "zh", "burmese": "my", "valencian": "ca", "flemish": "nl", "haitian": "ht",
    "letzeburgesch": "lb", "pushto": "ps", "panjabi": "pa", "moldavian": "ro", "moldovan": "ro",
    "sinhalese": "si", "castilian": "es",
}

# Other codes providers answer with -> ISO 639-1: ISO 639-2/T and /B, ISO 639-3 macrolanguage members
# (ElevenLabs answers "eng", Google "cmn-Hans-CN"), and retired ISO 639-1 codes (Google's "iw")
ALIASES: dict[str, str] = dict(x.split(":") for x in (
    "eng:en deu:de ger:de fra:fr fre:fr spa:es ita:it por:pt nld:nl dut:nl rus:ru ukr:uk pol:pl ces:cs cze:cs "
    "slk:sk slo:sk hun:hu ron:ro rum:ro bul:bg hrv:hr srp:sr slv:sl ell:el gre:el tur:tr ara:ar heb:he fas:fa "
    "per:fa urd:ur hin:hi ben:bn tam:ta tel:te mar:mr guj:gu kan:kn mal:ml pan:pa jpn:ja kor:ko zho:zh chi:zh "
    "cmn:zh vie:vi tha:th ind:id msa:ms may:ms fil:tl tgl:tl swe:sv dan:da nor:no nob:nb nno:nn fin:fi "
    "est:et lav:lv lit:lt isl:is ice:is gle:ga cym:cy wel:cy cat:ca eus:eu baq:eu glg:gl afr:af swa:sw amh:am "
    "kat:ka geo:ka hye:hy arm:hy aze:az kaz:kk uzb:uz mon:mn nep:ne sin:si khm:km lao:lo mya:my bur:my "
    "bel:be bos:bs mkd:mk mac:mk sqi:sq alb:sq mlt:mt lat:la ltz:lb hau:ha yor:yo ibo:ig zul:zu xho:xh som:so "
    "iw:he in:id ji:yi"
).split())

# The locale Google's Chirp 3 expects for a code (its languageCodes are BCP-47 locales)
LOCALES: dict[str, str] = {
    "en": "en-US", "de": "de-DE", "fr": "fr-FR", "es": "es-ES", "it": "it-IT", "pt": "pt-BR", "ja": "ja-JP",
    "ko": "ko-KR", "zh": "cmn-Hans-CN", "hi": "hi-IN", "nl": "nl-NL", "ru": "ru-RU", "pl": "pl-PL",
    "tr": "tr-TR", "sv": "sv-SE", "da": "da-DK", "fi": "fi-FI", "no": "no-NO", "nb": "nb-NO", "cs": "cs-CZ",
    "el": "el-GR", "he": "iw-IL", "iw": "iw-IL", "id": "id-ID", "vi": "vi-VN", "th": "th-TH", "uk": "uk-UA",
    "ro": "ro-RO", "hu": "hu-HU", "ar": "ar-EG", "fa": "fa-IR", "ca": "ca-ES", "bn": "bn-BD", "ta": "ta-IN",
    "te": "te-IN", "ur": "ur-PK", "ms": "ms-MY", "fil": "fil-PH", "tl": "fil-PH", "sk": "sk-SK", "bg": "bg-BG",
    "hr": "hr-HR",
}

# Written without spaces between words: stitched chunk texts are joined with "" rather than " "
NO_SPACE = frozenset({"zh", "ja", "th", "lo", "km", "my", "yue", "bo"})


def code(v: Any) -> str | None:
    """Any provider's or client's way of naming a language -> the neutral code: 'English' -> 'en',
    'en-US' / 'en_gb' -> 'en', 'eng' -> 'en', 'cmn-Hans-CN' -> 'zh', 'iw-IL' -> 'he'; '' / None / not a string
    -> None. Something unknown is kept as its lower-cased primary subtag (not validated: see `is_known`)."""
    if not isinstance(v, str):
        return None
    s = v.strip().lower()
    if not s:
        return None
    if s in NAME_CODES:
        return NAME_CODES[s]
    base = s.replace("_", "-").split("-")[0]
    return ALIASES.get(base, base) or None


def is_known(c: str) -> bool:
    """A code `code` may return that requests may name (ISO 639-1 or one of Whisper's)."""
    return c in ISO_639_1 or c in WHISPER_CODES


def name(c: str | None) -> str:
    """The English name OpenAI's verbose_json reports for a code ('en' -> 'english'); the code itself when
    Whisper has no name for it; '' for None."""
    if not c:
        return ""
    return WHISPER_NAMES.get(c, c)


def locale(c: str) -> str:
    """The BCP-47 locale for a code where a provider wants one ('en' -> 'en-US'); the code itself otherwise
    (a locale the client gave, 'en-GB', passes through)."""
    return LOCALES.get(c, c)


def joiner(c: str | None) -> str:
    """What goes between two stitched texts in this language."""
    return "" if c in NO_SPACE else " "
