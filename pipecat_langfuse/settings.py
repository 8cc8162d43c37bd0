"""Tracing configuration, resolved once from the environment into a frozen object.

Every environment variable this package reads is named here, once, as a constant documented
right below it (what it means, who reads it, its default). In this package only
:meth:`TracingSettings.from_env` reads them, from ``os.environ`` or the mapping it is given, and
it never reads a ``.env`` file (load one first, e.g. with python-dotenv). A blank value counts as
unset. The Langfuse SDK reads some of the same names (and its other ``LANGFUSE_*`` variables)
from ``os.environ`` for what the tracer does not pass it.

Precedence: explicit argument > environment > default. A bad value raises
:class:`SettingsError` with a message that names the variable and the fix.

Example::

    settings = TracingSettings.from_env()  # from os.environ
    settings = TracingSettings.from_env({"ENABLE_TRACING": "false"})  # from a mapping
    settings = TracingSettings(enabled=False)  # in code, without the environment
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

ENABLE_TRACING = "ENABLE_TRACING"
""".. envvar:: ENABLE_TRACING

Send traces to Langfuse: ``true``, ``false``, ``1``, ``0``, ``yes`` or ``no``, in any case; anything
else raises :class:`SettingsError`. When false, :class:`~pipecat_langfuse.VoiceTracer` builds no
Langfuse client, installs no OpenTelemetry provider and sends nothing; it only records the summary.

Read by :meth:`TracingSettings.from_env` into :attr:`TracingSettings.enabled`.

Default: ``false`` (also when unset or blank).
"""

LANGFUSE_PUBLIC_KEY = "LANGFUSE_PUBLIC_KEY"
""".. envvar:: LANGFUSE_PUBLIC_KEY

Public key of the Langfuse project (``pk-lf-...``; Langfuse > Settings > API Keys). Required when
:envvar:`ENABLE_TRACING` is true, and must then start with ``pk-``.

Read by :meth:`TracingSettings.from_env` into :attr:`TracingSettings.public_key`, which the tracer
passes to the Langfuse client. The Langfuse SDK has a variable of the same name.

Default: none.
"""

LANGFUSE_SECRET_KEY = "LANGFUSE_SECRET_KEY"
""".. envvar:: LANGFUSE_SECRET_KEY

Secret key of the same Langfuse project (``sk-lf-...``). Required when :envvar:`ENABLE_TRACING` is
true. It is left out of ``repr(TracingSettings)`` and never logged.

Read by :meth:`TracingSettings.from_env` into :attr:`TracingSettings.secret_key`, which the tracer
passes to the Langfuse client. The Langfuse SDK has a variable of the same name.

Default: none.
"""

LANGFUSE_BASE_URL = "LANGFUSE_BASE_URL"
""".. envvar:: LANGFUSE_BASE_URL

Langfuse host, without a path: ``https://cloud.langfuse.com`` (EU), ``https://us.cloud.langfuse.com``,
or a self-hosted ``http://localhost:3000``. A trailing slash is dropped; a value that is not an
``http(s)://`` URL, or that contains ``/api/public``, raises :class:`SettingsError`.

Read by :meth:`TracingSettings.from_env` into :attr:`TracingSettings.base_url`, which the tracer
passes to the Langfuse client. The Langfuse SDK has a variable of the same name.

Default: ``https://cloud.langfuse.com`` (:data:`DEFAULT_BASE_URL`), or :envvar:`LANGFUSE_HOST` if
that is set.
"""

LANGFUSE_HOST = "LANGFUSE_HOST"
""".. envvar:: LANGFUSE_HOST

Older name of :envvar:`LANGFUSE_BASE_URL`, still accepted because many guides use it. Same format
and checks.

Read by :meth:`TracingSettings.from_env` only when :envvar:`LANGFUSE_BASE_URL` is unset or blank.

Default: none.
"""

LANGFUSE_TRACE_NAME = "LANGFUSE_TRACE_NAME"
""".. envvar:: LANGFUSE_TRACE_NAME

Name of the one trace (and of its root span) each conversation produces. At most 200 characters,
the longest trace attribute Langfuse keeps.

Read by :meth:`TracingSettings.from_env` into :attr:`TracingSettings.trace_name`.

Default: ``voice-conversation`` (:data:`DEFAULT_TRACE_NAME`).
"""

LANGFUSE_USER_ID = "LANGFUSE_USER_ID"
""".. envvar:: LANGFUSE_USER_ID

Langfuse user id of the caller, set on every span of the conversation. At most 200 characters.
Per-call values are better passed in code: ``dataclasses.replace(settings, user_id=...)``.

Read by :meth:`TracingSettings.from_env` into :attr:`TracingSettings.user_id`.

Default: none (no user).
"""

LANGFUSE_TAGS = "LANGFUSE_TAGS"
""".. envvar:: LANGFUSE_TAGS

Comma-separated trace tags, e.g. ``prod,eu``. Spaces around each tag are dropped, and so are empty
tags; each tag has at most 200 characters. ``VoiceTracer(tags=...)`` adds more per conversation.

Read by :meth:`TracingSettings.from_env` into :attr:`TracingSettings.tags`.

Default: no tags.
"""

LANGFUSE_TRACING_ENVIRONMENT = "LANGFUSE_TRACING_ENVIRONMENT"
""".. envvar:: LANGFUSE_TRACING_ENVIRONMENT

Langfuse tracing environment, e.g. ``production`` or ``staging``: up to 40 lowercase letters,
digits, ``-`` or ``_``, not starting with ``langfuse`` (the SDK's rule); anything else raises
:class:`SettingsError`.

Read by :meth:`TracingSettings.from_env` into :attr:`TracingSettings.environment`, which the tracer
passes to the Langfuse client. The Langfuse SDK has a variable of the same name.

Default: none (Langfuse shows ``default``).
"""

LANGFUSE_RELEASE = "LANGFUSE_RELEASE"
""".. envvar:: LANGFUSE_RELEASE

The agent's version, e.g. a git sha or an image tag: the Langfuse release of every trace, so
latency and cost can be compared between versions. At most 200 characters.

Read by :meth:`TracingSettings.from_env` into :attr:`TracingSettings.release`, which the tracer
passes to the Langfuse client. The Langfuse SDK has a variable of the same name.

Default: the commit a CI or deploy platform sets in the environment (see :data:`RELEASE_VARIABLES`),
else none.
"""

try:  # the SDK's own list (langfuse 5), so the release is the one the SDK would pick
    from langfuse._utils.environment import common_release_envs as _sdk_release_envs
except ImportError:  # pragma: no cover - an SDK without it
    _sdk_release_envs = ["RENDER_GIT_COMMIT", "CI_COMMIT_SHA", "CIRCLE_SHA1", "SOURCE_VERSION", "GITHUB_SHA"]

RELEASE_VARIABLES: tuple[str, ...] = (LANGFUSE_RELEASE, *_sdk_release_envs)
"""Where the release comes from, first set wins: :envvar:`LANGFUSE_RELEASE`, then the commit variables
of CI and deploy platforms that the Langfuse SDK reads (``RENDER_GIT_COMMIT`` on Render,
``SOURCE_VERSION`` on Heroku, ``GITHUB_SHA``, ``CI_COMMIT_SHA``…)."""

LANGFUSE_TIMEOUT = "LANGFUSE_TIMEOUT"
""".. envvar:: LANGFUSE_TIMEOUT

Timeout of each HTTP request to Langfuse, in whole seconds, greater than 0.

Read by :meth:`TracingSettings.from_env` into :attr:`TracingSettings.timeout_s`, which the tracer
passes to the Langfuse client; ``uv run test_langfuse`` bounds its checks with it too. The Langfuse
SDK has a variable of the same name.

Default: ``5`` (:data:`DEFAULT_TIMEOUT_S`).
"""

LANGFUSE_FLUSH_TIMEOUT = "LANGFUSE_FLUSH_TIMEOUT"
""".. envvar:: LANGFUSE_FLUSH_TIMEOUT

Longest wait, in seconds (a number greater than 0), for the final flush when a conversation ends.
The flush runs in a worker thread; past this time the tracer gives up with a warning and the call
ends anyway. Not a Langfuse SDK variable: this package's own.

Read by :meth:`TracingSettings.from_env` into :attr:`TracingSettings.flush_timeout_s`, used by
:meth:`VoiceTracer.flush <pipecat_langfuse.VoiceTracer.flush>` when ``tracer.conversation()`` exits.

Default: ``10`` (:data:`DEFAULT_FLUSH_TIMEOUT_S`).
"""

CONVERSATION_ID = "CONVERSATION_ID"
""".. envvar:: CONVERSATION_ID

Conversation id: the Langfuse session id, Pipecat's ``conversation_id``, and the seed of the trace
id. At most 200 characters. Every tracer built from these settings uses it, so it suits a process
that handles one call; a server handling many calls passes ``VoiceTracer(conversation_id=...)``
per call, or leaves it unset.

Read by :meth:`TracingSettings.from_env` into :attr:`TracingSettings.conversation_id`.

Default: none (each :class:`~pipecat_langfuse.VoiceTracer` makes a new UUID).
"""

PRICING_FILE = "PRICING_FILE"
""".. envvar:: PRICING_FILE

Path (``~`` expanded) of a TOML price file that overrides or extends the built-in price table; the
schema is in :mod:`pipecat_langfuse.pricing`. A missing or malformed file raises
:class:`~pipecat_langfuse.PricingError` when the table is loaded.

Read by :meth:`TracingSettings.from_env` into :attr:`TracingSettings.pricing_file`, loaded by
:meth:`PriceTable.load <pipecat_langfuse.PriceTable.load>` when a
:class:`~pipecat_langfuse.VoiceTracer` is given no ``prices``.

Default: none (the built-in prices only).
"""

LANGFUSE_SPOOL_DIR = "LANGFUSE_SPOOL_DIR"
""".. envvar:: LANGFUSE_SPOOL_DIR

Folder where batches of spans that Langfuse did not take (connection refused, timeout, HTTP 5xx,
429, and 401/403 so that fixing the keys recovers them) are kept as OTLP protobuf files, one
sub-folder per Langfuse host, until they are re-sent: at the next start of ``uv run bot`` and by
``uv run test_langfuse --replay``. ``~`` is expanded; the folder is created on the first failed
export. ``off`` (or ``none``, ``false``, ``0``) disables spooling: failed batches are dropped and
counted. In a container, point it at a mounted volume, or the spool does not outlive the container.

Read by :meth:`TracingSettings.from_env` into :attr:`TracingSettings.spool_dir`.

Default: the user's cache folder, ``$XDG_CACHE_HOME/pipecat-langfuse/spool`` (``~/.cache/...`` on
Linux, ``~/Library/Caches/...`` on macOS, ``%LOCALAPPDATA%\\...`` on Windows); see
:func:`default_spool_dir`.
"""

LANGFUSE_SPOOL_MAX_MB = "LANGFUSE_SPOOL_MAX_MB"
""".. envvar:: LANGFUSE_SPOOL_MAX_MB

Bound of the total size of one host's spool folder, in megabytes (a number greater than 0). A new
batch that does not fit evicts the oldest files (with one warning, and the evicted spans counted as
dropped); a single batch larger than the bound is dropped.

Read by :meth:`TracingSettings.from_env` into :attr:`TracingSettings.spool_max_mb`.

Default: ``100`` (:data:`DEFAULT_SPOOL_MAX_MB`), about 50,000 spans of a voice call.
"""

LANGFUSE_CAPTURE_CONTENT = "LANGFUSE_CAPTURE_CONTENT"
""".. envvar:: LANGFUSE_CAPTURE_CONTENT

Whether traces carry what was said: ``false`` keeps transcripts, LLM messages and replies, text
spoken, and tool arguments and results out of every span (Pipecat's too); usage, cost, timing,
levels and scores stay. Same booleans as :envvar:`ENABLE_TRACING`.

Read by :meth:`TracingSettings.from_env` into :attr:`TracingSettings.capture_content`.

Default: ``true``.
"""

LANGFUSE_SAMPLE_RATE = "LANGFUSE_SAMPLE_RATE"
""".. envvar:: LANGFUSE_SAMPLE_RATE

Share of conversations traced, from ``0`` to ``1``. The decision is the trace id's (derived from the
conversation id), so a conversation is traced whole or not at all, Pipecat's spans and the
scores included. The end-of-call summary is complete either way. The Langfuse SDK has a variable
of the same name; like it, the rate is fixed per process and key by the first client.

Read by :meth:`TracingSettings.from_env` into :attr:`TracingSettings.sample_rate`.

Default: ``1`` (every conversation).
"""

LANGFUSE_COSTING = "LANGFUSE_COSTING"
""".. envvar:: LANGFUSE_COSTING

Who prices the generations in Langfuse: ``client`` (the tracer sends ``cost_details`` from its price
table) or ``server`` (it sends usage only, and Langfuse prices it with its model definitions: run
``uv run register_models`` first, so Langfuse has the same prices). Both give the same cost.

Read by :meth:`TracingSettings.from_env` into :attr:`TracingSettings.costing`.

Default: ``client``.
"""
LANGFUSE_RECORD_AUDIO = "LANGFUSE_RECORD_AUDIO"
""".. envvar:: LANGFUSE_RECORD_AUDIO

Attach the call's audio to its trace as Langfuse media (WAV): each turn's caller and bot audio
(``metadata.caller_audio``, ``metadata.bot_audio``) and the whole call in stereo on the
conversation (``metadata.call_audio``: caller left, bot right). The SDK uploads it in the
background. Ignored when :envvar:`LANGFUSE_CAPTURE_CONTENT` is false. Same booleans as
:envvar:`ENABLE_TRACING`.

Read by :meth:`TracingSettings.from_env` into :attr:`TracingSettings.record_audio`.

Default: ``false``.
"""

LANGFUSE_AUDIO_MAX_MB = "LANGFUSE_AUDIO_MAX_MB"
""".. envvar:: LANGFUSE_AUDIO_MAX_MB

Most audio kept in memory per call, in megabytes (a number greater than 0); the rest of a longer
call is not recorded (one warning, and ``audio_truncated`` in the conversation's metadata). A
minute of a call is about 4 MB at 16 kHz (the caller and the bot, kept per turn and whole).

Read by :meth:`TracingSettings.from_env` into :attr:`TracingSettings.audio_max_mb`.

Default: ``64``.
"""

COSTING_MODES = ("client", "server")
"""The values of :envvar:`LANGFUSE_COSTING`."""

DEFAULT_BASE_URL = "https://cloud.langfuse.com"
"""Langfuse host used when neither :envvar:`LANGFUSE_BASE_URL` nor :envvar:`LANGFUSE_HOST` is set."""
DEFAULT_TRACE_NAME = "voice-conversation"
"""Trace name used when :envvar:`LANGFUSE_TRACE_NAME` is not set."""
DEFAULT_TIMEOUT_S = 5
"""Request timeout in seconds used when :envvar:`LANGFUSE_TIMEOUT` is not set."""
DEFAULT_FLUSH_TIMEOUT_S = 10.0
"""Final flush limit in seconds used when :envvar:`LANGFUSE_FLUSH_TIMEOUT` is not set."""
DEFAULT_SPOOL_MAX_MB = 100.0
"""Spool bound in megabytes used when :envvar:`LANGFUSE_SPOOL_MAX_MB` is not set."""
SPOOL_OFF_VALUES = frozenset({"off", "none", "false", "0", "no"})
"""Values of :envvar:`LANGFUSE_SPOOL_DIR` that disable spooling."""


def default_spool_dir() -> Path:
    r"""The default spool folder: ``pipecat-langfuse/spool`` in the user's cache folder.

    The user's cache folder is per user, outside any source tree, kept across runs and reboots,
    and meant for data an application can lose: exactly what a spool is. The working directory is
    not a good default: it changes with how the bot is started (systemd starts in ``/``), and a
    source tree should not collect trace data.

    Returns:
        ``$XDG_CACHE_HOME/pipecat-langfuse/spool`` or ``~/.cache/pipecat-langfuse/spool`` (Linux and
        others), ``~/Library/Caches/pipecat-langfuse/spool`` (macOS),
        ``%LOCALAPPDATA%\pipecat-langfuse\spool`` (Windows).
    """
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
        base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "pipecat-langfuse" / "spool"


_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no", ""})
_MAX_ATTRIBUTE_CHARS = 200  # Langfuse drops propagated trace attributes longer than this.
_ENVIRONMENT_RE = re.compile(r"^(?!langfuse)[a-z0-9_-]{1,40}$")


class SettingsError(ValueError):
    """A configuration value is missing or invalid.

    The message names the variable and how to fix it, so it can be shown to the user as is.
    """


@dataclass(frozen=True)
class TracingSettings:
    """Everything the tracer needs, resolved once.

    Build it with :meth:`from_env`, or directly in code (no validation then). Frozen: derive a
    variant with :func:`dataclasses.replace`.

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
        release: The agent's version, the Langfuse release of every trace (see :data:`RELEASE_VARIABLES`).
        release_source: The environment variable the release came from, if it came from one.
        pricing_file: TOML file that overrides or extends the default price table.
        timeout_s: Timeout of each request to Langfuse, in seconds.
        flush_timeout_s: Longest wait for the final flush when a conversation ends, in seconds.
        spool_dir: Folder of the spool of failed exports (one sub-folder per host); None disables spooling.
        spool_max_mb: Bound of one host's spool folder, in megabytes.
        capture_content: Whether traces carry transcripts, messages, spoken text and tool data.
        sample_rate: Share of conversations traced, 0 to 1 (whole conversations).
        costing: ``client`` (send ``cost_details``) or ``server`` (usage only; Langfuse prices it).
        record_audio: Attach the call's audio (per turn, and the whole call in stereo) as media.
        audio_max_mb: Most audio kept in memory per call, in megabytes.
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
    release_source: str | None = None
    pricing_file: Path | None = None
    timeout_s: int = DEFAULT_TIMEOUT_S
    flush_timeout_s: float = DEFAULT_FLUSH_TIMEOUT_S
    spool_dir: Path | None = field(default_factory=default_spool_dir)
    spool_max_mb: float = DEFAULT_SPOOL_MAX_MB
    capture_content: bool = True
    sample_rate: float = 1.0
    costing: str = "client"
    record_audio: bool = False
    audio_max_mb: float = 64.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TracingSettings:
        """Read and validate the settings from the environment variables of this module.

        Args:
            env: Where to read the variables; ``os.environ`` when None. Blank values count as unset.

        Returns:
            The settings, with defaults for what is unset.

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

        release_source = next((name for name in RELEASE_VARIABLES if get(name)), None)
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
            release=_bounded(release_source, get(release_source)) if release_source else None,
            release_source=release_source,
            pricing_file=Path(pricing_file).expanduser() if pricing_file else None,
            timeout_s=int(_positive(LANGFUSE_TIMEOUT, get(LANGFUSE_TIMEOUT), DEFAULT_TIMEOUT_S, integer=True)),
            flush_timeout_s=_positive(LANGFUSE_FLUSH_TIMEOUT, get(LANGFUSE_FLUSH_TIMEOUT), DEFAULT_FLUSH_TIMEOUT_S),
            spool_dir=parse_spool_dir(get(LANGFUSE_SPOOL_DIR)),
            spool_max_mb=_positive(LANGFUSE_SPOOL_MAX_MB, get(LANGFUSE_SPOOL_MAX_MB), DEFAULT_SPOOL_MAX_MB),
            capture_content=parse_bool(LANGFUSE_CAPTURE_CONTENT, get(LANGFUSE_CAPTURE_CONTENT) or "true"),
            sample_rate=parse_sample_rate(get(LANGFUSE_SAMPLE_RATE)),
            costing=parse_costing(get(LANGFUSE_COSTING)),
            record_audio=parse_bool(LANGFUSE_RECORD_AUDIO, get(LANGFUSE_RECORD_AUDIO) or "false"),
            audio_max_mb=_positive(LANGFUSE_AUDIO_MAX_MB, get(LANGFUSE_AUDIO_MAX_MB), 64.0),
        )


def parse_bool(name: str, raw: str) -> bool:
    """Parse a boolean environment value.

    Args:
        name: The variable's name, for the error message.
        raw: Its value: ``true``, ``false``, ``1``, ``0``, ``yes`` or ``no``, in any case; empty is false.

    Returns:
        The boolean.

    Raises:
        SettingsError: ``raw`` is none of the accepted values.
    """
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean. Use one of: true, false, 1, 0, yes, no.")


def parse_base_url(name: str, raw: str) -> str:
    """Validate a Langfuse host URL.

    Args:
        name: The variable's name, for the error message.
        raw: The URL, e.g. ``https://cloud.langfuse.com``.

    Returns:
        The URL without surrounding spaces or a trailing slash.

    Raises:
        SettingsError: ``raw`` is not an ``http(s)://`` URL, or contains the ``/api/public`` path.
    """
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
    """Validate a Langfuse tracing environment name, as the SDK requires it.

    Args:
        raw: The name, or None when unset.

    Returns:
        ``raw`` unchanged.

    Raises:
        SettingsError: ``raw`` is not up to 40 lowercase letters, digits, ``-`` or ``_``, or starts
            with ``langfuse``.
    """
    if raw is None:
        return None
    if not _ENVIRONMENT_RE.match(raw):
        raise SettingsError(
            f"{LANGFUSE_TRACING_ENVIRONMENT}={raw!r} is not a valid Langfuse environment. Use up to 40 "
            "lowercase letters, digits, '-' or '_', not starting with 'langfuse' (e.g. production)."
        )
    return raw


def parse_spool_dir(raw: str | None) -> Path | None:
    """Resolve :envvar:`LANGFUSE_SPOOL_DIR`.

    Args:
        raw: The value, or None when unset or blank.

    Returns:
        :func:`default_spool_dir` when unset, None when it is ``off`` (or ``none``, ``false``,
        ``0``, ``no``), else the path with ``~`` expanded.
    """
    if raw is None:
        return default_spool_dir()
    if raw.strip().lower() in SPOOL_OFF_VALUES:
        return None
    return Path(raw.strip()).expanduser()


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


def parse_costing(raw: str | None) -> str:
    """Parse :envvar:`LANGFUSE_COSTING`: ``client`` or ``server``, in any case; ``client`` when unset."""
    value = (raw or "client").strip().lower()
    if value not in COSTING_MODES:
        raise SettingsError(
            f"{LANGFUSE_COSTING}={raw!r} is not a costing mode: use client (the tracer sends costs) or "
            "server (Langfuse prices the usage; run `uv run register_models` first)."
        )
    return value


def parse_sample_rate(raw: str | None) -> float:
    """Parse :envvar:`LANGFUSE_SAMPLE_RATE`: a number from 0 to 1; 1 when unset."""
    if raw is None:
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise SettingsError(
            f"{LANGFUSE_SAMPLE_RATE}={raw!r} is not a share of conversations: use a number from 0 to 1 "
            "(0.1 traces one conversation in ten)."
        )
    return value


def _positive(name: str, raw: str | None, default: float, *, integer: bool = False) -> float:
    if raw is None:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        unit = "megabytes" if name.endswith("_MB") else "seconds"
        kind = f"a whole number of {unit}" if integer else f"a number of {unit}"
        raise SettingsError(f"{name}={raw!r} is not {kind}.") from None
    if value <= 0:
        raise SettingsError(f"{name}={raw!r} must be greater than 0.")
    return value
