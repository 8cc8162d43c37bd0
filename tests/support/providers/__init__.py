"""Local fakes of the providers' wire protocols, for tests of the live bot's real services.

Each fake listens on 127.0.0.1 (an ephemeral port), speaks its provider's protocol as the installed
client library (and the Pipecat service on top of it) expects it, and keeps a ledger of what the
provider would bill. A fake runs its server on its own event loop in a daemon thread, so what it
measures (e.g. when audio arrived) does not depend on how busy the pipeline's loop is.

Use one as a context manager::

    with FakeDeepgram(transcripts=[...]) as deepgram:
        settings = BotSettings.from_env({"DEEPGRAM_BASE_URL": deepgram.base_url, ...})
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, Self, TypeVar

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

_T = TypeVar("_T")

HOST = "127.0.0.1"


class ThreadedServer:
    """A server running on its own event loop in a daemon thread.

    Subclasses implement :meth:`_start_serving` (bind on ``HOST`` port 0, return the port) and
    :meth:`_stop_serving`; their handlers run on :attr:`loop`.
    """

    name = "fake"

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.port = 0
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- Lifecycle --------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the loop thread and the server; return once it listens."""
        ready = threading.Event()
        loop = asyncio.new_event_loop()
        self.loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name=f"{self.name}-server", daemon=True)
        self._thread.start()
        ready.wait()
        self.port = self.call(self._start_serving())
        return self

    def stop(self) -> None:
        """Stop the server and its loop (idempotent)."""
        loop, self.loop = self.loop, None
        if loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._stop_serving(), loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, coro: Coroutine[Any, Any, _T], timeout: float = 10) -> _T:
        """Run ``coro`` on the server's loop and return its result."""
        assert self.loop is not None, f"{self.name} not started"
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=timeout)

    # -- For subclasses ---------------------------------------------------------------------

    async def _start_serving(self) -> int:
        raise NotImplementedError

    async def _stop_serving(self) -> None:
        raise NotImplementedError


class WebsocketFake(ThreadedServer):
    """A websocket provider: subclasses implement :meth:`_handle` and :meth:`_check_request`."""

    max_message_bytes: int | None = 2**20

    def __init__(self) -> None:
        super().__init__()
        self._server: Server | None = None

    async def _start_serving(self) -> int:
        self._server = await serve(
            self._handle, HOST, 0, process_request=self._check_request, max_size=self.max_message_bytes
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def _stop_serving(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, connection: ServerConnection) -> None:
        raise NotImplementedError

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Answer a handshake that must fail (wrong path or key); None accepts it."""
        raise NotImplementedError


__all__ = ["HOST", "ThreadedServer", "WebsocketFake"]
