"""The caller's and the bot's audio of a call, for Langfuse media: each turn's as mono WAV, the call's as stereo.

The observer hands every ``InputAudioRawFrame`` (the caller) and every ``TTSAudioRawFrame`` (the bot)
to a :class:`CallRecorder`, from the ``StartFrame`` on, so a greeting is kept. PCM is kept as it
came, in memory, up to a bound (:envvar:`LANGFUSE_AUDIO_MAX_MB`): past it, the rest of the call is
not recorded, and the recording says so (``truncated``).

Timing. Caller audio is placed where it arrived (the pipeline clock of its frame). Bot audio is
generated faster than it is played, so it is placed where it would play: at its arrival, or right
after the bot audio before it, whichever is later; an interruption cuts what had not played yet.
The call's stereo file has the caller on the left and the bot on the right, at the caller's sample
rate (the bot's audio is resampled to it).

Nothing here touches the network: the WAV bytes become ``LangfuseMedia`` values, which the SDK
uploads from its own background threads.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass, field

import numpy as np
from langfuse.api import MediaContentType
from langfuse.media import LangfuseMedia
from loguru import logger

SAMPLE_WIDTH = 2
"""Bytes per sample: Pipecat's audio frames are 16-bit PCM."""


@dataclass(slots=True)
class _Chunk:
    at_ns: int
    """Where the chunk starts in the call (ns after the StartFrame)."""
    pcm: bytes
    """Mono 16-bit PCM."""
    sample_rate: int

    @property
    def end_ns(self) -> int:
        return self.at_ns + len(self.pcm) // SAMPLE_WIDTH * 1_000_000_000 // self.sample_rate


@dataclass(slots=True)
class _Turn:
    caller: list[bytes] = field(default_factory=list)
    caller_rate: int = 0
    bot: list[bytes] = field(default_factory=list)
    bot_rate: int = 0


class CallRecorder:
    """Keeps a call's audio, per turn and whole, within ``max_bytes`` of PCM.

    Args:
        max_bytes: The most PCM kept at once; audio past it is dropped and ``truncated`` is set.
    """

    def __init__(self, max_bytes: int) -> None:
        """Record nothing until :meth:`start`."""
        self._max_bytes = max_bytes
        self._kept = 0
        self._start_ns: int | None = None
        self._caller: list[_Chunk] = []
        self._bot: list[_Chunk] = []
        self._bot_playhead_ns = 0
        self._turns: dict[int, _Turn] = {}
        self.truncated = False
        """Whether some audio was dropped to stay within the bound."""

    def start(self, at_ns: int) -> None:
        """Start the call's timeline at the StartFrame (pipeline clock, ns)."""
        if self._start_ns is None:
            self._start_ns = at_ns

    def caller(self, pcm: bytes, sample_rate: int, num_channels: int, at_ns: int, turn: int) -> None:
        """Keep caller audio that arrived at ``at_ns``, in turn ``turn``."""
        self._keep(pcm, sample_rate, num_channels, at_ns, turn, bot=False)

    def bot(self, pcm: bytes, sample_rate: int, num_channels: int, at_ns: int, turn: int) -> None:
        """Keep bot audio generated at ``at_ns`` for turn ``turn``."""
        self._keep(pcm, sample_rate, num_channels, at_ns, turn, bot=True)

    def cut_bot(self, at_ns: int) -> None:
        """The caller interrupted at ``at_ns``: bot audio not played by then was never heard."""
        if self._start_ns is None:
            return
        cut = at_ns - self._start_ns
        kept: list[_Chunk] = []
        for chunk in self._bot:
            if chunk.at_ns >= cut:
                self._kept -= len(chunk.pcm)
                continue
            if chunk.end_ns > cut:
                samples = (cut - chunk.at_ns) * chunk.sample_rate // 1_000_000_000
                self._kept -= len(chunk.pcm) - samples * SAMPLE_WIDTH
                chunk.pcm = chunk.pcm[: samples * SAMPLE_WIDTH]
            kept.append(chunk)
        self._bot = kept
        self._bot_playhead_ns = min(self._bot_playhead_ns, cut)

    def turn_audio(self, turn: int, *, bot_seconds: float | None = None) -> tuple[bytes | None, bytes | None]:
        """The caller's and the bot's audio of ``turn`` as mono WAV files, and forget them.

        ``bot_seconds`` keeps only that much of the bot's audio: what played before a barge-in.
        """
        recorded = self._turns.pop(turn, None)
        if recorded is None:
            return None, None
        caller = b"".join(recorded.caller)
        bot = b"".join(recorded.bot)
        self._kept -= len(caller) + len(bot)
        if bot_seconds is not None and recorded.bot_rate:
            bot = bot[: int(bot_seconds * recorded.bot_rate) * SAMPLE_WIDTH]
        return (
            wav_bytes(caller, recorded.caller_rate, 1) if caller else None,
            wav_bytes(bot, recorded.bot_rate, 1) if bot else None,
        )

    def call_audio(self) -> bytes | None:
        """The whole call as a stereo WAV: the caller left, the bot right (None without audio)."""
        rates = [c.sample_rate for c in self._caller] or [c.sample_rate for c in self._bot]
        if not rates:
            return None
        rate = rates[0]
        end_ns = max(c.end_ns for c in [*self._caller, *self._bot])
        channels = np.zeros((int(end_ns * rate // 1_000_000_000) + 1, 2), dtype=np.int32)
        for column, chunks in ((0, self._caller), (1, self._bot)):
            for chunk in chunks:
                samples = _resampled(np.frombuffer(chunk.pcm, dtype=np.int16), chunk.sample_rate, rate)
                start = chunk.at_ns * rate // 1_000_000_000
                channels[start : start + len(samples), column] += samples[: len(channels) - start]
        stereo = np.clip(channels, -32768, 32767).astype("<i2")
        return wav_bytes(stereo.tobytes(), rate, 2)

    def _keep(self, pcm: bytes, sample_rate: int, num_channels: int, at_ns: int, turn: int, *, bot: bool) -> None:
        if self._start_ns is None or not pcm or sample_rate <= 0:
            return
        mono = _mono(pcm, num_channels)
        if self._kept + 2 * len(mono) > self._max_bytes:  # kept twice: in its turn and in the call
            if not self.truncated:
                self.truncated = True
                logger.warning(
                    f"Call audio reached {self._max_bytes / 1e6:g} MB (LANGFUSE_AUDIO_MAX_MB); the rest of the "
                    "call is not recorded. Raise LANGFUSE_AUDIO_MAX_MB to keep longer calls."
                )
            return
        self._kept += 2 * len(mono)
        recorded = self._turns.setdefault(turn, _Turn())
        position = at_ns - self._start_ns
        if bot:
            position = max(position, self._bot_playhead_ns)
            chunk = _Chunk(position, mono, sample_rate)
            self._bot_playhead_ns = chunk.end_ns
            self._bot.append(chunk)
            recorded.bot.append(mono)
            recorded.bot_rate = recorded.bot_rate or sample_rate
        else:
            previous_end = self._caller[-1].end_ns if self._caller else 0
            self._caller.append(_Chunk(max(position, previous_end), mono, sample_rate))
            recorded.caller.append(mono)
            recorded.caller_rate = recorded.caller_rate or sample_rate


def wav_bytes(pcm: bytes, sample_rate: int, num_channels: int) -> bytes:
    """16-bit PCM as the bytes of a WAV file."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(num_channels)
        wav.setsampwidth(SAMPLE_WIDTH)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)
    return buffer.getvalue()


def wav_media(wav: bytes) -> LangfuseMedia:
    """A WAV file as a Langfuse media value: the SDK uploads it and leaves a reference in its place."""
    return LangfuseMedia(content_bytes=wav, content_type=MediaContentType("audio/wav"))


def _mono(pcm: bytes, num_channels: int) -> bytes:
    if num_channels <= 1:
        return pcm[: len(pcm) // SAMPLE_WIDTH * SAMPLE_WIDTH]
    samples = np.frombuffer(pcm[: len(pcm) // (SAMPLE_WIDTH * num_channels) * SAMPLE_WIDTH * num_channels], "<i2")
    mono: bytes = samples.reshape(-1, num_channels).mean(axis=1).astype("<i2").tobytes()
    return mono


def _resampled(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """``samples`` at ``to_rate``, by linear interpolation (for listening, not for analysis)."""
    if from_rate == to_rate or len(samples) == 0:
        return samples.astype(np.int32)
    count = max(int(len(samples) * to_rate / from_rate), 1)
    positions = np.arange(count) * (from_rate / to_rate)
    resampled: np.ndarray = np.interp(positions, np.arange(len(samples)), samples).astype(np.int32)
    return resampled
