"""audiorouter serve | transcribe | speak | models"""
from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="audiorouter: one API for speech-to-text and text-to-speech.")


@app.callback()
def _root() -> None:
    """audiorouter: one API for speech-to-text and text-to-speech."""


@app.command()
def serve(host: str = typer.Option(None, help="bind address (default 127.0.0.1, AUDIOROUTER_HOST)"),
          port: int = typer.Option(None, help="port (default 8000, AUDIOROUTER_PORT)"),
          workers: int = typer.Option(None, help="local inference workers (AUDIOROUTER_WORKERS)"),
          log_level: str = typer.Option(None),
          insecure_no_auth: bool = typer.Option(False, "--insecure-no-auth",
                                                help="serve a non-loopback address without API keys")) -> None:
    """Run the gateway."""
    import uvicorn

    from .config import get_settings
    if workers:
        os.environ["AUDIOROUTER_WORKERS"] = str(workers)
    s = get_settings()
    from .core import malloc
    malloc.tune(s.malloc_mmap_threshold)  # glibc: big freed buffers go back to the system (core/malloc.py)
    s.host, s.insecure_no_auth = host or s.host, insecure_no_auth or s.insecure_no_auth  # checked at start-up
    from .api.app import create_app
    application = create_app(s)
    _preload_vad(s, application.state.services.router.catalog)
    from .api.protocol import guarded_protocol  # httptools with read deadlines and connection caps
    from .core.logs import log_config  # text or JSON lines (AUDIOROUTER_LOG_FORMAT), with the generation id
    uvicorn.run(application, host=host or s.host, port=port or s.port, log_level=log_level or s.log_level,
                loop="uvloop", http=guarded_protocol(s), access_log=False,
                log_config=log_config(s.log_format, log_level or s.log_level))


def _preload_vad(settings, catalog) -> None:
    """Load the Silero VAD that cuts long audio at pauses now, where chunking can happen, instead of in the
    first long request (model + onnxruntime: ~40 MB and a few hundred ms). AUDIOROUTER_PRELOAD_VAD=true/false
    decides; unset, it follows AUDIOROUTER_PRELOAD."""
    want = settings.preload if settings.preload_vad is None else settings.preload_vad
    from .jobs.transcription import chunking_possible
    if want and chunking_possible(settings, catalog):
        from .audio.chunking import load_vad
        load_vad()


def _engine():
    """The same catalog, adapters and router the server uses, in-process (no server needed)."""
    from .config import Settings
    from .providers.registry import build_adapters
    from .routing.catalog import Catalog
    from .routing.router import Router
    settings = Settings(preload=False)
    catalog = Catalog.load(settings.catalog)
    return Router(catalog, build_adapters(catalog, settings), settings)


async def _close(router) -> None:
    for a in router.adapters.values():
        await a.aclose()


@app.command()
def transcribe(files: list[Path] = typer.Argument(..., exists=True, help="audio files (folders with --async)"),
               fmt: str = typer.Option("text", "--format", "-f", help="text | json | verbose_json | srt | vtt"),
               model: str = typer.Option("local/whisper-base", "--model", "-m"),
               language: str = typer.Option(None, "--language", "-l"),
               translate: bool = typer.Option(False, "--translate", help="translate to English"),
               output_dir: Path = typer.Option(None, "--output-dir", "-o",
                                               help="write <name>.<format> files here instead of stdout"),
               cache: bool = typer.Option(True, "--cache/--no-cache",
                                          help="use the transcript cache (AUDIOROUTER_CACHE_TTL_S)"),
               run_async: bool = typer.Option(False, "--async",
                                              help="submit batch jobs to a running server (needs -o); folders allowed"),
               server: str = typer.Option("http://127.0.0.1:8000", "--server", "-s", envvar="AUDIOROUTER_SERVER",
                                          help="gateway URL (with --async)"),
               api_key: str = typer.Option(None, "--api-key",
                                           help="API key for --async (default: AUDIOROUTER_API_KEY)"),
               ) -> None:
    """Transcribe audio files of any length (cut at pauses where needed; progress bar on long files).

    With --async the files (or every audio file in the folders given) become batch jobs on a running server;
    results are written to the --output-dir as they finish."""
    if run_async:
        from .cli_jobs import audio_files, submit_files
        if output_dir is None:
            raise typer.BadParameter("--async needs --output-dir")
        found = audio_files(files)
        if not found:
            typer.echo("error: no audio files found", err=True)
            raise typer.Exit(2)
        raise typer.Exit(1 if submit_files(found, output_dir, fmt, model, language, server, api_key) else 0)
    if dirs := [str(f) for f in files if f.is_dir()]:
        raise typer.BadParameter(f"{', '.join(dirs)} is a folder: give files, or use --async for folders")
    import orjson
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

    from .api.render import transcript_payload
    from .audio.subtitles import to_srt, to_vtt
    from .core.errors import GatewayError
    from .core.types import TRANSCRIPT_FORMATS, TranscriptionRequest
    from .jobs.transcription import OFF, USE, TranscriptCache, TranscriptionJob, audio_from_path

    if fmt not in TRANSCRIPT_FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(TRANSCRIPT_FORMATS)}")
    err = Console(stderr=True)
    router = _engine()
    store = TranscriptCache.from_settings(router.settings) if cache else None

    async def run() -> int:
        failures = 0
        try:
            with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                          TimeRemainingColumn(), console=err, transient=True) as progress:
                for path in files:
                    req = TranscriptionRequest(model=model, task="translate" if translate else "transcribe",
                                               audio=audio_from_path(path), language=language, response_format=fmt,
                                               timestamp_granularities=["word", "segment"] if fmt in ("srt", "vtt")
                                               else ["segment"])
                    job = TranscriptionJob(router, req, "file", router.settings, cache=store,
                                           cache_mode=USE if store is not None else OFF)
                    try:
                        await job.prepare()
                        total = max(job.duration or 0.0, 0.01)
                        task = progress.add_task(path.name, total=total)

                        def advance(t: float, task: TaskID = task) -> None:
                            progress.update(task, completed=t)
                        result = await job.run(progress=advance)
                        progress.update(task, completed=total)
                    except GatewayError as e:
                        err.print(f"[red]{path}: {e.message}[/red]")
                        failures += 1
                        continue
                    finally:
                        job.close()
                    t = result.transcript
                    if fmt == "text":
                        out = t.text + "\n"
                    elif fmt == "srt":
                        out = to_srt(t)
                    elif fmt == "vtt":
                        out = to_vtt(t)
                    else:
                        out = orjson.dumps(transcript_payload(t, result.usage, fmt, "openrouter", True),
                                           option=orjson.OPT_INDENT_2).decode() + "\n"
                    if output_dir:
                        output_dir.mkdir(parents=True, exist_ok=True)
                        ext = "json" if fmt.endswith("json") else ("txt" if fmt == "text" else fmt)
                        (output_dir / f"{path.stem}.{ext}").write_text(out, encoding="utf-8")
                    else:
                        if len(files) > 1 and fmt == "text":
                            sys.stdout.write(f"==> {path} <==\n")
                        sys.stdout.write(out)
                        sys.stdout.flush()
        finally:
            if store is not None:
                await store.aclose()
            await _close(router)
        return failures

    raise typer.Exit(1 if asyncio.run(run()) else 0)


@app.command()
def speak(text: str = typer.Argument(..., help="text to speak, or - to read stdin"),
          output: Path = typer.Option(..., "--output", "-o", help="output file; the extension picks the format"),
          voice: str = typer.Option(None, "--voice", "-v"),
          model: str = typer.Option("local/hibari", "--model", "-m"),
          speed: float = typer.Option(1.0, "--speed", min=0.25, max=4.0),
          fmt: str = typer.Option(None, "--format", "-f", help="mp3 | wav | flac | opus | aac | pcm")) -> None:
    """Synthesize speech to a file (text of any length: split at sentences where an endpoint needs it)."""
    from rich.console import Console

    from .core.errors import GatewayError
    from .core.types import SPEECH_FORMATS, SpeechRequest
    from .jobs.speech import encoded
    from .jobs.speech import speak as speak_job

    if text == "-":
        text = sys.stdin.read()
    if not text.strip():
        raise typer.BadParameter("text is empty")
    fmt = fmt or output.suffix.lstrip(".").lower() or "mp3"
    if fmt not in SPEECH_FORMATS:
        raise typer.BadParameter(f"format must be one of {', '.join(SPEECH_FORMATS)}")
    router = _engine()
    err = Console(stderr=True)

    async def run() -> int:
        try:
            result = await speak_job(router, SpeechRequest(model=model, input=text, voice=voice, response_format=fmt,
                                                           speed=speed))
            size = 0
            with open(output, "wb") as f:
                async for chunk in encoded(result, fmt):
                    f.write(chunk)
                    size += len(chunk)
            if fmt == "wav" and size >= 44:  # a file is seekable: give it exact sizes instead of streaming ones
                import struct
                with open(output, "r+b") as f:
                    f.seek(4)
                    f.write(struct.pack("<I", size - 8))
                    f.seek(40)
                    f.write(struct.pack("<I", size - 44))
            err.print(f"wrote {output} ({size} bytes, {fmt}, via {result.route.provider})")
            return 0
        except GatewayError as e:
            err.print(f"[red]{e.message}[/red]")
            return 1
        finally:
            await _close(router)

    raise typer.Exit(asyncio.run(run()))


@app.command()
def models(kind: str = typer.Option(None, "--kind", help="transcription | speech")) -> None:
    """List the catalog's models and which providers can serve them here."""
    from rich.console import Console
    from rich.table import Table

    router = _engine()
    table = Table("id", "kind", "providers (usable marked *)", "voices")
    for m in router.catalog.models.values():
        if kind and m.kind != kind:
            continue
        provs = ", ".join(f"{e.provider}{'*' if router.usable(e) else ''}" for e in router.endpoints(m))
        table.add_row(m.id, m.kind, provs, ", ".join(m.voices[:6]) + (" ..." if len(m.voices) > 6 else ""))
    Console().print(table)


from .cli_jobs import jobs_app, worker  # noqa: E402
from .cli_keys import db_app, keys_app  # noqa: E402

app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")
app.command("worker")(worker)
app.add_typer(jobs_app, name="jobs")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
