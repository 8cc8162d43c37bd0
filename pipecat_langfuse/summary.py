"""End-of-call summary: per turn, per model, and the conversation's total cost."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from pipecat_langfuse import pricing

_TEXT_WIDTH = 38


@dataclass(frozen=True)
class TurnSummary:
    """One turn: what the user said, what the bot replied, how fast, and whether it was cut off."""

    number: int
    user_text: str
    bot_text: str
    voice_to_voice_s: float | None
    interrupted: bool


@dataclass(frozen=True)
class ModelUsage:
    """Usage and cost of one model over the conversation (cost None when no price is known)."""

    kind: str
    model: str
    usage: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    cost_usd: float | None = None
    calls: int = 0

    def add(self, usage: Mapping[str, int], cost: Mapping[str, float] | None) -> ModelUsage:
        """This total plus one more call's usage and cost details."""
        merged = dict(self.usage)
        for key, value in usage.items():
            merged[key] = merged.get(key, 0) + value
        total = cost.get(pricing.USAGE_TOTAL) if cost else None
        cost_usd = self.cost_usd if total is None else (self.cost_usd or 0.0) + total
        return ModelUsage(self.kind, self.model, MappingProxyType(merged), cost_usd, self.calls + 1)

    def describe_usage(self) -> str:
        """Usage in words, e.g. ``1,234 in / 56 out tokens``."""
        u = self.usage
        if self.kind == "llm":
            cached = u.get(pricing.USAGE_INPUT_CACHED_TOKENS, 0)
            cached_text = f" (+{cached:,} cached)" if cached else ""
            return f"{u.get(pricing.USAGE_INPUT, 0):,} in{cached_text} / {u.get(pricing.USAGE_OUTPUT, 0):,} out tokens"
        if self.kind == "tts":
            return f"{u.get(pricing.USAGE_INPUT_CHARACTERS, 0):,} characters"
        return f"{u.get(pricing.USAGE_INPUT_AUDIO_MS, 0) / 1000:,.1f} s audio"


@dataclass(frozen=True)
class ConversationSummary:
    """What a conversation did and cost; ``render()`` gives the table printed at the end of a call."""

    conversation_id: str
    trace_id: str | None
    turns: tuple[TurnSummary, ...]
    models: tuple[ModelUsage, ...]

    @property
    def total_cost_usd(self) -> float:
        """Sum of the known costs of all models."""
        return sum(m.cost_usd or 0.0 for m in self.models)

    def render(self) -> str:
        """A plain-text table: turns, then models with usage and cost, then the total."""
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
        lines.append(f"{'Model':<30}  {'Kind':<4}  {'Calls':>5}  {'Usage':<40}  {'Cost (USD)':>12}")
        for m in sorted(
            self.models, key=lambda m: ("stt", "llm", "tts").index(m.kind) if m.kind in ("stt", "llm", "tts") else 3
        ):
            cost = f"{m.cost_usd:.6f}" if m.cost_usd is not None else "not priced"
            lines.append(f"{_clip(m.model, 30):<30}  {m.kind:<4}  {m.calls:>5}  {m.describe_usage():<40}  {cost:>12}")
        lines.append(f"{'Total':<30}  {'':<4}  {'':>5}  {'':<40}  {self.total_cost_usd:>12.6f}")
        return "\n".join(lines)


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
