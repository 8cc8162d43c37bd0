"""The Langfuse server's rules for what an exported span becomes, for assertions.

Mirrors ``ObservationTypeMapper`` of the Langfuse worker (see shared notes): an explicit
``langfuse.observation.type`` wins; then ``openinference.span.kind``; then
``gen_ai.operation.name``; finally any model attribute makes a span a generation.
Model Usage and cost views only aggregate generation-like types.
"""

from __future__ import annotations

import json
from typing import Any

from tests.support.langfuse_server import ReceivedSpan

GENERATION_OPERATIONS = frozenset({"chat", "completion", "text_completion", "generate_content", "generate"})
MODEL_ATTRIBUTES = (
    "langfuse.observation.model.name",
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
    explicit = attributes.get("langfuse.observation.type")
    if explicit:
        return str(explicit).upper()
    kind = attributes.get("openinference.span.kind")
    if kind:
        return OPENINFERENCE_KINDS.get(str(kind).upper(), "SPAN")
    operation = attributes.get("gen_ai.operation.name")
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
    raw = span.attributes.get(key)
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw
