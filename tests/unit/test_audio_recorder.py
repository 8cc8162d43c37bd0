"""The call recorder: turns as mono WAV, the call as stereo with the bot where it played, within a bound."""

from __future__ import annotations

import io
import wave

import numpy as np

from pipecat_langfuse._audio import CallRecorder
from tests.support.logs import captured_logs

S = 1_000_000_000  # ns


def tone(seconds: float, rate: int, value: int = 1000) -> bytes:
    return np.full(int(seconds * rate), value, dtype="<i2").tobytes()


def read(wav_file: bytes | None) -> tuple[int, int, np.ndarray]:
    assert wav_file is not None
    with wave.open(io.BytesIO(wav_file)) as wav:
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        return wav.getnchannels(), wav.getframerate(), frames.reshape(-1, wav.getnchannels())


def test_each_turn_is_its_own_mono_wav_and_is_forgotten_once_taken() -> None:
    recorder = CallRecorder(max_bytes=10_000_000)
    recorder.start(10 * S)
    recorder.caller(tone(0.5, 16000), 16000, 1, 10 * S, turn=1)
    recorder.bot(tone(0.25, 24000), 24000, 1, 11 * S, turn=1)
    caller, bot = recorder.turn_audio(1)
    assert read(caller)[:2] == (1, 16000)
    assert len(read(caller)[2]) == 8000
    assert (read(bot)[1], len(read(bot)[2])) == (24000, 6000)
    assert recorder.turn_audio(1) == (None, None)


def test_stereo_puts_the_caller_left_where_it_arrived_and_the_bot_right_where_it_played() -> None:
    recorder = CallRecorder(max_bytes=10_000_000)
    recorder.start(0)
    recorder.caller(tone(1.0, 16000, 100), 16000, 1, 0, turn=1)
    # Two bot chunks generated at once at 2 s (24 kHz): they play one after the other.
    recorder.bot(tone(0.5, 24000, 200), 24000, 1, 2 * S, turn=1)
    recorder.bot(tone(0.5, 24000, 300), 24000, 1, 2 * S, turn=1)
    channels, rate, frames = read(recorder.call_audio())
    assert (channels, rate) == (2, 16000)
    left, right = frames[:, 0], frames[:, 1]
    assert set(left[:16000]) == {100}
    assert set(left[16000:]) == {0}
    assert set(right[:32000]) == {0}
    assert set(right[32000:40000]) == {200}  # 2.0-2.5 s
    assert set(right[40000:48000]) == {300}  # 2.5-3.0 s, resampled to 16 kHz


def test_an_interruption_cuts_the_bot_audio_not_yet_played() -> None:
    recorder = CallRecorder(max_bytes=10_000_000)
    recorder.start(0)
    recorder.bot(tone(2.0, 16000, 500), 16000, 1, 1 * S, turn=1)  # plays 1-3 s
    recorder.cut_bot(int(1.5 * S))
    _, _, frames = read(recorder.call_audio())
    assert len(frames) == 24000 + 1  # up to 1.5 s (and the sample at the end)
    assert set(frames[16000:24000, 1]) == {500}


def test_past_the_bound_the_rest_is_not_recorded_and_it_says_so() -> None:
    recorder = CallRecorder(max_bytes=4 * 16000 * 2)  # two seconds, kept twice (turn and call)
    recorder.start(0)
    with captured_logs() as warnings:
        recorder.caller(tone(1.0, 16000), 16000, 1, 0, turn=1)
        recorder.caller(tone(1.0, 16000), 16000, 1, 1 * S, turn=1)
        recorder.caller(tone(1.0, 16000), 16000, 1, 2 * S, turn=1)
        recorder.caller(tone(1.0, 16000), 16000, 1, 3 * S, turn=1)
    assert recorder.truncated
    assert len(warnings) == 1
    assert "LANGFUSE_AUDIO_MAX_MB" in warnings[0]
    caller, _ = recorder.turn_audio(1)
    assert len(read(caller)[2]) == 32000
    # Taking the turn frees its copy: the call may record again.
    recorder.caller(tone(0.5, 16000), 16000, 1, 4 * S, turn=2)
    assert len(read(recorder.turn_audio(2)[0])[2]) == 8000


def test_stereo_frames_become_mono_and_nothing_before_the_start_frame_is_kept() -> None:
    recorder = CallRecorder(max_bytes=10_000_000)
    recorder.caller(tone(1.0, 16000), 16000, 1, 0, turn=1)  # before start: dropped
    recorder.start(0)
    stereo = np.array([[100, 300]] * 1600, dtype="<i2").tobytes()
    recorder.caller(stereo, 16000, 2, 0, turn=1)
    _, _, frames = read(recorder.turn_audio(1)[0])
    assert set(frames[:, 0]) == {200}
    assert len(frames) == 1600
