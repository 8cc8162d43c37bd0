"""``ObservationWriter`` against the real Langfuse client, exporting to memory: exact attributes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan

from pipecat_langfuse._langfuse import ObservationWriter
from tests.support.in_memory_langfuse import CLIENT_ENVIRONMENT, CLIENT_RELEASE, InMemoryLangfuse, in_memory_langfuse
from tests.support.langfuse_rules import (
    COMPLETION_START_TIME,
    COST_DETAILS,
    ENVIRONMENT,
    INPUT,
    METADATA,
    MODEL,
    OBSERVATION_TYPE,
    OUTPUT,
    RELEASE,
    USAGE_DETAILS,
    observation_attributes,
)

PUBLIC_KEY = "pk-lf-unit-observation-writer"  # the SDK keeps one client per public key
T0 = 1_800_000_000 * 10**9  # 2027-01-15T08:00:00Z


@pytest.fixture(scope="module")
def module_langfuse() -> Iterator[InMemoryLangfuse]:
    langfuse = in_memory_langfuse(PUBLIC_KEY)
    yield langfuse
    langfuse.close()


@pytest.fixture
def langfuse(module_langfuse: InMemoryLangfuse) -> InMemoryLangfuse:
    module_langfuse.clear()
    return module_langfuse


def by_name(spans: list[ReadableSpan]) -> dict[str, ReadableSpan]:
    named = {s.name: s for s in spans}
    assert len(named) == len(spans)
    return named


def span_id(span: ReadableSpan) -> int | None:
    return span.context.span_id if span.context is not None else None


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def pop_client_attributes(attributes: dict[str, object]) -> None:
    assert attributes.pop(ENVIRONMENT) == CLIENT_ENVIRONMENT
    assert attributes.pop(RELEASE) == CLIENT_RELEASE


def test_a_turn_and_its_generation_carry_exactly_the_fields_given(langfuse: InMemoryLangfuse) -> None:
    root = langfuse.client.start_observation(as_type="span", name="call")
    writer = ObservationWriter(langfuse.client)
    writer.bind(root, otel_context.get_current())

    turn = writer.start_turn(number=1, start_ns=T0)
    writer.generation(
        parent=turn,
        name="llm-completion",
        start_ns=T0 + 2_450_000_000,
        end_ns=T0 + 2_800_000_000,
        completion_start_ns=T0 + 2_700_000_000,
        model="gpt-4.1-mini",
        input=[{"role": "user", "content": "Hi"}],
        output="Hello.",
        usage_details={"input": 39, "output": 15, "total": 54},
        cost_details={"input": 1.56e-05, "output": 2.4e-05, "total": 3.96e-05},
        metadata={"processor": "OpenAILLMService#0", "turn": 1},
    )
    writer.end_turn(turn, end_ns=T0 + 5_000_000_000, input="Hi", output="Hello.", metadata={"turn": 1})
    root.end()
    spans = by_name(langfuse.spans())

    assert set(spans) == {"call", "turn 1", "llm-completion"}
    call, turn_span, generation = spans["call"], spans["turn 1"], spans["llm-completion"]
    assert parent_id(turn_span) == span_id(call)
    assert parent_id(generation) == span_id(turn_span)
    assert (turn_span.start_time, turn_span.end_time) == (T0, T0 + 5_000_000_000)
    assert (generation.start_time, generation.end_time) == (T0 + 2_450_000_000, T0 + 2_800_000_000)

    attributes = observation_attributes(generation.attributes or {})
    pop_client_attributes(attributes)
    assert attributes.pop(OBSERVATION_TYPE) == "generation"
    assert attributes.pop(MODEL) == "gpt-4.1-mini"
    assert attributes.pop(INPUT) == [{"role": "user", "content": "Hi"}]
    assert attributes.pop(OUTPUT) == "Hello."
    assert attributes.pop(USAGE_DETAILS) == {"input": 39, "output": 15, "total": 54}
    assert attributes.pop(COST_DETAILS) == {"input": 1.56e-05, "output": 2.4e-05, "total": 3.96e-05}
    assert attributes.pop(COMPLETION_START_TIME) == "2027-01-15T08:00:02.700000Z"
    assert attributes.pop(METADATA) == {"processor": "OpenAILLMService#0", "turn": 1}
    assert attributes == {}

    attributes = observation_attributes(turn_span.attributes or {})
    pop_client_attributes(attributes)
    assert attributes.pop(OBSERVATION_TYPE) == "span"
    assert attributes.pop(INPUT) == "Hi"
    assert attributes.pop(OUTPUT) == "Hello."
    assert attributes.pop(METADATA) == {"turn": 1}
    assert attributes == {}


def test_a_generation_without_a_turn_hangs_off_the_root(langfuse: InMemoryLangfuse) -> None:
    root = langfuse.client.start_observation(as_type="span", name="call")
    writer = ObservationWriter(langfuse.client)
    writer.bind(root, otel_context.get_current())

    writer.generation(
        parent=None,
        name="text-to-speech",
        start_ns=T0,
        end_ns=T0 + 1_000_000_000,
        completion_start_ns=None,
        model="sonic-3",
        input="Hello.",
        usage_details={"input_characters": 6},
    )
    root.end()
    spans = by_name(langfuse.spans())

    call, generation = spans["call"], spans["text-to-speech"]
    assert parent_id(generation) == span_id(call)
    attributes = observation_attributes(generation.attributes or {})
    pop_client_attributes(attributes)
    assert attributes.pop(OBSERVATION_TYPE) == "generation"
    assert attributes.pop(MODEL) == "sonic-3"
    assert attributes.pop(INPUT) == "Hello."
    assert attributes.pop(USAGE_DETAILS) == {"input_characters": 6}
    assert attributes == {}
