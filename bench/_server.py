"""The local Langfuse stand-in, served from a child process so its OTLP decoding stays off the benchmark's CPU."""

from __future__ import annotations

import multiprocessing
import threading
from collections import Counter
from multiprocessing.connection import Connection
from typing import Any

from tests.support.langfuse_server import LocalLangfuse

RUN_ATTRIBUTE = "bench.run"
"""Resource attribute (set through ``OTEL_RESOURCE_ATTRIBUTES``) naming the benchmark run that exported a span."""


def _serve(conn: Connection) -> None:
    server = LocalLangfuse().start()
    conn.send((server.url, server.public_key, server.secret_key))
    while (query := conn.recv()) is not None:
        kind, value = query if isinstance(query, tuple) else ("trace", query)
        with server._lock:
            spans = list(server.spans)
        if kind == "trace":
            conn.send(Counter(span.name for span in spans if span.trace_id == value))
        else:
            conn.send(Counter(span.name for span in spans if span.resource.get(RUN_ATTRIBUTE) == value))
    server.stop()


class RemoteLangfuse:
    """A :class:`LocalLangfuse` running in a child process; ask it what each trace (or run) received."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child,), name="local-langfuse", daemon=True)
        self._process.start()
        self.url, self.public_key, self.secret_key = self._conn.recv()
        self._lock = threading.Lock()  # one question at a time, whichever thread asks

    def span_names(self, trace_id: str) -> Counter[str]:
        """How many spans of each name the server received for ``trace_id``."""
        with self._lock:
            self._conn.send(("trace", trace_id))
            names: Counter[str] = self._conn.recv()
        return names

    def run_span_names(self, run_id: str) -> Counter[str]:
        """How many spans of each name the server received from processes with ``bench.run=<run_id>``."""
        with self._lock:
            self._conn.send(("run", run_id))
            names: Counter[str] = self._conn.recv()
        return names

    def close(self) -> None:
        """Stop the server and its process."""
        self._conn.send(None)
        self._process.join(timeout=5)

    def __enter__(self) -> RemoteLangfuse:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
