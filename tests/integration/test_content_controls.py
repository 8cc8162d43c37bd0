"""Content controls, through the real SDK to a local endpoint: nothing withheld, masked or unsampled leaves.

Each test runs the offline quick call (3 turns) with Pipecat's tracing merged in, then searches every
attribute of every span and every score Langfuse received.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from app.offline import QUICK_SCRIPT, create_offline_services
from pipecat_langfuse import TracingSettings, VoiceTracer
from tests.support.conversation import TracedCall, run_traced_call
from tests.support.langfuse_rules import COST_DETAILS, INPUT, OUTPUT, USAGE_DETAILS, json_attribute
from tests.support.langfuse_server import LocalLangfuse, ReceivedSpan, StartLocalLangfuse
from tests.support.otel_global import fresh_global_tracer_provider

SAID = [u.text for u in QUICK_SCRIPT.utterances] + list(QUICK_SCRIPT.replies)
"""Every sentence of the call: none may reach Langfuse when content is not captured."""
STT, LLM, TTS = "speech-to-text", "llm-completion", "text-to-speech"


@pytest.fixture(autouse=True)
def _first_client_of_the_process() -> Iterator[None]:
    with fresh_global_tracer_provider():  # Pipecat's spans come to this test's client
        yield


def settings_for(server: LocalLangfuse, **changes: Any) -> TracingSettings:
    settings = TracingSettings(
        enabled=True, public_key=server.public_key, secret_key=server.secret_key, base_url=server.url
    )
    return dataclasses.replace(settings, **changes)


def every_value(spans: list[ReceivedSpan], scores: list[dict[str, Any]]) -> str:
    """All that Langfuse received of the call, as one text to search."""
    values = [json.dumps(s.attributes, default=str) for s in spans] + [json.dumps(s) for s in scores]
    return "\n".join(values)


def run(server: LocalLangfuse, tracer: VoiceTracer) -> TracedCall:
    call = run_traced_call(server, tracer, create_offline_services(QUICK_SCRIPT))
    assert tracer.merged_with_pipecat
    return call


def scores_of(server: LocalLangfuse, call: TracedCall) -> list[dict[str, Any]]:
    return [s for s in server.scores if s["traceId"] == call.tracer.trace_id]


def test_without_content_capture_no_word_said_leaves_but_usage_cost_and_scores_do(
    local_langfuse: StartLocalLangfuse,
) -> None:
    server = local_langfuse(public_key="pk-lf-no-content")
    call = run(server, VoiceTracer(settings_for(server, capture_content=False), conversation_id="no-content"))

    received = every_value(call.spans, scores_of(server, call))
    for sentence in SAID:
        for words in re.findall(r"[A-Za-z]{4,}(?: [A-Za-z]+)?", sentence):
            assert words not in received, (words, sentence)
    names = sorted(s.name for s in call.spans)
    assert names == sorted(["voice-conversation", "turn 1", "turn 2", "turn 3", *[STT, LLM, TTS] * 3])
    for span in call.spans:
        assert INPUT not in span.attributes, span.name
        assert OUTPUT not in span.attributes, span.name
    generations = [s for s in call.spans if s.name in (STT, LLM, TTS)]
    assert all(json_attribute(g, USAGE_DETAILS) for g in generations)
    assert all(json_attribute(g, COST_DETAILS)["total"] > 0 for g in generations)
    assert len(scores_of(server, call)) == 3 * 7 + 3 + 7  # the scores, as with content
    # The summary still has every word.
    assert [t.user_text for t in call.summary.turns] == [u.text for u in QUICK_SCRIPT.utterances]


def test_the_mask_reaches_every_input_output_and_metadata_value(local_langfuse: StartLocalLangfuse) -> None:
    server = local_langfuse(public_key="pk-lf-masked")
    masked: list[str] = []

    def mask(text: str) -> str:
        masked.append(text)
        return re.sub(r"\bnoon\b", "[TIME]", re.sub(r"\bthere\b", "[PLACE]", text))

    tracer = VoiceTracer(
        settings_for(server), conversation_id="masked", metadata={"note": "call me at noon"}, mask=mask
    )
    call = run(server, tracer)

    received = every_value(call.spans, scores_of(server, call))
    assert re.search(r"\bnoon\b", received) is None
    assert re.search(r"\bthere\b", received) is None
    assert "[TIME]" in received
    assert "[PLACE]" in received
    (llm_2,) = [s for s in call.spans if s.name == LLM and json_attribute(s, OUTPUT) == "It is [TIME]."]
    (turn_1,) = [s for s in call.spans if s.name == "turn 1"]
    assert json_attribute(turn_1, INPUT) == "Hi, are you [PLACE]?"
    (root,) = [s for s in call.spans if s.name == "voice-conversation"]
    assert json_attribute(root, "langfuse.observation.metadata.note") == "call me at [TIME]"
    assert llm_2.scope == "pipecat"  # Pipecat's own llm span, adopted: its own copy of the text is gone
    assert "It is noon." in masked  # the mask saw the reply as the LLM wrote it


def test_an_unsampled_conversation_sends_nothing_and_its_summary_is_whole(local_langfuse: StartLocalLangfuse) -> None:
    server = local_langfuse(public_key="pk-lf-unsampled")
    tracer = VoiceTracer(settings_for(server, sample_rate=0.0), conversation_id="unsampled")
    call = run_traced_call(server, tracer, create_offline_services(QUICK_SCRIPT))

    assert call.spans == []
    assert server.spans == []
    assert server.scores == []
    assert [t.user_text for t in call.summary.turns] == [u.text for u in QUICK_SCRIPT.utterances]
    assert call.summary.total_cost_usd > 0
    assert len(call.summary.models) == 3
