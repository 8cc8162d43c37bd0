"""Keep a developer's environment (.env, LANGFUSE_* variables) out of every test."""

import os

import pytest

ISOLATED_PREFIXES = ("LANGFUSE_", "OTEL_")
ISOLATED_NAMES = (
    "ENABLE_TRACING",
    "CONVERSATION_ID",
    "PRICING_FILE",
    "LOG_LEVEL",
    "DEEPGRAM_API_KEY",
    "OPENAI_API_KEY",
    "CARTESIA_API_KEY",
    "OPENAI_MODEL",
    "CARTESIA_VOICE_ID",
)


def clean_environment() -> dict[str, str]:
    """os.environ without any variable this project or the Langfuse/OTel SDKs read."""
    return {k: v for k, v in os.environ.items() if not k.startswith(ISOLATED_PREFIXES) and k not in ISOLATED_NAMES}


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(ISOLATED_PREFIXES) or name in ISOLATED_NAMES:
            monkeypatch.delenv(name)
