"""The local Langfuse stand-in, served from a child process so its OTLP decoding stays off the benchmark's CPU."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from multiprocessing.connection import Connection
from typing import Any

from tests.support.langfuse_server import LocalLangfuse


def _serve(conn: Connection) -> None:
    server = LocalLangfuse().start()
    conn.send((server.url, server.public_key, server.secret_key))
    while (trace_id := conn.recv()) is not None:
        conn.send(Counter(span.name for span in server.spans_of_trace(trace_id)))
    server.stop()


class RemoteLangfuse:
    """A :class:`LocalLangfuse` running in a child process; ask it what each trace received."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child,), name="local-langfuse", daemon=True)
        self._process.start()
        self.url, self.public_key, self.secret_key = self._conn.recv()

    def span_names(self, trace_id: str) -> Counter[str]:
        """How many spans of each name the server received for ``trace_id``."""
        self._conn.send(trace_id)
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
