"""`uv run bot`: a Pipecat voice bot traced into Langfuse.

With DEEPGRAM_API_KEY, OPENAI_API_KEY and CARTESIA_API_KEY set it talks to you in the
browser (Pipecat's development runner, SmallWebRTC on localhost). Otherwise, or with
``--offline``, it plays a scripted caller through the same pipeline with offline services,
priced as the live models they stand in for, and prints a summary table.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from dotenv import find_dotenv, load_dotenv
from loguru import logger
from pipecat.frames.frames import LLMRunFrame
from pipecat.observers.base_observer import BaseObserver
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.runner.types import RunnerArguments
from pipecat.services.llm_service import LLMService
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService
from pipecat.transports.base_transport import BaseTransport, TransportParams
from pipecat.workers.runner import WorkerRunner

from app.config import SYSTEM_PROMPT, BotSettings
from pipecat_langfuse import ConversationSummary, PriceTable, PricingError, SettingsError, TracingSettings, VoiceTracer

if TYPE_CHECKING:
    from app.offline import OfflineServices

__all__ = ["bot", "main", "run_conversation", "run_offline", "run_offline_call"]

LOG_LEVEL = "LOG_LEVEL"
SIMULATED_TAG = "simulated"
EXIT_CONFIG_ERROR = 2


@dataclass(frozen=True)
class _Config:
    tracing: TracingSettings
    bot: BotSettings
    prices: PriceTable


@lru_cache(maxsize=1)
def _config() -> _Config:
    """The configuration, resolved once per process (raises SettingsError / PricingError)."""
    tracing = TracingSettings.from_env()
    return _Config(tracing=tracing, bot=BotSettings.from_env(), prices=PriceTable.load(tracing.pricing_file))


async def run_conversation(
    *,
    transport: BaseTransport,
    stt: STTService,
    llm: LLMService[Any],
    tts: TTSService,
    tracer: VoiceTracer,
    user_params: LLMUserAggregatorParams | None = None,
    live: bool = False,
    handle_sigint: bool = False,
    observers: Sequence[BaseObserver] = (),
) -> ConversationSummary:
    """Run one conversation through ``transport`` and return its summary.

    The pipeline is STT -> LLM -> TTS with a shared LLM context; the worker gets the
    tracer's observer and Pipecat's own tracing, and runs inside ``tracer.conversation()``
    so every span of the call lands in one Langfuse trace.
    """
    context = LLMContext(messages=[{"role": "system", "content": SYSTEM_PROMPT}])
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(context, user_params=user_params)
    pipeline = Pipeline([transport.input(), stt, user_aggregator, llm, tts, transport.output(), assistant_aggregator])
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(enable_metrics=True, enable_usage_metrics=True, send_initial_empty_metrics=False),
        observers=[*tracer.observers, *observers],
        enable_tracing=tracer.enabled,
        conversation_id=tracer.conversation_id,
        enable_rtvi=live,
        idle_timeout_secs=300 if live else None,
    )
    runner = WorkerRunner(handle_sigint=handle_sigint)

    if live:

        @transport.event_handler("on_client_connected")  # type: ignore[untyped-decorator]  # untyped in Pipecat
        async def on_client_connected(_transport: BaseTransport, _client: object) -> None:
            context.add_message({"role": "developer", "content": "Greet the caller in one short sentence."})
            await worker.queue_frames([LLMRunFrame()])

        @transport.event_handler("on_client_disconnected")  # type: ignore[untyped-decorator]  # untyped in Pipecat
        async def on_client_disconnected(_transport: BaseTransport, _client: object) -> None:
            await runner.cancel()

    await runner.add_workers(worker)
    async with tracer.conversation():
        await runner.run()
    return tracer.summary()


async def run_offline(config: _Config, *, quick: bool = False) -> ConversationSummary:
    """Play the scripted caller through offline services and return the summary."""
    from app.offline import DEFAULT_SCRIPT, QUICK_SCRIPT, create_offline_services

    services = create_offline_services(QUICK_SCRIPT if quick else DEFAULT_SCRIPT)
    tracer = VoiceTracer(config.tracing, prices=config.prices, tags=(SIMULATED_TAG,), metadata={"mode": "offline"})
    return await run_offline_call(services, tracer)


async def run_offline_call(
    services: OfflineServices, tracer: VoiceTracer, *, observers: Sequence[BaseObserver] = ()
) -> ConversationSummary:
    """Run the call of ``services`` (transport, offline services, turn strategies) with ``tracer``."""
    return await run_conversation(
        transport=services.transport,
        stt=services.stt,
        llm=services.llm,
        tts=services.tts,
        tracer=tracer,
        user_params=services.user_params,
        observers=observers,
    )


async def bot(runner_args: RunnerArguments) -> None:
    """Entry point of Pipecat's development runner: one live session in the browser."""
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.runner.utils import create_transport

    from app.live import create_live_services

    config = _config()
    transport = await create_transport(
        runner_args, {"webrtc": lambda: TransportParams(audio_in_enabled=True, audio_out_enabled=True)}
    )
    stt, llm, tts = create_live_services(config.bot)
    tracer = VoiceTracer(config.tracing, prices=config.prices, metadata={"mode": "live"})
    summary = await run_conversation(
        transport=transport,
        stt=stt,
        llm=llm,
        tts=tts,
        tracer=tracer,
        user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer()),
        live=True,
        handle_sigint=runner_args.handle_sigint,
    )
    logger.info(f"Call ended.\n{summary.render()}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bot: live when all provider keys are set, else the offline scripted call."""
    parser = argparse.ArgumentParser(
        prog="bot",
        description="Pipecat voice bot traced into Langfuse. Runs offline unless all provider keys are set.",
        epilog="Other arguments are passed to Pipecat's development runner in live mode (e.g. --port).",
    )
    parser.add_argument("--offline", action="store_true", help="run the scripted offline call even if keys are set")
    parser.add_argument("--quick", action="store_true", help="offline: play the short 3-turn script")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (also: LOG_LEVEL=DEBUG)")
    args, runner_argv = parser.parse_known_args(argv)

    load_dotenv(find_dotenv(usecwd=True), override=False)  # .env of the working directory; the environment wins
    _setup_logging("DEBUG" if args.verbose else os.environ.get(LOG_LEVEL, "INFO"))
    try:
        config = _config()
    except (SettingsError, PricingError) as error:
        logger.error(f"Configuration error: {error}")
        return EXIT_CONFIG_ERROR

    missing = config.bot.missing_keys
    if args.offline or missing:
        if missing and not args.offline:
            logger.info(f"{', '.join(missing)} not set: running the scripted offline conversation.")
        _log_tracing(config.tracing)
        summary = asyncio.run(run_offline(config, quick=args.quick))
        print(summary.render(), flush=True)
        print("\nOffline run: simulated services, priced as the live models they stand in for.", flush=True)
        return 0

    from pipecat.runner.run import main as run_live

    _log_tracing(config.tracing)
    # Pipecat's runner looks for a `bot` function in __main__ and parses sys.argv itself.
    sys.modules["__main__"].bot = bot  # type: ignore[attr-defined]
    sys.argv = [sys.argv[0], *runner_argv]
    run_live()
    return 0


def _log_tracing(settings: TracingSettings) -> None:
    if settings.enabled:
        logger.info(f"Tracing to Langfuse at {settings.base_url} (public key {settings.public_key}).")
    else:
        logger.info("Langfuse tracing is off (set ENABLE_TRACING=true to send traces).")


def _setup_logging(level: str) -> None:
    """Log through loguru at ``level``, including the standard-library logs of the SDKs."""
    logger.remove()
    # diagnose=False: tracebacks without variable values, which can hold API keys.
    logger.add(sys.stderr, level=level.upper(), diagnose=False)
    logging.basicConfig(handlers=[_InterceptHandler()], level=logging.WARNING, force=True)


class _InterceptHandler(logging.Handler):
    """Send standard-library log records (Langfuse SDK, OpenTelemetry exporter) to loguru.

    The OTLP exporter logs every failed batch and retry; the first failure is shown once with
    the fix, the rest at DEBUG, so a Langfuse outage reads as one line, not a stream.
    """

    _export_failure_shown = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        message = record.getMessage()
        if record.name.startswith("opentelemetry.exporter") and record.levelno >= logging.WARNING:
            if _InterceptHandler._export_failure_shown:
                level = "DEBUG"
            else:
                _InterceptHandler._export_failure_shown = True
                level = "WARNING"
                message = (
                    f"Sending traces to Langfuse failed: {message} The call goes on; check LANGFUSE_BASE_URL and "
                    "the keys with `uv run test_langfuse`. Further export errors are logged at DEBUG."
                )
        logger.opt(depth=6, exception=record.exc_info).log(level, message)


if __name__ == "__main__":
    raise SystemExit(main())
