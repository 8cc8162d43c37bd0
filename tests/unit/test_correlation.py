"""A trace can be found from the call: session id from the runner, system prompt hash, linked Langfuse prompt."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from langfuse.api import Prompt_Chat
from langfuse.model import ChatPromptClient
from pipecat.frames.frames import (
    EndFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    StartFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.runner.types import (
    DailyRunnerArguments,
    SmallWebRTCRunnerArguments,
    TelnyxCallData,
    WebSocketRunnerArguments,
)

from pipecat_langfuse import PriceTable, TracingSettings, VoiceTracer
from tests.support.in_memory_langfuse import InMemoryLangfuse, in_memory_langfuse
from tests.support.langfuse_rules import METADATA, observation_attributes
from tests.support.scripted_call import Script, ScriptedLLM, Transport, llm_usage

PUBLIC_KEY = "pk-lf-correlation"
SYSTEM_PROMPT = "You are a friendly voice assistant."
SETTINGS = TracingSettings(enabled=True, public_key=PUBLIC_KEY, secret_key="sk-lf-in-memory")


@pytest.fixture(scope="module")
def langfuse() -> Iterator[InMemoryLangfuse]:
    langfuse = in_memory_langfuse(PUBLIC_KEY)
    yield langfuse
    langfuse.close()


def telephony_args() -> WebSocketRunnerArguments:
    args = WebSocketRunnerArguments(websocket=None)  # type: ignore[arg-type]  # never read
    args.transport_type = "telnyx"
    args.call_data = TelnyxCallData(call_id="v3:call-control-id", stream_id="stream-7")
    args.session_id = "runner-session"
    return args


def test_a_telephony_call_is_its_call_id() -> None:
    tracer = VoiceTracer(TracingSettings(), runner_args=telephony_args())
    assert tracer.conversation_id == "v3:call-control-id"
    assert tracer.trace_metadata == {
        "call_id": "v3:call-control-id",
        "stream_id": "stream-7",
        "transport": "telnyx",
        "runner_session_id": "runner-session",
    }


def test_a_webrtc_session_is_its_peer_connection_id() -> None:
    args = SmallWebRTCRunnerArguments(webrtc_connection=SimpleNamespace(pc_id="SmallWebRTCConnection#0-abc"))
    tracer = VoiceTracer(TracingSettings(), runner_args=args)
    assert tracer.conversation_id == "SmallWebRTCConnection#0-abc"


def test_a_daily_session_is_the_runners_session_in_its_room() -> None:
    args = DailyRunnerArguments(room_url="https://acme.daily.co/support-room", session_id="0b1c")
    tracer = VoiceTracer(TracingSettings(), runner_args=args)
    assert tracer.conversation_id == "0b1c"
    assert tracer.trace_metadata == {"daily_room": "support-room", "runner_session_id": "0b1c"}


def test_an_explicit_id_wins_then_the_runner_then_the_environment() -> None:
    settings = TracingSettings(conversation_id="from-env")
    assert VoiceTracer(settings, conversation_id="mine", runner_args=telephony_args()).conversation_id == "mine"
    assert VoiceTracer(settings, runner_args=telephony_args()).conversation_id == "v3:call-control-id"
    assert VoiceTracer(settings, runner_args=SimpleNamespace()).conversation_id == "from-env"


# -- System prompt hash and the linked prompt -------------------------------------------------


def chat_prompt() -> ChatPromptClient:
    prompt = Prompt_Chat(
        name="voice-agent",
        version=3,
        prompt=[{"role": "system", "content": SYSTEM_PROMPT}],  # type: ignore[list-item]
        config={},
        labels=["production"],
        tags=[],
        type="chat",
    )
    return ChatPromptClient(prompt)


async def play_one_answer(script: Script) -> None:
    transport, llm = Transport(name="transport"), ScriptedLLM(model="gpt-4.1-mini", name="llm")
    llm.settings.system_instruction = SYSTEM_PROMPT
    context = LLMContextFrame(context=LLMContext(messages=[{"role": "user", "content": "Hi"}]))  # type: ignore[list-item]
    await script.push(0, transport, StartFrame())
    await script.push(100, transport, context)
    await script.push(200, llm, LLMFullResponseStartFrame(), LLMTextFrame("Hello!"))
    await script.push(300, llm, llm_usage(llm, 20, 2), LLMFullResponseEndFrame())
    await script.push(1000, transport, EndFrame())


def test_the_system_prompt_hash_is_on_the_trace_and_the_prompt_is_linked(langfuse: InMemoryLangfuse) -> None:
    import asyncio

    langfuse.clear()
    tracer = VoiceTracer(
        SETTINGS, conversation_id="correlated", prices=PriceTable.load(), client=langfuse.client, prompt=chat_prompt()
    )

    async def main() -> None:
        async with tracer.conversation():
            await play_one_answer(Script(tracer.observer))

    asyncio.run(main())
    spans = {s.name: s for s in langfuse.spans()}
    digest = hashlib.sha256(SYSTEM_PROMPT.encode()).hexdigest()
    root = dict(spans["voice-conversation"].attributes or {})
    assert root["langfuse.trace.metadata.system_prompt_sha256"] == digest
    generation = observation_attributes(spans["llm-completion"].attributes or {})
    assert generation["langfuse.observation.prompt.name"] == "voice-agent"
    assert generation["langfuse.observation.prompt.version"] == 3
    assert generation[METADATA]["system_prompt_sha256"] == digest
