"""Capture what the library logs through loguru."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from loguru import logger


@contextmanager
def captured_logs(level: str = "WARNING") -> Iterator[list[str]]:
    """Messages logged at ``level`` or above while the block runs."""
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(m.record["message"]), level=level)
    try:
        yield messages
    finally:
        logger.remove(sink)
