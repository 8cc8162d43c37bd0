"""A small local fake of Langfuse's ``GET /api/public/v2/observations``, for the reconcile's API source.

It answers what the generated client of the Langfuse SDK (``langfuse/api/observations/raw_client.py``,
langfuse 5.0.4) describes: Basic auth of ``public_key:secret_key``; the ``type``, ``fromStartTime``
(inclusive) and ``toStartTime`` (exclusive) filters; ``limit`` and an opaque ``cursor`` for the next
page, in ``meta.cursor`` and absent on the last page; ``{"data": [...], "meta": {...}}``. It keeps
every request's query, so tests can assert what was asked.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

OBSERVATIONS_PATH = "/api/public/v2/observations"


@dataclass
class ObservationsApi:
    """The fake's state: what it serves and what it was asked.

    Attributes:
        public_key: The accepted public key.
        secret_key: The accepted secret key.
        observations: The observations served (API field names), in this order.
        page_size: At most this many per page, whatever ``limit`` asks (to force pagination).
        status: Answer every request with this HTTP status instead (e.g. 500).
        queries: The query of each request, one value per parameter.
    """

    public_key: str
    secret_key: str
    observations: list[dict[str, Any]] = field(default_factory=list)
    page_size: int | None = None
    status: int | None = None
    queries: list[dict[str, str]] = field(default_factory=list)
    url: str = ""

    def answer(self, path: str, query: dict[str, str], authorization: str | None) -> tuple[int, dict[str, Any]]:
        """The status and JSON body for one request."""
        self.queries.append(query)
        if path != OBSERVATIONS_PATH:
            return 404, {"message": "Not found"}
        expected = "Basic " + base64.b64encode(f"{self.public_key}:{self.secret_key}".encode()).decode()
        if authorization != expected:
            return 401, {"message": "Invalid credentials"}
        if self.status is not None:
            return self.status, {"message": "failing on purpose"}
        selected = [o for o in self.observations if _selected(o, query)]
        offset = int(base64.b64decode(query["cursor"]).decode()) if "cursor" in query else 0
        limit = min(int(query.get("limit", "50")), self.page_size or 1000)
        page = selected[offset : offset + limit]
        meta: dict[str, Any] = {}
        if offset + limit < len(selected):
            meta["cursor"] = base64.b64encode(str(offset + limit).encode()).decode()
        return 200, {"data": page, "meta": meta}


def _selected(observation: dict[str, Any], query: dict[str, str]) -> bool:
    if "type" in query and observation.get("type") != query["type"]:
        return False
    start = _time(observation["startTime"])
    if "fromStartTime" in query and start < _time(query["fromStartTime"]):
        return False
    return not ("toStartTime" in query and start >= _time(query["toStartTime"]))


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@contextmanager
def serve_observations(api: ObservationsApi) -> Iterator[ObservationsApi]:
    """Serve ``api`` on a free 127.0.0.1 port for the block; ``api.url`` is its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            status, body = api.answer(parts.path, query, self.headers.get("Authorization"))
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="observations-api", daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
