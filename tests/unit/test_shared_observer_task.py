"""Observers sharing one task: each sees every first push, in order, and a failing one stops nobody."""

from __future__ import annotations

import asyncio

from pipecat.frames.frames import Frame, TextFrame
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from pipecat_langfuse._pipecat import SharedObserverTask


class Seen(BaseObserver):
    def __init__(self, name: str, log: list[tuple[str, str]], *, fail_on: str | None = None) -> None:
        super().__init__(observe_every_push=False)
        self.label, self.log, self.fail_on = name, log, fail_on

    async def on_push_frame(self, data: FramePushed) -> None:
        text = data.frame.text if isinstance(data.frame, TextFrame) else ""
        if text == self.fail_on:
            raise RuntimeError("boom")
        self.log.append((self.label, text))


def push(observer: BaseObserver, frame: Frame) -> None:
    source, sink = FrameProcessor(name="a"), FrameProcessor(name="b")
    asyncio.run(observer.on_push_frame(FramePushed(source, sink, frame, FrameDirection.DOWNSTREAM, timestamp=0)))


def test_each_observer_sees_each_frame_in_order_and_a_failure_stops_no_one() -> None:
    log: list[tuple[str, str]] = []
    shared = SharedObserverTask([Seen("tracking", log, fail_on="2"), Seen("ours", log)])
    assert not shared.observe_every_push
    for text in ("1", "2", "3"):
        push(shared, TextFrame(text))
    # "tracking" raised on "2": logged, and it still sees "3"; "ours" saw everything.
    assert log == [("tracking", "1"), ("ours", "1"), ("ours", "2"), ("tracking", "3"), ("ours", "3")]


def test_processed_frame_events_go_only_to_observers_that_handle_them() -> None:
    class Processing(BaseObserver):
        async def on_process_frame(self, data: object) -> None:
            pass

    handles = Processing(observe_every_push=False)
    shared = SharedObserverTask([Seen("tracking", []), handles])
    assert shared._processing == (handles,)
