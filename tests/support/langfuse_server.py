"""A local stand-in for the Langfuse server's public HTTP API, on 127.0.0.1.

It answers the endpoints the SDK calls, checks Basic auth the way Langfuse does,
and decodes the OTLP/HTTP protobuf body (gzip or not) into plain Python values,
so tests can assert exactly what a real Langfuse would have received. Score batches
(``POST /api/public/scores``, a JSON list) are answered as Langfuse does: 202
``{"message": "Accepted"}``, or 207 with acceptance counts when some scores are invalid,
or 400 when the body is not a list. Model definitions (``/api/public/models``: list with
pagination, create, get, delete) behave as in ``tests/support/langfuse_models.py``, which also
prices an observation the way Langfuse's server would with them (:func:`server_cost`).
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.support.langfuse_models import MODELS_PATH, ApiRefusalError, ModelStore, ServerCost, server_cost

__all__ = [
    "HEALTH_PATH",
    "MODELS_PATH",
    "OTLP_PATH",
    "PROJECTS_PATH",
    "SCORES_PATH",
    "LocalLangfuse",
    "ReceivedRequest",
    "ReceivedSpan",
    "ServerCost",
    "StartLocalLangfuse",
    "decode_export",
    "score_error",
    "server_cost",
]

OTLP_PATH = "/api/public/otel/v1/traces"
PROJECTS_PATH = "/api/public/projects"
HEALTH_PATH = "/api/public/health"
SCORES_PATH = "/api/public/scores"
MEDIA_PATH = "/api/public/media"
UPLOAD_PATH = "/media-upload"
"""Where the stand-in's upload URLs point (Langfuse's are presigned S3 URLs: no Basic auth)."""
NUMERIC_SCORE_TYPES = frozenset({"NUMERIC", "BOOLEAN"})
SCORE_TYPES = frozenset({"NUMERIC", "BOOLEAN", "CATEGORICAL", "TEXT", "CORRECTION"})


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as decoded from an OTLP export request."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    scope: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    resource: dict[str, Any]


@dataclass(frozen=True)
class ReceivedRequest:
    """One HTTP request as the server saw it.

    ``query`` is the raw query string; ``body`` the decoded JSON body of model requests (else None).
    """

    method: str
    path: str
    headers: dict[str, str]
    query: str = ""
    body: Any = None


@dataclass
class LocalLangfuse:
    """Threaded HTTP server that behaves like Langfuse's public API for one project.

    Attributes:
        public_key: The project's public key.
        secret_key: The project's secret key.
        project_name: Name returned by ``GET /api/public/projects``.
        hang_s: When > 0, every request waits this long before answering (a slow server).
        status_override: When set, every request gets this status (e.g. 503).
        otlp_status: When set, authenticated OTLP export requests get this status and their
            spans are not kept (the rest of the API still works).
        retry_after: When set, the ``Retry-After`` header of every non-2xx answer (e.g. ``"30"``
            with ``otlp_status=429``).
        scores_status: When set, authenticated score requests get this status and their scores
            are not kept (the rest of the API still works).
        scores: The scores of accepted score requests, decoded, in arrival order.
        models: The model definitions the project sees: two of Langfuse's built-in ones, then those
            created through ``POST /api/public/models`` (see :meth:`project_models`).
        models_status: When set, authenticated create and delete requests for models get this status
            and change nothing (listing still works).
        media: Media records by id, as Langfuse's media API keeps them: the upload request's fields
            (``contentType``, ``sha256Hash``, ``traceId``, ``observationId``, ``field``…), then the
            uploaded ``bytes`` and the SDK's ``patch`` (upload status).

    :meth:`go_down` closes the socket (connections are refused) and :meth:`come_back` listens
    again on the same port, so a client configured with :attr:`url` sees an outage and a recovery.
    """

    public_key: str = "pk-lf-test"
    secret_key: str = "sk-lf-test-secret"
    project_name: str = "voice-tests"
    hang_s: float = 0.0
    status_override: int | None = None
    otlp_status: int | None = None
    retry_after: str | None = None
    scores_status: int | None = None
    spans: list[ReceivedSpan] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)
    requests: list[ReceivedRequest] = field(default_factory=list)
    models: ModelStore = field(default_factory=ModelStore)
    models_status: int | None = None
    media: dict[str, dict[str, Any]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _down: bool = False
    _port: int = 0

    @property
    def url(self) -> str:
        """Base URL to give the SDK as ``base_url``."""
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self, port: int = 0) -> LocalLangfuse:
        """Start serving on ``port`` of 127.0.0.1 (an ephemeral one by default)."""
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _make_handler(self))
        self._server.daemon_threads = True
        self._down = False
        threading.Thread(target=self._server.serve_forever, name="local-langfuse", daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None and not self._down:
            self._server.shutdown()
            self._server.server_close()
        self._down = True

    def go_down(self) -> None:
        """Close the socket: from now on connections to :attr:`url` are refused."""
        self._port = self._server.server_address[1] if self._server is not None else 0
        self.stop()

    def come_back(self) -> None:
        """Listen again on the port of :attr:`url` after :meth:`go_down`."""
        assert self._down, "the server is not down"
        self.start(self._port)

    def spans_of_trace(self, trace_id: str) -> list[ReceivedSpan]:
        """Spans received so far for ``trace_id``, in arrival order."""
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def wait_for_spans(self, predicate: Any, timeout_s: float = 10.0) -> list[ReceivedSpan]:
        """Wait until ``predicate(spans)`` is true; return the spans (raise on timeout)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                spans = list(self.spans)
            if predicate(spans):
                return spans
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met; received {len(spans)} spans")
            time.sleep(0.02)

    def wait_for_scores(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 10.0
    ) -> list[dict[str, Any]]:
        """Wait until ``predicate(scores)`` is true; return the scores (raise on timeout)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                scores = list(self.scores)
            if predicate(scores):
                return scores
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met; received {len(scores)} scores")
            time.sleep(0.02)

    def requests_to(self, path: str) -> list[ReceivedRequest]:
        """Requests received so far for ``path`` (whatever their answer), in arrival order."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def project_models(self) -> list[dict[str, Any]]:
        """The definitions the project created, as ``GET /api/public/models`` lists them."""
        with self._lock:
            return self.models.project_models()

    def listed_models(self) -> list[dict[str, Any]]:
        """Every definition the project sees (built-in ones included), in the API's shape."""
        listed: list[dict[str, Any]] = []
        with self._lock:
            for page in range(1, len(self.models.rows) // 100 + 2):  # the API lists at most 100 a page
                listed += self.models.list({"page": [str(page)], "limit": ["100"]})["data"]
        return listed

    def model_requests(self) -> list[ReceivedRequest]:
        """Requests received so far for the models API, in arrival order."""
        with self._lock:
            return [r for r in self.requests if r.path == MODELS_PATH or r.path.startswith(MODELS_PATH + "/")]

    def server_cost(self, model_name: str, usage: dict[str, Any]) -> ServerCost | None:
        """What Langfuse would charge for a generation of ``model_name`` with ``usage`` and no cost sent."""
        return server_cost(model_name, usage, self.listed_models())

    def auth_error(self, authorization: str | None) -> str | None:
        """Langfuse's 401 message for this Authorization header, or None when it is valid."""
        if not authorization or not authorization.startswith("Basic "):
            return "Invalid public key. Confirm that you've configured the correct host."
        try:
            public_key, _, secret_key = base64.b64decode(authorization[6:]).decode().partition(":")
        except ValueError:
            return "Invalid authorization header"
        if public_key != self.public_key:
            return "Invalid public key. Confirm that you've configured the correct host."
        if secret_key != self.secret_key:
            return "Invalid credentials. Confirm that you've configured the correct host."
        return None

    def _record(
        self, request: ReceivedRequest, spans: list[ReceivedSpan], scores: list[dict[str, Any]] | None = None
    ) -> None:
        with self._lock:
            self.requests.append(request)
            self.spans.extend(spans)
            self.scores.extend(scores or [])


StartLocalLangfuse = Callable[..., LocalLangfuse]
"""What the ``local_langfuse`` fixtures of tests/conftest.py give: ``start(**kwargs)`` starts a
``LocalLangfuse(**kwargs)``, which the fixture stops at its teardown."""


def decode_export(body: bytes) -> list[ReceivedSpan]:
    """Decode an OTLP ``ExportTraceServiceRequest`` body into :class:`ReceivedSpan` values."""
    message = ExportTraceServiceRequest()
    message.ParseFromString(body)
    spans = []
    for resource_spans in message.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None,
                        name=span.name,
                        scope=scope_spans.scope.name,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes={kv.key: _value(kv.value) for kv in span.attributes},
                        resource=resource,
                    )
                )
    return spans


def score_error(score: Any) -> str | None:
    """Why Langfuse would reject one score of a batch, or None when it is valid (the checks that matter here)."""
    if not isinstance(score, dict):
        return "score must be an object"
    if not isinstance(score.get("name"), str) or not score["name"]:
        return "name: Required"
    if not any(isinstance(score.get(key), str) for key in ("traceId", "sessionId", "datasetRunId")):
        return "one of traceId, sessionId or datasetRunId is required"
    data_type, value = score.get("dataType"), score.get("value")
    if data_type is not None and data_type not in SCORE_TYPES:
        return f"dataType: invalid value {data_type!r}"
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if data_type in NUMERIC_SCORE_TYPES and not numeric:
        return f"value: {data_type} scores need a number"
    if data_type is not None and data_type not in NUMERIC_SCORE_TYPES and not isinstance(value, str):
        return f"value: {data_type} scores need a string"
    if data_type is None and not (numeric or isinstance(value, str)):
        return "value: Required"
    return None


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def _make_handler(server: LocalLangfuse) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # Headers and body go out in two writes: without this, Nagle + delayed ACK add ~40 ms per answer.
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet."""

        def do_GET(self) -> None:
            self._handle(b"")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self._handle(self.rfile.read(length))

        def do_PUT(self) -> None:
            self.do_POST()

        def do_PATCH(self) -> None:
            self.do_POST()

        def do_DELETE(self) -> None:
            self.do_POST()

        def _handle(self, body: bytes) -> None:
            if server.hang_s:
                time.sleep(server.hang_s)
            path, _, query = self.path.partition("?")
            request = ReceivedRequest(self.command, path, {k.lower(): v for k, v in self.headers.items()}, query)
            if server.status_override is not None:
                server._record(request, [])
                return self._json(server.status_override, {"message": "overridden status"})
            if self.command == "PUT" and path.startswith(UPLOAD_PATH + "/"):
                return self._upload(request, path[len(UPLOAD_PATH) + 1 :], body)
            if path == HEALTH_PATH:
                server._record(request, [])
                return self._json(200, {"status": "OK", "version": "3.0.0-local"})
            error = server.auth_error(self.headers.get("Authorization"))
            if error is not None:
                server._record(request, [])
                return self._json(401, {"message": error})
            if path == MEDIA_PATH or path.startswith(MEDIA_PATH + "/"):
                return self._media(request, path, body)
            if self.command == "GET" and path == PROJECTS_PATH:
                server._record(request, [])
                project = {
                    "id": "project-local",
                    "name": server.project_name,
                    "organization": {"id": "org-local", "name": "local"},
                    "metadata": {},
                }
                return self._json(200, {"data": [project]})
            if self.command == "POST" and path == OTLP_PATH and server.otlp_status is not None:
                server._record(request, [])
                return self._json(server.otlp_status, {"message": "rejected OTLP export"})
            if self.command == "POST" and path == SCORES_PATH:
                return self._scores(request, body)
            if path == MODELS_PATH or path.startswith(MODELS_PATH + "/"):
                return self._models(request, path, body)
            if self.command == "POST" and path == OTLP_PATH:
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                server._record(request, decode_export(body))
                return self._send(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")
            server._record(request, [])
            return self._json(404, {"message": "not found"})

        def _scores(self, request: ReceivedRequest, body: bytes) -> None:
            if server.scores_status is not None:
                server._record(request, [])
                return self._json(server.scores_status, {"message": "rejected scores"})
            try:
                scores = json.loads(body)
            except ValueError:
                scores = None
            if not isinstance(scores, list):
                server._record(request, [])
                return self._json(400, {"message": "Invalid request data", "error": "expected a list of scores"})
            errors = [error for error in map(score_error, scores) if error is not None]
            accepted = [score for score in scores if score_error(score) is None]
            server._record(request, [], accepted)
            if errors:
                messages = [{"message": error} for error in errors]
                return self._json(207, {"accepted": len(accepted), "rejected": len(errors), "errors": messages})
            return self._json(202, {"message": "Accepted"})

        def _media(self, request: ReceivedRequest, path: str, body: bytes) -> None:
            decoded = json.loads(body) if body else None
            server._record(dataclasses.replace(request, body=decoded), [])
            if self.command == "POST" and path == MEDIA_PATH:
                # Langfuse's media id: the content's SHA-256 (base64), URL-safe, first 22 characters.
                media_id = decoded["sha256Hash"].replace("+", "-").replace("/", "_")[:22]
                with server._lock:
                    known = server.media.get(media_id)
                    if known is None:
                        server.media[media_id] = {**decoded, "bytes": None, "patch": None}
                uploaded = known is not None and known["bytes"] is not None
                upload_url = None if uploaded else f"{server.url}{UPLOAD_PATH}/{media_id}"
                return self._json(200, {"uploadUrl": upload_url, "mediaId": media_id})
            media_id = path[len(MEDIA_PATH) + 1 :]
            if self.command == "PATCH" and media_id in server.media:
                with server._lock:
                    server.media[media_id]["patch"] = decoded
                return self._send(204, b"", "application/json")
            return self._json(404, {"message": "media not found"})

        def _upload(self, request: ReceivedRequest, media_id: str, body: bytes) -> None:
            server._record(request, [])
            record = server.media.get(media_id)
            digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
            if record is None or digest != record["sha256Hash"]:
                return self._json(400, {"message": "unknown media or checksum mismatch"})
            with server._lock:
                record["bytes"] = body
            return self._send(200, b"", "application/octet-stream")

        def _models(self, request: ReceivedRequest, path: str, body: bytes) -> None:
            model_id = unquote(path[len(MODELS_PATH) + 1 :]) if path != MODELS_PATH else None
            try:
                decoded = json.loads(body) if body else None
            except ValueError:
                decoded = body.decode(errors="replace")
            request = dataclasses.replace(request, body=decoded)
            with server._lock:
                server.requests.append(request)
                writes = self.command in ("POST", "DELETE")
                if writes and server.models_status is not None:
                    return self._json(server.models_status, {"message": "rejected model change"})
                try:
                    if model_id is None and self.command == "GET":
                        payload = server.models.list(parse_qs(request.query, keep_blank_values=True))
                    elif model_id is None and self.command == "POST":
                        payload = server.models.create(decoded)
                    elif model_id and self.command == "GET":
                        payload = server.models.get(model_id)
                    elif model_id and self.command == "DELETE":
                        payload = server.models.delete(model_id)
                    else:
                        return self._json(405, {"message": "Method not allowed"})
                except ApiRefusalError as refusal:
                    return self._json(refusal.status, refusal.payload)
            return self._json(200, payload)

        def _json(self, status: int, payload: Any) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def _send(self, status: int, data: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            if server.retry_after is not None and not 200 <= status < 300:
                self.send_header("Retry-After", server.retry_after)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
