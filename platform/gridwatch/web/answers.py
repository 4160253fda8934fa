"""Answers of the read-only metrics API kept per process and served in front of Flask.

Dashboards, the command-centre wall and county scripts ask the same few questions — the
metrics of one level and period, as JSON or GeoJSON — many times between two runs. Their
answer depends only on the question, the published run, the administrative tree and the
caller's jurisdiction, so :class:`AnswerCache` (WSGI middleware around the Flask app) keeps
each ``200`` answer and gives it again, without entering Flask, to a later caller for whom
all of these are the same.

Whether they are the same is asked of the database on every request, in one round trip:
the caller's token and user (revoked, disabled, role, area), the newest published run and
the tree's signature (:func:`gridwatch.areas.tree_signature_columns`). So a revoked token is
refused at once, a new run or an areas import is seen at once, and nothing is served to
anyone the app itself would not have answered the same way. Everything the cache cannot
decide goes to Flask unchanged:

- only ``GET`` of :data:`CACHED_PATHS` signed with ``Authorization: Bearer`` and no cookie
  (a browser's session may carry another language and is checked by the app);
- only users whose jurisdiction follows from their role and area (:data:`CACHED_ROLES`; a
  station user's townships are read from the stations table on every request);
- a token whose last use is due to be recorded (once a minute) is answered by the app,
  which records it;
- only ``200`` answers without ``Set-Cookie``.

A hit is still counted, timed and logged like every request (:func:`record_answer`) and
carries the security headers the app gave the answer and a request id of its own; it is
gzipped for a client that takes gzip (compressed once, when kept: township metrics 72 → 8 KB).
"""

from __future__ import annotations

import gzip
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import Engine, Select
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.http import parse_accept_header

from gridwatch import logs
from gridwatch.accounts import TOKEN_PREFIX, token_digest, token_holder, token_holder_query
from gridwatch.areas import tree_signature_columns
from gridwatch.web.metrics import REQUEST_ID_HEADER, record_answer
from gridwatch.workers.engine import published_run_query

#: Paths whose answers are kept, and their endpoint names (for the request metrics).
CACHED_PATHS = {
    "/api/v1/metrics": "api.metrics",
    "/api/v1/geo/metrics": "api.geo_metrics",
    "/api/v1/geo/hotspots": "api.geo_hotspots",
}
#: Roles whose jurisdiction is a function of role, area and the administrative tree.
CACHED_ROLES = frozenset({"admin", "county", "township", "viewer"})
#: Headers of a kept answer that belong to one response only (the server adds its own).
_UNKEPT_HEADERS = frozenset(
    {
        "set-cookie",
        REQUEST_ID_HEADER.lower(),
        "date",
        "server",
        "connection",
        "keep-alive",
        "content-length",
        "content-encoding",
        "vary",
    }
)

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


@dataclass(frozen=True)
class Answer:
    """A kept ``200`` answer: status line, headers (but its length) and body, also gzipped."""

    status: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    gzipped: bytes

    @property
    def size(self) -> int:
        """Bytes held (both bodies)."""
        return len(self.body) + len(self.gzipped)

    @classmethod
    def of(cls, status: str, headers: Iterable[tuple[str, str]], body: bytes) -> Answer:
        """Return the answer to keep of an app's response."""
        kept = tuple((n, v) for n, v in headers if n.lower() not in _UNKEPT_HEADERS)
        return cls(status, kept, body, gzip.compress(body, compresslevel=6))

    def serve(self, start_response: StartResponse, accept_encoding: str, request_id: str) -> bytes:
        """Start the response (gzipped when the client takes it) and return its body."""
        compressed = _takes_gzip(accept_encoding)
        body = self.gzipped if compressed else self.body
        headers = [
            *self.headers,
            ("Content-Length", str(len(body))),
            ("Vary", "Accept-Encoding"),
            (REQUEST_ID_HEADER, request_id),
        ]
        if compressed:
            headers.append(("Content-Encoding", "gzip"))
        start_response(self.status, headers)
        return body


class AnswerStore:
    """A thread-safe least-recently-used store of answers, bounded in bytes.

    Parameters
    ----------
    max_bytes : int
        Body bytes kept at most; an answer larger than a quarter of it is not kept.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._answers: OrderedDict[tuple[Any, ...], Answer] = OrderedDict()
        self._bytes = 0
        self._generation: tuple[Any, ...] | None = None
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._answers)

    @property
    def size(self) -> int:
        """Body bytes held."""
        return self._bytes

    def enter(self, generation: tuple[Any, ...]) -> None:
        """Note the data generation (published run, administrative tree) a request saw.

        A new generation forgets every answer of the old one.
        """
        with self._lock:
            if generation != self._generation:
                self._answers.clear()
                self._bytes = 0
                self._generation = generation

    def get(self, key: tuple[Any, ...]) -> Answer | None:
        """Return the answer kept under ``key``, if any."""
        with self._lock:
            answer = self._answers.get(key)
            if answer is None:
                self.misses += 1
                return None
            self._answers.move_to_end(key)
            self.hits += 1
            return answer

    def put(self, generation: tuple[Any, ...], key: tuple[Any, ...], answer: Answer) -> None:
        """Keep ``answer`` under ``key`` unless another generation was entered meanwhile."""
        size = answer.size
        if size * 4 > self.max_bytes:
            return
        with self._lock:
            if generation != self._generation:
                return
            previous = self._answers.pop(key, None)
            if previous is not None:
                self._bytes -= previous.size
            self._answers[key] = answer
            self._bytes += size
            while self._bytes > self.max_bytes and self._answers:
                _, dropped = self._answers.popitem(last=False)
                self._bytes -= dropped.size


class OneRowQuery:
    """A one-row SELECT compiled once and run on the driver's own cursor.

    SQLAlchemy's execution machinery costs about 0.1 ms a call, more than the query itself;
    the freshness check runs on every API request, so it is compiled once for the engine's
    dialect and its result columns are converted by their types' own processors. The
    statement's literal values are plain strings and numbers (no bind processing needed).

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The database.
    statement : sqlalchemy.Select
        The query; its bind parameters other than literals are given to :meth:`first`.
    """

    def __init__(self, engine: Engine, statement: Select[Any]) -> None:
        dialect = engine.dialect
        compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
        self.engine = engine
        self.sql = compiled.string
        self._literals = {name: bind.effective_value for name, bind in compiled.binds.items()}
        self._order = compiled.positiontup if compiled.positional else None
        self._processors = [
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in statement.selected_columns
        ]

    def first(self, **params: Any) -> tuple[Any, ...] | None:
        """Return the first row (converted as SQLAlchemy would), or ``None``."""
        values = {**self._literals, **params}
        arguments: Any = [values[n] for n in self._order] if self._order else values
        connection = self.engine.raw_connection()
        try:
            cursor = connection.cursor()
            try:
                cursor.execute(self.sql, arguments)
                row = cursor.fetchone()
            finally:
                cursor.close()
            connection.rollback()  # end the read transaction (PostgreSQL opens one)
        finally:
            connection.close()
        if row is None:
            return None
        return tuple(
            process(value) if process is not None else value
            for process, value in zip(self._processors, row, strict=True)
        )


class AnswerCache:
    """WSGI middleware serving kept API answers (see the module's description).

    Parameters
    ----------
    app : WSGI application
        The Flask app's ``wsgi_app``.
    engine : sqlalchemy.Engine
        The app's database.
    max_bytes : int
        Answer bytes kept per process.
    """

    def __init__(self, app: WSGIApp, engine: Engine, max_bytes: int) -> None:
        self.app = app
        self.store = AnswerStore(max_bytes)
        self._query = OneRowQuery(
            engine,
            token_holder_query(published_run_query().scalar_subquery(), *tree_signature_columns()),
        )
        self._database_errors = (SQLAlchemyError, engine.dialect.loaded_dbapi.Error)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Serve a kept answer, or let the app answer (and keep what may be kept)."""
        endpoint = CACHED_PATHS.get(environ.get("PATH_INFO", ""))
        token = _bearer(environ) if endpoint is not None else None
        if token is None or environ.get("REQUEST_METHOD") != "GET" or "HTTP_COOKIE" in environ:
            return self.app(environ, start_response)
        started = time.perf_counter()
        try:
            row = self._query.first(digest=token_digest(token))
        except self._database_errors:
            return self.app(environ, start_response)  # the app answers as it does when down
        holder = token_holder(row) if row is not None else None
        if row is None or holder is None or holder.role not in CACHED_ROLES:
            return self.app(environ, start_response)
        generation = tuple(row[8:])
        key = (
            environ["PATH_INFO"],
            tuple(sorted(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))),
            holder.role,
            holder.area_id,
        )
        self.store.enter(generation)
        answer = None if holder.touch_due else self.store.get(key)
        if answer is None:
            return self._answer_and_keep(environ, start_response, generation, key)
        request_id = logs.request_id_from(environ.get("HTTP_X_REQUEST_ID"))
        body = answer.serve(start_response, environ.get("HTTP_ACCEPT_ENCODING", ""), request_id)
        with logs.bound(request_id=request_id, user=holder.username):
            record_answer(
                endpoint, "GET", environ["PATH_INFO"], 200, time.perf_counter() - started
            )
        return [body]

    def _answer_and_keep(
        self,
        environ: dict[str, Any],
        start_response: StartResponse,
        generation: tuple[Any, ...],
        key: tuple[Any, ...],
    ) -> Iterable[bytes]:
        """Let the app answer; keep a ``200`` answer without cookies."""
        response: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            response["status"], response["headers"] = status, headers
            return start_response(status, headers, exc_info)

        chunks = self.app(environ, capture)
        try:
            body = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        status: str = response.get("status", "")
        headers: list[tuple[str, str]] = response.get("headers", [])
        if status.startswith("200 ") and not any(
            name.lower() == "set-cookie" for name, _ in headers
        ):
            self.store.put(generation, key, Answer.of(status, headers, body))
        return [body]


def _takes_gzip(accept_encoding: str) -> bool:
    return "gzip" in accept_encoding and parse_accept_header(accept_encoding)["gzip"] > 0


def _bearer(environ: dict[str, Any]) -> str | None:
    scheme, _, value = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value.startswith(TOKEN_PREFIX):
        return value
    return None


__all__ = ["CACHED_PATHS", "CACHED_ROLES", "Answer", "AnswerCache", "AnswerStore", "OneRowQuery"]
