"""A transport that plays a scripted caller and a real-time speaker, offline."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from enum import Enum, auto
from typing import Any

import numpy as np
from loguru import logger
from pipecat.audio.vad.vad_analyzer import VAD_START_SECS, VAD_STOP_SECS
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    CancelFrame,
    EndFrame,
    EndWorkerFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    StartFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

from app.offline.script import DEFAULT_SCRIPT, FRAME_SECS, CallerScript, StartAnchor

#: If the event loop falls this far behind the microphone clock, the clock is reset.
_MAX_LAG_SECS = 0.2


def offline_transport_params() -> TransportParams:
    """Transport parameters for the offline transport.

    Audio in and out are enabled at the pipeline's sample rates (16 kHz in and
    24 kHz out by default), and no silence is played after the call ends.
    """
    return TransportParams(
        audio_in_enabled=True,
        audio_out_enabled=True,
        audio_out_end_silence_secs=0,
    )


class _Phase(Enum):
    WAITING = auto()  # silence until the next utterance is due
    SPEAKING = auto()  # speech frames of the current utterance
    TRAILING = auto()  # silence until the VAD would report the end of speech
    HANGING_UP = auto()  # silence until the bot has answered the last utterance
    DONE = auto()  # silence until the pipeline stops the transport


@dataclass
class _CallerState:
    index: int = 0
    phase: _Phase = _Phase.WAITING
    # Index (into the bot speech starts) of the reply the next step waits on;
    # None means the call start.
    reply: int | None = None
    waiting_since: float = 0.0
    start_at: float | None = None
    frames: int = 0  # frames sent in the current phase
    speech_frames: int = 0


class OfflineInputTransport(BaseInputTransport):
    """Input transport streaming a scripted caller as 20 ms audio frames in real time.

    Audio starts when the transport starts. While the caller speaks, frames carry
    quiet synthetic speech; otherwise they carry silence. Synthetic audio can't be
    relied on to trigger Silero, so the transport reports voice activity itself:
    a ``VADUserStartedSpeakingFrame`` after ``vad_start_secs`` of speech and a
    ``VADUserStoppedSpeakingFrame`` after ``vad_stop_secs`` of silence, as a
    real VAD would. It learns when the bot starts and stops speaking from the
    ``BotStartedSpeakingFrame``/``BotStoppedSpeakingFrame`` travelling upstream,
    and ends the call with an ``EndWorkerFrame`` once the bot has answered the
    last utterance.
    """

    def __init__(
        self,
        script: CallerScript,
        params: TransportParams,
        *,
        vad_start_secs: float = VAD_START_SECS,
        vad_stop_secs: float = VAD_STOP_SECS,
        speech_amplitude: int = 600,
        reply_timeout_secs: float = 20.0,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        """Initialize the input transport.

        Args:
            script: The conversation to play.
            params: Transport parameters; audio input must be enabled.
            vad_start_secs: Speech before the simulated VAD reports a start.
            vad_stop_secs: Silence before the simulated VAD reports a stop.
            speech_amplitude: Peak-ish amplitude (int16) of the synthetic speech.
            reply_timeout_secs: How long the caller waits for the bot to start a
                reply before giving up and ending the call.
            seed: Seed of the synthetic speech noise.
            **kwargs: Passed to ``BaseInputTransport``.
        """
        super().__init__(params, **kwargs)
        self._script = script
        self._vad_start_frames = round(vad_start_secs / FRAME_SECS)
        self._vad_stop_frames = round(vad_stop_secs / FRAME_SECS)
        self._vad_start_secs = self._vad_start_frames * FRAME_SECS
        self._vad_stop_secs = self._vad_stop_frames * FRAME_SECS
        self._speech_amplitude = speech_amplitude
        self._reply_timeout_secs = reply_timeout_secs
        self._rng = np.random.default_rng(seed)
        self._bot_started: list[float] = []
        self._bot_stopped: list[float] = []
        self._mic_task: asyncio.Task[None] | None = None

    @property
    def script(self) -> CallerScript:
        """The conversation this transport plays."""
        return self._script

    async def start(self, frame: StartFrame) -> None:
        """Start streaming the caller's audio.

        Args:
            frame: The start frame.
        """
        await super().start(frame)
        await self.set_transport_ready(frame)
        if not self._mic_task:
            self._mic_task = self.create_task(self._microphone(), name="offline_microphone")

    async def stop(self, frame: EndFrame) -> None:
        """Stop streaming and stop the transport.

        Args:
            frame: The end frame.
        """
        await self._cancel_mic_task()
        await super().stop(frame)

    async def cancel(self, frame: CancelFrame) -> None:
        """Stop streaming at once and cancel the transport.

        Args:
            frame: The cancel frame.
        """
        await self._cancel_mic_task()
        await super().cancel(frame)

    async def cleanup(self) -> None:
        """Release the transport's resources."""
        await self._cancel_mic_task()
        await super().cleanup()  # type: ignore[no-untyped-call]  # unannotated in Pipecat

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Note when the bot starts and stops speaking, then process the frame.

        Args:
            frame: The frame to process.
            direction: The direction of frame flow.
        """
        if direction == FrameDirection.UPSTREAM:
            if isinstance(frame, BotStartedSpeakingFrame):
                self._bot_started.append(asyncio.get_running_loop().time())
            elif isinstance(frame, BotStoppedSpeakingFrame):
                self._bot_stopped.append(asyncio.get_running_loop().time())
        await super().process_frame(frame, direction)

    async def _cancel_mic_task(self) -> None:
        if self._mic_task:
            await self.cancel_task(self._mic_task)
            self._mic_task = None

    #
    # Microphone
    #

    async def _microphone(self) -> None:
        """Stream one frame every 20 ms, following the script."""
        loop = asyncio.get_running_loop()
        samples_per_frame = int(self.sample_rate * FRAME_SECS)
        silence = bytes(samples_per_frame * 2)
        tick = loop.time()
        state = _CallerState(reply=0 if self._script.greeting else None, waiting_since=tick)
        call_start = tick

        while True:
            lag = loop.time() - tick
            if lag > _MAX_LAG_SECS:
                logger.warning(f"{self}: microphone fell {lag:.3f}s behind, resyncing")
                tick = loop.time()
            elif lag < 0:
                await asyncio.sleep(-lag)

            speech_frame = await self._advance(state, tick, call_start)
            audio = silence if speech_frame is None else self._speech_audio(samples_per_frame, speech_frame)
            await self.push_audio_frame(InputAudioRawFrame(audio=audio, sample_rate=self.sample_rate, num_channels=1))
            tick += FRAME_SECS

    async def _advance(self, state: _CallerState, now: float, call_start: float) -> int | None:
        """Run the caller for one frame and push the events due before it.

        Returns:
            The index of the frame within the utterance if it is speech, else None.
        """
        if state.phase is _Phase.WAITING:
            if state.start_at is None:
                anchor = self._anchor(state, call_start)
                if anchor is not None:
                    state.start_at = anchor + self._script.utterances[state.index].delay_secs
                elif self._reply_overdue(state, now):
                    await self._hang_up(state, "bot reply timeout")
                    return None
            if state.start_at is not None and now >= state.start_at:
                utterance = self._script.utterances[state.index]
                logger.debug(f"{self}: caller says [{utterance.text}]")
                state.phase = _Phase.SPEAKING
                state.frames = 0
                state.speech_frames = self._script.speech_frames(utterance)

        if state.phase is _Phase.SPEAKING:
            if state.frames == self._vad_start_frames:
                await self._push_vad_frame(VADUserStartedSpeakingFrame(start_secs=self._vad_start_secs))
            index = state.frames
            state.frames += 1
            if state.frames == state.speech_frames:
                state.phase = _Phase.TRAILING
                state.frames = 0
            return index

        if state.phase is _Phase.TRAILING:
            if state.frames == self._vad_stop_frames:
                await self._push_vad_frame(VADUserStoppedSpeakingFrame(stop_secs=self._vad_stop_secs))
                state.index += 1
                state.reply = len(self._bot_started)
                state.waiting_since = now
                state.start_at = None
                state.frames = 0
                last = state.index == len(self._script.utterances)
                state.phase = _Phase.HANGING_UP if last else _Phase.WAITING
            else:
                state.frames += 1
            return None

        if state.phase is _Phase.HANGING_UP:
            reply = state.reply if state.reply is not None else 0
            if len(self._bot_stopped) > reply:
                if now >= self._bot_stopped[reply] + self._script.hangup_delay_secs:
                    await self._hang_up(state, "offline caller hung up")
            elif self._reply_overdue(state, now):
                await self._hang_up(state, "bot reply timeout")

        return None

    def _anchor(self, state: _CallerState, call_start: float) -> float | None:
        """When the bot event the next utterance waits on happened, if it has."""
        if state.reply is None:
            return call_start
        if self._script.utterances[state.index].anchor is StartAnchor.BOT_STARTED:
            times = self._bot_started
        else:
            # Bot speech starts and stops alternate, so stop k ends start k.
            times = self._bot_stopped
        return times[state.reply] if len(times) > state.reply else None

    def _reply_overdue(self, state: _CallerState, now: float) -> bool:
        """Whether the bot has failed to start its awaited reply in time."""
        if state.reply is None or len(self._bot_started) > state.reply:
            return False
        if now - state.waiting_since <= self._reply_timeout_secs:
            return False
        logger.warning(f"{self}: the bot hasn't replied within {self._reply_timeout_secs}s, hanging up")
        return True

    async def _push_vad_frame(self, frame: Frame) -> None:
        # Audio frames reach the next processor through the base class's audio
        # task. Let it catch up first, so the VAD frame lands exactly between
        # the frames it separates, as it would coming from a real VAD.
        await self._audio_in_queue.join()
        await self.push_frame(frame)

    async def _hang_up(self, state: _CallerState, reason: str) -> None:
        logger.debug(f"{self}: ending the call ({reason})")
        state.phase = _Phase.DONE
        await self.push_frame(EndWorkerFrame(reason=reason))

    def _speech_audio(self, num_samples: int, frame_index: int) -> bytes:
        """Quiet noise with a syllable-rate envelope, standing in for speech."""
        t = (frame_index * num_samples + np.arange(num_samples)) / self.sample_rate
        envelope = 0.55 + 0.45 * np.sin(2 * math.pi * 4.0 * t)
        noise = self._rng.standard_normal(num_samples) * self._speech_amplitude / 3
        samples = np.clip(noise * envelope, -32768, 32767).astype(np.int16)
        return samples.tobytes()


class OfflineOutputTransport(BaseOutputTransport):
    """Output transport that plays audio to nowhere, in real time.

    Writing a chunk takes as long as the chunk lasts, so the base class reports
    ``BotStartedSpeakingFrame``/``BotStoppedSpeakingFrame`` when a real speaker
    would start and stop, and interruptions cut the audio as they would live.

    It also works around a race in Pipecat 1.14's ``BaseOutputTransport``: on an
    interruption the media sender drains its audio queue and reports that the bot
    stopped speaking, but keeps its audio task running. If that task has already
    taken the next chunk off the queue and not handled it yet (a window of a couple
    of event-loop iterations, which load widens), it handles the chunk after the
    interruption: it reports the bot started speaking again and plays the chunk.
    Its reply's ``TTSStoppedFrame`` was drained, so only the 3 s fallback ends that
    "speech", and a reply whose audio starts within those 3 s gets no
    ``BotStartedSpeakingFrame``. Such a stale chunk (interruptible audio handled
    while the bot is not speaking, before any audio arrived after the interruption)
    is dropped, as the interruption meant; ``stale_chunks`` counts them.
    """

    def __init__(self, params: TransportParams, *, drop_stale_audio: bool = True, **kwargs: Any) -> None:
        """Initialize the output transport.

        Args:
            params: Transport parameters; audio output must be enabled.
            drop_stale_audio: Drop audio taken off the queue before an interruption and
                handled after it (see above); False only counts it (for measurements).
            **kwargs: Passed to ``BaseOutputTransport``.
        """
        super().__init__(params, **kwargs)
        self._play_until = 0.0
        self._played_secs = 0.0
        self.drop_stale_audio = drop_stale_audio
        self._stale_chunks = 0
        self._audio_since_interruption = True
        self._stale_frame_ids: set[int] = set()

    @property
    def played_secs(self) -> float:
        """Seconds of audio played so far."""
        return self._played_secs

    @property
    def stale_chunks(self) -> int:
        """Audio chunks the media sender handled after the interruption that should have dropped them."""
        return self._stale_chunks

    async def start(self, frame: StartFrame) -> None:
        """Start the transport and its media senders.

        Args:
            frame: The start frame.
        """
        await super().start(frame)
        await self.set_transport_ready(frame)
        for sender in self._media_senders.values():
            self._guard_media_sender(sender)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Note interruptions and the audio arriving after them, then process the frame.

        Args:
            frame: The frame to process.
            direction: The direction of frame flow.
        """
        if isinstance(frame, InterruptionFrame):
            self._audio_since_interruption = False
        elif isinstance(frame, OutputAudioRawFrame) and direction == FrameDirection.DOWNSTREAM:
            self._audio_since_interruption = True
        await super().process_frame(frame, direction)

    def _guard_media_sender(self, sender: BaseOutputTransport.MediaSender) -> None:
        """Make ``sender`` skip stale chunks (see the class docstring): no speaking event, no playback."""
        handle_frame = sender._handle_frame  # Pipecat 1.14: the audio task's per-frame handler

        async def guarded(frame: Frame) -> None:
            if (
                isinstance(frame, OutputAudioRawFrame)
                and frame.interruptible
                and not self._audio_since_interruption
                and not sender._bot_speaking
            ):
                self._stale_chunks += 1
                logger.debug(f"{self}: audio chunk handled after an interruption, dropped={self.drop_stale_audio}")
                if self.drop_stale_audio:
                    self._stale_frame_ids.add(frame.id)
                    return
            await handle_frame(frame)

        setattr(sender, "_handle_frame", guarded)  # noqa: B010 - an instance attribute shadows the method

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        """Play a chunk of audio: wait for as long as it lasts.

        Args:
            frame: The audio chunk.

        Returns:
            True, the chunk was played; False for a stale chunk, which is not.
        """
        if frame.id in self._stale_frame_ids:
            self._stale_frame_ids.discard(frame.id)
            return False
        bytes_per_sec = 2 * max(1, frame.num_channels) * frame.sample_rate
        duration = len(frame.audio) / bytes_per_sec if bytes_per_sec else 0.0
        loop = asyncio.get_running_loop()
        now = loop.time()
        # Pace against a playback clock so sleeps don't accumulate drift; after
        # a gap in the audio, playback restarts from now.
        self._play_until = max(self._play_until, now) + duration
        await asyncio.sleep(self._play_until - now)
        self._played_secs += duration
        return True


class OfflineTransport(BaseTransport):
    """Offline stand-in for a real transport: a scripted caller and a silent speaker."""

    def __init__(
        self,
        script: CallerScript = DEFAULT_SCRIPT,
        *,
        params: TransportParams | None = None,
        seed: int = 0,
        name: str | None = None,
        input_name: str | None = None,
        output_name: str | None = None,
    ) -> None:
        """Initialize the transport.

        Args:
            script: The conversation the caller plays.
            params: Transport parameters, by default ``offline_transport_params()``.
            seed: Seed of the synthetic caller audio.
            name: Name of the transport.
            input_name: Name of the input processor.
            output_name: Name of the output processor.
        """
        super().__init__(name=name, input_name=input_name, output_name=output_name)
        self._script = script
        self._params = params or offline_transport_params()
        self._seed = seed
        self._input: OfflineInputTransport | None = None
        self._output: OfflineOutputTransport | None = None

    @property
    def script(self) -> CallerScript:
        """The conversation the caller plays."""
        return self._script

    def input(self) -> OfflineInputTransport:
        """The input processor, streaming the caller's audio."""
        if not self._input:
            self._input = OfflineInputTransport(self._script, self._params, seed=self._seed, name=self._input_name)
        return self._input

    def output(self) -> OfflineOutputTransport:
        """The output processor, playing the bot's audio in real time."""
        if not self._output:
            self._output = OfflineOutputTransport(self._params, name=self._output_name)
        return self._output
