"""Calls that end without the caller hanging up: a signal, a vanished client, the bot's own end_call tool.

Each runs for real (real time, real pipeline, the real SDK exporting to the local Langfuse)
and the trace that arrived is checked span by span: every observation the call started is
there, ended, exactly once, under the right parent.

The live runner is covered through Pipecat's development runner itself (its uvicorn server,
its ``/api/offer`` route, its background session task, ``app.bot.bot``), with two stand-ins
that need no network: the WebRTC handshake calls the session callback at once, and the
session's transport and services are the offline ones. Not covered live: aiortc's peer
connection and SmallWebRTC's own disconnect detection, and the provider services.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import subprocess
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from pipecat.frames.frames import BotStartedSpeakingFrame, CancelFrame, EndFrame
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection

from app.bot import run_offline_call
from app.offline import QUICK_SCRIPT, OfflineTransport, create_offline_services
from app.offline.script import END_CALL_FUNCTION, GOODBYE_SCRIPT
from app.offline.services import end_call
from pipecat_langfuse import TracingSettings, VoiceTracer
from pipecat_langfuse.settings import DEFAULT_TRACE_NAME
from tests.support.env import clean_environment
from tests.support.langfuse_rules import INPUT, OBSERVATION_TYPE, OUTPUT
from tests.support.langfuse_server import LocalLangfuse, ReceivedSpan, StartLocalLangfuse
from tests.support.processes import BOT, PROJECT_ROOT, assert_no_secret, run_command

PUBLIC_KEY = "pk-lf-shutdown-public"
SECRET_KEY = "sk-lf-shutdown-secret-0123456789"
PROCESS_GUARD_S = 120.0
"""Kill a stuck subprocess after this long, so a broken shutdown fails the test instead of hanging it."""

QUICK_REPLIES = QUICK_SCRIPT.replies
TURN_2_LLM_STARTED = f"replying [{QUICK_REPLIES[1]}]"
"""Logged (DEBUG) by the offline LLM when it starts the reply of turn 2: the signal lands mid-generation."""

GENERATIONS = ("speech-to-text", "llm-completion", "text-to-speech")


@pytest.fixture
def server(local_langfuse: StartLocalLangfuse) -> LocalLangfuse:
    return local_langfuse(public_key=PUBLIC_KEY, secret_key=SECRET_KEY)


def tracing_env(server: LocalLangfuse, **extra: str) -> dict[str, str]:
    return clean_environment(
        PYTHONPATH=str(PROJECT_ROOT),
        ENABLE_TRACING="true",
        LANGFUSE_PUBLIC_KEY=PUBLIC_KEY,
        LANGFUSE_SECRET_KEY=SECRET_KEY,
        LANGFUSE_BASE_URL=server.url,
        LOG_LEVEL="DEBUG",
        **extra,
    )


class Process:
    """A subprocess whose merged output is read line by line, to act on a log line when it shows."""

    def __init__(self, command: list[str], *, cwd: Path, env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self._guard = threading.Timer(PROCESS_GUARD_S, self.popen.kill)
        self._guard.start()
        assert self.popen.stdout is not None
        self._stdout = self.popen.stdout

    def wait_for(self, text: str) -> None:
        """Read output until a line contains ``text`` (fails if the process ends first)."""
        for line in self._stdout:
            self.lines.append(line)
            if text in line:
                return
        raise AssertionError(f"{text!r} never showed:\n{self.output}")

    def finish(self) -> int:
        """Read the rest of the output and return the exit code; no secret may show."""
        self.lines.extend(self._stdout)
        code = self.popen.wait()
        self._guard.cancel()
        assert_no_secret(self.output, secrets=[SECRET_KEY])
        return code

    @property
    def output(self) -> str:
        return "".join(self.lines)


def by_id(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    ids = [s.span_id for s in spans]
    assert len(ids) == len(set(ids)), "a span was exported twice"
    return {s.span_id: s for s in spans}


def root_of(spans: list[ReceivedSpan]) -> ReceivedSpan:
    """The one span whose parent is not in the trace, the conversation; every other span hangs under it."""
    ids = by_id(spans)
    roots = [s for s in spans if s.parent_span_id not in ids]
    assert [(r.scope, r.name) for r in roots] == [("langfuse-sdk", DEFAULT_TRACE_NAME)]
    assert {s.trace_id for s in spans} == {roots[0].trace_id}
    return roots[0]


def children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    return sorted((s for s in spans if s.parent_span_id == parent.span_id), key=lambda s: s.start_ns)


def our_tree(spans: list[ReceivedSpan]) -> list[tuple[str, list[str]]]:
    """The conversation's turns and the generations of each, in order, with every span checked ended."""
    root = root_of(spans)
    for span in spans:
        assert span.end_ns >= span.start_ns > 0, span
        assert span.end_ns <= root.end_ns, f"{span.name} ends after the conversation"
    return [(turn.name, [g.name for g in children(spans, turn)]) for turn in children(spans, root)]


def turn(spans: list[ReceivedSpan], number: int) -> ReceivedSpan:
    return next(t for t in children(spans, root_of(spans)) if t.name == f"turn {number}")


def generation(spans: list[ReceivedSpan], number: int, name: str) -> ReceivedSpan:
    return next(g for g in children(spans, turn(spans, number)) if g.name == name)


def pipecat_leftovers(spans: list[ReceivedSpan]) -> list[tuple[str, str]]:
    """Pipecat's spans that are not part of the one tree (its turns and llm calls are adopted: renamed)."""
    return [(s.scope, s.name) for s in spans if s.scope.startswith("pipecat") and s.name in PIPECAT_NAMES]


PIPECAT_NAMES = frozenset({"conversation", "turn", "stt", "llm", "tts"})


# -- Signals: the offline bot ----------------------------------------------------------------------


@pytest.mark.parametrize(("stop_signal", "exit_code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_turn_2_ends_the_call_and_sends_every_span(
    server: LocalLangfuse, tmp_path: Path, stop_signal: signal.Signals, exit_code: int
) -> None:
    process = Process([*BOT, "--quick"], cwd=tmp_path, env=tracing_env(server))
    process.wait_for("Turn 1 ended")
    process.wait_for(TURN_2_LLM_STARTED)
    process.popen.send_signal(stop_signal)
    assert process.finish() == exit_code
    name = stop_signal.name
    assert f"{name}: ending the call and sending its trace to Langfuse (at most 10 s" in process.output
    assert f"Call stopped by {name}: exiting with {exit_code}." in process.output
    assert "Traceback" not in process.output

    spans = server.spans
    tree = our_tree(spans)
    # What a complete run would have started so far: turn 1 whole, turn 2 up to its reply being
    # generated (its TTS only if the reply got that far before the signal landed).
    assert tree[0] == ("turn 1", list(GENERATIONS))
    assert tree[1][0] == "turn 2"
    assert tree[1][1] in (list(GENERATIONS[:2]), list(GENERATIONS))
    assert len(tree) == 2
    assert generation(spans, 1, "llm-completion").attributes[OUTPUT] == QUICK_REPLIES[0]
    assert generation(spans, 2, "speech-to-text").attributes[OUTPUT] == QUICK_SCRIPT.utterances[1].text
    assert turn(spans, 2).end_ns <= root_of(spans).end_ns
    assert pipecat_leftovers(spans) == []  # one tree: Pipecat's turns and llm spans are ours


def test_a_second_signal_exits_at_once(local_langfuse: StartLocalLangfuse, tmp_path: Path) -> None:
    server = local_langfuse(public_key=PUBLIC_KEY, secret_key=SECRET_KEY, hang_s=60)  # the flush would wait
    process = Process([*BOT, "--quick"], cwd=tmp_path, env=tracing_env(server, LANGFUSE_FLUSH_TIMEOUT="60"))
    process.wait_for("Turn 1 ended")
    process.popen.send_signal(signal.SIGTERM)
    process.wait_for("SIGTERM: ending the call")
    process.popen.send_signal(signal.SIGTERM)
    assert process.finish() == 143
    assert "SIGTERM again: exiting now; traces not sent yet are lost." in process.output
    assert "did not take the traces within" not in process.output  # it did not wait for the flush
    assert server.spans == []


def test_bot_help_documents_the_exit_codes(tmp_path: Path) -> None:
    env = clean_environment(PYTHONPATH=str(PROJECT_ROOT))
    done = subprocess.run([*BOT, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0
    assert "Exit codes: 0 the call ended, 2 configuration error, 130 stopped by SIGINT, 143 stopped by" in done.stdout
    assert "A second signal exits at\nonce with the same code" in done.stdout


# -- Signals: Pipecat's development runner (live mode) -------------------------------------------------

LIVE_DRIVER = """
import sys

import pipecat.audio.vad.silero as silero
import pipecat.runner.utils as runner_utils
from pipecat.transports.smallwebrtc.request_handler import SmallWebRTCRequestHandler

import app.live
from app.offline import QUICK_SCRIPT, create_offline_services

services = create_offline_services(QUICK_SCRIPT)


async def create_transport(runner_args, params):
    return services.transport


async def handle_web_request(self, request, webrtc_connection_callback):
    await webrtc_connection_callback(object())
    return {"sdp": "offline", "type": "answer", "pc_id": "offline"}


runner_utils.create_transport = create_transport
silero.SileroVADAnalyzer = lambda *args, **kwargs: None
app.live.create_live_services = lambda settings: (services.stt, services.llm, services.tts)
SmallWebRTCRequestHandler.handle_web_request = handle_web_request

from app.bot import main

sys.exit(main(sys.argv[1:]))
"""
"""``uv run bot`` in live mode, with the WebRTC handshake and the session's transport and services offline."""


def test_sigterm_to_the_live_runner_ends_its_session_and_sends_the_trace(server: LocalLangfuse, tmp_path: Path) -> None:
    driver = tmp_path / "live_driver.py"
    driver.write_text(LIVE_DRIVER)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = tracing_env(server, DEEPGRAM_API_KEY="dg-test", OPENAI_API_KEY="sk-test", CARTESIA_API_KEY="ca-test")
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    process = Process([BOT[0], str(driver), "--host", "127.0.0.1", "--port", str(port)], cwd=tmp_path, env=env)
    process.wait_for("Uvicorn running on")
    offer = json.dumps({"sdp": "offline", "type": "offer"}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/offer", data=offer, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
    process.wait_for("Turn 1 ended")
    process.popen.send_signal(signal.SIGTERM)
    # uvicorn waits for the session, shuts down, then re-raises SIGTERM: the process ends by it (143 in a shell).
    assert process.finish() == -signal.SIGTERM
    output = process.output
    assert "SIGTERM: ending the call and sending its trace to Langfuse" in output
    assert output.index("Call ended.") < output.index("Finished server process")

    spans = server.spans
    tree = our_tree(spans)
    assert tree[0] == ("turn 1", list(GENERATIONS))
    assert tree[1][0] == "turn 2"
    assert len(tree) == 2
    assert pipecat_leftovers(spans) == []


# -- The client vanishes, the bot hangs up ---------------------------------------------------------------


class VanishingTransport(OfflineTransport):
    """The offline transport with the ``on_client_disconnected`` event of a real one."""

    def __init__(self) -> None:
        super().__init__(QUICK_SCRIPT)
        self._register_event_handler("on_client_disconnected")

    async def vanish(self) -> None:
        """The caller is gone: no EndFrame, just the event a real transport fires."""
        await self._call_event_handler("on_client_disconnected", None)


class CallEnd(BaseObserver):
    """Records how the call ended, and makes the caller vanish when the bot starts its ``vanish_at``-th reply."""

    def __init__(self, transport: VanishingTransport | None = None, vanish_at: int = 0) -> None:
        super().__init__(observe_every_push=False)
        self.ends: list[EndFrame | CancelFrame] = []
        self._transport = transport
        self._vanish_at = vanish_at
        self._replies: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        if isinstance(frame, (EndFrame, CancelFrame)) and frame.id not in {f.id for f in self.ends}:
            self.ends.append(frame)
        elif isinstance(frame, BotStartedSpeakingFrame) and data.direction == FrameDirection.DOWNSTREAM:
            self._replies.add(frame.id)
            if self._transport is not None and len(self._replies) == self._vanish_at:
                task = asyncio.get_running_loop().create_task(self._transport.vanish())
                self._tasks.add(task)


def run_call_in_subprocess(which: str, server: LocalLangfuse, tmp_path: Path) -> dict[str, Any]:
    """Run :func:`call_for_subprocess` in a fresh process (see there); return what it printed."""
    code = f"from tests.integration.test_shutdown import call_for_subprocess; call_for_subprocess({which!r})"
    env = {
        "PYTHONPATH": str(PROJECT_ROOT),
        "LANGFUSE_PUBLIC_KEY": server.public_key,
        "LANGFUSE_SECRET_KEY": server.secret_key,
        "LANGFUSE_BASE_URL": server.url,
    }
    done = run_command([BOT[0], "-c", code], cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def call_for_subprocess(which: str) -> None:
    """Run one offline call through the bot's pipeline, traced to the Langfuse of the environment.

    In a process of its own: Pipecat's spans go to the process's global tracer provider, which
    the first Langfuse client of a process sets up for its own server.
    """
    settings = TracingSettings(
        enabled=True,
        public_key=os.environ["LANGFUSE_PUBLIC_KEY"],
        secret_key=os.environ["LANGFUSE_SECRET_KEY"],
        base_url=os.environ["LANGFUSE_BASE_URL"],
    )
    tracer = VoiceTracer(settings, conversation_id=f"shutdown-{which}")
    if which == "vanish":
        transport = VanishingTransport()
        services = dataclasses.replace(create_offline_services(QUICK_SCRIPT), transport=transport)
        call_end = CallEnd(transport, vanish_at=2)  # while the bot speaks its reply of turn 2
    else:
        services = create_offline_services(GOODBYE_SCRIPT)
        services.llm.register_function(END_CALL_FUNCTION, end_call)
        call_end = CallEnd()
    summary = asyncio.run(run_offline_call(services, tracer, observers=[call_end]))
    ends = [[type(f).__name__, f.reason] for f in call_end.ends]
    turns = [[t.user_text, t.bot_text] for t in summary.turns]
    print(json.dumps({"ends": ends, "turns": turns, "flushed": tracer.flushed}))


def test_a_client_that_vanishes_mid_reply_cancels_the_call_and_every_span_is_sent(
    server: LocalLangfuse, tmp_path: Path
) -> None:
    result = run_call_in_subprocess("vanish", server, tmp_path)

    assert result["ends"] == [["CancelFrame", "client disconnected"]]
    assert result["flushed"] is True
    assert [turn[0] for turn in result["turns"]] == [u.text for u in QUICK_SCRIPT.utterances[:2]]
    spans = server.spans
    assert our_tree(spans) == [("turn 1", list(GENERATIONS)), ("turn 2", list(GENERATIONS))]
    assert generation(spans, 2, "llm-completion").attributes[OUTPUT] == QUICK_REPLIES[1]
    assert generation(spans, 2, "text-to-speech").attributes[INPUT] == QUICK_REPLIES[1]
    assert pipecat_leftovers(spans) == []


def test_the_end_call_tool_ends_the_call_after_the_goodbye_which_is_traced_in_the_last_turn(
    server: LocalLangfuse, tmp_path: Path
) -> None:
    result = run_call_in_subprocess("end_call", server, tmp_path)

    # The tool's EndWorkerFrame (EndTaskFrame), not the caller (who would hang up 10 s later), ended the call.
    assert result["ends"] == [["EndFrame", END_CALL_FUNCTION]]
    assert result["turns"] == [
        [u.text, r] for u, r in zip(GOODBYE_SCRIPT.utterances, GOODBYE_SCRIPT.replies, strict=True)
    ]
    spans = server.spans
    stt, llm, tts = GENERATIONS
    assert our_tree(spans) == [("turn 1", list(GENERATIONS)), ("turn 2", [stt, llm, END_CALL_FUNCTION, tts])]
    goodbye = GOODBYE_SCRIPT.replies[-1]
    assert turn(spans, 2).attributes[OUTPUT] == goodbye
    # The goodbye and the tool call came in one response: both are the generation's output.
    call_id = f"call_{END_CALL_FUNCTION}_2"
    assert json.loads(generation(spans, 2, llm).attributes[OUTPUT]) == {
        "role": "assistant",
        "content": goodbye,
        "tool_calls": [{"id": call_id, "type": "function", "function": {"name": END_CALL_FUNCTION, "arguments": "{}"}}],
    }
    tool = generation(spans, 2, END_CALL_FUNCTION)
    assert tool.attributes[OBSERVATION_TYPE] == "tool"
    assert (json.loads(tool.attributes[INPUT]), json.loads(tool.attributes[OUTPUT])) == ({}, {"status": "call ended"})
    assert generation(spans, 2, tts).attributes[INPUT] == goodbye
    # Pipecat's goodbye llm span is the goodbye generation, under its last turn (pipecat#3141).
    assert pipecat_leftovers(spans) == []
