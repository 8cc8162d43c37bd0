from pipecat.metrics.metrics import LLMTokenUsage

from pipecat_langfuse._usage import llm_usage_details


def test_openai_reports_prompt_tokens_gross_of_the_cache() -> None:
    usage = LLMTokenUsage(
        prompt_tokens=1200, completion_tokens=300, total_tokens=1500, cache_read_input_tokens=1000, reasoning_tokens=120
    )
    assert llm_usage_details(usage) == {
        "input": 200,
        "output": 180,  # apart from the reasoning, as Langfuse counts them
        "input_cached_tokens": 1000,
        "output_reasoning_tokens": 120,
        "total": 1500,
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
        "input": 200,
        "output": 300,
        "input_cached_tokens": 1000,
        "input_cache_creation_tokens": 50,
        "total": 1550,
    }


def test_plain_usage_without_cache() -> None:
    usage = LLMTokenUsage(prompt_tokens=42, completion_tokens=7, total_tokens=49)
    assert llm_usage_details(usage) == {"input": 42, "output": 7, "total": 49}


def test_missing_total_falls_back_to_prompt_tokens() -> None:
    usage = LLMTokenUsage(prompt_tokens=42, completion_tokens=7, total_tokens=0)
    assert llm_usage_details(usage) == {"input": 42, "output": 7, "total": 49}


def test_every_value_is_a_non_negative_int() -> None:
    usage = LLMTokenUsage(prompt_tokens=5, completion_tokens=1, total_tokens=6, cache_read_input_tokens=9)
    details = llm_usage_details(usage)
    assert all(type(v) is int and v >= 0 for v in details.values())
    assert details["input"] == 0


def test_two_reports_of_one_call_add_up_field_by_field_audio_included() -> None:
    from pipecat_langfuse._usage import add_usage

    first = LLMTokenUsage(prompt_tokens=100, completion_tokens=20, total_tokens=120, cache_read_input_tokens=40)
    second = LLMTokenUsage(prompt_tokens=10, completion_tokens=5, total_tokens=15, reasoning_tokens=3)
    audio = {"input_audio_tokens": (60, 6), "output_audio_tokens": (15, 4), "cache_read_input_audio_tokens": (30, None)}
    fields = set(LLMTokenUsage.model_fields)
    for name, (a, b) in audio.items():  # the audio counts of the Pipecat installed (1.14 has them)
        if name in fields:
            setattr(first, name, a)
            setattr(second, name, b)
    merged = add_usage(first, second)
    assert (merged.prompt_tokens, merged.completion_tokens, merged.total_tokens) == (110, 25, 135)
    assert (merged.cache_read_input_tokens, merged.reasoning_tokens) == (40, 3)
    assert merged.cache_creation_input_tokens is None  # neither report had it
    expected = {"input_audio_tokens": 66, "output_audio_tokens": 19, "cache_read_input_audio_tokens": 30}
    assert {name: getattr(merged, name) for name in expected if name in fields} == {
        name: value for name, value in expected.items() if name in fields
    }
