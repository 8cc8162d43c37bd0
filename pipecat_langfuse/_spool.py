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
total size is bounded: a new file that does not fit evicts the oldest ones.
"""

from __future__ import annotations

import contextlib
import email.utils
import enum
import gzip
import itertools
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
"""Suffix of a complete spool file; anything else in the directory (``.tmp``) is ignored."""
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
    """A file the size bound removed, with its spans per trace id."""

    path: Path
    spans_by_trace: Mapping[int, int]


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


def destination_folder(base_url: str) -> str:
    """The spool sub-folder of a Langfuse host, e.g. ``https_cloud.langfuse.com``."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", base_url.rstrip("/")).strip("_") or "langfuse"


class Spool:
    """A directory of OTLP protobuf files, bounded in total size, shared by processes.

    Args:
        directory: The folder of one Langfuse host (created on the first write).
        max_bytes: Bound of the total size of its ``.pb`` files.
    """

    _counter = itertools.count(1)

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    def files(self) -> list[Path]:
        """The complete spool files, oldest first (file names start with the time they were written)."""
        try:
            entries = [p for p in self.directory.iterdir() if p.name.endswith(SPOOL_SUFFIX)]
        except FileNotFoundError:
            return []
        return sorted(entries, key=lambda p: p.name)

    def write(self, body: bytes) -> tuple[Path, list[Evicted]]:
        """Store ``body`` as a new file, evicting the oldest files if the bound requires it.

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
            final = self.directory / f"{name}{SPOOL_SUFFIX}"
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
            try:
                counts = spans_per_trace(path.read_bytes())
            except Exception:  # noqa: BLE001 - an unreadable file is evicted all the same
                counts = {}
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            total -= size
            evicted.append(Evicted(path, counts))
        return evicted


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
        self._clock = clock
        self._paused_until = 0.0
        self._failures_in_a_row = 0
        self._lock = threading.Lock()

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
        with self._lock:
            paused_for = self._paused_until - self._clock()
        if paused_for > 0:
            self._keep(spans, None)
            return SpanExportResult.FAILURE
        if self.session is not None:
            self.session.take_attempt()
        result = self.inner.export(spans)
        attempt = self.session.take_attempt() if self.session is not None else None
        outcome = Outcome.SENT if result is SpanExportResult.SUCCESS else classify(attempt)
        if outcome is Outcome.SENT:
            with self._lock:
                self._failures_in_a_row = 0
            self._count(spans, sent=True)
            return SpanExportResult.SUCCESS
        self._pause(outcome, attempt)
        if outcome in SPOOLED_OUTCOMES:
            self._keep(spans, outcome, attempt)
        else:
            self._count(spans, dropped=True)
            self._explain(outcome, attempt, len(spans), kept=False)
        return SpanExportResult.FAILURE

    def _pause(self, outcome: Outcome, attempt: Attempt | None) -> None:
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
            self._paused_until = self._clock() + pause

    def divert(self) -> None:
        """Send nothing any more: every later batch goes straight to the spool (e.g. before a hurried exit).

        With the exporter diverted, the SDK's own exit flush takes no longer than the export in
        flight (at most ``LANGFUSE_TIMEOUT``), and what was still queued is kept instead of lost.
        """
        with self._lock:
            self._paused_until = math.inf

    def retry_pause_s(self) -> float:
        """Seconds left before the exporter sends again (0 when it is not paused)."""
        with self._lock:
            return max(self._paused_until - self._clock(), 0.0)

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
            lost = sum(sum(item.spans_by_trace.values()) for item in evicted)
            _OnceLog.warn(
                "spool-full",
                f"Tracing spool {self.spool.directory} reached its bound of {self.spool.max_bytes / 1e6:g} MB "
                f"(LANGFUSE_SPOOL_MAX_MB): deleted the oldest {len(evicted)} file(s), {lost} spans, to keep new ones. "
                "Replay it once Langfuse is back (`uv run test_langfuse --replay`), or raise LANGFUSE_SPOOL_MAX_MB.",
            )

    def _explain(self, outcome: Outcome, attempt: Attempt | None, count: int, *, kept: bool) -> None:
        where = (
            f"kept in the spool ({self.spool.directory}) and re-sent at the next start of the bot or by "
            "`uv run test_langfuse --replay`"
            if kept and self.spool is not None
            else "dropped (spooling is off: LANGFUSE_SPOOL_DIR)"
        )
        status = attempt.status if attempt else None
        host = self.base_url
        pause = self.retry_pause_s()
        messages = {
            Outcome.REFUSED: (
                f"Langfuse at {host} cannot be reached (connection refused or no route). The call goes on; "
                f"its spans are {where}. Check that Langfuse is running and that LANGFUSE_BASE_URL is right "
                "(`uv run test_langfuse`)."
            ),
            Outcome.TIMEOUT: (
                f"Langfuse at {host} did not answer within {self.timeout_s:g} s (LANGFUSE_TIMEOUT). The call goes "
                f"on; its spans are {where}. Check the network or the server's load; raise LANGFUSE_TIMEOUT for a "
                "slow link."
            ),
            Outcome.SERVER_ERROR: (
                f"Langfuse at {host} answered HTTP {status} (a server error). The call goes on; its spans are "
                f"{where}. Self-hosted: check the server's logs; Cloud: status.langfuse.com."
            ),
            Outcome.RATE_LIMITED: (
                f"Langfuse at {host} answered HTTP 429 (too many requests): sending pauses for {pause:.0f} s as "
                f"it asked (Retry-After). The call goes on; its spans are {where}. Lower the traffic or ask for "
                "a higher rate limit."
            ),
            Outcome.AUTH: (
                f"Langfuse at {host} rejected the keys (HTTP {status}). The call goes on; its spans are {where}. "
                "Fix LANGFUSE_PUBLIC_KEY / LANGFUSE_SECRET_KEY / LANGFUSE_BASE_URL (`uv run test_langfuse` tells "
                "which), then replay."
            ),
            Outcome.REJECTED: (
                f"Langfuse at {host} rejected a batch of {count} spans (HTTP {status}); it was dropped, since "
                "sending it again would fail the same way. Check LANGFUSE_BASE_URL (host only) with "
                "`uv run test_langfuse`."
            ),
            Outcome.NOT_SENT: (
                f"A batch of {count} spans could not be sent to Langfuse at {host} (the OTLP exporter did not send "
                "it, e.g. it was too large to encode or send; LOG_LEVEL=DEBUG shows why); it was dropped."
            ),
        }
        _OnceLog.warn(outcome.value, f"{FAILURE_PREFIX}{messages[outcome]}")

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
        sent_files: Files Langfuse accepted (deleted).
        sent_spans: Spans in those files.
        failed_files: Files Langfuse refused for good (HTTP 4xx other than 401/403/408/429): kept.
        kept_files: Files not sent, because Langfuse is unreachable, slow, rate-limited, rejects the keys,
            or another process is sending them: kept for the next replay.
        outcome: Why the replay stopped early, or None when it went through every file.
        status: The HTTP status behind ``outcome``, if any.
        error: The network error behind ``outcome``, if any.
        seconds: How long the replay took.
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


def replay(
    spool: Spool,
    *,
    endpoint: str,
    headers: Mapping[str, str],
    gzip_body: bool,
    timeout_s: float,
    stop: threading.Event | None = None,
    pause_s: float = 0.0,
) -> ReplayReport:
    """Re-send every file of ``spool`` to ``endpoint``, oldest first; delete each one Langfuse accepted.

    Stops at the first failure that the next file would meet too (unreachable, timeout, 5xx, 429,
    401/403): the remaining files are kept. Never raises for a network or file error.

    Args:
        spool: The spool folder of the Langfuse host.
        endpoint: ``{base_url}/api/public/otel/v1/traces``.
        headers: The headers the SDK sends (auth, SDK name and version, ingestion version).
        gzip_body: Send gzip-compressed (``Content-Encoding: gzip``), as the SDK does by default.
        timeout_s: Timeout of each request.
        stop: Set it to stop between two files.
        pause_s: Sleep between two files, so that a replay running beside a call leaves it the CPU
            (and the GIL) most of the time.
    """
    started = time.monotonic()
    files = spool.files()
    if not files:
        return ReplayReport(directory=spool.directory)
    sent_files = sent_spans = failed = kept = 0
    outcome: Outcome | None = None
    status: int | None = None
    error: str | None = None
    request_headers = {**headers, "Content-Type": "application/x-protobuf"}
    if gzip_body:
        request_headers["Content-Encoding"] = "gzip"
    with httpx.Client(timeout=timeout_s) as client:
        for index, path in enumerate(files):
            if stop is not None and stop.is_set():
                kept += len(files) - index
                break
            if pause_s and index:
                time.sleep(pause_s)
            with _claimed(path) as body:
                if body is None:
                    kept += 1 if path.exists() else 0
                    continue
                try:
                    spans = sum(spans_per_trace(body).values())
                except Exception:  # noqa: BLE001 - a damaged file is kept, counted, and skipped
                    failed += 1
                    continue
                try:
                    response = client.post(
                        endpoint, content=gzip.compress(body) if gzip_body else body, headers=request_headers
                    )
                    attempt = Attempt(status=response.status_code, retry_after=response.headers.get("retry-after"))
                except httpx.HTTPError as exc:
                    attempt = Attempt(error=exc)
                result = classify(attempt)
                if result is Outcome.SENT:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                    sent_files += 1
                    sent_spans += spans
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
    )


def other_hosts(spool_root: Path, folder: str) -> dict[str, int]:
    """Spool files kept for other Langfuse hosts under ``spool_root``: folder name -> number of files."""
    found: dict[str, int] = {}
    try:
        folders = [p for p in spool_root.iterdir() if p.is_dir() and p.name != folder]
    except (FileNotFoundError, NotADirectoryError):
        return found
    for path in folders:
        count = sum(1 for p in path.iterdir() if p.name.endswith(SPOOL_SUFFIX))
        if count:
            found[path.name] = count
    return found
