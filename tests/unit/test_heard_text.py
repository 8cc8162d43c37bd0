"""What the caller heard after a barge-in, and the fate of each LLM call's output."""

from __future__ import annotations

from pipecat_langfuse._turns import Turn, Unit, heard_text, output_fate

MS = 1_000_000

# Sentences as a TTS without word timestamps pushes them: after their audio (seconds generated so far).
SENTENCES = [("Sure.", 0.6, None), ("Let me tell you about our opening hours.", 3.0, None), ("And more.", 4.0, None)]


def test_not_cut_off_everything_was_heard() -> None:
    assert heard_text(SENTENCES, 4.0, None) == "Sure. Let me tell you about our opening hours. And more."


def test_a_sentence_whose_audio_was_played_was_heard_and_the_one_playing_in_part() -> None:
    # 1.8 s played: "Sure." (0.6 s) and half of the next sentence's 2.4 s, so half of its 8 words.
    assert heard_text(SENTENCES, 1.8, cut_ns=5_000 * MS) == "Sure. Let me tell you"


def test_cut_before_the_first_audio_ended_nothing_but_its_share() -> None:
    assert heard_text(SENTENCES, 0.0, cut_ns=1 * MS) == ""
    assert heard_text(SENTENCES, 0.59, cut_ns=1 * MS) == "Sure."  # within one output chunk of its end


def test_words_with_timestamps_were_heard_if_presented_before_the_cut() -> None:
    words = [("Sure.", 0.0, 100 * MS), ("Let", 0.0, 700 * MS), ("me", 0.0, 900 * MS), ("tell", 0.0, 1_200 * MS)]
    assert heard_text(words, 0.0, cut_ns=1_000 * MS) == "Sure. Let me"


def llm_unit(turn: Turn, text: str, offset: int, **fields: object) -> Unit:
    unit = Unit(kind="llm", processor="llm", model="m", turn=turn, start_ns=0, last_ns=0, **fields)  # type: ignore[arg-type]
    unit.text.append(text)
    unit.text_offset = offset
    return unit


def test_each_llm_call_is_spoken_cut_off_not_spoken_or_a_tool_call() -> None:
    turn = Turn(number=1, start_ns=0, interrupted=True, heard_text="Sure. Let me tell you")
    first = llm_unit(turn, "Sure.", 0)
    second = llm_unit(turn, "Let me tell you about our opening hours.", 5)
    third = llm_unit(turn, "And more.", 5 + 33)
    assert [output_fate(u) for u in (first, second, third)] == ["spoken", "cut_off", "not_spoken"]
    calls = llm_unit(turn, "", 0, tool_calls=[{"id": "call_1"}])
    assert output_fate(calls) == "tool_call"
    assert output_fate(llm_unit(turn, "", 0)) == "not_spoken"  # a failed request says nothing


def test_a_turn_not_interrupted_heard_all_of_its_llm_output() -> None:
    turn = Turn(number=1, start_ns=0, interrupted=False, heard_text="Sure")
    assert output_fate(llm_unit(turn, "Sure. And more.", 0)) == "spoken"
