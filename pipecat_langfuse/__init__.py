"""Langfuse-native tracing for Pipecat voice agents.

One conversation becomes one Langfuse trace with a span per turn and a priced generation
per unit of STT, LLM and TTS work. Pipecat's own spans join the same trace without being
counted as generations. See :class:`VoiceTracer` for the three lines that add it to a bot.
"""

from pipecat_langfuse.pricing import PriceTable, PricingError
from pipecat_langfuse.settings import SettingsError, TracingSettings
from pipecat_langfuse.summary import ConversationSummary, ModelUsage, TurnSummary
from pipecat_langfuse.tracer import VoiceTracer
from pipecat_langfuse.version import __version__

__all__ = [
    "ConversationSummary",
    "ModelUsage",
    "PriceTable",
    "PricingError",
    "SettingsError",
    "TracingSettings",
    "TurnSummary",
    "VoiceTracer",
    "__version__",
]
