"""Which of Pipecat's user-turn stop strategies ended a turn, as the ``endpointing_cause`` score says it."""

from __future__ import annotations

import pytest
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.turns.user_stop.deferred_user_turn_stop_strategy import DeferredUserTurnStopStrategy
from pipecat.turns.user_stop.eager_user_turn_stop_strategy import EagerUserTurnStopStrategy
from pipecat.turns.user_stop.external_user_turn_completion_stop_strategy import ExternalUserTurnCompletionStopStrategy
from pipecat.turns.user_stop.external_user_turn_stop_strategy import ExternalUserTurnStopStrategy
from pipecat.turns.user_stop.llm_turn_completion_user_turn_stop_strategy import LLMTurnCompletionUserTurnStopStrategy
from pipecat.turns.user_stop.speech_timeout_user_turn_stop_strategy import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_stop.turn_analyzer_user_turn_stop_strategy import TurnAnalyzerUserTurnStopStrategy

from pipecat_langfuse._turns import endpointing_cause


class PatientTimeout(SpeechTimeoutUserTurnStopStrategy):
    """A user's own strategy: its nearest listed base class decides."""


@pytest.mark.parametrize(
    ("strategy", "cause"),
    [
        (SpeechTimeoutUserTurnStopStrategy(), "silence_timeout"),
        (PatientTimeout(), "silence_timeout"),
        (TurnAnalyzerUserTurnStopStrategy(turn_analyzer=LocalSmartTurnAnalyzerV3()), "turn_model"),
        (ExternalUserTurnStopStrategy(), "stt_endpoint"),
        (EagerUserTurnStopStrategy(), "stt_endpoint"),  # an External one: the STT's eager end of turn
        # A subclass of ExternalUserTurnCompletionStopStrategy: the LLM, not the STT, judged the turn.
        (LLMTurnCompletionUserTurnStopStrategy(), "llm_turn_completion"),
        (ExternalUserTurnCompletionStopStrategy(), "ExternalUserTurnCompletionStopStrategy"),
        (None, "stop_timeout"),  # Pipecat's watchdog ended a turn no strategy ended
    ],
)
def test_each_strategy_has_its_cause(strategy: object, cause: str) -> None:
    assert endpointing_cause(strategy) == cause


def test_a_wrapper_strategy_is_named_by_its_class() -> None:
    wrapped = DeferredUserTurnStopStrategy(SpeechTimeoutUserTurnStopStrategy())
    assert endpointing_cause(wrapped) == "DeferredUserTurnStopStrategy"
