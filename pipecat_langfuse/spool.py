"""The tracing spool: spans and scores that failed to reach Langfuse, kept on disk, and how to re-send them.

When an export fails (connection refused, timeout, HTTP 5xx, 429, 401/403), the batch is written
to ``TracingSettings.spool_dir`` (:envvar:`LANGFUSE_SPOOL_DIR`), one sub-folder per Langfuse host,
bounded by :envvar:`LANGFUSE_SPOOL_MAX_MB`: spans as an OTLP protobuf file (``.pb``), scores as
the JSON body of ``POST /api/public/scores`` (``.scores.json``). The replay re-sends both, oldest
first (:attr:`ReplayReport.sent_spans`, :attr:`ReplayReport.sent_scores`). Re-sending is
idempotent: Langfuse upserts observations and scores by their ids. Usage::

    report = replay_spool(TracingSettings.from_env())   # blocking: run it in a thread
    thread = replay_spool_in_background(settings)        # or let a daemon thread do it
"""

from __future__ import annotations

from pipecat_langfuse._langfuse import replay_spool, replay_spool_in_background
from pipecat_langfuse._spool import Outcome, ReplayReport, destination_folder, other_hosts
from pipecat_langfuse.settings import TracingSettings

__all__ = ["Outcome", "ReplayReport", "replay_spool", "replay_spool_in_background", "spooled_for_other_hosts"]


def spooled_for_other_hosts(settings: TracingSettings) -> dict[str, int]:
    """Spool files kept for Langfuse hosts other than ``settings.base_url``: folder name -> files.

    They are never sent to this host; point ``LANGFUSE_BASE_URL`` at theirs to re-send them.
    """
    if settings.spool_dir is None:
        return {}
    return other_hosts(settings.spool_dir, destination_folder(settings.base_url))
