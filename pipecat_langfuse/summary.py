"""End-of-call summary: per turn, per model, and the conversation's total cost.

:meth:`VoiceTracer.summary <pipecat_langfuse.VoiceTracer.summary>` returns a
:class:`ConversationSummary`, with or without Langfuse; ``summary.render()`` is the table the
example bots print when a call ends. The costs are the ones sent to Langfuse as ``cost_details``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from pipecat_langfuse import pricing

_TEXT_WIDTH = 38
_KIND_ORDER = ("stt", "llm", "s2s", "tts")


@dataclass(frozen=True)
class TurnSummary:
    """One turn: what the user said, what the bot replied, how fast, and whether it was cut off.

    Attributes:
        number: Turn number, from 1.
        user_text: What the user said: the turn's STT transcripts, joined with spaces.
        bot_text: What the bot replied: the LLM's text of the turn.
        voice_to_voice_s: Seconds from when the user stopped speaking to when the bot started,
            or None when not measured (e.g. the bot did not answer).
        interrupted: Whether the turn ended while the bot was still speaking (a barge-in).
        heard_text: What the caller heard of the bot: after a barge-in, the part of the reply
            spoken before it; None when the turn had no speech.
    """

    number: int
    user_text: str
    bot_text: str
    voice_to_voice_s: float | None
    interrupted: bool
    heard_text: str | None = None


@dataclass(frozen=True)
class ModelUsage:
    """Usage and cost of one model over the conversation.

    Attributes:
        kind: ``"stt"``, ``"llm"``, ``"s2s"`` (speech-to-speech) or ``"tts"``.
        model: Model name as reported by Pipecat's metrics (``simulated/...`` offline).
        usage: Total usage by usage key (the ``USAGE_*`` keys of :mod:`pipecat_langfuse.pricing`).
        cost_usd: Total cost in USD, or None when no price is known for the model.
        calls: Number of generations (units of work) of this model.
        estimated_calls: How many of those had usage the provider never reported, counted by the
            tracer instead (e.g. an LLM stream cut by a barge-in): flagged ``usage_estimated``.
    """

    kind: str
    model: str
    usage: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    cost_usd: float | None = None
    calls: int = 0
    estimated_calls: int = 0

    def add(self, usage: Mapping[str, int], cost: Mapping[str, float] | None, *, estimated: bool = False) -> ModelUsage:
        """Add one more call's usage and cost.

        Args:
            usage: The call's usage details, by usage key.
            cost: The call's cost details (with ``"total"``), or None when it has no price.
            estimated: Whether the usage was estimated rather than reported.

        Returns:
            A new ``ModelUsage``; this one is unchanged.
        """
        merged = dict(self.usage)
        for key, value in usage.items():
            merged[key] = merged.get(key, 0) + value
        total = cost.get(pricing.USAGE_TOTAL) if cost else None
        cost_usd = self.cost_usd if total is None else (self.cost_usd or 0.0) + total
        return ModelUsage(
            self.kind,
            self.model,
            MappingProxyType(merged),
            cost_usd,
            self.calls + 1,
            self.estimated_calls + estimated,
        )

    def describe_usage(self) -> str:
        """Describe the usage in words.

        Returns:
            E.g. ``1,234 in (+512 cached) / 56 out tokens`` (LLM), ``240 characters`` (TTS) or
            ``13.3 s audio`` (STT); estimated calls are counted in the table's row.
        """
        u = self.usage
        if self.kind == "llm":
            cached = u.get(pricing.USAGE_INPUT_CACHED_TOKENS, 0)
            cached_text = f" (+{cached:,} cached)" if cached else ""
            output = u.get(pricing.USAGE_OUTPUT, 0) + u.get(pricing.USAGE_OUTPUT_REASONING_TOKENS, 0)
            return f"{u.get(pricing.USAGE_INPUT, 0):,} in{cached_text} / {output:,} out tokens"
        if self.kind == "s2s":
            return _describe_speech_usage(u)
        if self.kind == "tts":
            return f"{u.get(pricing.USAGE_INPUT_CHARACTERS, 0):,} characters"
        return f"{u.get(pricing.USAGE_INPUT_AUDIO_MS, 0) / 1000:,.1f} s audio"


def _describe_speech_usage(usage: Mapping[str, int]) -> str:
    """E.g. ``1,200 audio + 300 text in (+640 cached) / 800 audio + 60 text out tokens``, and any session time."""
    parts = []
    for keys in pricing.S2S_USAGE_KEYS.values():
        if keys["input_audio"] in usage or keys["input_text"] in usage:
            cached = usage.get(keys["input_cached_text"], 0) + usage.get(keys["input_cached_audio"], 0)
            cached_text = f" (+{cached:,} cached)" if cached else ""
            parts.append(
                f"{usage.get(keys['input_audio'], 0):,} audio + {usage.get(keys['input_text'], 0):,} text in"
                f"{cached_text} / {usage.get(keys['output_audio'], 0):,} audio + "
                f"{usage.get(keys['output_text'], 0):,} text out tokens"
            )
    if pricing.USAGE_SESSION_MS in usage:
        parts.append(f"{usage[pricing.USAGE_SESSION_MS] / 1000:,.1f} s session")
    return ", ".join(parts)


@dataclass(frozen=True)
class SpanCounts:
    """What happened to the conversation's spans on their way to Langfuse.

    Counted per trace by the exporter this package builds (a ``client=`` built elsewhere has none).

    Attributes:
        sent: Spans Langfuse accepted.
        spooled: Spans kept in the local spool after a failed export, re-sent at the next start of
            the bot or by ``uv run test_langfuse --replay`` (``LANGFUSE_SPOOL_DIR``).
        dropped: Spans lost: spooling is off or failed, the spool's bound evicted them, or Langfuse
            rejected them for good.
        pending: Finished spans not yet handed to the exporter when the summary was made (the final
            flush timed out): they are still queued, and go out later in the background or at exit,
            or into the spool. Spans the SDK's full queue dropped also stay here.
    """

    sent: int = 0
    spooled: int = 0
    dropped: int = 0
    pending: int = 0

    def describe(self) -> str:
        """One line, e.g. ``Langfuse: 18 spans sent, 0 spooled, 0 dropped``."""
        text = f"Langfuse: {self.sent} spans sent, {self.spooled} spooled, {self.dropped} dropped"
        if self.pending:
            text += f", {self.pending} pending (still queued when the final flush timed out)"
        if self.spooled:
            text += "; spooled spans are re-sent at the next start, or by `uv run test_langfuse --replay`"
        return text


@dataclass(frozen=True)
class ConversationSummary:
    """What a conversation did and cost; ``render()`` gives the table printed at the end of a call.

    Attributes:
        conversation_id: The conversation (Langfuse session) id.
        trace_id: The Langfuse trace id, or None when tracing is disabled.
        turns: The turns, in order.
        models: Usage and cost per model: STT, LLM, then TTS, each in order of first use.
        spans: What happened to the trace's spans (sent, spooled, dropped, pending), or None when
            tracing is off or the client was built elsewhere.
        errors: ``ErrorFrame``s the services pushed during the call.
        unrecovered_errors: Those whose service did no successful work after them.
    """

    conversation_id: str
    trace_id: str | None
    turns: tuple[TurnSummary, ...]
    models: tuple[ModelUsage, ...]
    spans: SpanCounts | None = None
    errors: int = 0
    unrecovered_errors: int = 0

    @property
    def voice_to_voice_mean_s(self) -> float | None:
        """Mean voice-to-voice latency over the turns that measured one."""
        latencies = self._latencies()
        return sum(latencies) / len(latencies) if latencies else None

    @property
    def voice_to_voice_p95_s(self) -> float | None:
        """95th percentile (nearest rank) of the turns' voice-to-voice latencies."""
        latencies = sorted(self._latencies())
        return latencies[max(math.ceil(0.95 * len(latencies)) - 1, 0)] if latencies else None

    @property
    def interruptions(self) -> int:
        """Turns in which the caller interrupted the bot."""
        return sum(t.interrupted for t in self.turns)

    def cost_usd_of(self, kind: str) -> float:
        """Cost of the priced ``kind`` (``stt``, ``llm``, ``s2s`` or ``tts``) work, USD."""
        return sum(m.cost_usd or 0.0 for m in self.models if m.kind == kind)

    def _latencies(self) -> list[float]:
        return [t.voice_to_voice_s for t in self.turns if t.voice_to_voice_s is not None]

    @property
    def total_cost_usd(self) -> float:
        """Sum of the known costs of all models, in USD (unpriced models count as 0)."""
        return sum(m.cost_usd or 0.0 for m in self.models)

    def render(self) -> str:
        """Render the summary as plain text.

        Returns:
            A table of the turns, then one of the models with their usage and cost, then the
            total cost, then (when traced) what happened to the spans; long texts are clipped
            with an ellipsis.
        """
        w = _TEXT_WIDTH
        lines = [
            f"Conversation {self.conversation_id}" + (f"  (Langfuse trace {self.trace_id})" if self.trace_id else "")
        ]
        lines.append("")
        lines.append(f"{'Turn':>4}  {'User':<{w}}  {'Bot':<{w}}  {'Voice-to-voice':>14}  Interrupted")
        for t in self.turns:
            latency = f"{t.voice_to_voice_s:.2f} s" if t.voice_to_voice_s is not None else "-"
            lines.append(
                f"{t.number:>4}  {_clip(t.user_text, w):<{w}}  {_clip(t.bot_text, w):<{w}}  {latency:>14}  "
                f"{'yes' if t.interrupted else 'no'}"
            )
        lines.append("")
        models = sorted(
            self.models, key=lambda m: _KIND_ORDER.index(m.kind) if m.kind in _KIND_ORDER else len(_KIND_ORDER)
        )
        usages = [
            m.describe_usage() + (f" ({m.estimated_calls} estimated)" if m.estimated_calls else "") for m in models
        ]
        u = max([40, *map(len, usages)])
        lines.append(f"{'Model':<30}  {'Kind':<4}  {'Calls':>5}  {'Usage':<{u}}  {'Cost (USD)':>12}")
        for m, usage in zip(models, usages, strict=True):
            cost = f"{m.cost_usd:.6f}" if m.cost_usd is not None else "not priced"
            lines.append(f"{_clip(m.model, 30):<30}  {m.kind:<4}  {m.calls:>5}  {usage:<{u}}  {cost:>12}")
        lines.append(f"{'Total':<30}  {'':<4}  {'':>5}  {'':<{u}}  {self.total_cost_usd:>12.6f}")
        estimated = sum(m.estimated_calls for m in self.models)
        if estimated:
            lines.append(
                f"{estimated} call(s) ended without a usage report from the provider (e.g. cut by an "
                "interruption): their usage was estimated, and is flagged usage_estimated in Langfuse."
            )
        if self.errors:
            lines.append(
                f"{self.errors} service error(s), {self.unrecovered_errors} not recovered: see the level ERROR "
                "observations of the trace."
            )
        if self.spans is not None:
            lines.append("")
            lines.append(self.spans.describe())
        return "\n".join(lines)


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
