"""What every test shares: an isolated environment, markers by folder, and the local Langfuse.

Nothing imports this module: helpers live in ``tests/support/``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.env import is_isolated
from tests.support.langfuse_server import LocalLangfuse, StartLocalLangfuse

TESTS = Path(__file__).resolve().parent
FOLDER_MARKERS = {"unit": "unit", "integration": "integration", "examples": "examples", "packaging": "packaging"}
"""The marker of every test in ``tests/<folder>/`` (registered in pyproject.toml)."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = item.path.resolve()
        folder = path.relative_to(TESTS).parts[0] if path.is_relative_to(TESTS) else None
        if folder in FOLDER_MARKERS:
            item.add_marker(FOLDER_MARKERS[folder])


@pytest.fixture(scope="session", autouse=True)
def _isolated_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Isolate module- and session-scoped fixtures too (they set up before function-scoped ones).

    The user's cache folder, where the tracing spool lives by default, becomes a folder of this
    session, for in-process tracers and subprocesses alike; uv keeps its own (warm) cache.
    """
    with pytest.MonkeyPatch.context() as monkeypatch:
        _isolate(monkeypatch)
        monkeypatch.setenv("UV_CACHE_DIR", os.environ.get("UV_CACHE_DIR") or str(_user_cache() / "uv"))
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("user-cache")))
        yield


def _user_cache() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    _isolate(monkeypatch)


def _isolate(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if is_isolated(name):
            monkeypatch.delenv(name)


def _serve() -> Iterator[StartLocalLangfuse]:
    started: list[LocalLangfuse] = []

    def start(**kwargs: Any) -> LocalLangfuse:
        server = LocalLangfuse(**kwargs).start()
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def local_langfuse() -> Iterator[StartLocalLangfuse]:
    """Start local Langfuse servers for one test: ``local_langfuse(public_key=..., hang_s=...)``."""
    yield from _serve()


@pytest.fixture(scope="module")
def module_local_langfuse() -> Iterator[StartLocalLangfuse]:
    """The same, for a module that runs one expensive call and asserts on it in many tests."""
    yield from _serve()
