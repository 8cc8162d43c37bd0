"""The tracer next to other OpenTelemetry users: the app's own provider, and the app's own Langfuse client.

Each case runs in a fresh process (``tests/integration/otel_apps.py``) against a local Langfuse.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Any

import pytest

from tests.support.langfuse_rules import counts_in_model_usage, observation_type
from tests.support.langfuse_server import LocalLangfuse, ReceivedSpan, StartLocalLangfuse
from tests.support.processes import PROJECT_ROOT, run_command

OUR_OBSERVATIONS = {"voice-conversation": 1, "turn 1": 1, "speech-to-text": 1, "llm-completion": 1, "text-to-speech": 1}
ONE_TREE = {
    ("langfuse-sdk", "voice-conversation"): 1,
    ("pipecat.turn", "turn 1"): 1,
    ("langfuse-sdk", "speech-to-text"): 1,
    ("pipecat", "llm-completion"): 1,
    ("langfuse-sdk", "text-to-speech"): 1,
}
"""A call merged with Pipecat's tracing: Pipecat's turn and llm spans are the turn and the LLM generation."""
PIPECAT_SPANS = {
    ("pipecat.turn", "conversation"): 1,
    ("pipecat.turn", "turn"): 1,
    ("pipecat", "stt"): 1,
    ("pipecat", "llm"): 1,
    ("pipecat", "tts"): 1,
}


@pytest.fixture
def server(local_langfuse: StartLocalLangfuse) -> LocalLangfuse:
    return local_langfuse(public_key="pk-lf-coexistence")


def run_app(case: str, *servers: LocalLangfuse) -> dict[str, Any]:
    arguments = [value for s in servers for value in (s.url, s.public_key, s.secret_key)]
    result = run_command(
        (sys.executable, "-m", "tests.integration.otel_apps", case, *arguments),
        cwd=PROJECT_ROOT,
        env={"PYTHONPATH": str(PROJECT_ROOT)},
        secrets=[s.secret_key for s in servers],
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return report


def by_name(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    (span,) = [s for s in spans if s.name == name]
    return span


def test_an_app_with_its_own_provider_keeps_pipecat_spans_and_gets_none_of_ours(server: LocalLangfuse) -> None:
    report = run_app("their-provider", server)

    # Every Langfuse observation reached Langfuse, in one trace, and nothing else did.
    assert Counter(s.name for s in server.spans) == OUR_OBSERVATIONS
    assert {s.scope for s in server.spans} == {"langfuse-sdk"}
    assert {s.trace_id for s in server.spans} == {report["trace_id"]}
    generations = [s for s in server.spans if counts_in_model_usage(s)]
    assert sorted(s.name for s in generations) == ["llm-completion", "speech-to-text", "text-to-speech"]

    # Their backend got Pipecat's spans as before, untouched, and none of ours.
    their_spans = report["their_backend"]
    assert Counter((s["scope"], s["name"]) for s in their_spans) == PIPECAT_SPANS
    assert [s for s in their_spans if s["observation_type"] is not None] == []
    assert report["global_provider_is_theirs"] is True


def test_an_app_client_is_used_as_is_and_its_observe_spans_join_the_call(server: LocalLangfuse) -> None:
    report = run_app("their-client", server)

    assert report["client_is_theirs"] is True
    assert report["langfuse_clients"] == 1
    assert report["observed"] == ["table 7"]
    spans = server.spans
    assert {s.trace_id for s in spans} == {report["trace_id"]}
    ours = Counter(s.name for s in spans if s.scope == "langfuse-sdk")
    assert ours == {**OUR_OBSERVATIONS, "lookup-booking": 1}
    # The app's @observe span nests under the conversation.
    assert by_name(spans, "lookup-booking").parent_span_id == by_name(spans, "voice-conversation").span_id

    # Their client keeps its own export filter; whatever of Pipecat's it exports is a plain span,
    # so Model Usage counts each usage report once.
    generations = [s for s in spans if counts_in_model_usage(s)]
    assert sorted(s.name for s in generations) == ["llm-completion", "speech-to-text", "text-to-speech"]
    pipecat = [s for s in spans if s.scope.startswith("pipecat")]
    assert sorted(s.name for s in pipecat) == ["llm", "stt", "tts"]  # the SDK's default filter: gen_ai.* only
    assert {observation_type(s) for s in pipecat} == {"SPAN"}


def test_a_process_serving_two_projects_keeps_each_call_in_its_own_project(
    local_langfuse: StartLocalLangfuse,
) -> None:
    first = local_langfuse(public_key="pk-lf-tenant-a", secret_key="sk-lf-tenant-a-secret")
    second = local_langfuse(public_key="pk-lf-tenant-b", secret_key="sk-lf-tenant-b-secret")
    report = run_app("two-projects", first, second)

    # Pipecat's spans go through the process's first Langfuse client: only its own project's
    # conversations are exported by it, so the second tenant's call never reaches the first project.
    assert {s.trace_id for s in first.spans} == {report["first_trace_id"]}
    # The first project's call is one tree with Pipecat's turn and llm spans (its provider is the global one).
    assert Counter((s.scope, s.name) for s in first.spans) == ONE_TREE
    # The second project gets every one of its own observations, and nothing else.
    assert {s.trace_id for s in second.spans} == {report["second_trace_id"]}
    assert Counter((s.scope, s.name) for s in second.spans) == {
        ("langfuse-sdk", n): c for n, c in OUR_OBSERVATIONS.items()
    }
