"""Langfuse-native tracing for Pipecat voice agents.

One conversation becomes one Langfuse trace, one tree: a span per turn, with a generation per unit
of STT, LLM, TTS or speech-to-speech work under it: its model, start and end, text, TTFB, integer ``usage_details``
and ``cost_details`` in USD, and where its price came from. Tool calls are ``tool`` observations,
and service errors mark the observation they hit. Costs are computed locally from a price table,
so STT and TTS are priced too. With Pipecat's tracing on (``enable_tracing=True``) and the tracer
attached to the worker, Pipecat's turn spans are the turns and its ``llm`` spans the LLM
generations; its ``stt`` / ``tts`` spans are folded into the generations, so every call appears
and counts once. After a barge-in a turn's output is what the caller heard. Latencies
(voice-to-voice, TTFB per service, endpointing) are Langfuse scores, per turn and per call.
Tracing never blocks or breaks the call: observations go through the Langfuse SDK's background
exporter, scores through a sender of their own, and the final flush runs in a worker thread,
bounded by ``LANGFUSE_FLUSH_TIMEOUT``.

Configuration comes from environment variables, read by :meth:`TracingSettings.from_env` and
documented in :mod:`pipecat_langfuse.settings`: ``ENABLE_TRACING=true``, ``LANGFUSE_PUBLIC_KEY``,
``LANGFUSE_SECRET_KEY`` and ``LANGFUSE_BASE_URL`` send traces to Langfuse. With tracing off,
nothing leaves the process and the tracer only records the end-of-call summary. What leaves it
otherwise is governed by ``LANGFUSE_CAPTURE_CONTENT`` (no words said), ``LANGFUSE_SAMPLE_RATE``
(whole conversations), ``LANGFUSE_COSTING`` (who prices) and ``LANGFUSE_RECORD_AUDIO`` (the
call's audio as media).

Usage (Pipecat 1.x, Langfuse SDK 5)::

    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.workers.runner import WorkerRunner

    from pipecat_langfuse import TracingSettings, VoiceTracer


    async def run_traced(pipeline: Pipeline) -> None:
        tracer = VoiceTracer(TracingSettings.from_env())  # one tracer per conversation
        worker = PipelineWorker(
            pipeline,
            params=PipelineParams(enable_metrics=True, enable_usage_metrics=True),
            enable_tracing=tracer.enabled,  # Pipecat's turn spans become the trace's turns
            conversation_id=tracer.conversation_id,
        )
        tracer.attach(worker)  # priced generations under Pipecat's turns: one tree
        runner = WorkerRunner()
        await runner.add_workers(worker)
        async with tracer.conversation():  # one trace; flushed off the event loop on exit
            await runner.run()
        print(tracer.summary().render())

``enable_metrics`` and ``enable_usage_metrics`` must be on: the generations are built from
Pipecat's metrics. ``examples/quickstart.py`` in the repository is a complete bot.

Public API (``__all__``):

* :class:`VoiceTracer`: traces one conversation. ``attach(worker)`` follows a worker (give it
  ``enable_tracing=tracer.enabled`` and ``conversation_id``; ``flow_manager=`` names the Pipecat
  Flows node of each turn); ``conversation()`` wraps the run; ``summary()`` tells
  what the call did and cost; ``client`` is the Langfuse client (None when tracing is off).
  ``VoiceTracer(settings, runner_args=runner_args)`` takes the session id from the call (phone
  call id, WebRTC peer); ``prompt=`` links LLM generations to a Langfuse prompt; ``mask=`` redacts
  every string of every input, output and metadata value before it leaves the process.
* :class:`TracingSettings`: the configuration, frozen; ``TracingSettings.from_env()`` reads it.
* :class:`SettingsError`: a configuration value is missing or invalid (a ``ValueError``).
* :class:`PriceTable`: model prices, the built-in table plus ``PRICING_FILE``
  (``PriceTable.load()``); pass your own as ``VoiceTracer(prices=...)``.
* :class:`PricingError`: a price file is missing or malformed (a ``ValueError``).
* :class:`ConversationSummary`: turns, usage and cost of a conversation; ``render()`` is the
  end-of-call table.
* :class:`TurnSummary`: one turn of the summary: user and bot text, voice-to-voice latency,
  whether it was interrupted.
* :class:`ModelUsage`: usage, number of calls and cost of one model over the conversation.
* :class:`SpanCounts`: how many of the conversation's spans were sent, spooled, dropped or pending.
* ``__version__``: the version of this package.

The spool of spans that failed to reach Langfuse is re-sent with :mod:`pipecat_langfuse.spool`.
"""

from pipecat_langfuse.pricing import PriceTable, PricingError
from pipecat_langfuse.settings import SettingsError, TracingSettings
from pipecat_langfuse.summary import ConversationSummary, ModelUsage, SpanCounts, TurnSummary
from pipecat_langfuse.tracer import VoiceTracer
from pipecat_langfuse.version import __version__

__all__ = [
    "ConversationSummary",
    "ModelUsage",
    "PriceTable",
    "PricingError",
    "SettingsError",
    "SpanCounts",
    "TracingSettings",
    "TurnSummary",
    "VoiceTracer",
    "__version__",
]
