"""What the observer records of a conversation: turns, units of work, tool calls, errors.

And what follows from a turn once it ended: what the caller heard of it (:func:`heard_text`),
what became of each LLM call's output (:func:`output_fate`), why the user's turn ended
(:func:`endpointing_cause`) and the turn's scores (:func:`turn_scores`). Pure functions of the
records, so they are tested without a pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pipecat.metrics.metrics import LLMTokenUsage
from pipecat.processors.frame_processor import FrameProcessor

from pipecat_langfuse._langfuse import TurnSpan

ServiceKind = Literal["stt", "llm", "tts", "s2s"]
"""What a unit of work is: ``s2s`` is an LLM service that hears and speaks (a realtime model)."""

KIND_ORDER: tuple[ServiceKind, ...] = ("stt", "llm", "s2s", "tts")
"""The kinds in the order of the pipeline, for the summary and the TTFB scores."""


@dataclass(slots=True)
class ServiceError:
    """An ``ErrorFrame`` and whether its service worked again later in the call."""

    processor: str
    message: str
    fatal: bool
    category: str | None
    at_ns: int
    recovered: bool = False

    def as_metadata(self) -> dict[str, Any]:
        """What generation and turn metadata say of the error (``processor`` is added on turns)."""
        described: dict[str, Any] = {"message": self.message, "fatal": self.fatal, "recovered": self.recovered}
        if self.category is not None:
            described["category"] = self.category
        return described


@dataclass(slots=True)
class ToolCall:
    """One function call: from ``FunctionCallInProgressFrame`` to its result or cancel."""

    call_id: str
    name: str
    arguments: Any
    processor: str
    turn: Turn
    start_ns: int


@dataclass(slots=True)
class Turn:
    number: int
    start_ns: int
    end_ns: int | None = None
    user_text: list[str] = field(default_factory=list)
    bot_text: list[str] = field(default_factory=list)
    bot_spoke: bool = False
    interrupted: bool = False
    user_started_ns: int | None = None
    user_stopped_ns: int | None = None
    latency_s: float | None = None
    audio_mark_s: float = 0.0
    """Input audio (s) the observer had seen when the turn started."""
    bot_stopped_ns: int | None = None
    """When the bot last stopped speaking in this turn."""
    speech_end_ns: int | None = None
    """When the user stopped speaking, by the VAD (its stop time less its ``stop_secs``)."""
    endpointing_cause: str | None = None
    """What ended the user's turn (see :data:`ENDPOINTING_CAUSES`)."""
    ttfb_s: dict[str, float] = field(default_factory=dict)
    """Each service kind's first TTFB in the turn."""
    spoken: list[tuple[str, float, int | None]] = field(default_factory=list)
    """The text the TTS spoke in this turn: (text, the turn's TTS audio seconds by then, its PTS)."""
    tts_audio_s: float = 0.0
    """Seconds of TTS audio generated in this turn."""
    played_s: float = 0.0
    """Seconds the bot spent speaking in this turn (its speaking intervals)."""
    bot_started_ns: int | None = None
    llm_chars: int = 0
    """Non-space characters the turn's LLM calls generated so far."""
    heard_text: str | None = None
    """What the caller heard of the bot in this turn, once it ended (None: no TTS text)."""
    span: TurnSpan | None = None
    errors: list[ServiceError] = field(default_factory=list)
    pending_end: dict[str, Any] | None = None
    """The turn span's end, held while an error of the turn may still recover."""
    flow_node: str | None = None
    """The Pipecat Flows node current when the turn started."""


@dataclass(slots=True)
class Unit:
    kind: ServiceKind
    processor: str
    model: str | None
    turn: Turn
    start_ns: int
    last_ns: int
    end_ns: int = 0
    context_id: str | None = None
    ttfb_s: float | None = None
    processing_s: float | None = None
    input: Any = None
    text: list[str] = field(default_factory=list)
    audio_seconds: float = 0.0
    audio_ms: int = 0
    output_audio_s: float = 0.0
    characters: int = 0
    requests: int = 0
    llm_usage: LLMTokenUsage | None = None
    source: FrameProcessor | None = None
    response_model: str | None = None
    last_text_ns: int | None = None
    cut: bool = False
    """An interruption came while the LLM was still streaming: the provider never finished its report."""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tools: tuple[str, ...] = ()
    """Names of the tools the LLM was offered."""
    text_offset: int = 0
    """Non-space characters the turn's earlier LLM calls generated before this one."""
    errors: list[ServiceError] = field(default_factory=list)
    flow_node: str | None = None
    """The Pipecat Flows node current when the LLM call started."""
    first_audio_ns: int | None = None
    """When a speech-to-speech reply's first audio came (its first "token")."""


def join_text(unit: Unit) -> str:
    if unit.kind == "llm":
        return "".join(unit.text).strip()  # LLM tokens carry their own spacing
    return " ".join(" ".join(unit.text).split())  # words or sentences


OUTPUT_FATE = "output_fate"
"""Metadata of an LLM generation: what became of its output (see :func:`output_fate`)."""
PLAYBACK_SLACK_S = 0.02
"""Audio that counts as played though the bot's speaking time is this much shorter (one output chunk)."""
FATE_SLACK_CHARS = 3
"""Characters an LLM reply may lose on its way to speech (markup the TTS drops) and still count as spoken."""


def heard_text(spoken: list[tuple[str, float, int | None]], played_s: float, cut_ns: int | None) -> str:
    """What the caller heard of a turn's speech, given how long the bot spoke and when it was cut off.

    ``spoken`` is the TTS's text in order, each with the turn's TTS audio (s) generated by the time
    it was pushed, and its presentation time (PTS) when the TTS gives word timestamps. A word
    with a PTS was heard if it was presented before the cut (``cut_ns``, pipeline clock). Text
    without one is pushed after its audio: heard when that audio was played (the bot spoke for
    ``played_s``), and for the sentence playing at the cut, its share of the words, in proportion
    to the part of its audio played. Not cut off (``cut_ns`` None): all of it.
    """
    heard: list[str] = []
    audio_before_s = 0.0
    for text, audio_s, pts in spoken:
        if cut_ns is None or (pts is not None and pts <= cut_ns):
            heard.append(text)
        elif pts is None:
            if audio_s <= played_s + PLAYBACK_SLACK_S:
                heard.append(text)
            else:
                if played_s > audio_before_s:
                    words = text.split()
                    share = (played_s - audio_before_s) / (audio_s - audio_before_s)
                    heard.append(" ".join(words[: int(len(words) * share)]))
                break
            audio_before_s = audio_s
    return " ".join(" ".join(heard).split())


def output_fate(unit: Unit) -> str:
    """What became of an LLM call's output: ``tool_call``, ``spoken``, ``cut_off`` or ``not_spoken``.

    ``tool_call``: it called tools. Otherwise its text is placed in its turn's generated text, and
    compared with what the caller heard of the turn (:func:`heard_text`): all of it heard is
    ``spoken``, part of it ``cut_off``, none (or no text at all) ``not_spoken``. A turn the caller
    did not interrupt heard everything.
    """
    if unit.tool_calls:
        return "tool_call"
    length = visible_chars(join_text(unit))
    if length == 0:
        return "not_spoken"
    turn = unit.turn
    if not turn.interrupted or turn.heard_text is None:
        return "spoken"
    heard = visible_chars(turn.heard_text)
    if heard >= unit.text_offset + length - FATE_SLACK_CHARS:
        return "spoken"
    return "cut_off" if heard > unit.text_offset else "not_spoken"


def visible_chars(text: str) -> int:
    return sum(not c.isspace() for c in text)


ENDPOINTING_CAUSES: dict[str, str] = {
    "SpeechTimeoutUserTurnStopStrategy": "silence_timeout",
    "TurnAnalyzerUserTurnStopStrategy": "turn_model",
    "ExternalUserTurnStopStrategy": "stt_endpoint",
    "LLMTurnCompletionUserTurnStopStrategy": "llm_turn_completion",
}
"""Pipecat's user-turn stop strategies and the endpointing cause each stands for.

``silence_timeout``: the user was quiet for the strategy's timeout. ``turn_model``: a turn model
(Smart Turn) judged the turn complete. ``stt_endpoint``: the speech-to-text service said the
utterance ended (Deepgram Flux, AssemblyAI, Speechmatics turn detection…). ``llm_turn_completion``:
the LLM judged the turn complete. The nearest listed base class of the strategy decides; a strategy
with none listed is its class name. The stop watchdog of a turn nobody ended is ``stop_timeout``.
"""


def endpointing_cause(strategy: object) -> str:
    """The endpointing cause of a Pipecat user-turn stop strategy (see :data:`ENDPOINTING_CAUSES`)."""
    if strategy is None:
        return "stop_timeout"
    names = [cls.__name__ for cls in type(strategy).__mro__]
    return next((ENDPOINTING_CAUSES[name] for name in names if name in ENDPOINTING_CAUSES), names[0])


def turn_scores(turn: Turn) -> dict[str, float | bool | str]:
    """The turn's scores (names as in the README, "Latency you can chart"), for what was measured."""
    scores: dict[str, float | bool | str] = {}
    if turn.latency_s is not None:
        scores["voice_to_voice_ms"] = round(turn.latency_s * 1000, 1)
    for kind in KIND_ORDER:
        if kind in turn.ttfb_s:
            scores[f"{kind}_ttfb_ms"] = round(turn.ttfb_s[kind] * 1000, 1)
    if turn.speech_end_ns is not None and turn.user_stopped_ns is not None:
        scores["endpointing_delay_ms"] = round(max(0, turn.user_stopped_ns - turn.speech_end_ns) / 1e6, 1)
    if turn.endpointing_cause is not None:
        scores["endpointing_cause"] = turn.endpointing_cause
    scores["interrupted"] = turn.interrupted
    return scores
