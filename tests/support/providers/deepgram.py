"""A local Deepgram live-transcription websocket (``/v1/listen``) that bills the audio it receives.

What the installed client expects (deepgram-sdk ``listen/v1/client.py`` and Pipecat's
``services/deepgram/stt.py``):

- The client connects to ``<base>/v1/listen?<query>`` with ``Authorization: Token <key>``; the query
  carries ``encoding=linear16``, ``sample_rate``, ``channels``, ``interim_results``, ``model``,
  ``language``, ``punctuate``... and ``vad_events`` / ``utterance_end_ms`` when asked for.
- It streams binary linear16 audio and JSON control messages: ``{"type": "KeepAlive"}`` every 5 s,
  ``{"type": "Finalize"}`` on each VAD stop, ``{"type": "CloseStream"}`` on disconnect.
- It reads ``Results`` (``channel.alternatives[0].transcript``, ``is_final``, ``speech_final``,
  ``from_finalize``), ``SpeechStarted``, ``UtteranceEnd`` and ``Metadata`` messages.

This fake recognises speech without a model: a chunk whose RMS energy is above a threshold is speech.
Each stretch of speech "is" the next scripted transcript, answered as an interim result while it
lasts and then as two FINAL results: the first half of its words once the audio has been silent for
``endpoint_ms`` (``is_final``), the rest when the client sends ``Finalize`` (``from_finalize`` and
``speech_final``), or after ``fallback_endpoint_ms`` of silence without one (``speech_final``).

The ledger bills what Deepgram bills for streaming: every second of audio received, silence
included. It keeps each chunk with its arrival time (wall clock), so a test can sum the audio
streamed within any window of the call (e.g. one exported turn).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.support.providers import HOST, WebsocketFake

LISTEN_PATH = "/v1/listen"
BYTES_PER_SAMPLE = 2  # linear16
MODEL_INFO = {"name": "general-nova-3", "version": "2025-01-01.0", "arch": "nova-3"}


@dataclass(frozen=True)
class AudioChunk:
    """One binary message as it arrived."""

    received_ns: int
    """Wall-clock time of arrival (``time.time_ns()``)."""
    nbytes: int
    sample_rate: int
    voiced: bool

    @property
    def seconds(self) -> float:
        """Seconds of audio in the chunk."""
        return self.nbytes / (self.sample_rate * BYTES_PER_SAMPLE)


@dataclass(frozen=True)
class SentResult:
    """A ``Results`` message the fake sent."""

    transcript: str
    is_final: bool
    speech_final: bool
    from_finalize: bool
    sent_ns: int


@dataclass
class DeepgramLedger:
    """What Deepgram would bill (audio streamed), and what it answered."""

    chunks: list[AudioChunk] = field(default_factory=list)
    results: list[SentResult] = field(default_factory=list)
    control: list[str] = field(default_factory=list)
    """Types of the JSON messages received, in order (``KeepAlive``, ``Finalize``, ``CloseStream``)."""
    connections: list[dict[str, str]] = field(default_factory=list)
    """The query parameters of each connection."""
    authorizations: list[str] = field(default_factory=list)
    speech_started: int = 0
    utterance_ends: int = 0

    @property
    def audio_bytes(self) -> int:
        return sum(c.nbytes for c in self.chunks)

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio received: what Deepgram bills."""
        return sum(c.seconds for c in self.chunks)

    @property
    def audio_ms(self) -> int:
        """:attr:`audio_seconds` in whole milliseconds (Langfuse's ``input_audio_ms``)."""
        return round(self.audio_seconds * 1000)

    def audio_ms_between(self, start_ns: int | None, end_ns: int | None) -> int:
        """Milliseconds of audio received in ``[start_ns, end_ns)`` (wall clock; None: unbounded)."""
        seconds = sum(
            c.seconds
            for c in self.chunks
            if (start_ns is None or c.received_ns >= start_ns) and (end_ns is None or c.received_ns < end_ns)
        )
        return round(seconds * 1000)

    @property
    def finals(self) -> list[SentResult]:
        """The FINAL results with a transcript, in order."""
        return [r for r in self.results if r.is_final and r.transcript]

    @property
    def interims(self) -> list[SentResult]:
        return [r for r in self.results if not r.is_final]


def split_in_two(transcript: str) -> list[str]:
    """The two final parts of a transcript (one part for a single word), which joined with a space are it."""
    words = transcript.split()
    if len(words) < 2:
        return [transcript]
    half = math.ceil(len(words) / 2)
    return [" ".join(words[:half]), " ".join(words[half:])]


class FakeDeepgram(WebsocketFake):
    """Deepgram's live websocket on 127.0.0.1, "recognising" the scripted ``transcripts`` in order.

    Args:
        transcripts: What each stretch of speech is, in order; speech beyond them is ignored.
        api_key: The key the client must send (``Authorization: Token <key>``).
        energy_threshold: RMS (int16 units) above which a chunk is speech.
        endpoint_ms: Silence after speech before the first final part is sent.
        fallback_endpoint_ms: Silence after speech before the rest is sent when no ``Finalize`` came.
        interim_every_ms: Speech between two interim results.
    """

    name = "fake-deepgram"

    def __init__(
        self,
        transcripts: list[str] | tuple[str, ...],
        *,
        api_key: str = "dg-test-key",
        energy_threshold: float = 5.0,
        endpoint_ms: int = 100,
        fallback_endpoint_ms: int = 1000,
        interim_every_ms: int = 300,
    ) -> None:
        super().__init__()
        self.transcripts = list(transcripts)
        self.api_key = api_key
        self.energy_threshold = energy_threshold
        self.endpoint_s = endpoint_ms / 1000
        self.fallback_endpoint_s = fallback_endpoint_ms / 1000
        self.interim_every_s = interim_every_ms / 1000
        self.ledger = DeepgramLedger()
        self._next_transcript = 0

    @property
    def base_url(self) -> str:
        """What to give ``DeepgramSTTService(base_url=...)`` (``DEEPGRAM_BASE_URL``)."""
        return f"http://{HOST}:{self.port}"

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path != LISTEN_PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        authorization = request.headers.get("Authorization", "")
        self.ledger.authorizations.append(authorization)
        if authorization != f"Token {self.api_key}":
            return connection.respond(HTTPStatus.UNAUTHORIZED, '{"err_code":"INVALID_AUTH"}\n')
        return None

    def _take_transcript(self) -> str | None:
        if self._next_transcript >= len(self.transcripts):
            return None
        transcript = self.transcripts[self._next_transcript]
        self._next_transcript += 1
        return transcript

    async def _handle(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        query = {k: v[-1] for k, v in parse_qs(urlsplit(connection.request.path).query).items()}
        self.ledger.connections.append(query)
        stream = _Stream(self, connection, query)
        try:
            async for message in connection:
                if isinstance(message, bytes):
                    await stream.on_audio(message)
                else:
                    kind = json.loads(message).get("type", "")
                    self.ledger.control.append(kind)
                    if kind == "Finalize":
                        await stream.on_finalize()
                    elif kind == "CloseStream":
                        await stream.on_close_stream()
                        return
        except ConnectionClosed:
            pass


class _Stream:
    """The recognition state of one connection; times are in seconds of audio received."""

    def __init__(self, fake: FakeDeepgram, connection: ServerConnection, query: dict[str, str]) -> None:
        self.fake = fake
        self.connection = connection
        self.sample_rate = int(query.get("sample_rate", "16000"))
        self.interim_results = query.get("interim_results", "false") == "true"
        self.vad_events = query.get("vad_events", "false") == "true"
        self.utterance_end_s = int(query["utterance_end_ms"]) / 1000 if query.get("utterance_end_ms") else None
        self.request_id = str(uuid.uuid4())
        self.cursor = 0.0
        self.speaking = False
        self.speech_start = 0.0
        self.last_voice = 0.0
        self.last_interim = 0.0
        self.parts: list[str] = []  # final parts of the current utterance not sent yet
        self.words: list[str] = []
        self.utterance_end_due = False

    async def on_audio(self, audio: bytes) -> None:
        received_ns = time.time_ns()
        usable = audio[: len(audio) - len(audio) % BYTES_PER_SAMPLE]
        samples = np.frombuffer(usable, dtype=np.int16).astype(np.float64)
        rms = float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0
        voiced = rms > self.fake.energy_threshold
        chunk = AudioChunk(received_ns=received_ns, nbytes=len(audio), sample_rate=self.sample_rate, voiced=voiced)
        self.fake.ledger.chunks.append(chunk)
        start, self.cursor = self.cursor, self.cursor + chunk.seconds

        if voiced:
            if not self.speaking:
                await self._flush_parts(from_finalize=False)  # a new utterance ends the previous one
                await self._start_utterance(start)
            self.last_voice = self.cursor
            if self.interim_results and self.parts and self.cursor - self.last_interim >= self.fake.interim_every_s:
                self.last_interim = self.cursor
                spoken = (self.cursor - self.speech_start) / self.fake.interim_every_s
                words = self.words[: max(1, min(len(self.words), int(spoken)))]
                await self._send_results(" ".join(words), is_final=False)
            return

        silence = self.cursor - self.last_voice
        if self.speaking and silence >= self.fake.endpoint_s:
            self.speaking = False
            if len(self.parts) > 1:
                await self._send_results(self.parts.pop(0), is_final=True)
        if self.parts and not self.speaking and silence >= self.fake.fallback_endpoint_s:
            await self._flush_parts(from_finalize=False)
        if self.utterance_end_due and self.utterance_end_s is not None and silence >= self.utterance_end_s:
            self.utterance_end_due = False
            self.fake.ledger.utterance_ends += 1
            await self._send({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": round(self.last_voice, 3)})

    async def _start_utterance(self, start: float) -> None:
        self.speaking = True
        self.speech_start = self.last_interim = start
        transcript = self.fake._take_transcript()
        self.parts = split_in_two(transcript) if transcript else []
        self.words = transcript.split() if transcript else []
        self.utterance_end_due = transcript is not None
        if self.vad_events:
            self.fake.ledger.speech_started += 1
            await self._send({"type": "SpeechStarted", "channel": [0], "timestamp": round(start, 3)})

    async def on_finalize(self) -> None:
        if self.parts:
            self.speaking = False
            await self._flush_parts(from_finalize=True)
        else:
            # Nothing left to finalize: Deepgram answers with an empty final result.
            await self._send_results("", is_final=True, speech_final=False, from_finalize=True)

    async def on_close_stream(self) -> None:
        await self._flush_parts(from_finalize=False)
        await self._send(
            {
                "type": "Metadata",
                "transaction_key": "deprecated",
                "request_id": self.request_id,
                "sha256": "0" * 64,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                "duration": round(self.cursor, 6),
                "channels": 1,
                "models": [MODEL_INFO["version"]],
                "model_info": {MODEL_INFO["version"]: MODEL_INFO},
            }
        )
        await self.connection.close()

    async def _flush_parts(self, *, from_finalize: bool) -> None:
        while self.parts:
            last = len(self.parts) == 1
            await self._send_results(
                self.parts.pop(0), is_final=True, speech_final=last, from_finalize=from_finalize and last
            )

    async def _send_results(
        self, transcript: str, *, is_final: bool, speech_final: bool = False, from_finalize: bool = False
    ) -> None:
        duration = max(0.0, self.last_voice - self.speech_start)
        words = transcript.split()
        step = duration / len(words) if words else 0.0
        message: dict[str, Any] = {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(duration, 3),
            "start": round(self.speech_start, 3),
            "is_final": is_final,
            "speech_final": speech_final,
            "channel": {
                "alternatives": [
                    {
                        "transcript": transcript,
                        "confidence": 0.99,
                        "words": [
                            {
                                "word": word.strip(".,!?").lower(),
                                "start": round(self.speech_start + i * step, 3),
                                "end": round(self.speech_start + (i + 1) * step, 3),
                                "confidence": 0.99,
                                "punctuated_word": word,
                            }
                            for i, word in enumerate(words)
                        ],
                    }
                ]
            },
            "metadata": {"request_id": self.request_id, "model_info": MODEL_INFO, "model_uuid": str(uuid.uuid4())},
        }
        if is_final:
            message["from_finalize"] = from_finalize
        self.fake.ledger.results.append(
            SentResult(transcript, is_final, speech_final, from_finalize, sent_ns=time.time_ns())
        )
        await self._send(message)

    async def _send(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.connection.send(json.dumps(message))


__all__ = ["AudioChunk", "DeepgramLedger", "FakeDeepgram", "SentResult", "split_in_two"]
