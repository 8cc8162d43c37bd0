"""The environment tests run in: nothing from the developer's shell or ``.env`` leaks into a test."""

from __future__ import annotations

import os

ISOLATED_PREFIXES = ("LANGFUSE_", "OTEL_")
"""Variables of the Langfuse and OpenTelemetry SDKs (and of this project's Langfuse settings)."""
ISOLATED_NAMES = frozenset(
    {
        "ENABLE_TRACING",
        "CONVERSATION_ID",
        "PRICING_FILE",
        "LOG_LEVEL",
        "DEEPGRAM_API_KEY",
        "OPENAI_API_KEY",
        "CARTESIA_API_KEY",
        "OPENAI_MODEL",
        "CARTESIA_VOICE_ID",
    }
)
"""Variables of the project and of the example bot."""


def is_isolated(name: str) -> bool:
    """Whether a test must not inherit the variable ``name`` (proxies included: tests talk to 127.0.0.1)."""
    return name.startswith(ISOLATED_PREFIXES) or name in ISOLATED_NAMES or name.lower().endswith("_proxy")


def clean_environment(**variables: str) -> dict[str, str]:
    """``os.environ`` without any isolated variable, plus ``variables``."""
    return {k: v for k, v in os.environ.items() if not is_isolated(k)} | variables
