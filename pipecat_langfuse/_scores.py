"""Langfuse scores that survive an outage: the score body, a background sender, and its spool files.

The SDK's own score queue is not used: it sends past our spool and retry pause, drops what fails,
and its flush blocks for seconds when the host is down or hangs. :class:`ScoreSender` gives scores
the guarantees of the span path (:class:`~pipecat_langfuse._spool.SpoolingSpanExporter`):

* :meth:`ScoreSender.add` only appends to a bounded queue (:data:`MAX_QUEUED_SCORES`); it never
  blocks and never raises, so the asyncio event loop may call it. Overflow is counted as dropped.
* One daemon thread sends batches (at most :data:`MAX_BATCH_SCORES` scores and
  :data:`MAX_BATCH_BYTES` of body, as the SDK) to ``POST {base_url}/api/public/scores``, with the
  headers the SDK's API client sends.
* Failures are classified like spans (:func:`~pipecat_langfuse._spool.classify`): connection
  refused, timeout, 5xx, 429 and 401/403 keep the batch in the spool; any other 4xx drops it. After
  a failure sending pauses (:class:`~pipecat_langfuse._spool.RetryPause`), and the batches of that
  time go straight to the spool: a dead host costs one timeout, not one per batch, and a flush
  against it takes no network time. Each failure class is explained once per process.
* A spooled batch is a ``.scores.json`` file (the exact request body) in the host's spool folder,
  under the same size bound as span files; :func:`~pipecat_langfuse._spool.replay` re-sends it.
  Re-sending is idempotent: :func:`make_score` gives each score an id derived from its trace,
  observation and name, and Langfuse upserts scores by id.
"""

from __future__ import annotations

import base64
import collections
import importlib.metadata
import json
import math
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from loguru import logger

from pipecat_langfuse._spool import (
    SCORES_SUFFIX,
    SPOOLED_OUTCOMES,
    Attempt,
    Outcome,
    RetryPause,
    Spool,
    SpoolFullError,
    classify,
    destination_folder,
    failure_message,
    spool_destination,
    spool_full_message,
    warn_once,
)
from pipecat_langfuse.settings import TracingSettings

SCORES_PATH = "/api/public/scores"
"""The endpoint of score batches (a JSON list of scores)."""
MAX_QUEUED_SCORES = 10_000
"""Scores waiting to be sent; :meth:`ScoreSender.add` drops (and counts) what does not fit."""
MAX_BATCH_SCORES = 100
"""Most scores in one request (and one spool file)."""
MAX_BATCH_BYTES = 1_000_000
"""Largest request body: the 1 MB body limit of ``POST /api/public/scores`` the SDK observes."""
LINGER_S = 1.0
"""How long the sender waits for more scores before sending a batch that is not full (as the SDK)."""
SCORE_ID_NAMESPACE = uuid.UUID("6f1b7c0e-5d1a-4c47-9a63-2f4f3b8a9e51")
"""Namespace of the uuid5 score ids (:func:`score_id`); never change it, or re-sent scores duplicate."""
SCORE_FAILURE_PREFIX = "Sending scores to Langfuse failed: "
"""How each explanation of a score failure class starts (one WARNING per class and process)."""

ScoreDataType = Literal["NUMERIC", "BOOLEAN", "CATEGORICAL", "TEXT", "CORRECTION"]
_NUMERIC_TYPES = frozenset({"NUMERIC", "BOOLEAN"})


def score_id(trace_id: str, observation_id: str | None, name: str) -> str:
    """The deterministic id of a score: a uuid5 of its trace id, observation id and name."""
    return str(uuid.uuid5(SCORE_ID_NAMESPACE, f"{trace_id}/{observation_id or ''}/{name}"))


def iso_timestamp(moment: datetime) -> str:
    """``moment`` as the SDK serializes it: ISO 8601, ``Z`` for UTC; a naive time counts as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    text = moment.isoformat()
    return text.replace("+00:00", "Z") if moment.utcoffset() == UTC.utcoffset(None) else text


def make_score(
    *,
    name: str,
    value: float | str,
    trace_id: str,
    observation_id: str | None = None,
    data_type: ScoreDataType,
    comment: str | None = None,
    metadata: Any = None,
    environment: str | None = None,
    timestamp: datetime | None = None,
) -> dict[str, Any]:
    """The JSON body of one score, as ``Langfuse.create_score`` of SDK 5 sends it.

    Keys are the API's (camelCase) in the SDK's order; None fields are left out; a bool or int
    value becomes a float; the timestamp (now by default) is ISO 8601 with its UTC offset.

    Raises:
        ValueError: A NUMERIC or BOOLEAN score without a finite number, or another type without a string.
    """
    if isinstance(value, bool | int):
        value = float(value)
    if data_type in _NUMERIC_TYPES and not (isinstance(value, float) and math.isfinite(value)):
        raise ValueError(f"score {name!r}: a {data_type} score needs a finite number, got {value!r}")
    if data_type not in _NUMERIC_TYPES and not isinstance(value, str):
        raise ValueError(f"score {name!r}: a {data_type} score needs a string, got {value!r}")
    score = {
        "id": score_id(trace_id, observation_id, name),
        "traceId": trace_id,
        "observationId": observation_id,
        "name": name,
        "value": value,
        "comment": comment,
        "environment": environment,
        "dataType": data_type,
        "timestamp": iso_timestamp(timestamp or datetime.now(UTC)),
        "metadata": metadata,
    }
    return {key: field for key, field in score.items() if field is not None}


def score_headers(public_key: str, secret_key: str) -> dict[str, str]:
    """The headers of ``POST /api/public/scores``: Basic auth and the ones the SDK's API client adds."""
    credentials = base64.b64encode(f"{public_key}:{secret_key}".encode()).decode("ascii")
    return {
        "Authorization": f"Basic {credentials}",
        "Content-Type": "application/json",
        "x-langfuse-sdk-name": "python",
        "x-langfuse-sdk-version": importlib.metadata.version("langfuse"),
        "x-langfuse-public-key": public_key,
    }


def encode_batches(scores: list[dict[str, Any]]) -> tuple[list[tuple[bytes, int]], int]:
    """Split ``scores`` into request bodies (JSON lists) under :data:`MAX_BATCH_BYTES`.

    Returns:
        The bodies with their number of scores, and the number of scores dropped because they
        cannot be encoded (not JSON, NaN) or are alone larger than the limit.
    """
    bodies: list[tuple[bytes, int]] = []
    items: list[bytes] = []
    size = 2  # the brackets
    dropped = 0
    for score in scores:
        try:
            item = json.dumps(score, separators=(",", ":"), allow_nan=False, default=str).encode()
        except (TypeError, ValueError):
            dropped += 1
            continue
        if len(item) + 2 > MAX_BATCH_BYTES:
            dropped += 1
            continue
        if items and size + 1 + len(item) > MAX_BATCH_BYTES:
            bodies.append((b"[" + b",".join(items) + b"]", len(items)))
            items, size = [], 2
        size += len(item) + (1 if items else 0)
        items.append(item)
    if items:
        bodies.append((b"[" + b",".join(items) + b"]", len(items)))
    return bodies, dropped


@dataclass(frozen=True)
class ScoreCounts:
    """What a :class:`ScoreSender` did with the scores given to it.

    Attributes:
        sent: Accepted by Langfuse (HTTP 2xx; of a 207, the accepted ones).
        spooled: Written to the spool, to be re-sent by the replay.
        dropped: Lost: queue full, sender closed, rejected (4xx, or by a 207), not encodable, or
            spooling off or impossible.
        pending: Queued or being sent.
        evicted: Scores in older spool files that the size bound deleted to make room for this
            sender's files.
    """

    sent: int = 0
    spooled: int = 0
    dropped: int = 0
    pending: int = 0
    evicted: int = 0


class ScoreSender:
    """Sends scores in the background; keeps what fails in the spool; never blocks the caller.

    Args:
        settings: Host, keys, ``timeout_s``, ``spool_dir`` and ``spool_max_mb``.
        max_queued: Bound of the queue (tests).
        linger_s: Longest wait for a batch to fill up (tests).
    """

    def __init__(
        self, settings: TracingSettings, *, max_queued: int = MAX_QUEUED_SCORES, linger_s: float = LINGER_S
    ) -> None:
        self.base_url = settings.base_url
        self.endpoint = f"{settings.base_url}{SCORES_PATH}"
        self.timeout_s = float(settings.timeout_s)
        self.spool = (
            Spool(settings.spool_dir / destination_folder(settings.base_url), int(settings.spool_max_mb * 1_000_000))
            if settings.spool_dir is not None
            else None
        )
        self._headers = score_headers(settings.public_key or "", settings.secret_key or "")
        self._max_queued = max_queued
        self._linger_s = linger_s
        self._pause = RetryPause()
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._done = threading.Condition(self._lock)
        self._added = self._finished = 0
        self._sent = self._spooled = self._dropped = self._evicted = 0
        self._hurry = 0
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="pipecat-langfuse-scores", daemon=True)
        self._thread.start()

    def add(self, score: dict[str, Any]) -> None:
        """Queue ``score`` (a :func:`make_score` body, not changed afterwards) for sending. Never blocks or raises."""
        try:
            with self._lock:
                closing, full = self._closing, len(self._queue) >= self._max_queued
                if closing or full:
                    self._dropped += 1
                else:
                    self._queue.append(score)
                    self._added += 1
                    self._work.notify()
                    return
            if closing:
                warn_once("scores-closed", "A score was added after the score sender was closed; it was dropped.")
            else:
                warn_once(
                    "scores-queue-full",
                    f"{SCORE_FAILURE_PREFIX}{self._max_queued:,} scores are already waiting to be sent to "
                    f"{self.base_url}; new ones are dropped until the queue drains. The sender cannot keep up: "
                    "check the network to Langfuse, or send fewer scores.",
                )
        except Exception:  # noqa: BLE001 - scoring must never break the call
            logger.opt(exception=True).debug("Could not queue a score.")

    def flush(self, timeout_s: float) -> bool:
        """Wait until every score added so far was sent, spooled or dropped; False if ``timeout_s`` passed first.

        Blocking: run it in a worker thread. While sending is paused, the queue goes to the spool at
        once, so a flush against a dead host costs no network time.
        """
        deadline = time.monotonic() + timeout_s
        with self._lock:
            target = self._added
            self._hurry += 1
            self._work.notify()
            try:
                while self._finished < target:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._done.wait(remaining)
                return True
            finally:
                self._hurry -= 1

    def counts(self) -> ScoreCounts:
        """Sent, spooled, dropped, pending and evicted scores so far."""
        with self._lock:
            return ScoreCounts(
                sent=self._sent,
                spooled=self._spooled,
                dropped=self._dropped,
                pending=self._added - self._finished,
                evicted=self._evicted,
            )

    def retry_pause_s(self) -> float:
        """Seconds left before the sender uses the network again (0 when it is not paused)."""
        return self._pause.remaining_s()

    def close(self, timeout_s: float = 1.0) -> None:
        """Stop: what is still queued goes to the spool (call :meth:`flush` first to send it).

        Waits up to ``timeout_s`` for the thread, which may be finishing a request in flight.
        Later :meth:`add` calls drop their score.
        """
        with self._lock:
            self._closing = True
            self._work.notify()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout_s) as client:
            while True:
                batch = self._take()
                if batch is None:
                    return
                try:
                    bodies, unencodable = encode_batches(batch)
                    if unencodable:
                        warn_once(
                            "scores-unencodable",
                            f"{SCORE_FAILURE_PREFIX}{unencodable} score(s) could not be encoded as JSON under "
                            f"{MAX_BATCH_BYTES:,} bytes (NaN, or too large); dropped.",
                        )
                        self._finish(dropped=unencodable)
                    for body, count in bodies:
                        self._deliver(client, body, count)
                except Exception as exc:  # noqa: BLE001 - the sender thread must outlive any one batch
                    logger.opt(exception=True).debug("Score batch failed.")
                    warn_once("scores-unexpected", f"{SCORE_FAILURE_PREFIX}unexpected error ({exc!r}).")
                    with self._lock:
                        lost = self._added - self._finished - len(self._queue)
                    self._finish(dropped=lost)

    def _take(self) -> list[dict[str, Any]] | None:
        """The next batch, after waiting for it to fill up; None once closed and empty."""
        with self._lock:
            while not self._queue and not self._closing:
                self._work.wait()
            if not self._queue:
                return None
            deadline = time.monotonic() + self._linger_s
            while len(self._queue) < MAX_BATCH_SCORES and not (self._hurry or self._closing):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._work.wait(remaining)
            return [self._queue.popleft() for _ in range(min(len(self._queue), MAX_BATCH_SCORES))]

    def _deliver(self, client: httpx.Client, body: bytes, count: int) -> None:
        if self._closing or self._pause.remaining_s() > 0:
            self._keep(body, count, None, None)
            return
        response: httpx.Response | None = None
        try:
            response = client.post(self.endpoint, content=body, headers=self._headers)
            attempt = Attempt(status=response.status_code, retry_after=response.headers.get("retry-after"))
        except httpx.HTTPError as exc:
            attempt = Attempt(error=exc)
        outcome = classify(attempt)
        if outcome is Outcome.SENT:
            self._pause.succeeded()
            rejected = _rejected_of(response, count) if response is not None and response.status_code == 207 else 0
            if rejected and response is not None:
                warn_once(
                    "scores-partly-rejected",
                    f"{SCORE_FAILURE_PREFIX}Langfuse at {self.base_url} took only part of a batch (HTTP 207) and "
                    f"rejected {rejected} of {count} scores: {response.text[:300]}",
                )
            self._finish(sent=count - rejected, dropped=rejected)
            return
        self._pause.failed(outcome, attempt)
        if outcome in SPOOLED_OUTCOMES:
            self._keep(body, count, outcome, attempt)
            return
        answer = response.text[:300] if response is not None else ""
        warn_once(
            "scores-rejected",
            f"{SCORE_FAILURE_PREFIX}Langfuse at {self.base_url} rejected a batch of {count} scores (HTTP "
            f"{attempt.status}); it was dropped, since sending it again would fail the same way. Langfuse said: "
            f"{answer!r}. Check LANGFUSE_BASE_URL (host only) with `uv run test_langfuse`, and the score values.",
        )
        self._finish(dropped=count)

    def _keep(self, body: bytes, count: int, outcome: Outcome | None, attempt: Attempt | None) -> None:
        if outcome is not None:
            self._explain(outcome, attempt, count)
        if self.spool is None:
            self._finish(dropped=count)
            return
        try:
            path, evicted = self.spool.write(body, SCORES_SUFFIX)
        except SpoolFullError as exc:
            warn_once(
                "scores-spool-too-small",
                f"Tracing spool: {exc} ({self.spool.max_bytes / 1e6:g} MB, LANGFUSE_SPOOL_MAX_MB); "
                f"{count} scores dropped. Raise LANGFUSE_SPOOL_MAX_MB.",
            )
            self._finish(dropped=count)
            return
        except OSError as exc:
            warn_once(
                "scores-spool-unwritable",
                f"Tracing spool: cannot write to {self.spool.directory} ({exc.strerror or exc!r}); scores that "
                "Langfuse did not take are dropped. Set LANGFUSE_SPOOL_DIR to a writable folder "
                "(in a container: a mounted volume), or LANGFUSE_SPOOL_DIR=off to stop spooling.",
            )
            self._finish(dropped=count)
            return
        logger.debug(f"Tracing spool: {count} scores kept in {path.name}.")
        if evicted:
            warn_once("spool-full", spool_full_message(self.spool, evicted))
        self._finish(spooled=count, evicted=sum(item.scores for item in evicted))

    def _explain(self, outcome: Outcome, attempt: Attempt | None, count: int) -> None:
        where = spool_destination(self.spool)
        message = failure_message(
            outcome,
            noun="scores",
            count=count,
            host=self.base_url,
            status=attempt.status if attempt else None,
            timeout_s=self.timeout_s,
            pause_s=self._pause.remaining_s(),
            where=where,
        )
        # Scores go to the host the spans go to, which fails them the same way: the span exporter's
        # one warning for this failure explains both, so the call's log has one line per cause.
        logger.debug(f"{SCORE_FAILURE_PREFIX}{message}")

    def _finish(self, *, sent: int = 0, spooled: int = 0, dropped: int = 0, evicted: int = 0) -> None:
        with self._lock:
            self._sent += sent
            self._spooled += spooled
            self._dropped += dropped
            self._evicted += evicted
            self._finished += sent + spooled + dropped
            self._done.notify_all()


def _rejected_of(response: httpx.Response, count: int) -> int:
    """The rejected scores of a 207 answer (``{"accepted", "rejected", "errors"}``), within ``[0, count]``."""
    try:
        rejected = response.json().get("rejected", 0)
    except (ValueError, AttributeError):
        return 0
    return min(max(rejected, 0), count) if isinstance(rejected, int) else 0


_shared: dict[tuple[str, str | None, str | None], ScoreSender] = {}
_shared_lock = threading.Lock()


def shared_sender(settings: TracingSettings) -> ScoreSender:
    """The process's one :class:`ScoreSender` for ``settings``' host and public key (one thread, however many calls)."""
    key = (settings.base_url, settings.public_key, settings.secret_key)
    with _shared_lock:
        sender = _shared.get(key)
        if sender is None:
            sender = _shared[key] = ScoreSender(settings)
        return sender
