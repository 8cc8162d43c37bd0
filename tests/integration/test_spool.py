"""Langfuse down for a whole ``uv run bot`` call, back, then replayed: nothing lost, nothing twice.

Two real calls of the quick script, each a ``bot`` subprocess (its own process, so its Langfuse
client owns the global provider and Pipecat's spans are exported too), with the same conversation
id and so the same trace id: one to a healthy local Langfuse (the reference), one to a local
Langfuse whose port refuses connections for the whole call. Then that Langfuse comes back on the
same port, and ``uv run test_langfuse --replay`` re-sends the spool.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipecat_langfuse import TracingSettings
from pipecat_langfuse._langfuse import replay_spool, replay_spool_in_background
from pipecat_langfuse._spool import SCORES_SUFFIX, destination_folder
from tests.support.langfuse_rules import (
    COST_DETAILS,
    INPUT,
    MODEL,
    OBSERVATION_TYPE,
    OUTPUT,
    SESSION_ID,
    TRACE_NAME,
    TRACE_TAGS,
    USAGE_DETAILS,
)
from tests.support.langfuse_server import LocalLangfuse, ReceivedSpan, StartLocalLangfuse, decode_export
from tests.support.processes import BOT, CHECK, PROJECT_ROOT, run_command

SECRET_KEY = "sk-lf-spool-secret-0123456789"
CONVERSATION_ID = "conv-spool-e2e"
STABLE_ATTRIBUTES = (
    OBSERVATION_TYPE,
    MODEL,
    USAGE_DETAILS,
    COST_DETAILS,
    INPUT,
    OUTPUT,
    SESSION_ID,
    TRACE_NAME,
    TRACE_TAGS,
)
"""Attributes whose values do not depend on real-time timing, compared between two runs."""


def bot_env(server: LocalLangfuse, spool: Path) -> dict[str, str]:
    return {
        "PYTHONPATH": str(PROJECT_ROOT),
        "ENABLE_TRACING": "true",
        "LANGFUSE_PUBLIC_KEY": server.public_key,
        "LANGFUSE_SECRET_KEY": SECRET_KEY,
        "LANGFUSE_BASE_URL": server.url,
        "LANGFUSE_TIMEOUT": "1",
        "LANGFUSE_SPOOL_DIR": str(spool),
        "CONVERSATION_ID": CONVERSATION_ID,
    }


def run_bot(cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_command([*BOT, "--quick"], cwd=cwd, env=env, secrets=[SECRET_KEY])


def shape(spans: list[ReceivedSpan]) -> Counter[tuple[Any, ...]]:
    """What two runs of the same call have in common: names, scopes, parents and stable attributes."""
    names = {s.span_id: s.name for s in spans}
    return Counter(
        (
            s.name,
            s.scope,
            names.get(s.parent_span_id or ""),
            tuple(sorted(s.attributes)),
            tuple((key, repr(s.attributes.get(key))) for key in STABLE_ATTRIBUTES),
        )
        for s in spans
    )


def mask_latencies(lines: list[str]) -> list[str]:
    """The summary's lines with the voice-to-voice latencies (real-time measurements) masked."""
    return [re.sub(r"\b\d+\.\d\d s\b", "#.## s", line) for line in lines]


def spool_spans(folder: Path) -> list[ReceivedSpan]:
    return [span for path in sorted(folder.glob("*.pb")) for span in decode_export(path.read_bytes())]


def by_id(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    return {s.span_id: s for s in spans}


@dataclass
class Outage:
    healthy: list[ReceivedSpan]
    healthy_stdout: str
    down: subprocess.CompletedProcess[str]
    server: LocalLangfuse
    folder: Path
    spooled: list[ReceivedSpan]
    backup: Path
    tmp: Path


@pytest.fixture(scope="module")
def outage(module_local_langfuse: StartLocalLangfuse, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    tmp = tmp_path_factory.mktemp("spool-e2e")
    reference = module_local_langfuse(public_key="pk-lf-spool-healthy", secret_key=SECRET_KEY)
    healthy = run_bot(tmp, bot_env(reference, tmp / "healthy-spool"))
    assert healthy.returncode == 0, healthy.stderr

    server = module_local_langfuse(public_key="pk-lf-spool-down", secret_key=SECRET_KEY)
    server.go_down()  # connections to its port are refused for the whole call
    down = run_bot(tmp, bot_env(server, tmp / "spool"))
    server.come_back()

    folder = tmp / "spool" / destination_folder(server.url)
    backup = tmp / "backup"
    shutil.copytree(folder, backup)
    return Outage(
        healthy=list(reference.spans),
        healthy_stdout=healthy.stdout,
        down=down,
        server=server,
        folder=folder,
        spooled=spool_spans(folder),
        backup=backup,
        tmp=tmp,
    )


def test_the_call_goes_on_and_its_summary_says_every_span_was_spooled(outage: Outage) -> None:
    assert outage.down.returncode == 0, outage.down.stderr
    count = len(outage.healthy)
    assert f"Langfuse: {count} spans sent, 0 spooled, 0 dropped" in outage.healthy_stdout
    assert f"Langfuse: 0 spans sent, {count} spooled, 0 dropped; spooled spans are re-sent" in outage.down.stdout
    # The conversation itself is the healthy one: every table line but the last (span counts) is equal.
    turns_and_cost = [line for line in outage.down.stdout.splitlines() if not line.startswith("Langfuse:")]
    healthy_lines = [line for line in outage.healthy_stdout.splitlines() if not line.startswith("Langfuse:")]
    assert mask_latencies(turns_and_cost[1:]) == mask_latencies(healthy_lines[1:])
    refused = [line for line in outage.down.stderr.splitlines() if "cannot be reached" in line]
    assert len(refused) == 1
    assert "WARNING" in refused[0]
    assert "Check that Langfuse is running" in refused[0]


def test_the_spool_holds_the_spans_a_healthy_run_sends(outage: Outage) -> None:
    assert len(outage.healthy) == 13  # root, 9 generations, Pipecat's 3 turns: one tree
    assert len({s.span_id for s in outage.spooled}) == len(outage.spooled)
    assert {s.trace_id for s in outage.spooled} == {s.trace_id for s in outage.healthy}  # same conversation id
    assert shape(outage.spooled) == shape(outage.healthy)


def test_replay_sends_exactly_the_spooled_spans_then_double_replay_duplicates_nothing(outage: Outage) -> None:
    server = outage.server
    assert server.spans == []

    done = run_command(
        [*CHECK, "--replay"], cwd=outage.tmp, env=bot_env(server, outage.tmp / "spool"), secrets=[SECRET_KEY]
    )

    assert done.returncode == 0, done.stdout + done.stderr
    score_files = sorted(outage.backup.glob(f"*{SCORES_SUFFIX}"))
    spooled_scores = [score for path in score_files for score in json.loads(path.read_bytes())]
    files = len(list(outage.backup.glob("*.pb"))) + len(score_files)
    scores = len(spooled_scores)
    assert scores == 3 * 7 + 3 + 7  # 7 per turn, 1 per LLM call (output_fate), 7 for the conversation
    assert done.stdout.startswith(
        f"REPLAY OK: Langfuse at {server.url} accepted all {files} spooled files "
        f"({len(outage.spooled)} spans, {scores} scores)."
    )
    assert f"sent:    {len(outage.spooled)} spans and {scores} scores in {files} files (deleted)" in done.stdout
    assert list(outage.folder.iterdir()) == []
    # The scores too, as the call made them: on the turns and the trace of the spooled spans.
    assert sorted(server.scores, key=lambda s: s["id"]) == sorted(spooled_scores, key=lambda s: s["id"])
    turn_ids = {span.span_id for span in outage.spooled if span.name.startswith("turn ")}
    llm_ids = {span.span_id for span in outage.spooled if span.name == "llm-completion"}
    assert {score.get("observationId") for score in spooled_scores} == {*turn_ids, *llm_ids, None}
    # Exactly the spooled spans: same ids, same attributes, same times.
    assert len(server.spans) == len(outage.spooled)
    assert by_id(server.spans) == by_id(outage.spooled)
    first = list(server.spans)

    # The same files again (as after a crash between sending and deleting): Langfuse upserts by
    # observation id, so the trace is unchanged; the stand-in keeps both copies, which are equal.
    for path in outage.backup.glob("*.pb"):
        shutil.copy(path, outage.folder / path.name)
    settings = TracingSettings.from_env(bot_env(server, outage.tmp / "spool"))
    report = replay_spool(settings)
    assert report is not None
    assert (report.sent_spans, report.kept_files, report.failed_files) == (len(first), 0, 0)
    assert {s.span_id for s in server.spans} == {s.span_id for s in first}
    assert Counter(s.span_id for s in server.spans) == Counter({s.span_id: 2 for s in first})
    assert by_id(server.spans[len(first) :]) == by_id(first)

    # Nothing left: a third replay sends nothing and says so.
    again = run_command(
        [*CHECK, "--replay"], cwd=outage.tmp, env=bot_env(server, outage.tmp / "spool"), secrets=[SECRET_KEY]
    )
    assert again.returncode == 0
    assert again.stdout.startswith(f"NOTHING TO REPLAY: the spool of {server.url} is empty.")


def test_the_bot_replays_the_spool_in_the_background_at_start(
    outage: Outage, local_langfuse: StartLocalLangfuse
) -> None:
    server = local_langfuse(public_key="pk-lf-spool-down", secret_key=SECRET_KEY)
    spool = outage.tmp / "start-spool"
    folder = spool / destination_folder(server.url)
    shutil.copytree(outage.backup, folder)
    settings = TracingSettings.from_env(bot_env(server, spool))

    thread = replay_spool_in_background(settings)

    assert thread is not None
    assert thread.daemon
    thread.join(30)
    assert by_id(server.spans) == by_id(outage.spooled)
    assert list(folder.glob("*.pb")) == []
    assert replay_spool_in_background(settings) is None  # nothing left: no thread


def test_replay_keeps_the_files_while_langfuse_is_down_or_rejects_the_keys(
    outage: Outage, local_langfuse: StartLocalLangfuse
) -> None:
    server = local_langfuse(public_key="pk-lf-spool-down", secret_key=SECRET_KEY)
    spool = outage.tmp / "kept-spool"
    folder = spool / destination_folder(server.url)
    shutil.copytree(outage.backup, folder)
    files = len(list(folder.iterdir()))

    wrong = run_command(
        [*CHECK, "--replay"],
        cwd=outage.tmp,
        env={**bot_env(server, spool), "LANGFUSE_SECRET_KEY": "sk-lf-wrong-0123456789"},
        secrets=[SECRET_KEY, "sk-lf-wrong-0123456789"],
    )
    assert wrong.returncode == 3, wrong.stdout + wrong.stderr
    assert wrong.stdout.startswith(
        f"REPLAY INCOMPLETE: sent 0 spans and 0 scores (0 files) to {server.url}; {files} files not sent:"
    )
    assert "Langfuse rejected the keys (HTTP 401)" in wrong.stdout

    server.go_down()
    down = run_command([*CHECK, "--replay"], cwd=outage.tmp, env=bot_env(server, spool), secrets=[SECRET_KEY])
    assert down.returncode == 4, down.stdout + down.stderr
    assert "cannot reach Langfuse (connection refused or no route); the files are kept" in down.stdout
    assert len(list(folder.iterdir())) == files
    assert server.spans == []
