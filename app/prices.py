"""``uv run test_langfuse --prices``: the price table the tracer uses, with where each price comes from.

Lists the built-in prices and those of ``PRICING_FILE`` (which win), in match order, and marks
each price taken more than :data:`STALE_AFTER_DAYS` days ago as stale: vendors change prices, so
re-check those on their source page and override them in ``PRICING_FILE``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date
from pathlib import Path

from pipecat_langfuse import PriceTable, PricingError
from pipecat_langfuse.settings import PRICING_FILE

STALE_AFTER_DAYS = 90
"""A price older than this many days is marked stale."""


def price_listing(env: Mapping[str, str] | None = None, today: date | None = None) -> tuple[int, list[str]]:
    """The price table as lines of text, and the exit code (0, or 2 when ``PRICING_FILE`` is broken)."""
    env = os.environ if env is None else env
    today = today or date.today()
    user_file = (env.get(PRICING_FILE) or "").strip() or None
    try:
        table = PriceTable.load(Path(user_file) if user_file else None)
    except PricingError as error:
        return 2, [f"PRICING_FILE: {error}"]
    stale = 0
    lines = [f"{'kind':<4}  {'entry':<34}  {'source':<12}  {'date':<10}  {'age':>5}  price"]
    for kind in ("stt", "llm", "s2s", "tts"):
        for entry in (e for e in table.entries if e.kind == kind):
            age = entry.age_days(today)
            is_stale = age > STALE_AFTER_DAYS and not entry.self_hosted
            stale += is_stale
            lines.append(
                f"{entry.kind:<4}  {entry.name:<34}  {entry.provenance:<12}  {entry.date:<10}  {age:>4}d  "
                f"{entry.listed}{'  STALE' if is_stale else ''}"
            )
            lines.append(f"{'':<4}  {'':<34}  {entry.source}")
    where = f"built-in table + {user_file}" if user_file else f"built-in table ({PRICING_FILE} not set)"
    lines.append("")
    lines.append(f"{len(table.entries)} prices from the {where}; {stale} older than {STALE_AFTER_DAYS} days (STALE).")
    if stale:
        lines.append(f"Re-check stale prices on their source page; override them in {PRICING_FILE} (README, Pricing).")
    return 0, lines


_PROVIDERS = {
    "ai.google.dev": "Google",
    "cloud.google.com": "Google",
    "aws.amazon.com": "AWS",
    "azure.microsoft.com": "Azure",
    "developers.deepgram.com": "Deepgram",
    "docs.cartesia.ai": "Cartesia",
    "docs.anthropic.com": "Anthropic",
    "developers.openai.com": "OpenAI",
    "docs.x.ai": "xAI",
    "platform.minimax.io": "MiniMax",
    "openrouter.ai": "Meta (via OpenRouter)",
    "vercel.com": "Google (via Vercel)",
    "www.assemblyai.com": "AssemblyAI",
    "www.together.ai": "Together",
    "docs.smallest.ai": "Smallest",
    "smallest.ai": "Smallest",
    "build.nvidia.com": "NVIDIA",
    "elevenlabs.io": "ElevenLabs",
    "fish.audio": "Fish Audio",
    "www.hume.ai": "Hume",
    "docs.bland.ai": "Bland",
    "www.anttisahla.com": "Google (dated copy)",
}
# Sources on raw.githubusercontent.com: dated copies of a vendor's price list, by repository.
_PROVIDER_COPIES = {
    "/api-evangelist/amazon-nova/": "AWS (dated copy)",
    "/api-evangelist/fixie/": "Ultravox (dated copy)",
}
_UNITS = (
    ("input_text_tokens", "text and audio tokens"),
    ("input_text", "text and audio tokens"),
    ("session_ms", "session time (per minute)"),
    ("input_audio_ms", "audio sent (per minute/hour)"),
    ("input_characters", "characters"),
    ("output_audio_ms", "audio generated"),
    ("requests", "requests"),
    ("output_audio_tokens", "audio tokens"),
    ("input_audio_tokens", "audio tokens"),
    ("input", "tokens"),
)


def markdown_table(table: PriceTable | None = None) -> str:
    """The README's pricing table: providers x billing units, each cell the entries priced that way."""
    from urllib.parse import urlparse

    table = table or PriceTable.load()
    speech_to_speech = [label for key, label in _UNITS if key.startswith(("session", "input_text"))]
    columns = [label for label in dict.fromkeys(label for _, label in _UNITS) if label not in speech_to_speech]
    columns += dict.fromkeys(speech_to_speech)  # speech-to-speech last, after the STT, TTS and LLM units
    rows: dict[str, dict[str, list[str]]] = {}
    for entry in table.entries:
        if entry.self_hosted:
            provider, unit = "Self-hosted ($0, usage recorded)", "self-hosted"
        else:
            host = urlparse(entry.source).hostname or ""
            path = urlparse(entry.source).path
            copy = next((name for repo, name in _PROVIDER_COPIES.items() if path.startswith(repo)), None)
            provider = copy or _PROVIDERS.get(host) or host.removeprefix("www.").split(".")[0].capitalize()
            unit = next(label for key, label in _UNITS if key in entry.unit_prices)
        cell = rows.setdefault(provider, {}).setdefault(unit, [])
        cell.append(f"{entry.kind.upper()} `{entry.name}`")
    columns.append("self-hosted")
    used = [c for c in columns if any(c in cells for cells in rows.values())]
    lines = ["| Provider | " + " | ".join(used) + " |", "| --- |" + " --- |" * len(used)]
    for provider in sorted(rows, key=lambda p: (p.startswith("Self-hosted"), p.casefold())):
        cells = rows[provider]
        lines.append(f"| {provider} | " + " | ".join(", ".join(cells.get(c, [])) for c in used) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
