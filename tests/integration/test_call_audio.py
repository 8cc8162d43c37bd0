"""The call's audio on its trace (LANGFUSE_RECORD_AUDIO), through the SDK's media path to a local endpoint."""

from __future__ import annotations

import dataclasses
import io
import re
import wave
from collections.abc import Iterator

import pytest

from app.offline import QUICK_SCRIPT, create_offline_services
from pipecat_langfuse import TracingSettings, VoiceTracer
from tests.support.conversation import TracedCall, run_traced_call
from tests.support.langfuse_rules import METADATA_PREFIX, json_attribute
from tests.support.langfuse_server import MEDIA_PATH, LocalLangfuse, ReceivedSpan, StartLocalLangfuse
from tests.support.otel_global import fresh_global_tracer_provider

REFERENCE = re.compile(r"^@@@langfuseMedia:type=audio/wav\|id=([A-Za-z0-9_-]{22})\|source=bytes@@@$")


@pytest.fixture(autouse=True)
def _first_client_of_the_process() -> Iterator[None]:
    with fresh_global_tracer_provider():
        yield


def settings_for(server: LocalLangfuse, **changes: object) -> TracingSettings:
    settings = TracingSettings(
        enabled=True, public_key=server.public_key, secret_key=server.secret_key, base_url=server.url
    )
    return dataclasses.replace(settings, **changes)


@dataclasses.dataclass
class Wav:
    channels: int
    rate: int
    frames: int
    samples: bytes


def uploaded(server: LocalLangfuse, span: ReceivedSpan, key: str) -> Wav:
    """The WAV that ``span``'s metadata ``key`` refers to, as Langfuse stored it."""
    reference = json_attribute(span, f"{METADATA_PREFIX}{key}")
    match = REFERENCE.match(str(reference))
    assert match is not None, reference
    record = server.media[match.group(1)]
    assert record["traceId"] == span.trace_id
    assert record["observationId"] == span.span_id
    assert (record["contentType"], record["field"]) == ("audio/wav", "metadata")
    assert record["patch"]["uploadHttpStatus"] == 200  # the SDK told Langfuse the upload worked
    with wave.open(io.BytesIO(record["bytes"])) as wav:
        return Wav(wav.getnchannels(), wav.getframerate(), wav.getnframes(), wav.readframes(wav.getnframes()))


@pytest.fixture(scope="module")
def recorded(module_local_langfuse: StartLocalLangfuse) -> tuple[LocalLangfuse, TracedCall]:
    with fresh_global_tracer_provider():
        server = module_local_langfuse(public_key="pk-lf-call-audio")
        tracer = VoiceTracer(settings_for(server, record_audio=True), conversation_id="call-audio")
        return server, run_traced_call(server, tracer, create_offline_services(QUICK_SCRIPT))


def test_each_turn_carries_the_callers_audio_as_wav_all_of_it_once(recorded: tuple[LocalLangfuse, TracedCall]) -> None:
    server, call = recorded
    turns = sorted((s for s in call.spans if s.name.startswith("turn ")), key=lambda s: s.start_ns)
    callers = [uploaded(server, turn, "caller_audio") for turn in turns]
    assert {(w.channels, w.rate) for w in callers} == {(1, 16000)}
    # Every sample the transport pushed, in exactly one turn (from the StartFrame on).
    pushed = sum(n for name, n in call.witness.events if name == "input_audio_samples")  # type: ignore[misc]
    assert sum(w.frames for w in callers) == pushed
    assert all(w.frames > 16000 for w in callers)  # each turn has its utterance, over a second


def test_each_turn_carries_what_the_bot_said_and_the_cut_turn_only_what_played(
    recorded: tuple[LocalLangfuse, TracedCall],
) -> None:
    server, call = recorded
    turns = sorted((s for s in call.spans if s.name.startswith("turn ")), key=lambda s: s.start_ns)
    bots = [uploaded(server, turn, "bot_audio") for turn in turns]
    rate = bots[0].rate
    generated_ms = call.witness.tts_audio_ms()
    # Turns 2 and 3: all the speech generated for them. Turn 1 was cut by the caller: less.
    assert [round(w.frames * 1000 / rate) for w in bots[1:]] == generated_ms[1:]
    assert 0 < bots[0].frames * 1000 / rate < generated_ms[0]


def test_the_conversation_carries_the_whole_call_in_stereo(recorded: tuple[LocalLangfuse, TracedCall]) -> None:
    server, call = recorded
    (root,) = [s for s in call.spans if s.name == "voice-conversation"]
    stereo = uploaded(server, root, "call_audio")
    assert (stereo.channels, stereo.rate) == (2, 16000)
    pushed = sum(n for name, n in call.witness.events if name == "input_audio_samples")  # type: ignore[misc]
    assert stereo.frames >= pushed  # the caller's stream, placed where it arrived, is all there
    left = stereo.samples[0::4] + stereo.samples[1::4]
    right = stereo.samples[2::4] + stereo.samples[3::4]
    assert any(left)  # the caller
    assert any(right)  # the bot
    assert f"{METADATA_PREFIX}audio_truncated" not in root.attributes


def test_no_audio_unless_asked_nor_without_content(local_langfuse: StartLocalLangfuse) -> None:
    server = local_langfuse(public_key="pk-lf-no-audio")
    for settings in (settings_for(server), settings_for(server, record_audio=True, capture_content=False)):
        tracer = VoiceTracer(settings, conversation_id=f"no-audio-{settings.capture_content}")
        assert tracer.observer.recorder is None
    assert server.requests_to(MEDIA_PATH) == []
