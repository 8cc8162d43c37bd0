"""`uv run bot`: a Pipecat voice bot traced into Langfuse.

With DEEPGRAM_API_KEY, OPENAI_API_KEY and CARTESIA_API_KEY set it talks to you in the
browser (Pipecat's development runner, SmallWebRTC on localhost). Otherwise, or with
``--offline``, it plays a scripted caller through the same pipeline with offline services,
priced as the live models they stand in for, and prints a summary table. ``--s2s`` (or
``--s2s gemini``) plays it through one simulated speech-to-speech service instead, behaving like
OpenAI Realtime (or Gemini Live).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
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

from app.config import BotConfigError, BotSettings
from pipecat_langfuse import ConversationSummary, PriceTable, PricingError, SettingsError, TracingSettings, VoiceTracer

if TYPE_CHECKING:
    from app.offline import Flavor, OfflineS2SServices, OfflineServices

__all__ = ["CallStop", "bot", "main", "run_conversation", "run_offline", "run_offline_call"]

LOG_LEVEL = "LOG_LEVEL"
SIMULATED_TAG = "simulated"
EXIT_CONFIG_ERROR = 2
EXIT_SIGNAL_BASE = 128
"""Stopped by a signal: the exit code is 128 + its number (SIGINT 130, SIGTERM 143), as a shell reports it."""
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

EXIT_EPILOG = """\
Other arguments are passed to Pipecat's development runner in live mode (e.g. --port).

Stopping: SIGTERM or SIGINT (Ctrl+C) during a call cancels the call, ends its trace and sends
it to Langfuse, waiting at most LANGFUSE_FLUSH_TIMEOUT seconds (default 10); then the process
exits with 128 + the signal number: 143 for SIGTERM, 130 for SIGINT. A second signal exits at
once with the same code, and what was not sent yet is lost. A platform's grace period before
SIGKILL must be at least LANGFUSE_FLUSH_TIMEOUT plus a few seconds.

Exit codes: 0 the call ended, 2 configuration error, 130 stopped by SIGINT, 143 stopped by SIGTERM."""


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
    stt: STTService | None,
    llm: LLMService[Any],
    tts: TTSService | None,
    tracer: VoiceTracer,
    user_params: LLMUserAggregatorParams | None = None,
    live: bool = False,
    handle_sigint: bool = False,
    observers: Sequence[BaseObserver] = (),
    stop: CallStop | None = None,
    pipecat_tracing: bool = True,
) -> ConversationSummary:
    """Run one conversation through ``transport`` and return its summary.

    The pipeline is STT -> LLM -> TTS with a shared LLM context (or, with ``stt`` and ``tts`` None,
    a speech-to-speech ``llm`` alone, which hears and speaks itself); the worker has Pipecat's own
    tracing on and the tracer attached, and runs inside ``tracer.conversation()``, so the call
    is one Langfuse trace: conversation -> Pipecat's turns -> our generations and tool calls.

    The call is cancelled (and its trace still ended and flushed) when the transport reports
    ``on_client_disconnected``, and when ``stop`` sees SIGINT or SIGTERM. ``pipecat_tracing=False``
    leaves Pipecat's own spans off: the tracer then writes the turns itself.
    """
    context = LLMContext()  # the system prompt is the LLM's system_instruction (see app.live, app.offline)
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(context, user_params=user_params)
    processors = [transport.input(), stt, user_aggregator, llm, tts, transport.output(), assistant_aggregator]
    pipeline = Pipeline([p for p in processors if p is not None])
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(enable_metrics=True, enable_usage_metrics=True, send_initial_empty_metrics=False),
        observers=list(observers),
        enable_tracing=tracer.enabled and pipecat_tracing,
        conversation_id=tracer.conversation_id,
        enable_rtvi=live,
        idle_timeout_secs=300 if live else None,
    )
    tracer.attach(worker)  # one tree with Pipecat's turns; our generations under them
    runner = WorkerRunner(handle_sigint=handle_sigint)

    if live:

        @transport.event_handler("on_client_connected")  # type: ignore[untyped-decorator]  # untyped in Pipecat
        async def on_client_connected(_transport: BaseTransport, _client: object) -> None:
            context.add_message({"role": "developer", "content": "Greet the caller in one short sentence."})
            await worker.queue_frames([LLMRunFrame()])

    if "on_client_disconnected" in getattr(transport, "_event_handlers", {}):
        # The caller hung up without an EndFrame: cancel; the trace is still ended and sent.
        @transport.event_handler("on_client_disconnected")  # type: ignore[untyped-decorator]  # untyped in Pipecat
        async def on_client_disconnected(_transport: BaseTransport, _client: object) -> None:
            await runner.cancel(reason="client disconnected")

    if stop is not None:
        # Registered once the runner runs: run() forgets a cancel() that came before it.
        @runner.event_handler("on_ready")  # type: ignore[untyped-decorator]  # untyped in Pipecat
        async def on_ready(_runner: WorkerRunner) -> None:
            stop.register(runner)

    await runner.add_workers(worker)
    try:
        async with tracer.conversation():
            await runner.run()
    finally:
        if stop is not None:
            stop.unregister(runner)
            stop.traces_pending = stop.traces_pending or tracer.flushed is False
    return tracer.summary()


async def run_offline(
    config: _Config,
    *,
    quick: bool = False,
    stop: CallStop | None = None,
    tracer: VoiceTracer | None = None,
    s2s: Flavor | None = None,
) -> ConversationSummary:
    """Play the scripted caller through offline services and return the summary.

    With ``stop``, SIGINT and SIGTERM are handled on the event loop during the call (see
    :class:`CallStop`); ``tracer`` defaults to a new one for the offline call. With ``s2s``
    ("openai" or "gemini"), one offline speech-to-speech service replaces STT, LLM and TTS.
    """
    from app.offline import DEFAULT_SCRIPT, QUICK_SCRIPT, create_offline_s2s_services, create_offline_services

    script = QUICK_SCRIPT if quick else DEFAULT_SCRIPT
    if tracer is None:
        tracer = VoiceTracer(
            config.tracing, prices=config.prices, tags=(SIMULATED_TAG,), metadata=_offline_metadata(s2s)
        )

    async def call() -> ConversationSummary:
        if s2s is not None:
            return await run_offline_call(create_offline_s2s_services(script, flavor=s2s), tracer, stop=stop)
        return await run_offline_call(create_offline_services(script), tracer, stop=stop)

    if stop is None:
        return await call()
    stop.handle_on_loop(asyncio.get_running_loop())
    try:
        return await call()
    finally:
        stop.restore_loop()


def _offline_metadata(s2s: Flavor | None) -> dict[str, str]:
    """The trace metadata of an offline call."""
    return {"mode": "offline"} if s2s is None else {"mode": "offline", "s2s": s2s}


async def run_offline_call(
    services: OfflineServices | OfflineS2SServices,
    tracer: VoiceTracer,
    *,
    observers: Sequence[BaseObserver] = (),
    stop: CallStop | None = None,
    pipecat_tracing: bool = True,
) -> ConversationSummary:
    """Run the call of ``services`` with ``tracer``: offline STT, LLM and TTS, or one speech-to-speech service."""
    from app.offline import OfflineS2SServices

    stt: STTService | None
    llm: LLMService[Any]
    tts: TTSService | None
    if isinstance(services, OfflineS2SServices):
        stt, llm, tts = None, services.s2s, None
    else:
        stt, llm, tts = services.stt, services.llm, services.tts
    return await run_conversation(
        transport=services.transport,
        stt=stt,
        llm=llm,
        tts=tts,
        tracer=tracer,
        user_params=services.user_params,
        observers=observers,
        stop=stop,
        pipecat_tracing=pipecat_tracing,
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
    tracer = VoiceTracer(config.tracing, prices=config.prices, metadata={"mode": "live"}, runner_args=runner_args)
    summary = await run_conversation(
        transport=transport,
        stt=stt,
        llm=llm,
        tts=tts,
        tracer=tracer,
        user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer()),
        live=True,
        handle_sigint=runner_args.handle_sigint,
        stop=_live_stop(config.tracing.flush_timeout_s),
    )
    logger.info(f"Call ended.\n{summary.render()}")


_LIVE_STOP: CallStop | None = None


def _live_stop(flush_timeout_s: float) -> CallStop:
    """The process's :class:`CallStop` for live sessions, chained in front of the server's signal handlers.

    Pipecat's development runner serves sessions with uvicorn, whose SIGINT/SIGTERM handler
    waits for running sessions without ending them (the call, and its trace, would run until the
    platform's SIGKILL). Chained in front of it, the signal first cancels every session; uvicorn
    then waits for them to end their traces, shuts down and re-raises the signal.
    """
    global _LIVE_STOP
    if _LIVE_STOP is None:
        _LIVE_STOP = CallStop(flush_timeout_s)
        _LIVE_STOP.chain_signal_handlers(asyncio.get_running_loop())
    return _LIVE_STOP


class CallStop:
    """Ends the calls of a process cleanly on SIGINT or SIGTERM; a second signal exits at once.

    The first signal cancels every registered call's runner: the pipeline gets a CancelFrame,
    open turns and generations are ended, and ``tracer.conversation()`` sends the trace, waiting
    at most ``LANGFUSE_FLUSH_TIMEOUT``. A second signal exits the process at once with
    ``128 + signal``, losing what was not sent.

    Args:
        flush_timeout_s: The flush bound, only for the log line.
    """

    def __init__(self, flush_timeout_s: float) -> None:
        """Handle nothing yet: see :meth:`handle_on_loop` and :meth:`chain_signal_handlers`."""
        self.received: signal.Signals | None = None
        self.traces_pending = False
        """Whether the final flush of a call did not finish in time (exit without the SDK's exit handler)."""
        self._flush_timeout_s = flush_timeout_s
        self._runners: set[WorkerRunner] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def exit_code(self) -> int | None:
        """``128 + signal`` once a signal was received, else None."""
        return None if self.received is None else EXIT_SIGNAL_BASE + int(self.received)

    def handle_on_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Handle SIGINT and SIGTERM on ``loop`` (one call run by this process: the offline bot)."""
        self._loop = loop
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)

    def restore_loop(self) -> None:
        """Give SIGINT and SIGTERM back to Python's defaults (after :meth:`handle_on_loop`)."""
        if self._loop is not None and not self._loop.is_closed():
            for sig in STOP_SIGNALS:
                self._loop.remove_signal_handler(sig)

    def chain_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        """Handle SIGINT and SIGTERM first, then call the handler installed before (a server's)."""
        self._loop = loop
        for sig in STOP_SIGNALS:
            previous = signal.getsignal(sig)

            def handler(signum: int, frame: object, previous: object = previous) -> None:
                with contextlib.suppress(RuntimeError):  # the loop is closed: the server is done
                    loop.call_soon_threadsafe(self._on_signal, signal.Signals(signum))
                if callable(previous):
                    previous(signum, frame)

            signal.signal(sig, handler)

    def register(self, runner: WorkerRunner) -> None:
        """Cancel ``runner`` on a signal (at once, if one came already)."""
        self._runners.add(runner)
        if self.received is not None:
            self._cancel(runner)

    def unregister(self, runner: WorkerRunner) -> None:
        """Forget ``runner`` (its call is over)."""
        self._runners.discard(runner)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.received is not None:
            logger.warning(f"{sig.name} again: exiting now; traces not sent yet are lost.")
            _exit_now(EXIT_SIGNAL_BASE + int(sig))
            return
        self.received = sig
        logger.warning(
            f"{sig.name}: ending the call and sending its trace to Langfuse (at most {self._flush_timeout_s:g} s, "
            f"LANGFUSE_FLUSH_TIMEOUT); send it again to exit at once."
        )
        for runner in list(self._runners):
            self._cancel(runner)

    def _cancel(self, runner: WorkerRunner) -> None:
        reason = self.received.name if self.received is not None else None
        task = asyncio.get_running_loop().create_task(runner.cancel(reason=reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _exit_now(code: int) -> None:
    """Exit at once, without atexit handlers (the Langfuse SDK's would flush again, unbounded)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # exiting anyway
            stream.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bot: live when all provider keys are set, else the offline scripted call."""
    parser = argparse.ArgumentParser(
        prog="bot",
        description="Pipecat voice bot traced into Langfuse. Runs offline unless all provider keys are set.",
        epilog=EXIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--offline", action="store_true", help="run the scripted offline call even if keys are set")
    parser.add_argument("--quick", action="store_true", help="offline: play the short 3-turn script")
    parser.add_argument(
        "--s2s",
        nargs="?",
        const="openai",
        choices=("openai", "gemini"),
        help="offline, through one simulated speech-to-speech service: OpenAI Realtime (default) or Gemini Live",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (also: LOG_LEVEL=DEBUG)")
    args, runner_argv = parser.parse_known_args(argv)

    load_dotenv(find_dotenv(usecwd=True), override=False)  # .env of the working directory; the environment wins
    _setup_logging("DEBUG" if args.verbose else os.environ.get(LOG_LEVEL, "INFO"))
    try:
        config = _config()
    except (SettingsError, PricingError, BotConfigError) as error:
        logger.error(f"Configuration error: {error}")
        return EXIT_CONFIG_ERROR
    from pipecat_langfuse.spool import replay_spool_in_background

    replay_spool_in_background(config.tracing)  # what earlier runs spooled, re-sent off the event loop

    missing = config.bot.missing_keys
    if args.offline or args.s2s or missing:
        if missing and not (args.offline or args.s2s):
            logger.info(f"{', '.join(missing)} not set: running the scripted offline conversation.")
        _log_tracing(config.tracing)
        stop = CallStop(config.tracing.flush_timeout_s)
        tracer = VoiceTracer(
            config.tracing, prices=config.prices, tags=(SIMULATED_TAG,), metadata=_offline_metadata(args.s2s)
        )
        summary = asyncio.run(run_offline(config, quick=args.quick, stop=stop, tracer=tracer, s2s=args.s2s))
        print(summary.render(), flush=True)
        print("\nOffline run: simulated services, priced as the live models they stand in for.", flush=True)
        code = stop.exit_code if stop.exit_code is not None else 0
        if stop.received is not None:
            logger.info(f"Call stopped by {stop.received.name}: exiting with {code}.")
        if tracer.flushed is False:
            # The SDK's own exit handler would wait for Langfuse again, without a bound.
            _exit_now(code)
        return code

    from pipecat.runner.run import main as run_live

    _log_tracing(config.tracing)
    # Pipecat's runner looks for a `bot` function in __main__ and parses sys.argv itself.
    sys.modules["__main__"].bot = bot  # type: ignore[attr-defined]
    sys.argv = [sys.argv[0], *runner_argv]
    code = 0
    try:
        run_live()
    except KeyboardInterrupt:
        code = EXIT_SIGNAL_BASE + int(signal.SIGINT)
    # After a SIGTERM, uvicorn re-raises it once the sessions have ended: the process ends by
    # the signal (143 in a shell). After a SIGINT it returns here.
    if _LIVE_STOP is not None:
        code = _LIVE_STOP.exit_code if _LIVE_STOP.exit_code is not None else code
        if _LIVE_STOP.traces_pending:
            _exit_now(code)  # the SDK's own exit handler would wait for Langfuse again, without a bound
    return code


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
