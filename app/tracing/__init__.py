"""Langfuse-native tracing for Pipecat voice agents.

One conversation becomes one Langfuse trace with a span per turn and a priced generation
per unit of STT, LLM and TTS work. Pipecat's own spans join the same trace without being
counted as generations. See :class:`VoiceTracer` for the three lines that add it to a bot.
"""

from app.tracing.pricing import PriceTable, PricingError
from app.tracing.settings import SettingsError, TracingSettings
from app.tracing.summary import ConversationSummary
from app.tracing.tracer import VoiceTracer

__all__ = [
    "ConversationSummary",
    "PriceTable",
    "PricingError",
    "SettingsError",
    "TracingSettings",
    "VoiceTracer",
]
