"""Nothing lost when Langfuse is down or slow: a spooling exporter, its counts, and the replay.

:class:`SpoolingSpanExporter` wraps the OTLP/HTTP exporter the Langfuse SDK would build. A batch
that Langfuse accepted is counted as *sent*. A batch that failed after the OTLP exporter's own
retries (connection refused, timeout, HTTP 5xx, 429, and 401/403 so that fixing the keys recovers
it) is written as one OTLP protobuf file (an ``ExportTraceServiceRequest``) into the spool
directory and counted as *spooled*; anything else is *dropped* and counted. After a failure the
exporter sends nothing for a while (``Retry-After`` of a 429/503, else a growing back-off, and 5
minutes after a 401/403): the batches of that time go straight to the spool, so a dead or hanging
host costs one timeout, not one per batch, and the final flush stays short.

:func:`replay` re-sends the spooled files, oldest first, and deletes each one Langfuse accepted
(2xx). Re-sending is idempotent: the files keep the spans' ids, and Langfuse upserts observations
by id. Each failure class is explained once per process at WARNING, in plain words, with the fix;
the OTLP exporter's own per-batch log lines are demoted to DEBUG while this exporter handles them.

Files: ``<spool dir>/<host>/<time_ns>-<pid>-<counter>.pb``, one directory per Langfuse host (a
batch is only ever re-sent to the host it was meant for), written as a temporary file and renamed,
so readers never see half a file and several processes can share a directory. The directory's
total size is bounded: a new file that does not fit evicts the oldest ones. Batches of scores
(:mod:`pipecat_langfuse._scores`) share the folder and its bound as ``.scores.json`` files, the JSON
body of ``POST /api/public/scores``; :func:`replay` re-sends both kinds, each to its endpoint.
"""

from __future__ import annotations

import contextlib
import email.utils
import enum
import gzip
import itertools
import json
import logging
import math
import os
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import requests
from loguru import logger
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

SPOOL_SUFFIX = ".pb"
"""Suffix of a complete spool file of spans; anything else in the directory (``.tmp``) is ignored."""
SCORES_SUFFIX = ".scores.json"
"""Suffix of a complete spool file of scores: the JSON list sent to ``POST /api/public/scores``."""
SPOOL_SUFFIXES = (SPOOL_SUFFIX, SCORES_SUFFIX)
"""Suffixes of the complete spool files of both kinds."""
MAX_TRACKED_TRACES = 4096
"""Per-trace counts kept by one exporter (oldest traces forgotten first)."""
MAX_BACKOFF_S = 60.0
"""Longest pause after repeated transient failures without ``Retry-After``."""
MAX_RETRY_AFTER_S = 600.0
"""Longest ``Retry-After`` honoured; a larger value is capped to this."""
AUTH_PAUSE_S = 300.0
"""Pause after a 401/403: the keys will not get better within the process."""
FAILURE_PREFIX = "Sending traces to Langfuse failed: "
"""How each explanation of a failure class starts (one WARNING per class and process)."""
OTLP_LOGGER = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
"""The logger the OTLP/HTTP span exporter (and its HTTP client) report failures on."""


class Outcome(enum.Enum):
    """What happened to one exported batch (or to one replayed file)."""

    SENT = "sent"
    REFUSED = "refused"
    TIMEOUT = "timeout"
    SERVER_ERROR = "server_error"
    RATE_LIMITED = "rate_limited"
    AUTH = "auth"
    REJECTED = "rejected"
    NOT_SENT = "not_sent"


SPOOLED_OUTCOMES = frozenset(
    {Outcome.REFUSED, Outcome.TIMEOUT, Outcome.SERVER_ERROR, Outcome.RATE_LIMITED, Outcome.AUTH}
)
"""Failures whose batch is kept in the spool: transient ones, and wrong keys (a key fix recovers them)."""


@dataclass(frozen=True)
class Attempt:
    """The last HTTP attempt of an export, as the session saw it."""

    status: int | None = None
    retry_after: str | None = None
    error: BaseException | None = None


def classify(attempt: Attempt | None) -> Outcome:
    """The outcome of an export from its last HTTP attempt (None: no request was made)."""
    if attempt is None:
        return Outcome.NOT_SENT
    if attempt.status is None:
        error = attempt.error
        if isinstance(error, requests.Timeout | httpx.TimeoutException | TimeoutError):
            return Outcome.TIMEOUT
        return Outcome.REFUSED
    status = attempt.status
    if 200 <= status < 300:
        return Outcome.SENT
    if status in (401, 403):
        return Outcome.AUTH
    if status == 429:
        return Outcome.RATE_LIMITED
    if status >= 500 or status == 408:
        return Outcome.SERVER_ERROR
    return Outcome.REJECTED


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP date (RFC 9110).

    Args:
        value: The header's value, or None.
        now: The current Unix time (default: ``time.time()``).

    Returns:
        The non-negative wait, capped at :data:`MAX_RETRY_AFTER_S`; None when absent or unreadable.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            return None
        seconds = moment.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


class RetryPause:
    """When sending may resume after failures; thread-safe.

    A spooled failure pauses sending for the ``Retry-After`` of the answer, else a back-off that
    doubles with each failure in a row (capped at :data:`MAX_BACKOFF_S`), and :data:`AUTH_PAUSE_S`
    after a 401/403. A success resets the back-off.

    Args:
        clock: Monotonic time source (tests).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until = 0.0
        self._failures_in_a_row = 0
        self._lock = threading.Lock()

    def succeeded(self) -> None:
        """A batch went through: the next failure starts the back-off anew."""
        with self._lock:
            self._failures_in_a_row = 0

    def failed(self, outcome: Outcome, attempt: Attempt | None) -> None:
        """Pause after ``outcome`` when it is a failure whose batch is spooled; else do nothing."""
        if outcome not in SPOOLED_OUTCOMES:
            return
        with self._lock:
            self._failures_in_a_row += 1
            if outcome is Outcome.AUTH:
                pause = AUTH_PAUSE_S
            else:
                retry_after = parse_retry_after(attempt.retry_after if attempt else None)
                backoff = min(2.0**self._failures_in_a_row, MAX_BACKOFF_S)
                pause = retry_after if retry_after is not None else backoff
            self._until = self._clock() + pause

    def forever(self) -> None:
        """Never send again."""
        with self._lock:
            self._until = math.inf

    def remaining_s(self) -> float:
        """Seconds left before sending resumes (0 when not paused)."""
        with self._lock:
            return max(self._until - self._clock(), 0.0)


def failure_message(
    outcome: Outcome,
    *,
    noun: str,
    count: int,
    host: str,
    status: int | None,
    timeout_s: float,
    pause_s: float,
    where: str,
) -> str:
    """The plain-words explanation of a failure class, with its fix.

    Args:
        outcome: The failure class.
        noun: What was sent (``spans``, ``scores``).
        count: How many were in the batch.
        host: The Langfuse host.
        status: The HTTP status, if any.
        timeout_s: The request timeout (``LANGFUSE_TIMEOUT``).
        pause_s: Seconds before sending resumes.
        where: What became of the batch, e.g. ``kept in the spool (...)``.
    """
    messages = {
        Outcome.REFUSED: (
            f"Langfuse at {host} cannot be reached (connection refused or no route). The call goes on; "
            f"its {noun} are {where}. Check that Langfuse is running and that LANGFUSE_BASE_URL is right "
            "(`uv run test_langfuse`)."
        ),
        Outcome.TIMEOUT: (
            f"Langfuse at {host} did not answer within {timeout_s:g} s (LANGFUSE_TIMEOUT). The call goes "
            f"on; its {noun} are {where}. Check the network or the server's load; raise LANGFUSE_TIMEOUT for a "
            "slow link."
        ),
        Outcome.SERVER_ERROR: (
            f"Langfuse at {host} answered HTTP {status} (a server error). The call goes on; its {noun} are "
            f"{where}. Self-hosted: check the server's logs; Cloud: status.langfuse.com."
        ),
        Outcome.RATE_LIMITED: (
            f"Langfuse at {host} answered HTTP 429 (too many requests): sending pauses for {pause_s:.0f} s as "
            f"it asked (Retry-After). The call goes on; its {noun} are {where}. Lower the traffic or ask for "
            "a higher rate limit."
        ),
        Outcome.AUTH: (
            f"Langfuse at {host} rejected the keys (HTTP {status}). The call goes on; its {noun} are {where}. "
            "Fix LANGFUSE_PUBLIC_KEY / LANGFUSE_SECRET_KEY / LANGFUSE_BASE_URL (`uv run test_langfuse` tells "
            "which), then replay."
        ),
        Outcome.REJECTED: (
            f"Langfuse at {host} rejected a batch of {count} {noun} (HTTP {status}); it was dropped, since "
            "sending it again would fail the same way. Check LANGFUSE_BASE_URL (host only) with "
            "`uv run test_langfuse`."
        ),
        Outcome.NOT_SENT: (
            f"A batch of {count} {noun} could not be sent to Langfuse at {host} (the OTLP exporter did not send "
            "it, e.g. it was too large to encode or send; LOG_LEVEL=DEBUG shows why); it was dropped."
        ),
    }
    return messages[outcome]


class RecordingSession(requests.Session):
    """A ``requests`` session that remembers, per thread, the last attempt of the OTLP exporter."""

    def __init__(self) -> None:
        super().__init__()
        self._last = threading.local()

    def request(self, method: str, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
        """Send the request as ``requests`` does, and record its status, Retry-After or error."""
        try:
            response = super().request(method, url, *args, **kwargs)
        except Exception as exc:
            self._last.attempt = Attempt(error=exc)
            raise
        self._last.attempt = Attempt(status=response.status_code, retry_after=response.headers.get("retry-after"))
        return response

    def take_attempt(self) -> Attempt | None:
        """The last attempt made on this thread since the previous call, or None."""
        attempt: Attempt | None = getattr(self._last, "attempt", None)
        self._last.attempt = None
        return attempt


@dataclass(frozen=True)
class SpanCountsRecord:
    """Spans of one trace as the exporter handled them (see :class:`ExportLedger`)."""

    finished: int = 0
    sent: int = 0
    spooled: int = 0
    dropped: int = 0


class ExportLedger:
    """Per-trace counts of finished, sent, spooled and dropped spans; bounded and thread-safe."""

    def __init__(self, max_traces: int = MAX_TRACKED_TRACES) -> None:
        self._max = max_traces
        self._counts: OrderedDict[int, list[int]] = OrderedDict()
        self._lock = threading.Lock()

    def add(
        self,
        trace_id: int,
        *,
        finished: int = 0,
        sent: int = 0,
        spooled: int = 0,
        dropped: int = 0,
        known: bool = False,
    ) -> None:
        """Add to the counts of ``trace_id`` (negative values move spans between counts).

        With ``known``, a trace this ledger does not track is left alone.
        """
        with self._lock:
            counts = self._counts.get(trace_id)
            if counts is None:
                if known:
                    return
                counts = self._counts[trace_id] = [0, 0, 0, 0]
                while len(self._counts) > self._max:
                    self._counts.popitem(last=False)
            else:
                self._counts.move_to_end(trace_id)
            for index, value in enumerate((finished, sent, spooled, dropped)):
                counts[index] = max(counts[index] + value, 0)

    def get(self, trace_id: int) -> SpanCountsRecord | None:
        """The counts of ``trace_id``, or None when this exporter never saw it."""
        with self._lock:
            counts = self._counts.get(trace_id)
            return SpanCountsRecord(*counts) if counts is not None else None


class LedgerProcessor(SpanProcessor):
    """Counts, per trace, the finished spans that the Langfuse processor will hand to the exporter.

    Args:
        ledger: Where to count.
        will_export: The same decision the Langfuse processor makes for a finished span.
    """

    def __init__(self, ledger: ExportLedger, will_export: Callable[[ReadableSpan], bool]) -> None:
        self._ledger = ledger
        self._will_export = will_export

    def on_end(self, span: ReadableSpan) -> None:
        """Count ``span`` as finished when it will be exported."""
        try:
            if span.context is not None and self._will_export(span):
                self._ledger.add(span.context.trace_id, finished=1)
        except Exception:  # noqa: BLE001 - counting must never break tracing
            logger.opt(exception=False).debug("Could not count a finished span.")


class SpoolFullError(OSError):
    """A batch does not fit into the spool's size bound, even after evicting older files."""


@dataclass(frozen=True)
class Evicted:
    """A file the size bound removed, with its spans per trace id (a span file) or its scores (a score file)."""

    path: Path
    spans_by_trace: Mapping[int, int]
    scores: int = 0


def spans_per_trace(body: bytes) -> dict[int, int]:
    """Decode an ``ExportTraceServiceRequest`` and count its spans per trace id."""
    message = ExportTraceServiceRequest()
    message.ParseFromString(body)
    counts: dict[int, int] = {}
    for resource_spans in message.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                trace_id = int.from_bytes(span.trace_id, "big")
                counts[trace_id] = counts.get(trace_id, 0) + 1
    return counts


def scores_in(body: bytes) -> int:
    """The number of scores in the body of a score file (a JSON list)."""
    scores = json.loads(body)
    if not isinstance(scores, list):
        raise ValueError("a score file holds a JSON list")
    return len(scores)


def destination_folder(base_url: str) -> str:
    """The spool sub-folder of a Langfuse host, e.g. ``https_cloud.langfuse.com``."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", base_url.rstrip("/")).strip("_") or "langfuse"


class Spool:
    """A directory of spool files (OTLP protobuf, score JSON), bounded in total size, shared by processes.

    Args:
        directory: The folder of one Langfuse host (created on the first write).
        max_bytes: Bound of the total size of its ``.pb`` and ``.scores.json`` files together.
    """

    _counter = itertools.count(1)

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    def files(self, suffixes: tuple[str, ...] = SPOOL_SUFFIXES) -> list[Path]:
        """The complete spool files (of both kinds by default), oldest first (names start with the time)."""
        try:
            entries = [p for p in self.directory.iterdir() if p.name.endswith(suffixes)]
        except FileNotFoundError:
            return []
        return sorted(entries, key=lambda p: p.name)

    def write(self, body: bytes, suffix: str = SPOOL_SUFFIX) -> tuple[Path, list[Evicted]]:
        """Store ``body`` as a new file ending in ``suffix``, evicting the oldest files if the bound requires it.

        Returns:
            The new file and the files evicted to make room.

        Raises:
            SpoolFullError: ``body`` alone is larger than the bound.
            OSError: The directory cannot be created or written.
        """
        if len(body) > self.max_bytes:
            raise SpoolFullError(f"a batch of {len(body):,} bytes is larger than the spool bound")
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            evicted = self._make_room(len(body))
            name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._counter):06d}"
            temporary = self.directory / f".{name}.tmp"
            final = self.directory / f"{name}{suffix}"
            try:
                with open(temporary, "wb") as handle:
                    handle.write(body)
                os.replace(temporary, final)
            except BaseException:
                with contextlib.suppress(OSError):
                    temporary.unlink()
                raise
            return final, evicted

    def _make_room(self, incoming: int) -> list[Evicted]:
        sized = []
        for path in self.files():
            with contextlib.suppress(OSError):
                sized.append((path, path.stat().st_size))
        total = sum(size for _, size in sized)
        evicted = []
        for path, size in sized:
            if total + incoming <= self.max_bytes:
                break
            counts: dict[int, int] = {}
            scores = 0
            try:
                if path.name.endswith(SCORES_SUFFIX):
                    scores = scores_in(path.read_bytes())
                else:
                    counts = spans_per_trace(path.read_bytes())
            except Exception:  # noqa: BLE001 - an unreadable file is evicted all the same
                pass
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            total -= size
            evicted.append(Evicted(path, counts, scores))
        return evicted


def spool_full_message(spool: Spool, evicted: Sequence[Evicted]) -> str:
    """The warning when writing to ``spool`` evicted older files."""
    spans = sum(sum(item.spans_by_trace.values()) for item in evicted)
    scores = sum(item.scores for item in evicted)
    lost = f"{spans} spans and {scores} scores" if scores else f"{spans} spans"
    return (
        f"Tracing spool {spool.directory} reached its bound of {spool.max_bytes / 1e6:g} MB "
        f"(LANGFUSE_SPOOL_MAX_MB): deleted the oldest {len(evicted)} file(s), {lost}, to keep new ones. "
        "Replay it once Langfuse is back (`uv run test_langfuse --replay`), or raise LANGFUSE_SPOOL_MAX_MB."
    )


def spool_destination(spool: Spool | None) -> str:
    """Where a failed batch went, for a failure's explanation: the spool, or nowhere when it is off."""
    if spool is None:
        return "dropped (spooling is off: LANGFUSE_SPOOL_DIR)"
    return (
        f"kept in the spool ({spool.directory}) and re-sent at the next start of the bot or by "
        "`uv run test_langfuse --replay`"
    )


class _OnceLog:
    """Logs each message key once per process at WARNING, then at DEBUG."""

    _lock = threading.Lock()
    _shown: set[str] = set()  # noqa: RUF012 - process-wide on purpose

    @classmethod
    def warn(cls, key: str, message: str) -> None:
        with cls._lock:
            first = key not in cls._shown
            cls._shown.add(key)
        logger.log("WARNING" if first else "DEBUG", message)

    @classmethod
    def reset(cls) -> None:
        """Forget what was shown (tests)."""
        with cls._lock:
            cls._shown.clear()


warn_once = _OnceLog.warn
"""Log ``message`` at WARNING the first time ``key`` is seen in the process, at DEBUG after."""
reset_warnings = _OnceLog.reset


class _DemoteWhileHandling(logging.Filter):
    """Demote the OTLP exporter's log records to DEBUG on a thread inside :meth:`SpoolingSpanExporter.export`."""

    active = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(self.active, "depth", 0) and record.levelno > logging.DEBUG:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


_DEMOTE = _DemoteWhileHandling()
logging.getLogger(OTLP_LOGGER).addFilter(_DEMOTE)


@contextlib.contextmanager
def _handling() -> Iterator[None]:
    _DEMOTE.active.depth = getattr(_DEMOTE.active, "depth", 0) + 1
    try:
        yield
    finally:
        _DEMOTE.active.depth -= 1


class SpoolingSpanExporter(SpanExporter):
    """Sends batches with ``inner``; keeps what failed in ``spool``; counts every span per trace.

    Args:
        inner: The OTLP/HTTP exporter the SDK would have used.
        session: The session ``inner`` sends with, which tells how its last attempt ended.
        spool: Where failed batches go; None disables spooling (they are dropped and counted).
        base_url: The Langfuse host, for the messages.
        timeout_s: ``inner``'s request timeout, for the messages.
        clock: Monotonic time source (tests).
    """

    def __init__(
        self,
        inner: SpanExporter,
        *,
        session: RecordingSession | None,
        spool: Spool | None,
        base_url: str,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.session = session
        self.spool = spool
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.ledger = ExportLedger()
        self.ledger_installed = False
        self._pause = RetryPause(clock)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Send ``spans``; on a failure keep them in the spool or count them as dropped. Never raises."""
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            with _handling():
                return self._export(spans)
        except Exception as exc:  # noqa: BLE001 - the exporter must never raise into the SDK
            self._count(spans, dropped=True)
            _OnceLog.warn("unexpected", f"Tracing export failed unexpectedly ({exc!r}); {len(spans)} spans dropped.")
            return SpanExportResult.FAILURE

    def _export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._pause.remaining_s() > 0:
            self._keep(spans, None)
            return SpanExportResult.FAILURE
        if self.session is not None:
            self.session.take_attempt()
        result = self.inner.export(spans)
        attempt = self.session.take_attempt() if self.session is not None else None
        outcome = Outcome.SENT if result is SpanExportResult.SUCCESS else classify(attempt)
        if outcome is Outcome.SENT:
            self._pause.succeeded()
            self._count(spans, sent=True)
            return SpanExportResult.SUCCESS
        self._pause.failed(outcome, attempt)
        if outcome in SPOOLED_OUTCOMES:
            self._keep(spans, outcome, attempt)
        else:
            self._count(spans, dropped=True)
            self._explain(outcome, attempt, len(spans), kept=False)
        return SpanExportResult.FAILURE

    def divert(self) -> None:
        """Send nothing any more: every later batch goes straight to the spool (e.g. before a hurried exit).

        With the exporter diverted, the SDK's own exit flush takes no longer than the export in
        flight (at most ``LANGFUSE_TIMEOUT``), and what was still queued is kept instead of lost.
        """
        self._pause.forever()

    def retry_pause_s(self) -> float:
        """Seconds left before the exporter sends again (0 when it is not paused)."""
        return self._pause.remaining_s()

    def _keep(self, spans: Sequence[ReadableSpan], outcome: Outcome | None, attempt: Attempt | None = None) -> None:
        if outcome is not None:
            self._explain(outcome, attempt, len(spans), kept=self.spool is not None)
        if self.spool is None:
            self._count(spans, dropped=True)
            return
        try:
            body = encode_spans(spans).SerializeToString()
            path, evicted = self.spool.write(body)
        except SpoolFullError as exc:
            self._count(spans, dropped=True)
            _OnceLog.warn(
                "spool-too-small",
                f"Tracing spool: {exc} ({self.spool.max_bytes / 1e6:g} MB, LANGFUSE_SPOOL_MAX_MB); "
                f"{len(spans)} spans dropped. Raise LANGFUSE_SPOOL_MAX_MB.",
            )
            return
        except OSError as exc:
            self._count(spans, dropped=True)
            _OnceLog.warn(
                "spool-unwritable",
                f"Tracing spool: cannot write to {self.spool.directory} ({exc.strerror or exc!r}); spans that "
                "Langfuse did not take are dropped. Set LANGFUSE_SPOOL_DIR to a writable folder "
                "(in a container: a mounted volume), or LANGFUSE_SPOOL_DIR=off to stop spooling.",
            )
            return
        self._count(spans, spooled=True)
        logger.debug(f"Tracing spool: {len(spans)} spans kept in {path.name}.")
        if evicted:
            for item in evicted:
                for trace_id, count in item.spans_by_trace.items():
                    self.ledger.add(trace_id, spooled=-count, dropped=count, known=True)
            _OnceLog.warn("spool-full", spool_full_message(self.spool, evicted))

    def _explain(self, outcome: Outcome, attempt: Attempt | None, count: int, *, kept: bool) -> None:
        where = spool_destination(self.spool if kept else None)
        message = failure_message(
            outcome,
            noun="spans",
            count=count,
            host=self.base_url,
            status=attempt.status if attempt else None,
            timeout_s=self.timeout_s,
            pause_s=self.retry_pause_s(),
            where=where,
        )
        _OnceLog.warn(outcome.value, f"{FAILURE_PREFIX}{message}")

    def _count(
        self, spans: Sequence[ReadableSpan], *, sent: bool = False, spooled: bool = False, dropped: bool = False
    ) -> None:
        per_trace: dict[int, int] = {}
        for span in spans:
            if span.context is not None:
                per_trace[span.context.trace_id] = per_trace.get(span.context.trace_id, 0) + 1
        for trace_id, count in per_trace.items():
            self.ledger.add(
                trace_id, sent=count if sent else 0, spooled=count if spooled else 0, dropped=count if dropped else 0
            )

    def shutdown(self) -> None:
        """Shut the inner exporter down."""
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here."""
        return self.inner.force_flush(timeout_millis)


@dataclass(frozen=True)
class ReplayReport:
    """What :func:`replay` did.

    Attributes:
        directory: The spool folder of the host.
        sent_files: Files Langfuse accepted (deleted), span and score files alike.
        sent_spans: Spans in those files.
        failed_files: Files Langfuse refused for good (HTTP 4xx other than 401/403/408/429): kept.
        kept_files: Files not sent, because Langfuse is unreachable, slow, rate-limited, rejects the keys,
            or another process is sending them: kept for the next replay.
        outcome: Why the replay stopped early, or None when it went through every file.
        status: The HTTP status behind ``outcome``, if any.
        error: The network error behind ``outcome``, if any.
        seconds: How long the replay took.
        sent_scores: Scores in the accepted score files (a 207 answer counts as accepted: Langfuse
            took what it could, and sending the rest again would fail the same way).
    """

    directory: Path
    sent_files: int = 0
    sent_spans: int = 0
    failed_files: int = 0
    kept_files: int = 0
    outcome: Outcome | None = None
    status: int | None = None
    error: str | None = None
    seconds: float = 0.0
    sent_scores: int = 0


@contextlib.contextmanager
def _claimed(path: Path) -> Iterator[bytes | None]:
    """Open ``path`` under an exclusive advisory lock; yield its bytes, or None if gone or busy."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below, after the lock is released
    except FileNotFoundError:
        yield None
        return
    try:
        if sys.platform != "win32":
            import fcntl

            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                yield None
                return
        yield handle.read()
    finally:
        handle.close()


def scores_endpoint_of(traces_endpoint: str) -> str | None:
    """``{base_url}/api/public/scores`` from the OTLP endpoint of a host; None without ``/api/public/`` in it."""
    base, found, _ = traces_endpoint.partition("/api/public/")
    return f"{base}/api/public/scores" if found else None


def score_request_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers of a score request from the span exporter's: same auth and SDK headers, JSON body."""
    kept = {k: v for k, v in headers.items() if k.lower() not in ("x-langfuse-ingestion-version", "content-type")}
    return {**kept, "Content-Type": "application/json"}


def replay(
    spool: Spool,
    *,
    endpoint: str,
    headers: Mapping[str, str],
    gzip_body: bool,
    timeout_s: float,
    stop: threading.Event | None = None,
    pause_s: float = 0.0,
    scores_endpoint: str | None = None,
) -> ReplayReport:
    """Re-send every file of ``spool``, oldest first; delete each one Langfuse accepted.

    Span files (``.pb``) go to ``endpoint``; score files (``.scores.json``) to ``scores_endpoint``
    as they are (JSON, never compressed, like the SDK's API client), with the same headers minus
    the OTLP-only ``x-langfuse-ingestion-version``. Stops at the first failure that the next file
    would meet too (unreachable, timeout, 5xx, 429, 401/403): the remaining files are kept. Never
    raises for a network or file error.

    Args:
        spool: The spool folder of the Langfuse host.
        endpoint: ``{base_url}/api/public/otel/v1/traces``.
        headers: The headers the SDK sends (auth, SDK name and version, ingestion version).
        gzip_body: Send span files gzip-compressed (``Content-Encoding: gzip``), as the SDK does by default.
        timeout_s: Timeout of each request.
        stop: Set it to stop between two files.
        pause_s: Sleep between two files, so that a replay running beside a call leaves it the CPU
            (and the GIL) most of the time.
        scores_endpoint: ``{base_url}/api/public/scores``; by default derived from ``endpoint``
            (:func:`scores_endpoint_of`). When there is none, score files are kept.
    """
    started = time.monotonic()
    files = spool.files()
    if not files:
        return ReplayReport(directory=spool.directory)
    scores_url = scores_endpoint or scores_endpoint_of(endpoint)
    sent_files = sent_spans = sent_scores = failed = kept = 0
    outcome: Outcome | None = None
    status: int | None = None
    error: str | None = None
    span_headers = {**headers, "Content-Type": "application/x-protobuf"}
    if gzip_body:
        span_headers["Content-Encoding"] = "gzip"
    scores_headers = score_request_headers(headers)
    with httpx.Client(timeout=timeout_s) as client:
        for index, path in enumerate(files):
            if stop is not None and stop.is_set():
                kept += len(files) - index
                break
            is_scores = path.name.endswith(SCORES_SUFFIX)
            target = scores_url if is_scores else endpoint
            if target is None:
                kept += 1
                continue
            if pause_s and index:
                time.sleep(pause_s)
            with _claimed(path) as body:
                if body is None:
                    kept += 1 if path.exists() else 0
                    continue
                try:
                    items = scores_in(body) if is_scores else sum(spans_per_trace(body).values())
                except Exception:  # noqa: BLE001 - a damaged file is kept, counted, and skipped
                    failed += 1
                    continue
                if is_scores:
                    content, request_headers = body, scores_headers
                else:
                    content, request_headers = gzip.compress(body) if gzip_body else body, span_headers
                try:
                    response = client.post(target, content=content, headers=request_headers)
                    attempt = Attempt(status=response.status_code, retry_after=response.headers.get("retry-after"))
                except httpx.HTTPError as exc:
                    attempt = Attempt(error=exc)
                result = classify(attempt)
                if result is Outcome.SENT:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                    sent_files += 1
                    if is_scores:
                        sent_scores += items
                    else:
                        sent_spans += items
                    continue
                if result is Outcome.REJECTED:
                    failed += 1
                    status = attempt.status
                    continue
                outcome, status = result, attempt.status
                error = type(attempt.error).__name__ if attempt.error is not None else None
                kept += len(files) - index
                break
    return ReplayReport(
        directory=spool.directory,
        sent_files=sent_files,
        sent_spans=sent_spans,
        failed_files=failed,
        kept_files=kept,
        outcome=outcome,
        status=status,
        error=error,
        seconds=time.monotonic() - started,
        sent_scores=sent_scores,
    )


def other_hosts(spool_root: Path, folder: str) -> dict[str, int]:
    """Spool files (spans and scores) kept for other Langfuse hosts under ``spool_root``: folder name -> files."""
    found: dict[str, int] = {}
    try:
        folders = [p for p in spool_root.iterdir() if p.is_dir() and p.name != folder]
    except (FileNotFoundError, NotADirectoryError):
        return found
    for path in folders:
        count = sum(1 for p in path.iterdir() if p.name.endswith(SPOOL_SUFFIXES))
        if count:
            found[path.name] = count
    return found
