"""audiorouter serve | transcribe | speak | models"""
from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="audiorouter: one API for speech-to-text and text-to-speech.")


@app.callback()
def _root() -> None:
    """audiorouter: one API for speech-to-text and text-to-speech."""


@app.command()
def serve(host: str = typer.Option(None, help="bind address (default 127.0.0.1)"),
          port: int = typer.Option(None, help="port (default 8000)"),
          workers: int = typer.Option(None, help="local inference workers"),
          log_level: str = typer.Option(None)) -> None:
    """Run the gateway."""
    import os

    import uvicorn

    from .config import get_settings
    if workers:
        os.environ["AUDIOROUTER_WORKERS"] = str(workers)
    s = get_settings()
    from .api.app import create_app
    uvicorn.run(create_app(s), host=host or s.host, port=port or s.port, log_level=log_level or s.log_level,
                loop="uvloop", http="httptools", access_log=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
