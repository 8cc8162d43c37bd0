"""A clean global OpenTelemetry tracer provider for a block of tests, as in a new process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.util._once import Once


@contextmanager
def fresh_global_tracer_provider() -> Iterator[None]:
    """Run the block with no global tracer provider installed, then put the previous one back.

    Pipecat's tracing creates its spans on the global provider, which the first Langfuse client
    of a process installs. A test whose call must receive Pipecat's spans therefore needs its
    client to be the first one, whatever ran before it in the same pytest process. This resets
    OpenTelemetry's private "set once" state (opentelemetry-api 1.x), for tests only.
    """
    saved_provider, saved_once = trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE
    trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = None, Once()
    try:
        yield
    finally:
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved_provider, saved_once
