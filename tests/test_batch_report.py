"""bench/report.py renders bench/batch_jobs.py's results (`res["batch_jobs"]`) as the "Batch jobs" section:
throughput with 1 and 2 worker processes in x real-time and their ratio, and the idle queue wait against the
100 ms target. A synthetic results dict in batch_jobs.run()'s shape; no benchmark runs."""
from __future__ import annotations

import importlib.util
import sys

from conftest import ROOT


def _report():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec = importlib.util.spec_from_file_location("bench_report_under_test", ROOT / "bench" / "report.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(ROOT / "bench"))


def _run(workers: int, wall: float, x: float, median: float | None, mx: float | None, clips: int = 8) -> dict:
    r = {"workers": workers, "clips": clips, "audio_s": 59.47, "wall_s": wall, "x_realtime": x}
    if median is not None:
        r.update(queue_wait_ms_median=median, queue_wait_ms_max=mx)
    return r


def test_batch_section_renders_throughput_ratio_and_queue_wait():
    report = _report()
    res = {"cpus": 2, "runs": [_run(1, 72.5, 0.82, 35.2, 81.0), _run(2, 66.8, 0.89, 41.0, 140.3)],
           "ratio_2_vs_1": 1.09, "redis_queue": _run(1, 9.1, 1.31, 131.4, 190.0, clips=2)}
    lines = report.batch_section(res)
    text = "\n".join(lines)
    assert lines[0] == "## Batch jobs"
    assert "8 English dev clips (59.5 s of audio)" in text and "(2 CPUs)" in text
    assert "| 1 worker process, SQLite queue | 72.5 s | 0.82x | 35 ms (81 ms) |" in lines
    assert "| 2 worker processes, SQLite queue | 66.8 s | 0.89x | 41 ms (140 ms) |" in lines
    assert "| 1 worker process, Redis queue (2 clips) | 9.1 s | 1.31x | 131 ms (190 ms) |" in lines
    assert any(line.startswith("| throughput, 2 worker processes / 1") and "| 1.09x |" in line for line in lines)
    verdicts = {line.split(" (median")[0]: line.rsplit("|", 2)[1].strip() for line in lines
                if line.startswith("| queue wait when idle < 100 ms")}
    assert verdicts == {"| queue wait when idle < 100 ms, 1 worker(s), SQLite queue": "yes",
                        "| queue wait when idle < 100 ms, 2 worker(s), SQLite queue": "yes",
                        "| queue wait when idle < 100 ms, Redis queue": "no"}


def test_batch_section_without_results_or_waits():
    report = _report()
    assert report.batch_section({}) == []
    lines = report.batch_section({"cpus": 2, "runs": [_run(1, 10.0, 1.5, None, None), _run(2, 6.0, 2.5, None, None)],
                                  "ratio_2_vs_1": 1.67})
    assert "| 2 worker processes, SQLite queue | 6.0 s | 2.50x | n/a |" in lines
    assert not any(line.startswith("| queue wait when idle") for line in lines)  # nothing measured, nothing judged
    assert any("| 1.67x |" in line for line in lines)
