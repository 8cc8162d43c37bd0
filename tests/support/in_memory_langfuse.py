"""A real Langfuse client whose spans go to memory: the SDK's own processor, filter and
transforming exporter, with an ``InMemorySpanExporter`` where the OTLP exporter would be.

The client gets a private ``TracerProvider``, so no global provider is installed. The SDK
keeps one client per public key: give each client a public key of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from langfuse import Langfuse
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pipecat_langfuse import TracingSettings
from pipecat_langfuse._langfuse import build_client

CLIENT_ENVIRONMENT = "ci"
CLIENT_RELEASE = "1.2.3"


@dataclass(frozen=True)
class InMemoryLangfuse:
    """A Langfuse client and the exporter that receives its spans."""

    client: Langfuse
    exporter: InMemorySpanExporter

    def spans(self) -> list[ReadableSpan]:
        """Flush the client, then every span exported since the last :meth:`clear`, in end order."""
        self.client.flush()
        return list(self.exporter.get_finished_spans())

    def clear(self) -> None:
        self.client.flush()
        self.exporter.clear()

    def close(self) -> None:
        self.client.shutdown()


def in_memory_langfuse(public_key: str) -> InMemoryLangfuse:
    """The client ``build_client`` builds, with a private provider and exporting to memory."""
    exporter = InMemorySpanExporter()
    settings = TracingSettings(
        enabled=True,
        public_key=public_key,
        secret_key="sk-lf-in-memory",
        base_url="http://127.0.0.1:9",  # never called: the exporter is in memory
        environment=CLIENT_ENVIRONMENT,
        release=CLIENT_RELEASE,
    )
    client = build_client(settings, tracer_provider=TracerProvider(), span_exporter=exporter)
    return InMemoryLangfuse(client=client, exporter=exporter)
