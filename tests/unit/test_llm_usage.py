from pipecat.metrics.metrics import LLMTokenUsage

from pipecat_langfuse._observer import llm_usage_details
from pipecat_langfuse.pricing import (
    USAGE_INPUT,
    USAGE_INPUT_CACHE_CREATION_TOKENS,
    USAGE_INPUT_CACHED_TOKENS,
    USAGE_OUTPUT,
    USAGE_OUTPUT_REASONING_TOKENS,
    USAGE_TOTAL,
)


def test_openai_reports_prompt_tokens_gross_of_the_cache() -> None:
    usage = LLMTokenUsage(
        prompt_tokens=1200, completion_tokens=300, total_tokens=1500, cache_read_input_tokens=1000, reasoning_tokens=120
    )
    assert llm_usage_details(usage) == {
        USAGE_INPUT: 200,
        USAGE_OUTPUT: 300,
        USAGE_INPUT_CACHED_TOKENS: 1000,
        USAGE_OUTPUT_REASONING_TOKENS: 120,
        USAGE_TOTAL: 1500,
    }


def test_anthropic_reports_prompt_tokens_net_of_the_cache() -> None:
    # Anthropic: prompt_tokens excludes cache reads/writes; total_tokens is gross.
    usage = LLMTokenUsage(
        prompt_tokens=200,
        completion_tokens=300,
        total_tokens=1550,
        cache_read_input_tokens=1000,
        cache_creation_input_tokens=50,
    )
    assert llm_usage_details(usage) == {
        USAGE_INPUT: 200,
        USAGE_OUTPUT: 300,
        USAGE_INPUT_CACHED_TOKENS: 1000,
        USAGE_INPUT_CACHE_CREATION_TOKENS: 50,
        USAGE_TOTAL: 1550,
    }


def test_plain_usage_without_cache() -> None:
    usage = LLMTokenUsage(prompt_tokens=42, completion_tokens=7, total_tokens=49)
    assert llm_usage_details(usage) == {USAGE_INPUT: 42, USAGE_OUTPUT: 7, USAGE_TOTAL: 49}


def test_missing_total_falls_back_to_prompt_tokens() -> None:
    usage = LLMTokenUsage(prompt_tokens=42, completion_tokens=7, total_tokens=0)
    assert llm_usage_details(usage) == {USAGE_INPUT: 42, USAGE_OUTPUT: 7, USAGE_TOTAL: 49}


def test_every_value_is_a_non_negative_int() -> None:
    usage = LLMTokenUsage(prompt_tokens=5, completion_tokens=1, total_tokens=6, cache_read_input_tokens=9)
    details = llm_usage_details(usage)
    assert all(type(v) is int and v >= 0 for v in details.values())
    assert details[USAGE_INPUT] == 0
