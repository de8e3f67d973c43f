"""audiorouter worker, and audiorouter jobs submit | list | show | cancel.

`worker` runs batch jobs from the shared queue (jobs/worker.py). The `jobs` commands are clients of a running
gateway's jobs API (--server, default http://127.0.0.1:8000; --api-key or AUDIOROUTER_API_KEY), so they work
from any machine. `jobs submit DIR -o OUT --format srt` is what `transcribe --async` runs."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import typer

jobs_app = typer.Typer(add_completion=False, no_args_is_help=True,
                       help="Batch transcription jobs (a gateway's jobs API).")
AUDIO_SUFFIXES = {".wav", ".mp3", ".flac", ".ogg", ".opus", ".m4a", ".aac", ".webm", ".mp4", ".mpeg", ".mpga", ".oga"}
JOBS = "/api/v1/audio/transcriptions/jobs"
FINAL = ("succeeded", "failed", "cancelled")


def worker(concurrency: int = typer.Option(None, "--concurrency", "-c",
                                           help="jobs run at once (AUDIOROUTER_JOBS_CONCURRENCY, default 1)"),
           log_level: str = typer.Option("warning", help="log level")) -> None:
    """Run batch transcription jobs from the queue (as many workers, on as many machines, as you like)."""
    import logging

    from .config import Settings
    from .jobs.worker import run_worker
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    raise typer.Exit(run_worker(settings, int(concurrency or settings.jobs_concurrency)))


def _client(server: str, api_key: str | None):
    import httpx
    key = api_key or os.environ.get("AUDIOROUTER_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=httpx.Timeout(60, connect=10))


def _check(resp: Any) -> Any:
    if resp.status_code >= 400:
        try:
            msg = resp.json()["error"]["message"]
        except Exception:
            msg = resp.text[:300]
        typer.echo(f"error: HTTP {resp.status_code}: {msg}", err=True)
        raise typer.Exit(1)
    return resp


SERVER = typer.Option("http://127.0.0.1:8000", "--server", "-s", envvar="AUDIOROUTER_SERVER", help="gateway URL")
API_KEY = typer.Option(None, "--api-key", help="API key (default: AUDIOROUTER_API_KEY)")


@jobs_app.command("submit")
def submit(inputs: list[Path] = typer.Argument(..., exists=True, help="audio files or folders of them"),
           output_dir: Path = typer.Option(..., "--output-dir", "-o", help="write <name>.<format> here"),
           fmt: str = typer.Option("text", "--format", "-f", help="text | json | verbose_json | srt | vtt"),
           model: str = typer.Option("local/whisper-base", "--model", "-m"),
           language: str = typer.Option(None, "--language", "-l"),
           server: str = SERVER, api_key: str = API_KEY,
           poll_s: float = typer.Option(0.5, "--poll", help="seconds between status checks")) -> None:
    """Submit every audio file as a job, show one progress bar across all of them, and write each result as it
    finishes. Submitting again after an interruption reuses the jobs already submitted (idempotency keys)."""
    from .core.types import TRANSCRIPT_FORMATS
    if fmt not in TRANSCRIPT_FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(TRANSCRIPT_FORMATS)}")
    files = audio_files(inputs)
    if not files:
        typer.echo("error: no audio files found", err=True)
        raise typer.Exit(2)
    raise typer.Exit(submit_files(files, output_dir, fmt, model, language, server, api_key, poll_s))


def audio_files(inputs: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in inputs:
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
        else:
            out.append(p)
    return out


def submit_files(files: list[Path], output_dir: Path, fmt: str, model: str, language: str | None, server: str,
                 api_key: str | None, poll_s: float = 0.5) -> int:
    """The body of `jobs submit` / `transcribe --async`: returns the number of failed files."""
    import hashlib

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    err = Console(stderr=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    ext = "json" if fmt.endswith("json") else ("txt" if fmt == "text" else fmt)
    pending: dict[str, Path] = {}
    totals: dict[str, float] = {}
    done_s: dict[str, float] = {}
    failures = 0
    with _client(server, api_key) as c, Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
            MofNCompleteColumn(), TimeRemainingColumn(), console=err) as progress:
        files_bar = progress.add_task("submitting", total=len(files))
        for path in files:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:32]
            data = {"model": model, "response_format": fmt,
                    "idempotency_key": f"cli:{path.resolve()}:{digest}:{model}:{language or ''}"}
            if language:
                data["language"] = language
            with open(path, "rb") as f:
                r = c.post(JOBS, data=data, files={"file": (path.name, f)})
            if r.status_code >= 400:
                err.print(f"[red]{path}: {_message(r)}[/red]")
                failures += 1
                progress.advance(files_bar)
                continue
            pending[r.json()["id"]] = path
        progress.update(files_bar, description="transcribing", completed=0, total=len(files))
        progress.advance(files_bar, failures)
        audio_bar = progress.add_task("audio seconds", total=None)
        while pending:
            for jid, path in list(pending.items()):
                r = c.get(f"{JOBS}/{jid}")
                if r.status_code >= 400:
                    continue
                job = r.json()
                total = job["progress"]["seconds_total"]
                if total:
                    totals[jid] = total
                done_s[jid] = job["progress"]["seconds_done"] or 0.0
                if job["status"] == "succeeded":
                    out = _check(c.get(f"{JOBS}/{jid}", params={"response_format": fmt}))
                    text = out.text if fmt in ("text", "srt", "vtt") else _result_json(out.json())
                    (output_dir / f"{path.stem}.{ext}").write_text(text, encoding="utf-8")
                elif job["status"] in ("failed", "cancelled"):
                    err.print(f"[red]{path}: {job['status']}: {(job.get('error') or {}).get('message', '')}[/red]")
                    failures += 1
                else:
                    continue
                done_s[jid] = totals.get(jid, done_s[jid])
                pending.pop(jid)
                progress.advance(files_bar)
            progress.update(audio_bar, total=sum(totals.values()) or None, completed=sum(done_s.values()))
            if pending:
                time.sleep(poll_s)
    return failures


def _result_json(job: dict[str, Any]) -> str:
    import orjson
    return orjson.dumps(job.get("result"), option=orjson.OPT_INDENT_2).decode() + "\n"


def _message(r: Any) -> str:
    try:
        return r.json()["error"]["message"]
    except Exception:
        return f"HTTP {r.status_code}"


@jobs_app.command("list")
def list_jobs(status: str = typer.Option(None, help="queued | running | succeeded | failed | cancelled"),
              limit: int = typer.Option(20, min=1, max=100), server: str = SERVER, api_key: str = API_KEY) -> None:
    """The caller's jobs, newest first."""
    from rich.console import Console
    from rich.table import Table
    params: dict[str, Any] = {"limit": limit}
    if status:
        params["status"] = status
    with _client(server, api_key) as c:
        data = _check(c.get(JOBS, params=params)).json()["data"]
    table = Table("id", "status", "progress", "model", "cost", "created")
    for j in data:
        p = j["progress"]
        frac = f"{100 * p['fraction']:.0f}%" if p.get("fraction") is not None else ""
        table.add_row(j["id"], j["status"], frac, j.get("model") or "", f"{j.get('cost', 0) or 0:.6f}",
                      time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(j["created_at"])))
    Console().print(table)


@jobs_app.command("show")
def show(job_id: str, fmt: str = typer.Option(None, "--format", "-f", help="print the result in this format"),
         server: str = SERVER, api_key: str = API_KEY) -> None:
    """A job's status (JSON), or with --format its result."""
    with _client(server, api_key) as c:
        r = _check(c.get(f"{JOBS}/{job_id}", params={"response_format": fmt} if fmt else None))
    typer.echo(r.text if fmt in ("text", "srt", "vtt") else _pretty(r.json()))


@jobs_app.command("cancel")
def cancel(job_id: str, server: str = SERVER, api_key: str = API_KEY) -> None:
    """Cancel a queued or running job (nothing is charged)."""
    with _client(server, api_key) as c:
        r = _check(c.delete(f"{JOBS}/{job_id}"))
    typer.echo(f"{job_id}: {r.json()['status']}")


def _pretty(data: Any) -> str:
    import orjson
    return orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()


# Standalone entry point until the main CLI registers these (cli.py: app.command()(worker) and
# app.add_typer(jobs_app, name="jobs")): python -m audiorouter.cli_jobs worker | jobs ...
standalone = typer.Typer(add_completion=False, no_args_is_help=True)
standalone.command("worker")(worker)
standalone.add_typer(jobs_app, name="jobs")

if __name__ == "__main__":
    standalone()
