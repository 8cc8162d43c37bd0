"""The Langfuse server's rules for what an exported span becomes, for assertions.

Mirrors ``ObservationTypeMapper`` of the Langfuse worker (see shared notes): an explicit
``langfuse.observation.type`` wins; then ``openinference.span.kind``; then
``gen_ai.operation.name``; finally any model attribute makes a span a generation.
Model Usage and cost views only aggregate generation-like types.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tests.support.langfuse_server import ReceivedSpan

# -- Attribute keys, spelled once (as literals: a renamed key in the SDK or the library must fail a test) --
OBSERVATION_TYPE = "langfuse.observation.type"
INPUT = "langfuse.observation.input"
OUTPUT = "langfuse.observation.output"
LEVEL = "langfuse.observation.level"
STATUS_MESSAGE = "langfuse.observation.status_message"
MODEL = "langfuse.observation.model.name"
MODEL_PARAMETERS = "langfuse.observation.model.parameters"
USAGE_DETAILS = "langfuse.observation.usage_details"
COST_DETAILS = "langfuse.observation.cost_details"
COMPLETION_START_TIME = "langfuse.observation.completion_start_time"
METADATA_PREFIX = "langfuse.observation.metadata."
"""Each metadata entry is its own attribute, ``langfuse.observation.metadata.<key>``."""
TRACE_NAME = "langfuse.trace.name"
TRACE_TAGS = "langfuse.trace.tags"
SESSION_ID = "session.id"
USER_ID = "user.id"
ENVIRONMENT = "langfuse.environment"
RELEASE = "langfuse.release"
AS_ROOT = "langfuse.internal.as_root"
IS_APP_ROOT = "langfuse.internal.is_app_root"
GEN_AI_OPERATION = "gen_ai.operation.name"
OPENINFERENCE_KIND = "openinference.span.kind"
CONVERSATION_ID = "conversation.id"
"""Set by Pipecat on its own ``conversation`` span."""

METADATA = "metadata"
"""Key under which :func:`observation_attributes` gathers the ``metadata.*`` attributes, as one dict."""

GENERATION_OPERATIONS = frozenset({"chat", "completion", "text_completion", "generate_content", "generate"})
MODEL_ATTRIBUTES = (
    MODEL,
    "gen_ai.request.model",
    "gen_ai.response.model",
    "llm.model_name",
    "model",
)
OPENINFERENCE_KINDS = {
    "LLM": "GENERATION",
    "EMBEDDING": "EMBEDDING",
    "AGENT": "AGENT",
    "TOOL": "TOOL",
    "CHAIN": "CHAIN",
    "RETRIEVER": "RETRIEVER",
    "EVALUATOR": "EVALUATOR",
    "GUARDRAIL": "GUARDRAIL",
}
GENERATION_LIKE = frozenset(
    {"GENERATION", "AGENT", "TOOL", "CHAIN", "RETRIEVER", "EVALUATOR", "EMBEDDING", "GUARDRAIL"}
)


def observation_type(span: ReceivedSpan) -> str:
    """The observation type the Langfuse server gives ``span``."""
    attributes = span.attributes
    explicit = attributes.get(OBSERVATION_TYPE)
    if explicit:
        return str(explicit).upper()
    kind = attributes.get(OPENINFERENCE_KIND)
    if kind:
        return OPENINFERENCE_KINDS.get(str(kind).upper(), "SPAN")
    operation = attributes.get(GEN_AI_OPERATION)
    if operation in GENERATION_OPERATIONS:
        return "GENERATION"
    if operation == "embeddings":
        return "EMBEDDING"
    if operation == "invoke_agent":
        return "AGENT"
    if operation == "execute_tool":
        return "TOOL"
    if any(attributes.get(name) for name in MODEL_ATTRIBUTES):
        return "GENERATION"
    return "SPAN"


def counts_in_model_usage(span: ReceivedSpan) -> bool:
    """Whether Langfuse's Model Usage / cost views would aggregate this span."""
    return observation_type(span) in GENERATION_LIKE


def json_attribute(span: ReceivedSpan, key: str) -> Any:
    """A Langfuse attribute as the server reads it: JSON decoded, plain strings as they are."""
    return _decoded(span.attributes.get(key))


def observation_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Every attribute of a span, as the server reads it, to be popped one by one.

    ``langfuse.observation.*`` values are JSON decoded (plain strings stay as they are), arrays
    become lists, and the ``metadata.<key>`` attributes are gathered into one dict under
    :data:`METADATA`. A test pops each attribute it expects and then asserts that the rest is
    ``{}``, so a stray attribute (a ``gen_ai.*`` one would count usage twice) fails it.
    """
    decoded: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    for key, raw in attributes.items():
        value = list(raw) if isinstance(raw, tuple) else raw
        if key.startswith(METADATA_PREFIX):
            metadata[key.removeprefix(METADATA_PREFIX)] = _decoded(value)
        elif key.startswith("langfuse.observation."):
            decoded[key] = _decoded(value)
        else:
            decoded[key] = value
    if metadata:
        decoded[METADATA] = metadata
    return decoded


def _decoded(raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw
