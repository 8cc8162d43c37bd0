"""Scripted caller and bot replies for the offline conversation."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

#: Duration of one input audio frame, in seconds (20 ms, like a real microphone).
FRAME_SECS = 0.02

#: Shortest speech segment the simulated caller produces, in 20 ms frames.
_MIN_SPEECH_FRAMES = 20

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")

#: What the simulated LLM answers when the script has no reply for a request.
FALLBACK_REPLY = "Okay."

#: Name of the tool the simulated LLM calls to end the call (see ``CallerScript.bot_ends_call``).
END_CALL_FUNCTION = "end_call"


class StartAnchor(StrEnum):
    """The bot event an utterance's start delay is measured from."""

    BOT_STOPPED = "bot_stopped"
    """The bot stopped speaking its previous reply (ordinary turn taking)."""

    BOT_STARTED = "bot_started"
    """The bot started speaking its previous reply (the caller barges in)."""


@dataclass(frozen=True)
class Utterance:
    """One thing the simulated caller says.

    The first utterance of a script without a greeting starts ``delay_secs``
    after the call connects, whatever its anchor. Every later utterance starts
    ``delay_secs`` after the bot started or stopped speaking its reply to the
    previous utterance, as ``anchor`` says.

    Attributes:
        text: The words spoken, which the offline STT returns verbatim.
        delay_secs: Seconds between the anchor event and the start of speech.
        anchor: Which bot event ``delay_secs`` is measured from.
    """

    text: str
    delay_secs: float = 0.6
    anchor: StartAnchor = StartAnchor.BOT_STOPPED

    @property
    def barges_in(self) -> bool:
        """Whether the caller starts talking while the bot is still speaking."""
        return self.anchor is StartAnchor.BOT_STARTED


@dataclass(frozen=True)
class CallerScript:
    """A scripted conversation: what the caller says and what the bot answers.

    ``replies[i]`` answers ``utterances[i]``. Speech durations are proportional
    to the text, at ``chars_per_sec``, for both the caller and the bot.

    Attributes:
        utterances: What the caller says, in order.
        replies: The bot's scripted answer to each utterance.
        greeting: What the bot says when asked to speak before the caller has
            said anything (e.g. an ``LLMRunFrame`` queued at start). When set, the
            first utterance is anchored on the greeting instead of the call start,
            so the bot must actually greet.
        chars_per_sec: Speaking rate of the caller and of the bot.
        hangup_delay_secs: How long the caller waits after the bot finished its
            last reply before ending the call.
        bot_ends_call: Whether the bot's last reply also calls the ``end_call`` tool
            (:data:`END_CALL_FUNCTION`), whose handler ends the call once the reply
            is spoken (when the LLM service has that function registered).
    """

    utterances: tuple[Utterance, ...]
    replies: tuple[str, ...]
    greeting: str | None = None
    chars_per_sec: float = 14.0
    hangup_delay_secs: float = 0.5
    bot_ends_call: bool = False

    def __post_init__(self) -> None:
        if not self.utterances:
            raise ValueError("a caller script needs at least one utterance")
        if len(self.replies) != len(self.utterances):
            raise ValueError("a caller script needs exactly one reply per utterance")
        if any(not u.text.strip() for u in self.utterances):
            raise ValueError("utterances must not be blank")
        if any(u.delay_secs < 0 for u in self.utterances):
            raise ValueError("utterance delays must not be negative")
        if self.chars_per_sec <= 0:
            raise ValueError("chars_per_sec must be positive")

    def speech_frames(self, utterance: Utterance) -> int:
        """Number of 20 ms audio frames the caller speaks ``utterance`` for."""
        frames = round(len(utterance.text) / self.chars_per_sec / FRAME_SECS)
        return max(_MIN_SPEECH_FRAMES, frames)

    def speech_secs(self, utterance: Utterance) -> float:
        """Seconds the caller speaks ``utterance`` for (a whole number of frames)."""
        return self.speech_frames(utterance) * FRAME_SECS

    def ends_call_after(self, user_turns: int) -> bool:
        """Whether the bot's reply after ``user_turns`` turns calls the ``end_call`` tool."""
        return self.bot_ends_call and user_turns == len(self.utterances)

    def reply_for(self, user_turns: int) -> str:
        """The bot's reply once the caller has completed ``user_turns`` turns.

        Args:
            user_turns: Number of user messages in the LLM context.

        Returns:
            The greeting for 0 turns, else the reply to the latest utterance.
        """
        if user_turns <= 0:
            return self.greeting or FALLBACK_REPLY
        if user_turns > len(self.replies):
            return FALLBACK_REPLY
        return self.replies[user_turns - 1]


def count_tokens(text: str) -> int:
    r"""Deterministic stand-in for a tokenizer: words and punctuation marks.

    Args:
        text: Any text.

    Returns:
        The number of ``\w+`` runs plus the number of other non-space characters.
    """
    return len(_TOKEN_RE.findall(text))


def message_text(message: Any) -> str:
    """The plain text of an LLM context message (OpenAI-style dict).

    Args:
        message: A context message; non-dict messages count as empty.

    Returns:
        The string content, or the concatenated ``text`` parts of list content.
    """
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, Iterable):
        parts = [
            part.get("text", "") for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
        return " ".join(parts)
    return ""


DEFAULT_SCRIPT = CallerScript(
    utterances=(
        Utterance("Hi, I'd like to book a table for tonight.", delay_secs=1.0),
        Utterance("Four people, at eight.", delay_secs=1.0, anchor=StartAnchor.BOT_STARTED),
        Utterance("It's under Taylor.", delay_secs=0.6),
        Utterance("Perfect, thanks. Bye!", delay_secs=0.6),
    ),
    replies=(
        "Of course. For how many people, and at what time would you like to come in?",
        "Great, a table for four at eight o'clock. Can I have a name for the booking?",
        "Thank you, Taylor. You're all set for tonight at eight.",
        "You're welcome. Have a lovely evening!",
    ),
)
"""A four-turn booking call (about 28 s) whose second utterance barges in."""

QUICK_SCRIPT = CallerScript(
    utterances=(
        Utterance("Hi, are you there?", delay_secs=1.0),
        Utterance("What time is it?", delay_secs=1.0, anchor=StartAnchor.BOT_STARTED),
        Utterance("Thanks, bye.", delay_secs=0.4),
    ),
    replies=(
        "Yes. I can hear you clearly, how can I help you today?",
        "It is noon.",
        "Goodbye!",
    ),
)
"""A three-turn call (about 12 s) whose second utterance barges in."""

GOODBYE_SCRIPT = CallerScript(
    utterances=(
        Utterance("Hi, are you there?", delay_secs=0.6),
        Utterance("That's all, bye.", delay_secs=0.4),
    ),
    replies=(
        "Yes, I'm here.",
        "Goodbye!",
    ),
    hangup_delay_secs=10.0,
    bot_ends_call=True,
)
"""A two-turn call (about 6 s) that the bot ends with the ``end_call`` tool after saying goodbye.

The caller would hang up 10 s after the goodbye: the bot's tool ends the call first.
"""
