"""Pipecat's quickstart voice bot, traced into Langfuse with ``pipecat_langfuse``.

Deepgram STT, OpenAI LLM and Cartesia TTS over Pipecat's development runner. Run
``python examples/quickstart.py``, open http://localhost:7860 and talk. Each browser session is one
conversation: one Langfuse trace (when ``ENABLE_TRACING=true``) and a cost summary in the log.

Environment: ``DEEPGRAM_API_KEY``, ``OPENAI_API_KEY``, ``CARTESIA_API_KEY``, and for Langfuse
``ENABLE_TRACING``, ``LANGFUSE_PUBLIC_KEY``, ``LANGFUSE_SECRET_KEY``, ``LANGFUSE_BASE_URL``.
A ``.env`` file is read too (the environment wins).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from loguru import logger
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import LLMMessagesAppendFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext, LLMContextMessage
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.runner.types import RunnerArguments
from pipecat.runner.utils import create_transport
from pipecat.services.cartesia.tts import CartesiaTTSService
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.transports.base_transport import BaseTransport, TransportParams
from pipecat.workers.runner import WorkerRunner

from pipecat_langfuse import TracingSettings, VoiceTracer

OPENAI_MODEL = "gpt-4.1-mini"
CARTESIA_VOICE_ID = "71a7ad14-091c-4e8e-a314-022ece01c121"  # "British Reading Lady", Pipecat's examples
SYSTEM_INSTRUCTION = (
    "You are a friendly voice assistant. Your replies are spoken aloud, so answer in one or two "
    "short sentences, without lists, markdown or emojis."
)


def create_services(
    env: Mapping[str, str] | None = None,
) -> tuple[DeepgramSTTService, OpenAILLMService, CartesiaTTSService]:
    """Build the STT, LLM and TTS services. Nothing connects until the pipeline starts.

    The system prompt is the LLM's ``system_instruction`` setting, not a ``"system"``
    message in the context (deprecated since Pipecat 1.9).

    Args:
        env: Where to read the API keys (default: ``os.environ``).

    Returns:
        The Deepgram STT, OpenAI LLM and Cartesia TTS services.

    Raises:
        KeyError: ``DEEPGRAM_API_KEY``, ``OPENAI_API_KEY`` or ``CARTESIA_API_KEY`` is not set.
    """
    env = os.environ if env is None else env
    missing = [name for name in ("DEEPGRAM_API_KEY", "OPENAI_API_KEY", "CARTESIA_API_KEY") if not env.get(name)]
    if missing:
        raise KeyError(f"Set {', '.join(missing)} in the environment or in .env.")
    stt = DeepgramSTTService(api_key=env["DEEPGRAM_API_KEY"])
    llm = OpenAILLMService(
        api_key=env["OPENAI_API_KEY"],
        settings=OpenAILLMService.Settings(model=OPENAI_MODEL, system_instruction=SYSTEM_INSTRUCTION),
    )
    tts = CartesiaTTSService(
        api_key=env["CARTESIA_API_KEY"], settings=CartesiaTTSService.Settings(voice=CARTESIA_VOICE_ID)
    )
    return stt, llm, tts


def build_worker(
    transport: BaseTransport,
    stt: DeepgramSTTService,
    llm: OpenAILLMService,
    tts: CartesiaTTSService,
    tracer: VoiceTracer,
) -> PipelineWorker:
    """Wire the voice pipeline and its worker, traced by ``tracer``. Starts nothing.

    Args:
        transport: Where the caller's audio comes from and the bot's goes to.
        stt: Speech-to-text service.
        llm: LLM service; its ``system_instruction`` setting is the system prompt.
        tts: Text-to-speech service.
        tracer: The conversation's tracer.

    Returns:
        The worker, ready for ``WorkerRunner.add_workers``.
    """
    context = LLMContext()
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer())
    )
    pipeline = Pipeline(
        [
            transport.input(),
            stt,
            user_aggregator,
            llm,
            tts,
            transport.output(),
            assistant_aggregator,
        ]
    )
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(enable_metrics=True, enable_usage_metrics=True),  # the tracer reads the metrics
        enable_tracing=tracer.enabled,  # Pipecat's turns become the trace's turns
        conversation_id=tracer.conversation_id,
    )
    tracer.attach(worker)  # priced generations and tool calls under Pipecat's turns: one tree
    return worker


async def run_bot(transport: BaseTransport, runner_args: RunnerArguments) -> None:
    """Run one conversation over ``transport`` and log what it cost."""
    stt, llm, tts = create_services()
    # A no-op exporter when ENABLE_TRACING is false; the session id is the call's (WebRTC peer, phone call...).
    tracer = VoiceTracer(TracingSettings.from_env(), runner_args=runner_args)
    worker = build_worker(transport, stt, llm, tts, tracer)

    @transport.event_handler("on_client_connected")  # type: ignore[untyped-decorator]  # untyped in Pipecat
    async def on_client_connected(_transport: BaseTransport, _client: object) -> None:
        logger.info("Client connected")
        greeting: LLMContextMessage = {"role": "developer", "content": "Say hello and briefly introduce yourself."}
        await worker.queue_frames([LLMMessagesAppendFrame(messages=[greeting], run_llm=True)])

    @transport.event_handler("on_client_disconnected")  # type: ignore[untyped-decorator]  # untyped in Pipecat
    async def on_client_disconnected(_transport: BaseTransport, _client: object) -> None:
        logger.info("Client disconnected")
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=runner_args.handle_sigint)
    await runner.add_workers(worker)
    async with tracer.conversation():  # one trace; flushes off the loop on exit
        await runner.run()
    logger.info(f"Call ended.\n{tracer.summary().render()}")


async def bot(runner_args: RunnerArguments) -> None:
    """Entry point of Pipecat's development runner: one session per browser connection."""
    transport = await create_transport(
        runner_args, {"webrtc": lambda: TransportParams(audio_in_enabled=True, audio_out_enabled=True)}
    )
    await run_bot(transport, runner_args)


if __name__ == "__main__":
    from dotenv import load_dotenv  # installed with pipecat-ai
    from pipecat.runner.run import main

    load_dotenv(override=False)  # .env next to this file or above it; the environment wins
    TracingSettings.from_env()  # a bad tracing setting stops here, not at the first call
    main()
