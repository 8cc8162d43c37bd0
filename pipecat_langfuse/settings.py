"""Tracing configuration, resolved once from the environment into a frozen object.

Every environment variable this package reads is named here, once, as a constant.
Precedence: explicit argument > environment > default. A bad value raises
:class:`SettingsError` with a message that names the variable and the fix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

ENABLE_TRACING = "ENABLE_TRACING"
LANGFUSE_PUBLIC_KEY = "LANGFUSE_PUBLIC_KEY"
LANGFUSE_SECRET_KEY = "LANGFUSE_SECRET_KEY"
LANGFUSE_BASE_URL = "LANGFUSE_BASE_URL"
LANGFUSE_HOST = "LANGFUSE_HOST"
"""Older name of ``LANGFUSE_BASE_URL``, still accepted because many guides use it."""
LANGFUSE_TRACE_NAME = "LANGFUSE_TRACE_NAME"
LANGFUSE_USER_ID = "LANGFUSE_USER_ID"
LANGFUSE_TAGS = "LANGFUSE_TAGS"
LANGFUSE_TRACING_ENVIRONMENT = "LANGFUSE_TRACING_ENVIRONMENT"
LANGFUSE_RELEASE = "LANGFUSE_RELEASE"
LANGFUSE_TIMEOUT = "LANGFUSE_TIMEOUT"
LANGFUSE_FLUSH_TIMEOUT = "LANGFUSE_FLUSH_TIMEOUT"
CONVERSATION_ID = "CONVERSATION_ID"
PRICING_FILE = "PRICING_FILE"

DEFAULT_BASE_URL = "https://cloud.langfuse.com"
DEFAULT_TRACE_NAME = "voice-conversation"
DEFAULT_TIMEOUT_S = 5
DEFAULT_FLUSH_TIMEOUT_S = 10.0

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no", ""})
_MAX_ATTRIBUTE_CHARS = 200  # Langfuse drops propagated trace attributes longer than this.
_ENVIRONMENT_RE = re.compile(r"^(?!langfuse)[a-z0-9_-]{1,40}$")


class SettingsError(ValueError):
    """A configuration value is missing or invalid; the message names the variable and the fix."""


@dataclass(frozen=True)
class TracingSettings:
    """Everything the tracer needs, resolved once.

    Attributes:
        enabled: Send traces to Langfuse. When false nothing is built and nothing leaves the process.
        public_key: Langfuse project public key (``pk-lf-...``).
        secret_key: Langfuse project secret key (``sk-lf-...``); never printed.
        base_url: Langfuse host, e.g. ``https://cloud.langfuse.com`` or ``http://localhost:3000``.
        trace_name: Name of the one trace each conversation produces.
        conversation_id: Session id of the conversation; generated per conversation when None.
        user_id: Langfuse user id of the caller, if known.
        tags: Trace tags.
        environment: Langfuse tracing environment (lowercase letters, digits, ``-``, ``_``).
        release: Release of the application, shown on every trace.
        pricing_file: TOML file that overrides or extends the default price table.
        timeout_s: Timeout of each request to Langfuse, in seconds.
        flush_timeout_s: Longest wait for the final flush when a conversation ends, in seconds.
    """

    enabled: bool = False
    public_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    base_url: str = DEFAULT_BASE_URL
    trace_name: str = DEFAULT_TRACE_NAME
    conversation_id: str | None = None
    user_id: str | None = None
    tags: tuple[str, ...] = ()
    environment: str | None = None
    release: str | None = None
    pricing_file: Path | None = None
    timeout_s: int = DEFAULT_TIMEOUT_S
    flush_timeout_s: float = DEFAULT_FLUSH_TIMEOUT_S

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TracingSettings:
        """Read the settings from ``env`` (default: ``os.environ``).

        Raises:
            SettingsError: A value is invalid, or tracing is enabled without both keys.
        """
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        enabled = parse_bool(ENABLE_TRACING, env.get(ENABLE_TRACING, ""))
        public_key, secret_key = get(LANGFUSE_PUBLIC_KEY), get(LANGFUSE_SECRET_KEY)
        if enabled:
            missing = [n for n, v in ((LANGFUSE_PUBLIC_KEY, public_key), (LANGFUSE_SECRET_KEY, secret_key)) if not v]
            if missing:
                raise SettingsError(
                    f"{ENABLE_TRACING} is true but {' and '.join(missing)} "
                    f"{'is' if len(missing) == 1 else 'are'} not set. Copy both keys from your Langfuse "
                    f"project (Settings > API Keys) into .env, or set {ENABLE_TRACING}=false."
                )
            if public_key and not public_key.startswith("pk-"):
                raise SettingsError(
                    f"{LANGFUSE_PUBLIC_KEY} should start with 'pk-' (got a value starting with "
                    f"{public_key[:3]!r}). Are the public and secret keys swapped?"
                )

        base_url_var = LANGFUSE_BASE_URL if get(LANGFUSE_BASE_URL) else LANGFUSE_HOST
        pricing_file = get(PRICING_FILE)
        return cls(
            enabled=enabled,
            public_key=public_key,
            secret_key=secret_key,
            base_url=parse_base_url(base_url_var, get(base_url_var) or DEFAULT_BASE_URL),
            trace_name=_bounded(LANGFUSE_TRACE_NAME, get(LANGFUSE_TRACE_NAME) or DEFAULT_TRACE_NAME),
            conversation_id=_bounded(CONVERSATION_ID, get(CONVERSATION_ID)),
            user_id=_bounded(LANGFUSE_USER_ID, get(LANGFUSE_USER_ID)),
            tags=tuple(_bounded(LANGFUSE_TAGS, t.strip()) for t in (get(LANGFUSE_TAGS) or "").split(",") if t.strip()),
            environment=parse_environment(get(LANGFUSE_TRACING_ENVIRONMENT)),
            release=_bounded(LANGFUSE_RELEASE, get(LANGFUSE_RELEASE)),
            pricing_file=Path(pricing_file).expanduser() if pricing_file else None,
            timeout_s=int(_positive(LANGFUSE_TIMEOUT, get(LANGFUSE_TIMEOUT), DEFAULT_TIMEOUT_S, integer=True)),
            flush_timeout_s=_positive(LANGFUSE_FLUSH_TIMEOUT, get(LANGFUSE_FLUSH_TIMEOUT), DEFAULT_FLUSH_TIMEOUT_S),
        )


def parse_bool(name: str, raw: str) -> bool:
    """Parse true/false/1/0/yes/no (any case; empty is false) or raise naming ``name``."""
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean. Use one of: true, false, 1, 0, yes, no.")


def parse_base_url(name: str, raw: str) -> str:
    """Validate a Langfuse host URL and drop any trailing slash."""
    url = raw.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+", url):
        raise SettingsError(
            f"{name}={raw!r} is not a URL. Use the host only, e.g. https://cloud.langfuse.com, "
            "https://us.cloud.langfuse.com or http://localhost:3000."
        )
    if "/api/public" in url:
        raise SettingsError(
            f"{name}={raw!r} contains an API path. Give the host only (e.g. {url.split('/api/public')[0]}); "
            "the SDK adds /api/public/otel itself."
        )
    return url


def parse_environment(raw: str | None) -> str | None:
    """Validate a Langfuse tracing environment name, as the SDK requires it."""
    if raw is None:
        return None
    if not _ENVIRONMENT_RE.match(raw):
        raise SettingsError(
            f"{LANGFUSE_TRACING_ENVIRONMENT}={raw!r} is not a valid Langfuse environment. Use up to 40 "
            "lowercase letters, digits, '-' or '_', not starting with 'langfuse' (e.g. production)."
        )
    return raw


@overload
def _bounded(name: str, value: str) -> str: ...
@overload
def _bounded(name: str, value: None) -> None: ...
@overload
def _bounded(name: str, value: str | None) -> str | None: ...
def _bounded(name: str, value: str | None) -> str | None:
    """Return ``value``, or raise when it is longer than Langfuse keeps."""
    if value is not None and len(value) > _MAX_ATTRIBUTE_CHARS:
        raise SettingsError(f"{name} is {len(value)} characters long; Langfuse keeps at most {_MAX_ATTRIBUTE_CHARS}.")
    return value


def _positive(name: str, raw: str | None, default: float, *, integer: bool = False) -> float:
    if raw is None:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "a whole number of seconds" if integer else "a number of seconds"
        raise SettingsError(f"{name}={raw!r} is not {kind}.") from None
    if value <= 0:
        raise SettingsError(f"{name}={raw!r} must be greater than 0.")
    return value
