from pathlib import Path

import pytest

from pipecat_langfuse.settings import (
    DEFAULT_BASE_URL,
    DEFAULT_FLUSH_TIMEOUT_S,
    DEFAULT_TRACE_NAME,
    RELEASE_VARIABLES,
    SettingsError,
    TracingSettings,
)

KEYS = {"LANGFUSE_PUBLIC_KEY": "pk-lf-1", "LANGFUSE_SECRET_KEY": "sk-lf-very-secret"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("Yes", True),
        ("false", False),
        ("FALSE", False),
        ("0", False),
        ("no", False),
        ("NO", False),
        ("", False),
    ],
)
def test_enable_tracing_accepts_booleans_in_any_case(raw: str, expected: bool) -> None:
    assert TracingSettings.from_env({"ENABLE_TRACING": raw, **KEYS}).enabled is expected


def test_tracing_is_off_when_unset() -> None:
    settings = TracingSettings.from_env({})
    assert settings.enabled is False
    assert settings.base_url == DEFAULT_BASE_URL
    assert settings.trace_name == DEFAULT_TRACE_NAME
    assert settings.flush_timeout_s == DEFAULT_FLUSH_TIMEOUT_S


@pytest.mark.parametrize("raw", ["on", "enabled", "2", "tru"])
def test_enable_tracing_rejects_anything_else_naming_the_variable(raw: str) -> None:
    with pytest.raises(SettingsError, match=r"^ENABLE_TRACING='.*' is not a boolean\. Use one of: true, false"):
        TracingSettings.from_env({"ENABLE_TRACING": raw})


def test_enabled_without_keys_names_both_missing_variables() -> None:
    with pytest.raises(SettingsError) as error:
        TracingSettings.from_env({"ENABLE_TRACING": "true"})
    assert str(error.value).startswith(
        "ENABLE_TRACING is true but LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY are not set."
    )
    assert "ENABLE_TRACING=false" in str(error.value)


def test_enabled_without_secret_names_it() -> None:
    with pytest.raises(SettingsError, match=r"^ENABLE_TRACING is true but LANGFUSE_SECRET_KEY is not set\."):
        TracingSettings.from_env({"ENABLE_TRACING": "1", "LANGFUSE_PUBLIC_KEY": "pk-lf-1"})


def test_swapped_keys_are_caught() -> None:
    env = {"ENABLE_TRACING": "1", "LANGFUSE_PUBLIC_KEY": "sk-lf-1", "LANGFUSE_SECRET_KEY": "pk-lf-1"}
    with pytest.raises(SettingsError, match="Are the public and secret keys swapped"):
        TracingSettings.from_env(env)


def test_host_is_accepted_as_the_old_name_of_base_url() -> None:
    assert TracingSettings.from_env({"LANGFUSE_HOST": "http://localhost:3000/"}).base_url == "http://localhost:3000"


def test_base_url_wins_over_host() -> None:
    env = {"LANGFUSE_HOST": "http://old:3000", "LANGFUSE_BASE_URL": "https://us.cloud.langfuse.com"}
    assert TracingSettings.from_env(env).base_url == "https://us.cloud.langfuse.com"


def test_base_url_with_an_api_path_is_rejected_with_the_fix() -> None:
    with pytest.raises(SettingsError) as error:
        TracingSettings.from_env({"LANGFUSE_BASE_URL": "https://cloud.langfuse.com/api/public/otel"})
    assert "Give the host only (e.g. https://cloud.langfuse.com)" in str(error.value)


def test_malformed_host_names_the_variable_used() -> None:
    with pytest.raises(SettingsError, match=r"^LANGFUSE_HOST='localhost:3000' is not a URL"):
        TracingSettings.from_env({"LANGFUSE_HOST": "localhost:3000"})


def test_trace_attributes_are_read() -> None:
    settings = TracingSettings.from_env(
        {
            "LANGFUSE_TRACE_NAME": "support-line",
            "LANGFUSE_USER_ID": "caller-7",
            "LANGFUSE_TAGS": " a, b ,,c ",
            "LANGFUSE_TRACING_ENVIRONMENT": "staging",
            "LANGFUSE_RELEASE": "abc123",
            "CONVERSATION_ID": "conv-1",
            "PRICING_FILE": "~/prices.toml",
            "LANGFUSE_TIMEOUT": "7",
            "LANGFUSE_FLUSH_TIMEOUT": "2.5",
        }
    )
    assert settings.trace_name == "support-line"
    assert settings.user_id == "caller-7"
    assert settings.tags == ("a", "b", "c")
    assert settings.environment == "staging"
    assert settings.release == "abc123"
    assert settings.conversation_id == "conv-1"
    assert settings.pricing_file == Path("~/prices.toml").expanduser()
    assert settings.timeout_s == 7
    assert settings.flush_timeout_s == 2.5


@pytest.mark.parametrize("raw", ["Production", "langfuse-prod", "a b"])
def test_invalid_environment_is_rejected(raw: str) -> None:
    with pytest.raises(SettingsError, match=r"^LANGFUSE_TRACING_ENVIRONMENT="):
        TracingSettings.from_env({"LANGFUSE_TRACING_ENVIRONMENT": raw})


@pytest.mark.parametrize(
    ("name", "raw"), [("LANGFUSE_TIMEOUT", "1.5"), ("LANGFUSE_FLUSH_TIMEOUT", "soon"), ("LANGFUSE_FLUSH_TIMEOUT", "0")]
)
def test_bad_numbers_name_their_variable(name: str, raw: str) -> None:
    with pytest.raises(SettingsError, match=rf"^{name}="):
        TracingSettings.from_env({name: raw})


def test_overlong_trace_attribute_is_rejected() -> None:
    with pytest.raises(SettingsError, match=r"^LANGFUSE_USER_ID is 201 characters long; Langfuse keeps at most 200"):
        TracingSettings.from_env({"LANGFUSE_USER_ID": "u" * 201})


def test_secret_key_is_not_in_repr() -> None:
    settings = TracingSettings.from_env({"ENABLE_TRACING": "true", **KEYS})
    assert settings.secret_key == "sk-lf-very-secret"
    assert "sk-lf-very-secret" not in repr(settings)


def test_settings_are_frozen() -> None:
    settings = TracingSettings.from_env({})
    with pytest.raises(AttributeError):
        settings.enabled = True  # type: ignore[misc]


def test_the_release_is_the_agents_version_from_the_environment() -> None:
    deployed = {"RENDER_GIT_COMMIT": "9f8e7d6", "GITHUB_SHA": "1a2b3c4"}
    settings = TracingSettings.from_env(deployed)
    assert (settings.release, settings.release_source) == ("9f8e7d6", "RENDER_GIT_COMMIT")  # the SDK's order
    settings = TracingSettings.from_env({**deployed, "LANGFUSE_RELEASE": "agent-2.3.1"})
    assert (settings.release, settings.release_source) == ("agent-2.3.1", "LANGFUSE_RELEASE")
    settings = TracingSettings.from_env({"LANGFUSE_RELEASE": "  ", "SOURCE_VERSION": "heroku-build-7"})
    assert (settings.release, settings.release_source) == ("heroku-build-7", "SOURCE_VERSION")
    assert RELEASE_VARIABLES[:2] == ("LANGFUSE_RELEASE", "RENDER_GIT_COMMIT")


def test_no_release_variable_no_release() -> None:
    settings = TracingSettings.from_env({})
    assert (settings.release, settings.release_source) == (None, None)


def test_content_capture_and_sample_rate_are_read() -> None:
    settings = TracingSettings.from_env({"LANGFUSE_CAPTURE_CONTENT": "false", "LANGFUSE_SAMPLE_RATE": "0.25"})
    assert (settings.capture_content, settings.sample_rate) == (False, 0.25)
    assert (TracingSettings.from_env({}).capture_content, TracingSettings.from_env({}).sample_rate) == (True, 1.0)


@pytest.mark.parametrize("raw", ["1.5", "-0.1", "half", "nan"])
def test_a_sample_rate_outside_0_to_1_is_rejected_with_the_fix(raw: str) -> None:
    with pytest.raises(SettingsError, match=r"LANGFUSE_SAMPLE_RATE=.* use a number from 0 to 1"):
        TracingSettings.from_env({"LANGFUSE_SAMPLE_RATE": raw})


def test_costing_is_client_or_server() -> None:
    assert TracingSettings.from_env({}).costing == "client"
    assert TracingSettings.from_env({"LANGFUSE_COSTING": " Server "}).costing == "server"
    with pytest.raises(SettingsError, match=r"LANGFUSE_COSTING='both' is not a costing mode: use client .* or server"):
        TracingSettings.from_env({"LANGFUSE_COSTING": "both"})
