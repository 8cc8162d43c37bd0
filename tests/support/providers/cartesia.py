"""A local Cartesia TTS websocket (``/tts/websocket``) that bills the characters submitted.

What Pipecat's ``services/cartesia/tts.py`` (``CartesiaTTSService``) speaks:

- It connects to the configured URL with headers ``X-API-Key`` and ``Cartesia-Version``.
- Per sentence it sends ``{"transcript", "continue": true, "context_id", "model_id", "voice",
  "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate"}, "add_timestamps",
  "language", "max_buffer_delay_ms", ...}``; at the end of a reply the same message with an empty
  transcript and ``"continue": false``; on an interruption ``{"context_id", "cancel": true}``.
- It reads ``{"type": "chunk", "data": <base64 pcm>, "context_id"}``, ``{"type": "timestamps",
  "word_timestamps": {"words", "start", "end"}, "context_id"}`` and ``{"type": "done", "context_id"}``.

The fake "synthesizes" ``1 / chars_per_sec`` seconds of a quiet tone per character, sends it in
``chunk_ms`` chunks ``speedup`` times faster than real time, with the words' timestamps (relative
to the context's start) when ``add_timestamps`` is set, and ``done`` once a context was closed with
``continue: false`` and all its audio went out. A cancelled context stops at once and gets nothing
more. The ledger bills what Cartesia bills: the characters of every transcript submitted, per
context, cancelled contexts included.

Error injection (off by default): ``fail_context=i`` answers the ``i``-th context opened (0-based)
with Cartesia's websocket error event once ``fail_after_chunks`` audio chunks of it went out:
``{"type": "error", "context_id", "status_code", "done": true, "error"}`` (the format of the
``Cartesia-Version`` Pipecat sends; newer versions add ``title``/``message``). That context then
gets nothing more (no ``done``); its transcripts stay billed as submitted. ``ledger.errors`` keeps
the error events sent.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.support.providers import HOST, WebsocketFake

TTS_PATH = "/tts/websocket"


@dataclass
class CartesiaContext:
    """One context as the fake received, synthesized and billed it."""

    context_id: str
    model_id: str
    sample_rate: int
    transcripts: list[str] = field(default_factory=list)
    closed: bool = False
    """A ``continue: false`` message came."""
    cancelled: bool = False
    done: bool = False
    """``done`` was sent."""
    audio_bytes: int = 0
    """Audio sent back."""
    first_message_ns: int = 0
    cancelled_ns: int | None = None
    error: dict[str, Any] | None = None
    """The error event the fake answered this context with (error injection)."""
    chunks_sent: int = 0
    will_fail: bool = field(default=False, repr=False)

    @property
    def characters(self) -> int:
        """Characters submitted: what Cartesia bills for this context."""
        return sum(len(t) for t in self.transcripts)

    @property
    def text(self) -> str:
        return "".join(self.transcripts)

    @property
    def audio_ms(self) -> int:
        """Milliseconds of audio sent back for this context."""
        return round(self.audio_bytes / (2 * self.sample_rate) * 1000) if self.sample_rate else 0


@dataclass
class CartesiaLedger:
    """Every context, in the order they were opened."""

    contexts: dict[str, CartesiaContext] = field(default_factory=dict)
    headers: list[dict[str, str]] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    """Context ids of the cancel messages, in order."""
    messages_after_cancel: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    """Error events sent (error injection), in order."""

    @property
    def characters(self) -> int:
        """Characters billed for the whole call."""
        return sum(c.characters for c in self.contexts.values())

    def billed(self) -> list[CartesiaContext]:
        """The contexts that submitted characters, in order."""
        return [c for c in self.contexts.values() if c.characters]


class FakeCartesia(WebsocketFake):
    """Cartesia's TTS websocket on 127.0.0.1.

    Args:
        api_key: The key the client must send (``X-API-Key``).
        chars_per_sec: Speaking rate of the synthesized audio.
        chunk_ms: Audio per ``chunk`` message.
        speedup: How many times faster than real time audio is sent.
        first_chunk_delay_s: Synthesis latency before a transcript's first chunk.
        fail_context: Index (0-based, in opening order) of the context answered with an error event.
        fail_after_chunks: Audio chunks of that context sent before the error event.
        error_status: The error event's ``status_code``.
        error_text: The error event's ``error``.
    """

    name = "fake-cartesia"

    def __init__(
        self,
        *,
        api_key: str = "cartesia-test-key",
        chars_per_sec: float = 16.0,
        chunk_ms: int = 100,
        speedup: float = 4.0,
        first_chunk_delay_s: float = 0.08,
        fail_context: int | None = None,
        fail_after_chunks: int = 0,
        error_status: int = 500,
        error_text: str = "Internal server error: synthesis failed",
    ) -> None:
        super().__init__()
        self.fail_context = fail_context
        self.fail_after_chunks = fail_after_chunks
        self.error_status = error_status
        self.error_text = error_text
        self.api_key = api_key
        self.chars_per_sec = chars_per_sec
        self.chunk_s = chunk_ms / 1000
        self.speedup = speedup
        self.first_chunk_delay_s = first_chunk_delay_s
        self.ledger = CartesiaLedger()

    @property
    def url(self) -> str:
        """What to give ``CartesiaTTSService(url=...)`` (``CARTESIA_URL``)."""
        return f"ws://{HOST}:{self.port}{TTS_PATH}"

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path != TTS_PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        headers = {k.lower(): v for k, v in request.headers.raw_items()}
        self.ledger.headers.append(headers)
        if headers.get("x-api-key") != self.api_key or not headers.get("cartesia-version"):
            return connection.respond(HTTPStatus.UNAUTHORIZED, '{"error":"Invalid API key"}\n')
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        session = _Session(self, connection)
        try:
            async for message in connection:
                await session.on_message(json.loads(message))
        except ConnectionClosed:
            pass
        finally:
            await session.close()


class _Session:
    def __init__(self, fake: FakeCartesia, connection: ServerConnection) -> None:
        self.fake = fake
        self.connection = connection
        self.queues: dict[str, asyncio.Queue[tuple[str, bool, bool]]] = {}
        self.workers: dict[str, asyncio.Task[None]] = {}

    async def on_message(self, message: dict[str, Any]) -> None:
        context_id = str(message.get("context_id", ""))
        ledger = self.fake.ledger
        if message.get("cancel"):
            ledger.cancels.append(context_id)
            context = ledger.contexts.get(context_id)
            if context is not None and not context.cancelled:
                context.cancelled = True
                context.cancelled_ns = time.time_ns()
            worker = self.workers.pop(context_id, None)
            if worker is not None:
                worker.cancel()
            return
        context = ledger.contexts.get(context_id)
        if context is None:
            output = message.get("output_format") or {}
            context = CartesiaContext(
                context_id=context_id,
                model_id=str(message.get("model_id", "")),
                sample_rate=int(output.get("sample_rate") or 44100),
                first_message_ns=time.time_ns(),
                will_fail=self.fake.fail_context == len(ledger.contexts),
            )
            ledger.contexts[context_id] = context
        transcript = str(message.get("transcript", ""))
        if context.cancelled:
            ledger.messages_after_cancel += 1
        if transcript:
            context.transcripts.append(transcript)  # billed as submitted, even for a cancelled context
        keep_going = bool(message.get("continue", False))
        if context.cancelled or context.closed or context.error is not None:
            return
        context.closed = not keep_going
        if context_id not in self.queues:
            self.queues[context_id] = asyncio.Queue()
            self.workers[context_id] = asyncio.create_task(self._synthesize(context, self.queues[context_id]))
        await self.queues[context_id].put((transcript, keep_going, bool(message.get("add_timestamps"))))

    async def _synthesize(self, context: CartesiaContext, queue: asyncio.Queue[tuple[str, bool, bool]]) -> None:
        offset = 0.0  # seconds of audio of this context sent so far
        while True:
            transcript, keep_going, timestamps = await queue.get()
            if transcript:
                # Whole 10 ms of audio, so every context's audio is a whole number of milliseconds.
                duration = max(self.fake.chunk_s, round(len(transcript) / self.fake.chars_per_sec, 2))
                await asyncio.sleep(self.fake.first_chunk_delay_s)
                if timestamps:
                    await self._send(
                        context, {"type": "timestamps", "word_timestamps": _word_times(transcript, offset, duration)}
                    )
                audio = _tone(duration, context.sample_rate, offset)
                step = int(self.fake.chunk_s * context.sample_rate) * 2
                for start in range(0, len(audio), step):
                    if context.will_fail and context.chunks_sent >= self.fake.fail_after_chunks:
                        await self._fail(context)
                        return
                    piece = audio[start : start + step]
                    await self._send(
                        context, {"type": "chunk", "data": base64.b64encode(piece).decode(), "step_time": 0.0}
                    )
                    context.audio_bytes += len(piece)
                    context.chunks_sent += 1
                    await asyncio.sleep(len(piece) / (2 * context.sample_rate) / self.fake.speedup)
                offset += duration
            if not keep_going:
                await self._send(context, {"type": "done"})
                context.done = True
                self.workers.pop(context.context_id, None)
                return

    async def _fail(self, context: CartesiaContext) -> None:
        error = {
            "type": "error",
            "context_id": context.context_id,
            "status_code": self.fake.error_status,
            "done": True,
            "error": self.fake.error_text,
        }
        context.error = error
        self.fake.ledger.errors.append(error)
        self.workers.pop(context.context_id, None)
        with contextlib.suppress(ConnectionClosed):
            await self.connection.send(json.dumps(error))

    async def _send(self, context: CartesiaContext, message: dict[str, Any]) -> None:
        payload = {**message, "context_id": context.context_id, "status_code": 206, "done": message["type"] == "done"}
        with contextlib.suppress(ConnectionClosed):
            await self.connection.send(json.dumps(payload))

    async def close(self) -> None:
        for worker in self.workers.values():
            worker.cancel()
        self.workers.clear()


def _word_times(transcript: str, offset: float, duration: float) -> dict[str, list[Any]]:
    words = transcript.split()
    per_char = duration / max(1, len(transcript))
    starts, ends, position = [], [], 0
    for word in words:
        index = transcript.index(word, position)
        position = index + len(word)
        starts.append(round(offset + index * per_char, 3))
        ends.append(round(offset + position * per_char, 3))
    return {"words": words, "start": starts, "end": ends}


def _tone(duration: float, sample_rate: int, offset: float) -> bytes:
    samples = round(duration * sample_rate)
    t = offset + np.arange(samples) / sample_rate
    return (np.sin(2 * math.pi * 220.0 * t) * 800).astype(np.int16).tobytes()


__all__ = ["CartesiaContext", "CartesiaLedger", "FakeCartesia"]
