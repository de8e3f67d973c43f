"""The local hibari engine's first unit (providers/local_hibari.py): a long first sentence is cut after a few
words so the first audio leaves sooner. The cut keeps every phoneme of the uncut text, in order; it falls at a
clause or phrase boundary; the seam is a short pause, not the ~0.7 s of silence two separate utterances would
have; the pipelined synthesis gives the same audio as the serial one; and over HTTP every format is still
one valid file of the same length that Whisper hears word for word."""
from __future__ import annotations

import io

import av
import numpy as np
import pytest

from audio_factory import decode_bytes, rms
from audiorouter.providers import local_hibari as lh
from audiorouter.providers.local_hibari import HibariEngine, split_tokens, trim_silence
from wer import normalize

TEXTS = [
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. "
    "How vexingly quick daft zebras jump!",
    "The museum opens at nine in the morning. Tickets cost twelve dollars for adults and are free for "
    "children. Please keep your bag with you at all times.",
    "The quick brown fox, who had been waiting all morning by the river, jumps over the lazy dog.",
    "On the 3rd of March 2024, 1,250 people paid $9.99 each to hear it read at 7:30 pm. Then they left.",
    "Dr. Smith said — quite loudly — that it's over; we'll see: maybe…",
    "Welcome to the audio router demonstration, where every request finds a provider. Thank you.",
    "Hello. This is short.",
    "Supercalifragilisticexpialidocious is a word that nobody can say quickly.",
    'He said "hello there" and left the room quietly.',
]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    e = HibariEngine(tmp_path_factory.mktemp("hibari"))
    e.warm_up()
    yield e
    e.close()


@pytest.fixture(scope="module")
def tts(engine):
    return engine.load()


# ---- the cut ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", TEXTS)
def test_units_keep_every_phoneme_in_order(engine, tts, text):
    units = [ps for ps, _ in engine.units(tts, text)]
    assert " ".join(units) == " ".join(tts.phonemize(text))
    assert all(units)


@pytest.mark.parametrize("text", TEXTS[:4])
def test_a_long_first_sentence_is_cut_short(engine, tts, text):
    first_sentence = tts.phonemize(tts.split_sentences(text)[0])[0]
    (head, seam), (tail, seam2) = list(engine.units(tts, text))[:2]
    assert len(first_sentence) > lh.FIRST_UNIT_MAX
    assert len(head) <= lh.CLAUSE_HEAD_MAX < len(first_sentence)
    assert head + " " + tail == first_sentence
    assert seam[0] is None and seam[1] is not None  # the head keeps its start, its end is trimmed
    assert seam2[0] is not None  # the tail's start is trimmed


def test_short_first_sentence_is_not_cut(engine, tts):
    units = list(engine.units(tts, "Hello. This is short."))
    assert [ps for ps, _ in units] == tts.phonemize("Hello. This is short.")
    assert all(seam == (None, None) for _, seam in units)


def test_cut_boundaries():
    def toks(spec):  # "word/TAG word/TAG ,/," -> tokens, punctuation attached to the word before it
        out = []
        for item in spec.split():
            p, tag = item.rsplit("/", 1)
            if tag in (",", ".", ":"):
                out[-1] = (out[-1][0], out[-1][1], False)
            out.append((p, tag, True))
        out[-1] = (out[-1][0], out[-1][1], False)
        return out

    # a clause break wins over a word break
    head, tail, seam = split_tokens(toks("hˈɛlO/UH ðˈɛɹ/RB ,/, hˌW/WRB ɑɹ/VBP ju/PRP tədˈA/NN ?/."))
    assert (head, seam) == ("hˈɛlO ðˈɛɹ,", "clause") and tail == "hˌW ɑɹ ju tədˈA?"
    # subject | verb, never after an adjective or a determiner
    head, tail, seam = split_tokens(toks("ðə/DT kwˈɪk/JJ bɹˈWn/JJ fˈɑks/NN ʤˈʌmps/VBZ ˈOvəɹ/IN ðə/DT lˈAzi/JJ "
                                         "dˈɔɡ/NN ./."))
    assert (head, seam) == ("ðə kwˈɪk bɹˈWn fˈɑks", "word")
    assert tail == "ʤˈʌmps ˈOvəɹ ðə lˈAzi dˈɔɡ."
    # short: whole
    assert split_tokens(toks("hˈɛlO/UH ./.")) == ("hˈɛlO.", "", None)
    # the tail never starts with punctuation; no token boundary without a space is used
    for spec in ("dˈɑktəɹ/NNP smˈɪθ/NNP sˈɛd/VBD —/: kwˈIt/RB lˈWdli/RB —/: ðæt/IN ɪts/PRP ˈOvəɹ/IN ./.",):
        head, tail, _ = split_tokens(toks(spec))
        assert tail and tail[0] not in "—,.;:" and not head.endswith(" ")


# ---- the seam --------------------------------------------------------------------------------------------
def test_trim_silence_only_removes_silence():
    rate = 24000
    tone = (0.3 * np.sin(np.arange(rate) * 2 * np.pi * 220 / rate)).astype(np.float32)
    decay = (0.3 * np.exp(-np.arange(rate // 4) / 600.0) * np.sin(np.arange(rate // 4))).astype(np.float32)
    x = np.concatenate([np.zeros(rate // 2, np.float32), tone, decay, np.zeros(rate // 2, np.float32)])
    y = trim_silence(x, rate, lead=0.02, trail=0.05)
    loud = np.abs(x) > 0.3e-3
    assert np.abs(y).max() == pytest.approx(np.abs(x).max())
    assert len(y) == pytest.approx(loud.nonzero()[0][-1] - loud.nonzero()[0][0] + 1 + int(0.07 * rate), abs=2)
    # the speech itself is untouched (the fades lie in the kept silence)
    start = loud.nonzero()[0][0] - int(0.02 * rate)
    np.testing.assert_array_equal(y[int(0.02 * rate):int(0.02 * rate) + rate], x[start + int(0.02 * rate):][:rate])
    assert trim_silence(x, rate) is x  # None: nothing cut
    assert len(trim_silence(x, rate, lead=0.0)) == len(x) - loud.nonzero()[0][0]
    assert trim_silence(np.zeros(100, np.float32), rate, lead=0, trail=0).size == 100


def _longest_quiet_run_s(audio: np.ndarray, rate: int = 24000) -> float:
    """Longest stretch of 10 ms frames below -50 dB of the peak, inside the speech (ends excluded)."""
    f = rate // 100
    n = len(audio) // f
    peak = np.abs(audio).max()
    quiet = np.abs(audio[:n * f]).reshape(n, f).max(1) < peak * 10 ** (-50 / 20)
    loud = np.flatnonzero(~quiet)
    best = run = 0
    for q in quiet[loud[0]:loud[-1] + 1]:
        run = run + 1 if q else 0
        best = max(best, run)
    return best / 100


@pytest.mark.parametrize("sentence, most_s", [
    ("The museum opens at nine in the morning.", 0.3),  # word seam: no pause in the middle of a phrase
    ("Hello there, how are you today?", 0.45),  # clause seam: about the model's own comma pause
])
def test_seam_is_a_short_pause(engine, sentence, most_s):
    chunks = list(engine.stream(sentence))
    assert len(chunks) == 2
    joined = np.concatenate(chunks)
    assert _longest_quiet_run_s(joined) < most_s
    # two separately synthesized pieces without the trim would pause ~0.7 s
    untrimmed = np.concatenate([engine.load().from_phonemes(ps) for ps, _ in engine.units(engine.load(), sentence)])
    assert _longest_quiet_run_s(untrimmed) > 0.5


def test_pipelined_synthesis_gives_the_same_audio(engine):
    text = TEXTS[1] + " " + TEXTS[0]
    serial = list(engine.stream(text, spare_core=lambda: False))
    piped = list(engine.stream(text, spare_core=lambda: True))
    assert len(serial) == len(piped) == len(list(engine.units(engine.load(), text)))
    for a, b in zip(serial, piped):  # the noise component differs from run to run; lengths and levels do not
        assert abs(len(a) - len(b)) <= 240
        assert rms(b) == pytest.approx(rms(a), rel=0.1)


def test_cancel_stops_between_units(engine):
    n = 0
    flag = {"stop": False}
    for _ in engine.stream(TEXTS[1] + " " + TEXTS[0], cancelled=lambda: flag["stop"], spare_core=lambda: True):
        n += 1
        flag["stop"] = n >= 2
    assert n == 2


def test_speed_outside_the_model_range_still_cut_and_trimmed(engine):
    fast = np.concatenate(list(engine.stream("The museum opens at nine in the morning.", speed=4.0)))
    slow = np.concatenate(list(engine.stream("The museum opens at nine in the morning.", speed=0.25)))
    assert 2.5 < len(slow) / len(fast) < 20 and rms(fast) > 0.01 and rms(slow) > 0.01


# ---- over HTTP -------------------------------------------------------------------------------------------
SEAM_TEXT = "The museum opens at nine in the morning, and tickets cost twelve dollars. Please keep your bag."
ONE_FILE = {"opus": b"OpusHead", "flac": b"fLaC", "wav": b"RIFF"}  # one header, not one per piece


def _speak(client, text, fmt):
    r = client.post("/api/v1/audio/speech", json={"model": "local/hibari", "input": text, "response_format": fmt})
    assert r.status_code == 200, r.text[:300]
    return r.content


@pytest.mark.parametrize("fmt", ["wav", "mp3", "flac", "opus", "aac"])
def test_every_format_is_one_file_of_the_same_length(client, fmt):
    pcm = np.frombuffer(_speak(client, SEAM_TEXT, "pcm"), "<i2")
    seconds = len(pcm) / 24000
    data = _speak(client, SEAM_TEXT, fmt)
    if fmt in ONE_FILE:
        assert data.count(ONE_FILE[fmt]) == 1
    with av.open(io.BytesIO(data)) as c:  # decodes to the end without error
        frames = sum(f.samples for f in c.decode(audio=0))
        rate = c.streams.audio[0].rate
    assert abs(frames / rate - seconds) < 0.25, (fmt, frames / rate, seconds)


@pytest.mark.parametrize("fmt", ["wav", "mp3", "opus"])
def test_round_trip_through_whisper_across_the_seams(client, fmt):
    text = ("The quick brown fox jumps over the lazy dog near the old river bank. "
            "Then it runs back into the forest to sleep.")
    audio = _speak(client, text, fmt)
    samples, _ = decode_bytes(audio)
    assert rms(samples) > 0.01
    r = client.post("/v1/audio/transcriptions", data={"model": "whisper-1", "language": "en"},
                    files={"file": (f"speech.{fmt}", audio, "application/octet-stream")})
    assert r.status_code == 200, r.text
    heard = normalize(r.json()["text"])
    heard = heard.replace("riverbank", "river bank")
    for words in ("the quick brown fox jumps over the lazy dog", "near the old river", "runs back into the forest"):
        assert words in heard, heard
