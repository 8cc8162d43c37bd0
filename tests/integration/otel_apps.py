"""Two applications that already use OpenTelemetry or Langfuse, then add the voice tracer.

Each runs in a fresh process (the global tracer provider can be set once per process, and the
Langfuse SDK keeps one client per public key), plays a one-turn offline call, and prints one
JSON line describing what the application's own side saw:

* ``their-provider``: the app installed its own global ``TracerProvider`` exporting to "their
  backend" (an in-memory exporter standing in for Datadog or Honeycomb) before the tracer.
* ``their-client``: the app built its own ``Langfuse`` client for its ``@observe`` code and passes
  it to ``VoiceTracer(client=...)``; an ``@observe`` function runs during the call.
* ``two-projects``: one process serves calls for two Langfuse projects (say, two tenants).

Usage: ``python -m tests.integration.otel_apps CASE BASE_URL PUBLIC_KEY SECRET_KEY [the same for a second project]``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from langfuse import Langfuse, observe
from langfuse._client.resource_manager import LangfuseResourceManager
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pipecat.frames.frames import TranscriptionFrame
from pipecat.observers.base_observer import BaseObserver, FramePushed

from app.bot import run_offline_call
from app.offline import CallerScript, Utterance, create_offline_services
from pipecat_langfuse import TracingSettings, VoiceTracer

ONE_TURN = CallerScript(utterances=(Utterance("Book a table.", delay_secs=0.3),), replies=("Done.",))
OBSERVED_NAME = "lookup-booking"


def settings(base_url: str, public_key: str, secret_key: str) -> TracingSettings:
    return TracingSettings(enabled=True, public_key=public_key, secret_key=secret_key, base_url=base_url)


def their_provider(base_url: str, public_key: str, secret_key: str) -> dict[str, Any]:
    their_backend = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(their_backend))
    trace.set_tracer_provider(provider)

    tracer = VoiceTracer(settings(base_url, public_key, secret_key))
    asyncio.run(run_offline_call(create_offline_services(ONE_TURN), tracer))
    return {
        "trace_id": tracer.trace_id,
        "global_provider_is_theirs": trace.get_tracer_provider() is provider,
        "their_backend": [
            {
                "name": span.name,
                "scope": span.instrumentation_scope.name if span.instrumentation_scope else None,
                "trace_id": format(span.context.trace_id, "032x") if span.context else None,
                "observation_type": (span.attributes or {}).get("langfuse.observation.type"),
            }
            for span in their_backend.get_finished_spans()
        ],
    }


class LookupOnTranscript(BaseObserver):
    """The app's own ``@observe`` code, run when the caller's transcript arrives (like a tool handler)."""

    def __init__(self) -> None:
        super().__init__(observe_every_push=False)
        self.results: list[str] = []

    async def on_push_frame(self, data: FramePushed) -> None:
        if isinstance(data.frame, TranscriptionFrame):
            self.results.append(await lookup_booking())


@observe(name=OBSERVED_NAME)
async def lookup_booking() -> str:
    return "table 7"


def their_client(base_url: str, public_key: str, secret_key: str) -> dict[str, Any]:
    client = Langfuse(public_key=public_key, secret_key=secret_key, base_url=base_url)
    tracer = VoiceTracer(settings(base_url, public_key, secret_key), client=client)
    lookup = LookupOnTranscript()
    asyncio.run(run_offline_call(create_offline_services(ONE_TURN), tracer, observers=[lookup]))
    return {
        "trace_id": tracer.trace_id,
        "client_is_theirs": tracer.client is client,
        "langfuse_clients": len(LangfuseResourceManager._instances),
        "observed": lookup.results,
    }


def two_projects(base_url: str, public_key: str, secret_key: str, *other: str) -> dict[str, Any]:
    """One process serving two Langfuse projects: a call for the first, then one for the second."""
    first = VoiceTracer(settings(base_url, public_key, secret_key))
    asyncio.run(run_offline_call(create_offline_services(ONE_TURN), first))
    second = VoiceTracer(settings(*other))
    asyncio.run(run_offline_call(create_offline_services(ONE_TURN), second))
    return {"first_trace_id": first.trace_id, "second_trace_id": second.trace_id}


CASES = {"their-provider": their_provider, "their-client": their_client, "two-projects": two_projects}

if __name__ == "__main__":
    case, *arguments = sys.argv[1:]
    print(json.dumps(CASES[case](*arguments)), flush=True)
