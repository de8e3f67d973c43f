"""A bounded soak: mixed traffic against a real gateway process while faults are injected into the fake
upstreams and into the database, then the counts that matter.

Traffic (seeded, so every run makes the same mix): OpenRouter JSON and OpenAI multipart transcriptions,
translations, speech (read in full, or dropped after the first chunk), models, key management, the calling
key, generation lookups, malformed bodies, and clients that vanish mid-upload. Faults: the fakes answer 5xx,
429 with Retry-After, hold the request past the gateway's timeout, reset the connection, send a body the
gateway cannot use, or cut a streamed answer; the database is hit every ~8 s (SQLite: the file locked for
up to 1.2 s; PostgreSQL: every connection of the gateway killed with pg_terminate_backend).

Every request carries a tag the fakes see (`prompt` of a transcription, `input` of a speech), so each answer
is matched to what its upstream calls met: a 502/503/504 is an intended outcome only when a fault was served
to that request (or, for a 503, while the database was being hit). Any other 5xx, and any 500 the server
logged for a client that had gone away, is a bug. At the end, with the server stopped (its ledger flushed),
every generation id that got an answer is checked against its ledger row, and memory at the end against
memory after the warm-up.

Environment: AUDIOROUTER_SOAK_S (seconds per backend, default 20: `make test`; the soak in bench runs 600), AUDIOROUTER_SOAK_DB (default
"sqlite,postgresql"), AUDIOROUTER_SOAK_REPORT (default bench/.work/soak.json; one file per backend,
soak-sqlite.json and soak-postgresql.json), AUDIOROUTER_SOAK_SEED."""
from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from conftest import DEV_AUDIO, ROOT, ServerProcess
from fakes.harness import b64, gateway_env, write_catalog
from fakes.openai_fake import GroqFake, OpenAIFake
from fakes.runner import encode_audio, tone
from test_keys_support import PgDatabase, _pg

SOAK_S = float(os.environ.get("AUDIOROUTER_SOAK_S", "20"))  # per database backend (2+ database hits each)
BACKENDS = os.environ.get("AUDIOROUTER_SOAK_DB", "sqlite,postgresql").split(",")
REPORT = Path(os.environ.get("AUDIOROUTER_SOAK_REPORT", str(ROOT / "bench" / ".work" / "soak.json")))
SEED = int(os.environ.get("AUDIOROUTER_SOAK_SEED", "20261205"))
WORKERS = 4
UPSTREAM_TIMEOUT_S = 2.0
ADMIN_KEY = "sk-ar-soak-admin-" + "7f3c9a1e5b2d4f6a8c0e1b3d5f7a9c2e"
TRANSCRIBE, TRANSLATE, SPEECH = "/v1/audio/transcriptions", "/v1/audio/translations", "/v1/audio/speech"
INTENDED_5XX = {502, 503, 504}


# ---- what happened ---------------------------------------------------------------------------------------
@dataclass
class Outcome:
    kind: str
    tag: str | None
    status: int | None            # None: no answer (the client went away on purpose, or the stream broke)
    gen_id: str | None
    t0: float
    t1: float
    code: str | None = None       # the error envelope's code/type
    audio: bool = False           # a route that writes a ledger row
    malformed: bool = False
    partial: bool = False         # the client dropped the answer after its first chunk
    stream_error: bool = False    # a 200 event stream that ended in an error event
    note: str = ""


@dataclass
class Soak:
    url: str
    user_key: str
    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    recent_ids: list[str] = field(default_factory=list)
    key_hashes: list[str] = field(default_factory=list)
    db_faults: list[tuple[float, float]] = field(default_factory=list)
    tags: int = 0

    def tag(self) -> str:
        with self.lock:
            self.tags += 1
            return f"soaktag{self.tags:07d}"

    def add(self, o: Outcome) -> None:
        with self.lock:
            self.outcomes.append(o)
            if o.audio and o.gen_id and o.status == 200:
                self.recent_ids.append(o.gen_id)
                del self.recent_ids[:-50]


def envelope_code(r: httpx.Response, path: str) -> tuple[str | None, str]:
    """The error's code (OpenRouter) or type (OpenAI), and '' or why the envelope is not the dialect's."""
    try:
        err = r.json()["error"]
    except (ValueError, KeyError, TypeError):
        return None, "no error envelope"
    if path.startswith("/api/v1"):
        if not (isinstance(err, dict) and err.get("code") == r.status_code and isinstance(err.get("message"), str)
                and isinstance(err.get("metadata"), (dict, type(None)))):
            return None, f"not OpenRouter's envelope: {err!r:.200}"
        meta = err.get("metadata") or {}
        return str(meta.get("code") or err.get("code")), ""
    if not (isinstance(err, dict) and set(err) == {"message", "type", "param", "code"}):
        return None, f"not OpenAI's envelope: {err!r:.200}"
    return str(err.get("code") or err.get("type")), ""


# ---- traffic ------------------------------------------------------------------------------------------------
class Traffic:
    def __init__(self, soak: Soak, audio: dict[str, bytes], rng: random.Random):
        self.s, self.audio, self.rng = soak, audio, rng
        self.c = httpx.Client(base_url=soak.url, timeout=60, headers={"Authorization": f"Bearer {soak.user_key}"})
        self.admin = httpx.Client(base_url=soak.url, timeout=60, headers={"Authorization": f"Bearer {ADMIN_KEY}"})

    def close(self) -> None:
        self.c.close()
        self.admin.close()

    def record(self, kind: str, path: str, r: httpx.Response | None, t0: float, *, tag: str | None = None,
               audio: bool = False, malformed: bool = False, partial: bool = False, note: str = "") -> None:
        o = Outcome(kind, tag, r.status_code if r is not None else None,
                    r.headers.get("x-generation-id") if r is not None else None, t0, time.monotonic(),
                    audio=audio, malformed=malformed, partial=partial, note=note)
        if r is not None and r.status_code >= 400 and not partial:
            o.code, bad = envelope_code(r, path)
            if bad:
                o.note = bad
        elif r is not None and r.headers.get("content-type", "").startswith("text/event-stream"):
            o.stream_error = "transcript.text.done" not in r.text
        self.s.add(o)

    def step(self) -> None:
        actions = [(self.stt_json, 22), (self.stt_multipart, 18), (self.translate, 5), (self.speech, 14),
                   (self.speech_dropped, 4), (self.models, 8), (self.keys, 6), (self.whoami, 3),
                   (self.lookup, 8), (self.malformed, 9), (self.vanish, 3)]
        fn = self.rng.choices([a for a, _ in actions], [w for _, w in actions])[0]
        fn()

    def _send(self, kind: str, path: str, *, client: httpx.Client | None = None, audio: bool = False,
              tag: str | None = None, malformed: bool = False, **kw) -> httpx.Response | None:
        t0 = time.monotonic()
        try:
            r = (client or self.c).request(kw.pop("method", "POST"), path, **kw)
        except httpx.HTTPError as e:  # the stream broke (a cut upstream) or the server failed
            self.record(kind, path, None, t0, tag=tag, audio=audio, malformed=malformed, note=type(e).__name__)
            return None
        self.record(kind, path, r, t0, tag=tag, audio=audio, malformed=malformed)
        return r

    def _model(self) -> str:
        return self.rng.choice(["soak/stt", "soak/stt", "soak/stt-single"])

    def stt_json(self) -> None:
        tag, name = self.s.tag(), self.rng.choice(["wav", "wav", "flac"])
        body = {"model": self._model(), "prompt": tag,
                "input_audio": {"data": b64(self.audio[name]), "format": name}}
        if self.rng.random() < 0.3:
            body["response_format"] = self.rng.choice(["json", "text", "verbose_json"])
        if self.rng.random() < 0.15:  # server-sent events; the row settles when the stream ends
            body["stream"], body["response_format"] = True, "json"
        self._send("stt_json", "/api/v1/audio/transcriptions", json=body, audio=True, tag=tag)

    def stt_multipart(self) -> None:
        tag, name = self.s.tag(), self.rng.choice(["wav", "wav", "flac"])
        data = {"model": self._model(), "prompt": tag,
                "response_format": self.rng.choice(["json", "text", "srt", "vtt", "verbose_json"])}
        path = self.rng.choice([TRANSCRIBE, "/api/v1/audio/transcriptions"])
        self._send("stt_multipart", path, files={"file": (f"clip.{name}", self.audio[name], f"audio/{name}")},
                   data=data, audio=True, tag=tag)

    def translate(self) -> None:
        tag = self.s.tag()
        self._send("translate", TRANSLATE, files={"file": ("clip.wav", self.audio["wav"], "audio/wav")},
                   data={"model": "soak/translate", "prompt": tag}, audio=True, tag=tag)

    def _speech_body(self, tag: str) -> dict:
        return {"model": "soak/tts", "input": f"{tag} the quick brown fox jumps over the lazy dog",
                "voice": "alloy", "response_format": self.rng.choice(["mp3", "wav", "pcm", "flac"])}

    def speech(self) -> None:
        tag = self.s.tag()
        path = self.rng.choice([SPEECH, "/api/v1/audio/speech"])
        self._send("speech", path, json=self._speech_body(tag), audio=True, tag=tag)

    def speech_dropped(self) -> None:
        """A client that takes the headers and the first chunk of a speech answer, then goes away."""
        tag, t0 = self.s.tag(), time.monotonic()
        try:
            with self.c.stream("POST", SPEECH, json=self._speech_body(tag)) as r:
                if r.status_code == 200:
                    next(r.iter_raw(), None)
                else:
                    r.read()
                self.record("speech_dropped", SPEECH, r, t0, tag=tag, audio=True, partial=r.status_code == 200)
        except httpx.HTTPError as e:
            self.record("speech_dropped", SPEECH, None, t0, tag=tag, audio=True, note=type(e).__name__)

    def models(self) -> None:
        path = self.rng.choice(["/api/v1/models", "/v1/models", "/api/v1/models/soak/stt/endpoints",
                                "/v1/models/soak/tts", "/api/v1/audio/voices", "/api/v1/models/nobody/nothing"])
        self._send("models", path, method="GET")

    def keys(self) -> None:
        op = self.rng.choice(["create", "list", "get", "patch", "delete", "credits"])
        if op == "create" or not self.s.key_hashes:
            r = self._send("keys", "/api/v1/keys", client=self.admin,
                           json={"name": f"soak-{self.rng.randrange(10**6)}", "limit": 5})
            if r is not None and r.status_code == 201:
                with self.s.lock:
                    self.s.key_hashes.append(r.json()["data"]["hash"])
        elif op == "list":
            self._send("keys", "/api/v1/keys", client=self.admin, method="GET")
        elif op == "credits":
            self._send("keys", "/api/v1/credits", client=self.admin, method="GET")
        else:
            with self.s.lock:
                h = self.rng.choice(self.s.key_hashes)
                if op == "delete":
                    self.s.key_hashes.remove(h)
            if op == "get":
                self._send("keys", f"/api/v1/keys/{h}", client=self.admin, method="GET")
            elif op == "patch":
                self._send("keys", f"/api/v1/keys/{h}", client=self.admin, method="PATCH",
                           json={"disabled": self.rng.random() < 0.5, "limit": 7})
            else:
                self._send("keys", f"/api/v1/keys/{h}", client=self.admin, method="DELETE")

    def whoami(self) -> None:
        self._send("key", "/api/v1/key", method="GET")

    def lookup(self) -> None:
        with self.s.lock:
            gid = self.rng.choice(self.s.recent_ids) if self.s.recent_ids else "gen-0-nothing"
        t0 = time.monotonic()
        r = self._send("lookup", "/api/v1/generation", method="GET", params={"id": gid})
        if r is not None and gid != "gen-0-nothing" and (r.status_code != 200 or r.json()["data"]["id"] != gid):
            self.s.add(Outcome("lookup_miss", None, r.status_code, None, t0, time.monotonic(),
                               note=f"{gid}: {r.text[:200]}"))

    MALFORMED: list[tuple[str, dict]] = [
        ("/api/v1/audio/transcriptions", {"content": b'{"model": "soak/stt", "input_audio": {"data": "AAA',
                                          "headers": {"content-type": "application/json"}}),
        ("/api/v1/audio/transcriptions", {"json": {"model": "soak/stt", "input_audio": {"data": "!!!!", "format": "wav"}}}),
        ("/api/v1/audio/transcriptions", {"json": {"input_audio": {"data": "AAAA", "format": "wav"}}}),
        ("/api/v1/audio/transcriptions", {"json": {"model": "soak/stt", "input_audio": {"data": b64(b"not audio at all"),
                                                                                        "format": "wav"}}}),
        ("/api/v1/audio/transcriptions", {"json": [1, 2, 3]}),
        ("/api/v1/audio/transcriptions", {"json": {"model": 7, "input_audio": "x"}}),
        (TRANSCRIBE, {"content": b"--x\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nsoak/stt\r\n--x",
                      "headers": {"content-type": "multipart/form-data; boundary=x"}}),
        (TRANSCRIBE, {"content": b"hello", "headers": {"content-type": "multipart/form-data"}}),
        (TRANSCRIBE, {"data": {"model": "soak/stt"}, "files": {"file": ("a.wav", b"RIFF\x00\x00", "audio/wav")}}),
        (TRANSCRIBE, {"content": b"model=soak/stt", "headers": {"content-type": "text/plain"}}),
        (SPEECH, {"json": {"model": "soak/tts", "input": "", "voice": "alloy"}}),
        (SPEECH, {"json": {"model": "soak/tts", "input": "hi", "voice": "alloy", "speed": "fast"}}),
        (SPEECH, {"content": b"\xff\xfe{", "headers": {"content-type": "application/json"}}),
        ("/api/v1/audio/speech", {"json": {"model": "nobody/nothing", "input": "hi"}}),
        ("/api/v1/keys/zzz", {"method": "PATCH", "json": {"disabled": "maybe"}}),
        ("/api/v1/generation", {"method": "GET", "params": {"id": "x" * 100}}),
        ("/api/v1/activity", {"method": "GET", "params": {"date": "yesterday"}}),
    ]

    def malformed(self) -> None:
        path, kw = self.rng.choice(self.MALFORMED)
        client = self.admin if path.startswith("/api/v1/keys") else None
        self._send("malformed", path, client=client, malformed=True, audio=path.startswith(("/api/v1/audio", "/v1/audio")),
                   **dict(kw))

    def vanish(self) -> None:
        """Send headers and part of the body, then close the socket."""
        host, port = self.s.url.removeprefix("http://").split(":")
        body = json.dumps({"model": "soak/stt", "prompt": self.s.tag(),
                           "input_audio": {"data": b64(self.audio["wav"]), "format": "wav"}}).encode()
        path = self.rng.choice(["/api/v1/audio/transcriptions", SPEECH])
        if path == SPEECH:
            body = json.dumps(self._speech_body(self.s.tag())).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {self.s.user_key}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        t0 = time.monotonic()
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(head + body[: len(body) // 2])
        self.s.add(Outcome("vanish", None, None, None, t0, time.monotonic(), audio=True))


# ---- faults -----------------------------------------------------------------------------------------------
class SqliteFaults:
    """Lock the SQLite file (BEGIN EXCLUSIVE) for 0.3-1.2 s: writers wait on the busy timeout, or give up."""
    name = "sqlite"

    def __init__(self, path: Path):
        self.path = path

    def rows(self) -> list[tuple]:
        with sqlite3.connect(self.path, timeout=30) as c:
            return c.execute(ROWS_SQL).fetchall()

    def inject(self, rng: random.Random, counts: Counter) -> tuple[float, float] | None:
        hold = 0.3 + rng.random() * 0.9
        conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        try:
            t0 = time.monotonic()
            conn.execute("BEGIN EXCLUSIVE")
            time.sleep(hold)
            conn.execute("COMMIT")
            counts["db_lock"] += 1
            return t0, time.monotonic()
        except sqlite3.OperationalError:
            counts["db_fault_not_taken"] += 1
            return None
        finally:
            conn.close()


class PostgresFaults:
    """Kill every connection the gateway holds to its database (pg_terminate_backend): pooled connections
    and the LISTEN one die under it."""
    name = "postgresql"

    def __init__(self, db):
        self.db = db

    def rows(self) -> list[tuple]:
        return self.db.query(ROWS_SQL)

    def inject(self, rng: random.Random, counts: Counter) -> tuple[float, float] | None:
        t0 = time.monotonic()
        killed = asyncio.run(_pg("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
                                 f"'{self.db.name}' AND pid <> pg_backend_pid()"))
        counts["db_connections_killed"] += len(killed)
        counts["db_kill"] += 1
        return t0, time.monotonic()


ROWS_SQL = "SELECT id, status, error_status, error_type FROM ar_generations"


def inject_faults(fakes: dict, db: SqliteFaults | PostgresFaults, soak: Soak, stop: threading.Event,
                  rng: random.Random, counts: Counter) -> None:
    """Arm one upstream fault every ~0.4 s, and hit the database every ~8 s."""
    next_lock = time.monotonic() + 3
    while not stop.wait(0.2 + rng.random() * 0.4):
        name = rng.choice(["openai", "openai", "groq"])
        fake = fakes[name]
        path = fake.prefix + rng.choice(["/audio/transcriptions", "/audio/transcriptions", "/audio/translations"] +
                                        (["/audio/speech"] * 2 if name == "openai" else []))
        kind = rng.choice(["500", "502", "503", "429", "timeout", "reset", "garbage"] +
                          (["cut"] if path.endswith("speech") else []))
        with fake._lock:  # a few armed per path at most: most requests still meet a healthy upstream
            if sum(1 for f in fake._faults if f.path == path) >= 2:
                continue
        times = rng.choice([1, 1, 2])  # twice: the retry meets it too
        if kind == "429":
            fake.fail(429, "slow down", retry_after=1, path=path, times=times)
        elif kind.isdigit():
            fake.fail(int(kind), "injected", path=path, times=times)
        elif kind == "timeout":
            fake.timeout(UPSTREAM_TIMEOUT_S + 0.5, path=path)
        elif kind == "reset":
            fake.drop(path=path)
        elif kind == "garbage":
            fake.malformed(path=path)
        else:
            fake.cut_stream(after_chunks=1, path=path)
        counts[f"armed:{kind}"] += 1
        if time.monotonic() >= next_lock:
            window = db.inject(rng, counts)
            if window is not None:
                soak.db_faults.append(window)
            next_lock = time.monotonic() + 6 + rng.random() * 4


def harvest(fakes: dict, seen: dict[str, list[str | None]], counts: Counter) -> None:
    """Move the fakes' recorded calls into `seen` (tag -> faults met), keeping no bodies."""
    for fake in fakes.values():
        with fake._lock:
            calls = list(fake.calls)
            fake.calls.clear()
        for c in calls:
            text = (c.f1("prompt") or "") if c.form else ""
            if not text and isinstance(c.json, dict):
                text = str(c.json.get("input") or "")
            tag = next((w for w in text.split() if w.startswith("soaktag")), None)
            if c.fault:
                counts["faults_served"] += 1
                counts[f"served:{c.fault}"] += 1
            seen[tag or "?"].append(c.fault)


def rss_kib(pid: int) -> int:
    """Resident memory of the process and its children, KiB."""
    pids = [pid] + [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == pid]
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


# ---- the verdict ----------------------------------------------------------------------------------------------
def logged_errors(log: str) -> Counter:
    """Unhandled errors the server logged, by their exception's last line (the type, message cut)."""
    out: Counter = Counter()
    for block in log.split("unhandled error on ")[1:]:
        lines = [ln for ln in block.splitlines() if ln and not ln.startswith((" ", "Traceback"))]
        last = next((ln for ln in lines[1:] if not ln.startswith(("ERROR:", "INFO:", "WARNING:"))), lines[0])
        out[f"{lines[0].split()[0]}: {last[:80]}"] += 1
    return out


def judge(soak: Soak, seen: dict[str, list[str | None]], rows: dict[str, tuple[str, int | None, str | None]],
          db_faults: list[tuple[float, float]]) -> dict:
    problems: list[str] = []
    status_counts: Counter = Counter()
    n5xx = unexpected = intended = 0
    missing = wrong = 0
    answered_ids: set[str] = set()

    def during_db_fault(o: Outcome) -> bool:
        return any(a - 1 <= o.t1 and o.t0 <= b + 1 for a, b in db_faults)

    for o in soak.outcomes:
        if o.kind == "lookup_miss":  # (the lookup itself is counted as such)
            if not (o.status == 503 and during_db_fault(o)):
                problems.append(f"a generation that was served is not found: {o.status} {o.note}")
            continue
        status_counts[str(o.status)] += 1
        faulted = any(f is not None for f in seen.get(o.tag or "", []))
        if o.note and o.status is not None and o.status >= 400:
            problems.append(f"{o.kind} {o.status}: {o.note}")
        if o.status is not None and o.status >= 500:
            n5xx += 1
            if (o.status in INTENDED_5XX and o.audio and faulted) or (o.status == 503 and during_db_fault(o)):
                intended += 1
            else:
                unexpected += 1
                problems.append(f"unexpected {o.status} on {o.kind} (code {o.code}, tag {o.tag}, gen {o.gen_id})")
        elif o.status is None and o.kind not in ("vanish",) and not faulted:
            unexpected += 1
            problems.append(f"{o.kind}: no answer ({o.note}) without a fault (tag {o.tag})")
        elif (o.status is not None and 400 <= o.status < 500 and not o.malformed
              and o.kind not in ("models", "keys", "lookup") and not (o.status == 429 and faulted)):
            problems.append(f"well-formed {o.kind} got {o.status} (code {o.code})")
        # the ledger
        if not o.audio or not o.gen_id:
            if o.gen_id and o.gen_id in rows:
                wrong += 1
                problems.append(f"{o.kind} {o.status}: a ledger row for a request that runs nothing ({o.gen_id})")
            continue
        answered_ids.add(o.gen_id)
        row = rows.get(o.gen_id)
        if o.status == 200 and not o.partial:
            ok = {"success"}
        elif o.status == 200 and o.partial:
            ok = {"success", "cancelled"} | ({"error"} if faulted else set())
        elif o.status is None:  # a stream cut after its headers
            ok = {"error", "cancelled", "success"}
        else:
            ok = {"error"}
        must = o.status == 200 or (o.status in INTENDED_5XX | {429} and faulted)
        if o.stream_error:
            ok = {"error"}
            if not faulted:
                problems.append(f"{o.kind}: the event stream ended in an error without a fault (gen {o.gen_id})")
        if row is None:
            if must:
                missing += 1
                problems.append(f"{o.kind} {o.status}: no ledger row for {o.gen_id}")
            continue
        st, err_status, err_type = row
        if st not in ok or (st == "error" and o.status not in (None, 200) and err_status not in (None, o.status)) \
                or err_status == 500:
            wrong += 1
            problems.append(f"{o.kind} {o.status}: ledger row {o.gen_id} is {st}/{err_status}/{err_type}")
    vanished = sum(1 for o in soak.outcomes if o.kind == "vanish")
    orphans = {g: r for g, r in rows.items() if g not in answered_ids}
    bad_orphans = {g: r for g, r in orphans.items() if r[0] not in ("cancelled", "error") or r[1] == 500}
    wrong += max(len(bad_orphans), len(orphans) - vanished)  # (only a vanished client leaves a row unanswered)
    for g, r in list(bad_orphans.items())[:10]:
        problems.append(f"ledger row {g} with no answer is {r}")
    return {"status_counts": dict(status_counts), "5xx_seen": n5xx, "5xx_intended": intended,
            "5xx_unexpected_or_no_answer": unexpected, "ledger_rows": len(rows), "ledger_missing": missing,
            "ledger_wrong": wrong, "ledger_rows_without_answer": len(orphans),
            "event_streams_ended_in_error": sum(o.stream_error for o in soak.outcomes), "problems": problems[:60],
            "problem_count": len(problems)}


# ---- the test -------------------------------------------------------------------------------------------------
@pytest.fixture(params=[p for p in ("sqlite", "postgresql") if p in BACKENDS])
def database(request, tmp_path):
    if request.param == "sqlite":
        yield SqliteFaults(tmp_path / "data" / "audiorouter.db"), {}
        return
    db = PgDatabase().create()
    try:
        yield PostgresFaults(db), {"AUDIOROUTER_DATABASE_URL": db.url}
    finally:
        db.drop()


@pytest.mark.slow  # SOAK_S of traffic per backend, plus the warm-up and the ledger check
def test_soak(tmp_path, database):
    db, db_env = database
    fakes = {"openai": OpenAIFake().start(), "groq": GroqFake().start()}
    providers = {
        "openai": {"name": "OpenAI", "adapter": "openai", "base_url": fakes["openai"].base_url,
                   "api_key_env": "OPENAI_API_KEY", "timeout_s": UPSTREAM_TIMEOUT_S},
        "groq": {"name": "Groq", "adapter": "groq", "base_url": fakes["groq"].base_url,
                 "api_key_env": "GROQ_API_KEY", "timeout_s": UPSTREAM_TIMEOUT_S},
    }
    models = [
        {"id": "soak/stt", "name": "OpenAI then Groq", "kind": "transcription", "endpoints": [
            {"provider": "openai", "upstream_model": "whisper-1", "capabilities": {"prompt": True}},
            {"provider": "groq", "upstream_model": "whisper-large-v3", "capabilities": {"prompt": True}}]},
        {"id": "soak/stt-single", "name": "OpenAI only", "kind": "transcription", "endpoints": [
            {"provider": "openai", "upstream_model": "whisper-1", "capabilities": {"prompt": True}}]},
        {"id": "soak/translate", "name": "Groq then OpenAI", "kind": "transcription", "endpoints": [
            {"provider": "groq", "upstream_model": "whisper-large-v3", "capabilities": {"prompt": True, "translation": True}},
            {"provider": "openai", "upstream_model": "whisper-1", "capabilities": {"prompt": True, "translation": True}}]},
        {"id": "soak/tts", "name": "OpenAI speech", "kind": "speech", "voices": ["alloy", "nova"], "endpoints": [
            {"provider": "openai", "upstream_model": "tts-1"}]},
    ]
    catalog = write_catalog(tmp_path / "catalog.yaml", providers, models)
    env = gateway_env(catalog, tmp_path, OPENAI_API_KEY=fakes["openai"].api_key, GROQ_API_KEY=fakes["groq"].api_key,
                      AUDIOROUTER_RETRY_ATTEMPTS="2", AUDIOROUTER_BREAKER_THRESHOLD="1000000",
                      AUDIOROUTER_MANAGEMENT_KEY=ADMIN_KEY, AUDIOROUTER_LOG_LEVEL="warning", **db_env)
    gw = ServerProcess(env=env, tmp=tmp_path).start()
    audio = {"wav": encode_audio(tone(1.5, 16000), 16000, "wav"),
             "flac": (DEV_AUDIO / "jfk_inaugural_excerpt.flac").read_bytes()}
    counts: Counter = Counter()
    seen: dict[str, list[str | None]] = defaultdict(list)
    stop = threading.Event()
    try:
        with httpx.Client(base_url=gw.url, timeout=30, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin:
            r = admin.post("/api/v1/keys", json={"name": "soak-user", "limit": 1000})
            assert r.status_code == 201, r.text
        soak = Soak(gw.url, r.json()["key"])
        rng = random.Random(SEED)
        traffic = [Traffic(soak, audio, random.Random(rng.random())) for _ in range(WORKERS)]
        for t in traffic:  # warm up every route once before the first memory reading
            for fn in (t.stt_json, t.stt_multipart, t.translate, t.speech, t.models, t.keys, t.malformed):
                fn()
        harvest(fakes, seen, counts)
        rss_start = rss_kib(gw.proc.pid)
        t_start = time.monotonic()
        deadline = t_start + SOAK_S
        rss_samples = [(0.0, rss_start)]

        def work(t: Traffic) -> None:
            while time.monotonic() < deadline:
                t.step()

        threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in traffic]
        injector = threading.Thread(target=inject_faults, args=(fakes, db, soak, stop, random.Random(SEED + 1),
                                                                 counts), daemon=True)
        injector.start()
        for th in threads:
            th.start()
        while any(th.is_alive() for th in threads):
            time.sleep(min(5.0, max(0.1, deadline - time.monotonic())))
            harvest(fakes, seen, counts)
            rss_samples.append((round(time.monotonic() - t_start, 1), rss_kib(gw.proc.pid)))
        stop.set()
        injector.join(15)
        for th in threads:
            th.join(90)
        for t in traffic:
            t.close()
        time.sleep(UPSTREAM_TIMEOUT_S + 1)  # answers still owed to clients that vanished
        harvest(fakes, seen, counts)
        rss_end = rss_kib(gw.proc.pid)
        elapsed = time.monotonic() - t_start
    finally:
        stop.set()
        gw.stop()  # flushes the ledger's queue
        for f in fakes.values():
            f.stop()
    violations = {n: f.violations[:5] for n, f in fakes.items() if f.violations}
    rows = {g: (s, e, t) for g, s, e, t in db.rows()}
    verdict = judge(soak, seen, rows, soak.db_faults)
    log = gw.log_path.read_text(errors="replace")
    unhandled = logged_errors(log)
    # after the answer started, a stream the upstream cut can only be aborted: not a 500, and expected here
    unhandled_500 = {k: v for k, v in unhandled.items() if "UpstreamError" not in k}
    summary = {
        "database": db.name, "seconds": round(elapsed, 1), "seed": SEED, "workers": WORKERS,
        "requests": sum(o.kind != "lookup_miss" for o in soak.outcomes),
        "by_kind": dict(Counter(o.kind for o in soak.outcomes)),
        "faults_injected": counts["faults_served"] + counts["db_lock"] + counts["db_kill"],
        "faults": dict(sorted(counts.items())),
        "rss_kib_start": rss_start, "rss_kib_end": rss_end, "rss_samples": rss_samples[:: max(1, len(rss_samples) // 20)],
        "tracebacks_in_log": log.count("Traceback"), "unhandled_errors_logged": dict(unhandled),
        "server_500s_logged": sum(unhandled_500.values()), "fake_violations": violations, **verdict,
    }
    report = REPORT.with_name(f"{REPORT.stem}-{db.name}{REPORT.suffix}")
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k not in ("problems", "rss_samples")}, indent=1))
    assert summary["requests"] > SOAK_S, summary  # about one a second at the least, even on a loaded machine
    assert counts["faults_served"] > 0 and counts["db_lock"] + counts["db_kill"] > 0, summary
    assert verdict["5xx_unexpected_or_no_answer"] == 0, verdict["problems"]
    assert not unhandled_500, unhandled_500  # a 500 the client never saw (it had gone away) is still a 500
    assert verdict["ledger_missing"] == 0 and verdict["ledger_wrong"] == 0, verdict["problems"]
    assert verdict["problem_count"] == 0, verdict["problems"]
    assert not violations, violations
    # flat memory: what a warmed-up server holds may grow by allocator slack, not with the request count
    assert rss_end - rss_start < max(64 * 1024, rss_start // 4), (rss_start, rss_end, rss_samples)


def test_judge_finds_lost_and_wrong_rows_and_stray_5xx():
    """The verdict's own check: every kind of miss it is meant to count is counted."""
    soak = Soak("http://127.0.0.1:1", "k")
    soak.outcomes = [
        Outcome("stt_json", "t1", 200, "g-ok", 0, 1, audio=True),
        Outcome("stt_json", "t2", 200, "g-lost", 0, 1, audio=True),            # no row: missing
        Outcome("speech", "t3", 200, "g-half", 0, 1, audio=True),              # row says cancelled: wrong
        Outcome("stt_json", "t4", 502, "g-fault", 0, 1, audio=True),           # fault served: intended
        Outcome("stt_json", "t5", 502, "g-nofault", 0, 1, audio=True),         # no fault: unexpected
        Outcome("models", None, 500, "g-models", 0, 1),                         # a 500: unexpected
        Outcome("keys", None, 503, "g-keys", 5, 6),                             # while the db was locked
    ]
    seen = {"t1": [None], "t2": [None], "t3": [None], "t4": ["status:502"], "t5": [None]}
    rows = {"g-ok": ("success", None, None), "g-half": ("cancelled", None, None),
            "g-fault": ("error", 502, "upstream_error"), "g-stray": ("incomplete", None, None)}
    v = judge(soak, seen, rows, [(5.5, 5.8)])
    assert (v["5xx_seen"], v["5xx_intended"], v["5xx_unexpected_or_no_answer"]) == (4, 2, 2)
    assert v["ledger_missing"] == 1
    assert v["ledger_wrong"] == 2  # g-half; g-stray (incomplete, and no client vanished to explain it)
