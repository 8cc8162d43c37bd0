"""A local ElevenLabs multi-stream-input TTS websocket with a billing ledger.

``wss://api.elevenlabs.io/v1/text-to-speech/{voice_id}/multi-stream-input?model_id=...&output_format=pcm_24000``
as Pipecat's ``ElevenLabsTTSService`` uses it (pipecat/services/elevenlabs/tts.py and tts_base.py):

client -> server (JSON text frames; the API key in the ``xi-api-key`` header)
    {"text": " ", "context_id": C, "voice_settings"?: {...}}   opens context C (context init)
    {"text": "Hello there. ", "context_id": C}                 text to speak in C
    {"text": "", "context_id"?: C}                             keepalive
    {"context_id": C, "flush": true}                           synthesize what C has buffered
    {"context_id": C, "close_context": true}                   close C (end of reply, or a barge-in)
    {"close_socket": true}                                     close the connection

server -> client
    {"audio": base64 PCM, "alignment": {"chars", "charStartTimesMs", "charDurationsMs"},
     "normalizedAlignment": {...}, "contextId": C}
    {"isFinal": true, "contextId": C}                          C is closed; no more audio for it

With ``auto_mode=true`` (Pipecat's default for sentence aggregation) every text message is
synthesized at once: the fake answers each with one audio message (16-bit mono PCM at the
requested rate, ``len(text) / chars_per_sec`` seconds of a quiet tone) carrying the alignment of
each character. A closed context gets its ``isFinal`` and no more audio.

The ledger bills the characters of every text message per context (what ElevenLabs bills),
contexts closed by a barge-in included. The context-init's single space and empty keepalives are
not text to speak and are not billed.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.support.providers import HOST, WebsocketFake

API_KEY = "xi-fake-key"
PATH_PREFIX = "/v1/text-to-speech/"
PATH_SUFFIX = "/multi-stream-input"


@dataclass
class TTSContext:
    """One ElevenLabs context and what it is billed (a ledger entry).

    Attributes:
        context_id: The client's ``context_id``.
        texts: The text messages spoken in it, in order (billed).
        events: What the client did with the context, in order: ``init``, ``text``, ``flush``,
            ``close``.
        audio_ms: Milliseconds of audio sent for it.
        final_sent: Whether its ``isFinal`` was sent.
    """

    context_id: str
    texts: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    voice_settings: dict[str, Any] | None = None
    audio_ms: int = 0
    final_sent: bool = False

    @property
    def characters(self) -> int:
        """Characters billed."""
        return sum(len(t) for t in self.texts)

    @property
    def text(self) -> str:
        return "".join(self.texts)

    @property
    def closed(self) -> bool:
        return "close" in self.events


@dataclass
class TTSConnection:
    """One websocket connection: its URL, query and headers."""

    path: str
    voice_id: str
    query: dict[str, str]
    headers: dict[str, str]
    socket_closed_by_client: bool = False


class FakeElevenLabs(WebsocketFake):
    """ElevenLabs' multi-stream-input websocket on 127.0.0.1.

    Args:
        chars_per_sec: Speaking rate of the synthesized audio.
        api_key: The ``xi-api-key`` the fake accepts (others are refused with HTTP 401).
    """

    name = "fake-elevenlabs"
    max_message_bytes = 2**24

    def __init__(self, *, chars_per_sec: float = 16.0, api_key: str = API_KEY) -> None:
        super().__init__()
        self.chars_per_sec = chars_per_sec
        self.api_key = api_key
        self.connections: list[TTSConnection] = []
        self.contexts: dict[str, TTSContext] = {}
        """The ledger: every context by id, in the order they were opened."""
        self.errors: list[str] = []

    @property
    def url(self) -> str:
        """``ELEVENLABS_URL`` for the service (the host part; the service adds the path)."""
        return f"ws://{HOST}:{self.port}"

    def characters(self) -> int:
        """Characters billed over every context."""
        return sum(c.characters for c in self.contexts.values())

    # -- Server --------------------------------------------------------------------------

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if not (path.startswith(PATH_PREFIX) and path.endswith(PATH_SUFFIX)):
            self.errors.append(f"unknown path {path}")
            return connection.respond(404, "Not Found\n")
        if request.headers.get("xi-api-key") != self.api_key:
            self.errors.append("bad xi-api-key")
            return connection.respond(401, "Unauthorized\n")
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        request = connection.request
        assert request is not None
        split = urlsplit(request.path)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        info = TTSConnection(
            path=split.path,
            voice_id=split.path[len(PATH_PREFIX) : -len(PATH_SUFFIX)],
            query=query,
            headers={k.lower(): v for k, v in request.headers.raw_items()},
        )
        with self._lock:
            self.connections.append(info)
        sample_rate = int(query.get("output_format", "pcm_24000").removeprefix("pcm_"))
        try:
            async for raw in connection:
                message = json.loads(raw)
                if message.get("close_socket"):
                    info.socket_closed_by_client = True
                    await connection.close()
                    return
                await self._on_message(connection, message, sample_rate)
        except ConnectionClosed:
            pass

    async def _on_message(self, connection: ServerConnection, message: dict[str, Any], sample_rate: int) -> None:
        context_id = message.get("context_id")
        text = message.get("text")
        if context_id is None:
            if text != "":
                self.errors.append(f"message without context_id: {message}")
            return  # a connection-level keepalive
        context = self.contexts.get(context_id)
        if context is None:
            context = TTSContext(context_id=context_id, voice_settings=message.get("voice_settings"))
            with self._lock:
                self.contexts[context_id] = context
            if text == " ":
                context.events.append("init")
                return
        if message.get("close_context"):
            context.events.append("close")
            if not context.final_sent:
                context.final_sent = True
                await connection.send(json.dumps({"isFinal": True, "contextId": context_id}))
            return
        if message.get("flush"):
            context.events.append("flush")
            return
        if not isinstance(text, str) or text == "":
            return  # a keepalive of the context
        if context.closed:
            self.errors.append(f"text after close_context in {context_id}")
            return
        context.events.append("text")
        context.texts.append(text)
        audio, alignment, duration_ms = self._synthesize(text, sample_rate)
        context.audio_ms += duration_ms
        await connection.send(
            json.dumps(
                {
                    "audio": base64.b64encode(audio).decode(),
                    "alignment": alignment,
                    "normalizedAlignment": alignment,
                    "contextId": context_id,
                }
            )
        )

    def _synthesize(self, text: str, sample_rate: int) -> tuple[bytes, dict[str, list[Any]], int]:
        per_char_ms = 1000.0 / self.chars_per_sec
        duration_ms = round(len(text) * per_char_ms)
        samples = round(duration_ms * sample_rate / 1000)
        t = np.arange(samples) / sample_rate
        audio = (1500 * np.sin(2 * math.pi * 200.0 * t)).astype(np.int16).tobytes()
        alignment: dict[str, list[Any]] = {
            "chars": list(text),
            "charStartTimesMs": [round(i * per_char_ms) for i in range(len(text))],
            "charDurationsMs": [round((i + 1) * per_char_ms) - round(i * per_char_ms) for i in range(len(text))],
        }
        return audio, alignment, duration_ms


__all__ = ["API_KEY", "FakeElevenLabs", "TTSConnection", "TTSContext"]
