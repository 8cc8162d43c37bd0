"""Many offline calls at once in one process, tracing on vs off: does tracing change a call?

Each run starts ``--calls`` offline calls of the quick script (the caller barges in on the first
reply) as tasks of one event loop, each with its own ``VoiceTracer`` and offline services, through
``app.bot.run_offline_call`` (one ``WorkerRunner`` per call, as Pipecat's development runner runs
its sessions). Runs alternate tracing on (to a local Langfuse stand-in in a child process) and off.

A call is *broken* when its summary differs from the script (turns, replies, ``interrupted``
flags). For each broken call the probe tells what happened after the barge-in: whether the LLM
answered, whether the TTS produced audio, whether a ``BotStartedSpeakingFrame`` followed, and
whether the caller hung up on its reply timeout. Per run it also reports how many calls hit the race
in Pipecat's output transport that broke calls (an audio chunk handled after the barge-in that should
have dropped it: see ``OfflineOutputTransport``), which the transport works around unless
``--fix off``; the event-loop lag (a 10 ms ticker's overshoot); and the garbage collector's full
collections, which stop the loop.

Run: ``uv run python -m bench.many_calls --runs 8`` (``--help`` for the options).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from loguru import logger
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EndWorkerFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    TTSAudioRawFrame,
    VADUserStartedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection

from app.bot import run_offline_call
from app.offline import DEFAULT_SCRIPT, QUICK_SCRIPT, CallerScript, create_offline_services
from bench._server import RemoteLangfuse
from pipecat_langfuse import TracingSettings, VoiceTracer


class Probe(BaseObserver):
    """Loop times of the events that matter around a barge-in, for one call."""

    def __init__(self) -> None:
        super().__init__(observe_every_push=False)
        self.events: list[tuple[float, str]] = []

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        now = asyncio.get_running_loop().time()
        source = type(data.source).__name__
        if isinstance(frame, BotStartedSpeakingFrame) and data.direction is FrameDirection.DOWNSTREAM:
            self.events.append((now, "bot_started"))
        elif isinstance(frame, BotStoppedSpeakingFrame) and data.direction is FrameDirection.DOWNSTREAM:
            self.events.append((now, "bot_stopped"))
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            self.events.append((now, "vad_start"))
        elif isinstance(frame, InterruptionFrame) and source.startswith("LLMUserAggregator"):
            self.events.append((now, "interruption"))
        elif isinstance(frame, LLMFullResponseEndFrame) and source.startswith("OfflineLLM"):
            self.events.append((now, "llm_end"))
        elif isinstance(frame, TTSAudioRawFrame) and source.startswith("OfflineTTS"):
            if not self.events or self.events[-1][1] != "tts_audio":
                self.events.append((now, "tts_audio"))
        elif isinstance(frame, EndWorkerFrame):
            self.events.append((now, f"end:{frame.reason}"))

    def timeline(self, origin: float) -> str:
        return " ".join(f"{name}@{t - origin:.2f}" for t, name in self.events)


@dataclass
class RunResult:
    tracing: bool
    wall_s: float
    fix: bool = True
    broken: list[str] = field(default_factory=list)
    lag_ms: list[float] = field(default_factory=list)
    stale_calls: int = 0
    worst_lag_at_s: float = 0.0
    full_gc_ms: list[float] = field(default_factory=list)


class FullCollections:
    """Times the garbage collector's full (generation 2) collections: they stop the event loop."""

    def __init__(self) -> None:
        self.pauses_ms: list[float] = []
        self._started = 0.0

    def __enter__(self) -> FullCollections:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses_ms.append((time.perf_counter() - self._started) * 1000)


def expected_turns(script: CallerScript) -> list[tuple[str, str, bool]]:
    return [
        (u.text, r, i + 1 < len(script.utterances) and script.utterances[i + 1].barges_in)
        for i, (u, r) in enumerate(zip(script.utterances, script.replies, strict=True))
    ]


async def _lag_monitor(result: RunResult, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    origin = loop.time()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(0.01)
        lag = (loop.time() - before - 0.01) * 1000
        if not result.lag_ms or lag > max(result.lag_ms):
            result.worst_lag_at_s = before - origin
        result.lag_ms.append(lag)


async def _run(calls: int, script: CallerScript, settings: TracingSettings, run: int, fix: bool) -> RunResult:
    loop = asyncio.get_running_loop()
    origin = loop.time()
    probes = [Probe() for _ in range(calls)]
    tracers = [VoiceTracer(settings, conversation_id=f"run{run}-call{i}") for i in range(calls)]
    services = [create_offline_services(script, seed=i) for i in range(calls)]
    for call in services:
        call.transport.output().drop_stale_audio = fix
    stop = asyncio.Event()
    result = RunResult(tracing=settings.enabled, wall_s=0.0, fix=fix)
    monitor = asyncio.create_task(_lag_monitor(result, stop))
    # Each call is a task of its own, as Pipecat's development runner starts its sessions.
    sessions = [
        asyncio.create_task(run_offline_call(call, tracer, observers=[probe]))
        for call, tracer, probe in zip(services, tracers, probes, strict=True)
    ]
    summaries = await asyncio.gather(*sessions)
    result.stale_calls = sum(1 for call in services if call.transport.output().stale_chunks)
    stop.set()
    await monitor
    result.wall_s = loop.time() - origin
    expected = expected_turns(script)
    for i, (summary, probe) in enumerate(zip(summaries, probes, strict=True)):
        got = [(t.user_text, t.bot_text, t.interrupted) for t in summary.turns]
        if got != expected:
            result.broken.append(f"call {i}: turns {got}\n    {probe.timeline(origin)}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=20, help="concurrent calls per run (20)")
    parser.add_argument("--runs", type=int, default=8, help="runs, alternating tracing on and off (8)")
    parser.add_argument("--default-script", action="store_true", help="play the 4-turn script instead of the quick one")
    parser.add_argument("--only", choices=("on", "off"), help="run only tracing on or only off")
    parser.add_argument(
        "--fix",
        choices=("on", "off", "both"),
        default="on",
        help="drop stale audio chunks after an interruption (the transport's default), or not, or alternate (on)",
    )
    parser.add_argument("--log-level", default="WARNING", help="loguru level on stderr (WARNING)")
    args = parser.parse_args(argv)

    logger.remove()
    logger.add(sys.stderr, level=args.log_level, diagnose=False)
    script = DEFAULT_SCRIPT if args.default_script else QUICK_SCRIPT
    results: list[RunResult] = []
    with RemoteLangfuse() as server:
        on = TracingSettings(
            enabled=True, public_key=server.public_key, secret_key=server.secret_key, base_url=server.url
        )
        off = TracingSettings(enabled=False)
        for run in range(args.runs):
            tracing = (run % 2 == 0) if args.only is None else args.only == "on"
            fix = (run // 2 % 2 == 0) if args.fix == "both" else args.fix == "on"
            started = time.perf_counter()
            with FullCollections() as collections:
                result = asyncio.run(_run(args.calls, script, on if tracing else off, run, fix))
            result.full_gc_ms = collections.pauses_ms
            results.append(result)
            lag = sorted(result.lag_ms)
            print(
                f"run {run}: tracing {'on ' if tracing else 'off'} fix {'on ' if fix else 'off'} "
                f"wall {time.perf_counter() - started:5.1f}s broken {len(result.broken)}/{args.calls} "
                f"calls with a stale chunk {result.stale_calls} loop lag p50 {statistics.median(lag):.1f} ms "
                f"p99 {lag[int(len(lag) * 0.99)]:.1f} ms max {lag[-1]:.1f} ms at {result.worst_lag_at_s:.1f}s; "
                f"full GC pauses {[round(ms) for ms in result.full_gc_ms]} ms",
                flush=True,
            )
            for line in result.broken:
                print("  " + line, flush=True)
    for fix in (True, False):
        for tracing in (True, False):
            mine = [r for r in results if r.tracing is tracing and r.fix is fix]
            if mine:
                print(
                    f"tracing {'on ' if tracing else 'off'} fix {'on ' if fix else 'off'}: "
                    f"{sum(1 for r in mine if r.broken)}/{len(mine)} runs with a broken call, "
                    f"{sum(len(r.broken) for r in mine)} broken calls, "
                    f"{sum(r.stale_calls for r in mine)} calls with a stale chunk, of {len(mine) * args.calls}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
