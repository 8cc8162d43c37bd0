"""The Pipecat and Langfuse releases this library supports, as requirement strings.

They must agree with the ``dependencies`` of ``pyproject.toml`` (a test checks it). The lowest
Pipecat is 1.12, the first with a public ``AIService.settings`` and with ``observe_every_push``
on ``BaseObserver``: before it the keyword is silently ignored, so the observer sees a frame
again each time a processor forwards it and books one service's metrics on the next ones too.
"""

_instruments = ("pipecat-ai >= 1.12, < 2",)
"""The Pipecat releases the observer works with."""

_supports_langfuse = ("langfuse >= 5, < 6",)
"""The Langfuse SDK releases the exporter works with."""
