"""The session id of a call from Pipecat's runner arguments, so a trace can be found from a call record.

Telephony websockets (Twilio, Telnyx, Plivo, Exotel) carry the provider's call id in
``runner_args.call_data`` once ``parse_telephony_websocket`` (or ``create_transport``) has read
the handshake; SmallWebRTC sessions have the peer connection's ``pc_id``; Vonage Video has its
session id; Daily has its room. Whatever is found also goes into the trace metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class RunnerCorrelation:
    """What a call's runner arguments say about it.

    Attributes:
        session_id: The id to use as the Langfuse session: the telephony call id, the WebRTC peer
            connection id, the Vonage session id, or the runner's own session id; None when none.
        metadata: The identifiers found (``call_id``, ``stream_id``, ``transport``, ``webrtc_pc_id``,
            ``daily_room``, ``vonage_session_id``, ``runner_session_id``), for the trace metadata.
    """

    session_id: str | None
    metadata: dict[str, str] = field(default_factory=dict)


def correlate(runner_args: Any) -> RunnerCorrelation:
    """Read the identifiers of ``runner_args`` (any Pipecat ``RunnerArguments``; never raises)."""
    found: dict[str, str] = {}
    call_data = getattr(runner_args, "call_data", None)
    for key in ("call_id", "stream_id"):
        value = _text(getattr(call_data, key, None))
        if value:
            found[key] = value
    transport = _text(getattr(runner_args, "transport_type", None))
    if transport and call_data is not None:
        found["transport"] = transport
    pc_id = _text(getattr(getattr(runner_args, "webrtc_connection", None), "pc_id", None))
    if pc_id:
        found["webrtc_pc_id"] = pc_id
    room_url = _text(getattr(runner_args, "room_url", None))
    if room_url:
        found["daily_room"] = urlsplit(room_url).path.strip("/") or room_url
    vonage = _text(getattr(runner_args, "vonage_session_id", None))
    if vonage:
        found["vonage_session_id"] = vonage
    runner_session = _text(getattr(runner_args, "session_id", None))
    if runner_session:
        found["runner_session_id"] = runner_session
    session_id = next(
        (found[key] for key in ("call_id", "webrtc_pc_id", "vonage_session_id", "runner_session_id") if key in found),
        None,
    )
    return RunnerCorrelation(session_id=session_id, metadata=found)


def _text(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None
