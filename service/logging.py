"""One logging pipeline: Switchboard's structlog events and every standard-library logger (uvicorn,
alembic, Litestar, warnings) are rendered by the same structlog processors, as text or as one JSON
object per line (``SWITCHBOARD_LOG_FORMAT=json``).

Secrets: monitor URLs and keys are never passed to a logger in the first place; httpx's own request
logging (which prints URLs) is kept at WARNING for the same reason; query strings (a listen WebSocket
may carry ``?token=<API key>``) are masked in every standard-library line, uvicorn's included.
"""

from __future__ import annotations

import logging
import re
import sys

import structlog
from structlog.types import EventDict, Processor, WrappedLogger

# ``/path?query`` or ``scheme://host/path?query`` inside a message: the query goes, the path stays.
_QUERY_STRING = re.compile(r"(/[^\s\"'?]*)\?[^\s\"']*")
REDACTED_QUERY = "?[redacted]"
_NOISY_LOGGERS = ("httpx", "httpcore", "websockets", "aiosqlite", "asyncio")


class _CurrentStderr:
    """Standard error as it is when a line is written, not when logging was configured (test
    frameworks and daemons swap ``sys.stderr``)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def redact_query_strings(text: str) -> str:
    """``text`` with the query string of every path or URL in it masked."""
    return _QUERY_STRING.sub(rf"\1{REDACTED_QUERY}", text) if "?" in text else text


def _access_fields(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """uvicorn's access line as fields (method, path without its query, status) instead of prose."""
    record = event_dict.get("_record")
    arguments = event_dict.pop("positional_args", ())
    if record is not None and record.name == "uvicorn.access" and len(arguments) == 5:
        client, method, path, http_version, status = arguments
        event_dict.update(
            event="request",
            client=client,
            method=method,
            path=str(path).split("?", 1)[0],
            http_version=http_version,
            status=status,
        )
    return event_dict


def _redact_foreign(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """Query strings out of a library's message and of its traceback (which may quote a URL)."""
    for key in ("event", "exception"):
        if isinstance(value := event_dict.get(key), str):
            event_dict[key] = redact_query_strings(value)
    return event_dict


def _renderer(fmt: str) -> Processor:
    if fmt == "json":
        return structlog.processors.JSONRenderer()
    # Plain tracebacks: rich ones print local variables, which can hold monitor URLs and keys.
    return structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)


def configure_logging(level: str = "info", fmt: str = "console") -> None:
    """Route structlog and the standard library's ``logging`` to standard error in one format."""
    numeric = getattr(logging, level.upper(), logging.INFO)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # JSON: a traceback becomes the ``exception`` field of its line, never lines of its own.
    exceptions: list[Processor] = [structlog.processors.format_exc_info] if fmt == "json" else []
    renderer = _renderer(fmt)
    # Switchboard's own events skip the standard library (faster on hot paths) and render directly.
    structlog.configure(
        processors=[*shared, *exceptions, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, _access_fields],
        pass_foreign_args=True,  # uvicorn's access line is rebuilt from its arguments
        # Redaction after the traceback is formatted: it may quote a URL too.
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *exceptions, _redact_foreign, renderer],
    )
    handler = logging.StreamHandler(_CurrentStderr())
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    # Loggers that brought their own handlers (uvicorn's default config, Litestar's) go through ours.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic", "litestar"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    for noisy in _NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    logging.captureWarnings(True)
