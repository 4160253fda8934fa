"""Log lines for people (text) or for a log collector (JSON), with request and task ids.

``GRIDWATCH_LOG_FORMAT=json`` makes every log record one JSON object on one line::

    {"time": "2026-07-04T05:05:01.123Z", "level": "INFO", "logger": "gridwatch.web.access",
     "message": "GET /maps/ 200 12.3 ms", "request_id": "5f0c…", "task_id": null, "user": "admin"}

The ids come from context variables that the web app (per request: the ``X-Request-ID`` header
or a generated id, and the signed-in user) and the Celery workers (per task: the task id) set
through :func:`bind`; every log record made while they are set carries them, whichever library
logged it. ``text`` (the default) writes the same fields as a readable line.

This module knows neither Flask nor Celery: :mod:`gridwatch.web.metrics` and
:mod:`gridwatch.workers.celery_app` call it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import IO, Any

request_id_var: ContextVar[str | None] = ContextVar("gridwatch_request_id", default=None)
task_id_var: ContextVar[str | None] = ContextVar("gridwatch_task_id", default=None)
user_var: ContextVar[str | None] = ContextVar("gridwatch_user", default=None)

CONTEXT_VARS: dict[str, ContextVar[str | None]] = {
    "request_id": request_id_var,
    "task_id": task_id_var,
    "user": user_var,
}
"""The context fields every record carries, by name."""

TEXT_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s [request=%(request_id)s task=%(task_id)s "
    "user=%(user)s] %(message)s"
)

# A client-supplied request id is echoed in a response header and written into logs: keep it
# short and free of anything that could split a line or a header.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
_HANDLER_MARK = "_gridwatch_handler"


def request_id_from(header: str | None) -> str:
    """Return the client's request id when it is usable, else a new random one.

    Parameters
    ----------
    header : str or None
        The ``X-Request-ID`` header as received.

    Returns
    -------
    str
        At most 128 characters from ``A-Z a-z 0-9 . _ : @ / + = -``; a 32-digit hex id when the
        header is absent or holds anything else.
    """
    value = (header or "").strip()
    if _REQUEST_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


def bind(**fields: str | None) -> dict[str, Token[str | None]]:
    """Set context fields (``request_id``, ``task_id``, ``user``) for the records that follow.

    Parameters
    ----------
    **fields : str or None
        Values by field name; names other than :data:`CONTEXT_VARS` raise ``KeyError``.

    Returns
    -------
    dict
        Tokens to hand to :func:`unbind`, which restores the previous values.
    """
    return {name: CONTEXT_VARS[name].set(value) for name, value in fields.items()}


def unbind(tokens: dict[str, Token[str | None]]) -> None:
    """Restore the context fields that :func:`bind` changed.

    Parameters
    ----------
    tokens : dict
        What :func:`bind` returned.
    """
    for name, token in tokens.items():
        try:
            CONTEXT_VARS[name].reset(token)
        except ValueError:
            # The token belongs to another context (a signal fired in a different thread);
            # clearing is the best that can be done there.
            CONTEXT_VARS[name].set(None)


@contextmanager
def bound(**fields: str | None) -> Iterator[None]:
    """Bind context fields for the duration of a ``with`` block (see :func:`bind`)."""
    tokens = bind(**fields)
    try:
        yield
    finally:
        unbind(tokens)


def current_context() -> dict[str, str | None]:
    """Return the context fields now bound (``None`` for the unset ones)."""
    return {name: var.get() for name, var in CONTEXT_VARS.items()}


class ContextFilter(logging.Filter):
    """Put the bound context fields on every record (as ``record.request_id`` and so on).

    Attached to the handler, so records of every logger that reaches it get the fields; a
    field set explicitly through ``extra=`` is kept.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the context fields to ``record``; never drops a record."""
        for name, var in CONTEXT_VARS.items():
            if getattr(record, name, None) is None:
                setattr(record, name, var.get())
        return True


class JsonFormatter(logging.Formatter):
    r"""Format a record as one JSON object on one line.

    Keys: ``time`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``, ``message``,
    ``request_id``, ``task_id``, ``user``; ``exception`` holds the traceback text when the
    record has one. Non-ASCII text (Chinese) is written as it is, not as ``\\uXXXX`` escapes.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Return the JSON line for ``record`` (without the newline)."""
        moment = datetime.fromtimestamp(record.created, UTC)
        payload: dict[str, Any] = {
            "time": moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, var in CONTEXT_VARS.items():
            value = getattr(record, name, None)
            payload[name] = var.get() if value is None else value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            payload["exception"] = record.exc_text
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        return json.dumps(payload, ensure_ascii=False, default=str)


class _StandardErrorHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is at the time of each record.

    Test runners and daemonising servers replace ``sys.stderr``; a handler holding the stream
    it saw at start-up would write to a closed file afterwards.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> IO[str]:
        """Return the current standard error."""
        return sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        """Ignore: the stream is always the current standard error."""


def make_handler(log_format: str, stream: IO[str] | None = None) -> logging.Handler:
    """Return a stream handler writing ``text`` or ``json`` lines with the context fields.

    Parameters
    ----------
    log_format : {"text", "json"}
        The value of ``GRIDWATCH_LOG_FORMAT``.
    stream : file-like, optional
        Where to write; standard error by default.

    Returns
    -------
    logging.Handler
    """
    handler: logging.Handler = (
        logging.StreamHandler(stream) if stream is not None else _StandardErrorHandler()
    )
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(ContextFilter())
    setattr(handler, _HANDLER_MARK, True)
    return handler


def configure_logging(
    log_format: str, level: int | str = logging.INFO, stream: IO[str] | None = None
) -> logging.Handler:
    """Send every log record to one GridWatch handler on the root logger.

    Called once per process (web app factory, Celery ``setup_logging``). Calling it again
    replaces the GridWatch handler instead of adding a second one; handlers that others put on
    the root logger (pytest's, a deployment's) are left alone.

    Parameters
    ----------
    log_format : {"text", "json"}
        The value of ``GRIDWATCH_LOG_FORMAT``.
    level : int or str
        Least level of the root logger (``INFO`` by default; a more verbose level already set
        is kept).
    stream : file-like, optional
        Where to write; standard error by default.

    Returns
    -------
    logging.Handler
        The handler installed.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = make_handler(log_format, stream)
    root.addHandler(handler)
    wanted = logging.getLevelName(level) if isinstance(level, str) else level
    if root.level == logging.NOTSET or root.level > wanted:
        root.setLevel(wanted)
    return handler


__all__ = [
    "CONTEXT_VARS",
    "ContextFilter",
    "JsonFormatter",
    "bind",
    "bound",
    "configure_logging",
    "current_context",
    "make_handler",
    "request_id_from",
    "unbind",
]
