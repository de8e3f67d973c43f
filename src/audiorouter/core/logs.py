"""Log output: plain text (the default) or one JSON object per line (AUDIOROUTER_LOG_FORMAT=json), for log
collectors. Every line written while a request is served carries its generation id (`generation_id`, the
same id as the X-Generation-Id header and the ledger row), whichever logger wrote it: ours, uvicorn's access
log, a library's.

    {"ts": "2026-12-07T19:40:01.123Z", "level": "warning", "logger": "audiorouter.router",
     "message": "...", "generation_id": "gen-1765136401-3f9a...", "exc": "Traceback ..."}
"""
from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from .metrics import generation_id

# a record's own attributes (and uvicorn's colour copy of the message): the rest are `extra=` fields
_STD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName", "color_message",
                                                                     "gid"}


class GenerationIdFilter(logging.Filter):
    """Puts the current request's generation id on the record (record.generation_id, None outside requests)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "generation_id"):
            record.generation_id = generation_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage(),
            "generation_id": getattr(record, "generation_id", None) or generation_id.get()}
        for k, v in vars(record).items():  # `extra=` fields
            if k not in _STD and k not in out and not k.startswith("_"):
                out[k] = v if isinstance(v, (str, int, float, bool, type(None))) else str(v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()


class TextFormatter(logging.Formatter):
    """The plain format, with the generation id after the level when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        gid = getattr(record, "generation_id", None) or generation_id.get()
        record.gid = f" [{gid}]" if gid else ""
        return super().format(record)


def log_config(fmt: str, level: str = "info") -> dict[str, Any]:
    """A logging.config.dictConfig dict for uvicorn.run(log_config=...): our loggers, uvicorn's error and access
    logs, and the root logger, all through one handler in the chosen format."""
    formatter = ({"()": JsonFormatter} if fmt == "json" else
                 {"()": TextFormatter, "fmt": "%(levelname)s%(gid)s %(name)s: %(message)s"})
    lvl = level.upper()
    return {
        "version": 1, "disable_existing_loggers": False,
        "filters": {"gid": {"()": GenerationIdFilter}},
        "formatters": {"main": formatter},
        "handlers": {"main": {"class": "logging.StreamHandler", "formatter": "main", "filters": ["gid"],
                              "stream": "ext://sys.stderr"}},
        "loggers": {"uvicorn": {"handlers": ["main"], "level": lvl, "propagate": False},
                    "uvicorn.error": {"level": lvl},
                    "uvicorn.access": {"handlers": ["main"], "level": lvl, "propagate": False},
                    "audiorouter": {"handlers": ["main"], "level": lvl, "propagate": False}},
        "root": {"handlers": ["main"], "level": "WARNING"},
    }
