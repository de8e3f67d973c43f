"""glibc's mmap threshold, set for the gateway's memory and raised while a native engine computes.

`tune(threshold)` (at `serve` start): allocations of `threshold` bytes or more (AUDIOROUTER_MALLOC_MMAP_THRESHOLD,
default 1 MiB; 0 leaves glibc as it is) get their own mappings, given back to the system when freed. glibc
otherwise raises that threshold to the size of the largest block freed (up to 32 MiB), after which big buffers
(decoded audio, chunk encodings, VAD tensors: megabytes each) come from the per-thread heaps and their pages stay
with the process: RSS follows the highest peak ever reached, not what is in use. 1 MiB keeps the buffers of
ordinary requests (a 10 s upload is ~0.3 MB) in the heap: at glibc's 128 KiB starting value every such request
paid ~230 page faults and ~60 % more CPU; at 1 MiB the CPU per request is unchanged (measured with wrk, multipart
and JSON 10 s uploads, server CPU time per request). Setting the threshold also fixes the trim threshold (free
memory kept at the top of a heap) at its 128 KiB default, which made JSON requests fault their body buffers in
again each time: it is set to twice the threshold, glibc's own ratio when it adjusts them itself.

`big_buffers()`: a native engine's working buffers are bigger. The local Whisper allocates per layer a 12 MB
feed-forward activation (1500 x 2048 float32) among others; at a 1 MiB threshold each was mapped and faulted in
anew at every layer, and a 4 s question took 0.91-0.99 s to transcribe against 0.72-0.75 s at 16 MiB (one
process, thresholds alternated, 2026-12-08). A fixed 16 MiB for the whole process instead made the 25 MB JSON
request's peak RSS growth 3.3-3.5x its size (2.3-2.4x at 1 MiB; 8 MiB: 2.8-3.0x, Whisper 0.76-0.78 s). So the
threshold is raised to ENGINE_THRESHOLD only while some engine computes (a count over threads), and set back
when the last one ends; the trim threshold is left as it was. Allocations of other threads in that window come
from their heaps, as under glibc's own policy. The threshold is a global that every allocation reads, so
changing it at any time is safe."""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
from collections.abc import Iterator

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
ENGINE_THRESHOLD = 16 << 20



class _State:
    libc: ctypes.CDLL | None = None
    base: int | None = None  # the threshold tune() set (None: glibc decides, big_buffers does nothing)
    inside = 0               # big_buffers scopes open, over all threads
    lock = threading.Lock()


_state = _State()


def glibc() -> bool:
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):
        return False


def tune(threshold: int) -> int | None:
    """Set the mmap threshold (and the trim threshold to twice it) for this process. Skipped when `threshold`
    is 0, off glibc, or where glibc's MALLOC_MMAP_THRESHOLD_ or GLIBC_TUNABLES already decide it. Returns the
    threshold set, or None."""
    if threshold <= 0:
        return None
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "malloc.mmap_threshold" in os.environ.get("GLIBC_TUNABLES", ""):
        return None
    if not sys.platform.startswith("linux") or not glibc():
        return None  # musl, macOS: other allocators, nothing to set
    try:
        libc = ctypes.CDLL("libc.so.6")
        if libc.mallopt(M_MMAP_THRESHOLD, threshold) != 1:  # refused: over 32 MiB
            return None
        libc.mallopt(M_TRIM_THRESHOLD, 2 * threshold)
    except (OSError, AttributeError):
        return None
    _state.libc, _state.base = libc, threshold
    return threshold


def threshold() -> int | None:
    """The threshold in force as set here (ENGINE_THRESHOLD inside big_buffers), None where tune() set none."""
    if _state.base is None:
        return None
    return max(_state.base, ENGINE_THRESHOLD) if _state.inside else _state.base


@contextlib.contextmanager
def big_buffers() -> Iterator[None]:
    """While inside (in any thread), the mmap threshold is at least ENGINE_THRESHOLD; nothing where tune() did
    not set one."""
    st = _state
    if st.base is None or st.base >= ENGINE_THRESHOLD or st.libc is None:
        yield
        return
    with st.lock:
        st.inside += 1
        if st.inside == 1:
            st.libc.mallopt(M_MMAP_THRESHOLD, ENGINE_THRESHOLD)
    try:
        yield
    finally:
        with st.lock:
            st.inside -= 1
            if st.inside == 0:
                st.libc.mallopt(M_MMAP_THRESHOLD, st.base)
