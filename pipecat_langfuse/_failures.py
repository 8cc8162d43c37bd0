"""One place that reports tracing failures: loud once, then counted, never with variable values."""

from __future__ import annotations

import traceback

from loguru import logger


class FailureLog:
    """Counts the tracing failures of one conversation and reports them.

    The first failure is logged at WARNING with what it means for the call; later ones only
    at DEBUG. Tracebacks are logged as plain text: loguru's ``diagnose`` mode (on by default)
    would print the values of local variables, and those can hold the Langfuse secret key.
    """

    def __init__(self) -> None:
        self.count = 0

    def report(self, action: str, exc: BaseException) -> None:
        """Record one failure while doing ``action`` (e.g. ``"ending a turn span"``); never raises."""
        self.count += 1
        if self.count == 1:
            logger.warning(
                f"Voice tracing failed while {action}: {exc!r}. The call goes on; this conversation's "
                "trace may be incomplete, and later tracing errors are only counted "
                "(set LOG_LEVEL=DEBUG for tracebacks)."
            )
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        logger.debug(f"Tracing failure while {action}:\n{trace}")
