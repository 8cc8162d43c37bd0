"""A local OpenAI chat-completions endpoint (streamed) that bills the tokens it counts.

What the installed client expects (openai ``resources/chat/completions``, Pipecat's
``services/openai/base_llm.py``): ``POST <base_url>/chat/completions`` with
``Authorization: Bearer <key>`` and a JSON body with ``model``, ``messages``, ``stream: true``,
``stream_options: {"include_usage": true}`` (and ``tools`` when the context has some). The answer
is Server-Sent Events, ``data: <chunk JSON>`` each, then ``data: [DONE]``. Every chunk names the
model that answered: the DATED snapshot (``gpt-4.1-mini`` -> ``gpt-4.1-mini-2025-04-14``). With
``include_usage`` the last chunk has ``choices: []`` and the usage of the whole completion.

Tokens are counted with ``bpe_openai`` (o200k_base): the prompt by the OpenAI cookbook's chat
formula (3 per message, the tokens of each value, 1 more per ``name``, 3 for the reply priming;
non-string values, e.g. tool calls, count as their JSON; ``tools`` count as their JSON), the
completion as the tokens streamed (one token per content chunk) plus scripted reasoning tokens.

A reply is streamed one token per chunk, ``token_delay_s`` apart, so a barge-in can cut it: when
the client goes away before the end, no usage chunk is sent and the ledger bills the prompt plus
the tokens sent before the client went away (as OpenAI bills a cancelled stream).

Error injection (off by default): with ``failures=n`` the first ``n`` requests are answered with
HTTP ``failure_status`` and OpenAI's error body (``{"error": {"message", "type": "server_error",
"param", "code"}}``), recorded in ``ledger.failures`` and billed nothing; the scripted replies
start with the first request that succeeds. The openai client retries a 5xx ``max_retries`` (2)
times before raising, so ``failures=3`` makes one Pipecat request fail (``failure_retry`` sets the
``x-should-retry`` header the client obeys, to fail one request with one HTTP answer).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import bpe_openai  # type: ignore[import-untyped]  # ships no type information
from aiohttp import web

from tests.support.providers import HOST, ThreadedServer

ENCODING = bpe_openai.get_encoding("o200k_base")
COMPLETIONS_PATH = "/v1/chat/completions"
DATED_MODELS = {
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
}
FALLBACK_REPLY = "Okay."
SERVER_ERROR_MESSAGE = "The server had an error while processing your request. Sorry about that!"


def count_tokens(text: str) -> int:
    """Tokens of ``text`` in o200k_base."""
    return len(ENCODING.encode(text))


def tokens_of(text: str) -> list[str]:
    """``text`` split into its o200k_base tokens, as streamed (one per chunk)."""
    return [ENCODING.decode([token]) for token in ENCODING.encode(text)]


def prompt_tokens(messages: list[dict[str, Any]], tools: list[Any] | None = None) -> int:
    """Prompt tokens of a chat request, by the OpenAI cookbook's formula (plus the tools' JSON)."""
    total = 3  # every reply is primed with <|start|>assistant<|message|>
    for message in messages:
        total += 3
        for key, value in message.items():
            total += count_tokens(value if isinstance(value, str) else json.dumps(value, separators=(",", ":")))
            if key == "name":
                total += 1
    if tools:
        total += count_tokens(json.dumps(tools, separators=(",", ":")))
    return total


@dataclass(frozen=True)
class ToolCall:
    """A function call the model makes (arguments as a JSON string)."""

    name: str
    arguments: str = "{}"
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")


@dataclass(frozen=True)
class Reply:
    """One scripted completion: text and/or a tool call, and the extra usage OpenAI would report."""

    text: str = ""
    tool_call: ToolCall | None = None
    cached_tokens: int = 0
    """Prompt tokens served from the cache (at most the prompt)."""
    reasoning_tokens: int = 0
    """Hidden reasoning tokens, billed as completion tokens."""


@dataclass
class Completion:
    """One request as the fake answered and billed it."""

    requested_model: str
    model: str
    """The dated model that answered."""
    messages: list[dict[str, Any]]
    tools: list[Any] | None
    prompt_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    planned_tokens: int
    """Tokens of the whole scripted answer (text or tool call)."""
    sent_tokens: int = 0
    """Answer tokens actually streamed before the end (or before the client went away)."""
    text_sent: str = ""
    finished: bool = False
    """The whole answer and the usage chunk were sent."""
    cut: bool = False
    """The client went away before the end."""
    started_ns: int = 0

    @property
    def completion_tokens(self) -> int:
        """Billed output tokens: reasoning plus the answer tokens sent."""
        return self.reasoning_tokens + self.sent_tokens

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def usage(self) -> dict[str, Any]:
        """The ``usage`` object of the final chunk (what the provider bills)."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    @property
    def langfuse_usage(self) -> dict[str, int]:
        """The bill as Langfuse usage details: uncached input, cached input, output, reasoning, total.

        Disjoint, as Langfuse counts them: ``output`` without the reasoning tokens.
        """
        usage = {
            "input": self.prompt_tokens - self.cached_tokens,
            "output": self.completion_tokens - self.reasoning_tokens,
        }
        if self.cached_tokens:
            usage["input_cached_tokens"] = self.cached_tokens
        if self.reasoning_tokens:
            usage["output_reasoning_tokens"] = self.reasoning_tokens
        usage["total"] = self.total_tokens
        return usage


@dataclass(frozen=True)
class FailedRequest:
    """A request the fake answered with an injected error (nothing billed)."""

    status: int
    body: dict[str, Any]
    """The error body sent."""
    received_ns: int
    messages: list[dict[str, Any]]


@dataclass
class OpenAILedger:
    """Every completion requested, in order."""

    completions: list[Completion] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)
    failures: list[FailedRequest] = field(default_factory=list)
    """Requests answered with an injected error, in order (not in ``completions``: not billed)."""

    def totals(self) -> dict[str, int]:
        """Summed Langfuse usage details of every completion."""
        totals: dict[str, int] = {}
        for completion in self.completions:
            for key, value in completion.langfuse_usage.items():
                totals[key] = totals.get(key, 0) + value
        return totals


class FakeOpenAI(ThreadedServer):
    """OpenAI's streamed chat completions on 127.0.0.1, answering with ``replies`` in order.

    Args:
        replies: The scripted completions, one per request; beyond them the answer is "Okay.".
        api_key: The key the client must send (``Authorization: Bearer <key>``).
        first_token_delay_s: Delay before the first chunk.
        token_delay_s: Delay between two answer tokens.
        failures: How many requests, from the first, get an injected HTTP error instead of an answer.
        failure_status: The status of those answers (500: OpenAI's ``server_error``).
        failure_retry: The ``x-should-retry`` header of those answers (None: not sent, the client
            retries a 5xx by its own rules).
    """

    name = "fake-openai"

    def __init__(
        self,
        replies: list[Reply] | tuple[Reply, ...],
        *,
        api_key: str = "sk-test-openai",
        first_token_delay_s: float = 0.15,
        token_delay_s: float = 0.01,
        failures: int = 0,
        failure_status: int = 500,
        failure_retry: bool | None = None,
    ) -> None:
        super().__init__()
        self.failures = failures
        self.failure_status = failure_status
        self.failure_retry = failure_retry
        self.replies = list(replies)
        self.api_key = api_key
        self.first_token_delay_s = first_token_delay_s
        self.token_delay_s = token_delay_s
        self.ledger = OpenAILedger()
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        """What to give the OpenAI client as ``base_url`` (``OPENAI_BASE_URL``)."""
        return f"http://{HOST}:{self.port}/v1"

    async def _start_serving(self) -> int:
        app = web.Application()
        app.router.add_post(COMPLETIONS_PATH, self._completions)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0)
        await site.start()
        return int(self._runner.addresses[0][1])

    async def _stop_serving(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _next_reply(self) -> Reply:
        index = len(self.ledger.completions)
        return self.replies[index] if index < len(self.replies) else Reply(FALLBACK_REPLY)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        authorization = request.headers.get("Authorization", "")
        self.ledger.authorizations.append(authorization)
        if authorization != f"Bearer {self.api_key}":
            error = {
                "message": "Incorrect API key provided.",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            }
            return web.json_response({"error": error}, status=401)
        body = await request.json()
        if not body.get("stream"):
            return web.json_response(
                {"error": {"message": "this fake only streams", "type": "invalid_request_error"}}, status=400
            )

        if len(self.ledger.failures) < self.failures:
            return self._fail(body)

        reply = self._next_reply()
        requested = str(body["model"])
        messages = list(body.get("messages", []))
        tools = body.get("tools")
        prompt = prompt_tokens(messages, tools)
        if reply.tool_call is not None:
            pieces = tokens_of(reply.tool_call.arguments)
            planned = count_tokens(reply.tool_call.name) + len(pieces)
        else:
            pieces = tokens_of(reply.text)
            planned = len(pieces)
        completion = Completion(
            requested_model=requested,
            model=DATED_MODELS.get(requested, requested),
            messages=messages,
            tools=tools,
            prompt_tokens=prompt,
            cached_tokens=min(reply.cached_tokens, prompt),
            reasoning_tokens=reply.reasoning_tokens,
            planned_tokens=planned,
            started_ns=time.time_ns(),
        )
        self.ledger.completions.append(completion)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        try:
            await self._stream(_SSE(request, response, completion), reply, pieces, include_usage)
        except asyncio.CancelledError:  # the server cancels a handler whose client went away
            completion.cut = not completion.finished
            raise
        return response

    def _fail(self, body: dict[str, Any]) -> web.Response:
        error = {"message": SERVER_ERROR_MESSAGE, "type": "server_error", "param": None, "code": None}
        self.ledger.failures.append(
            FailedRequest(
                status=self.failure_status,
                body={"error": error},
                received_ns=time.time_ns(),
                messages=list(body.get("messages", [])),
            )
        )
        headers = {"x-request-id": f"req_{uuid.uuid4().hex[:24]}"}
        if self.failure_retry is not None:
            headers["x-should-retry"] = "true" if self.failure_retry else "false"
        return web.json_response({"error": error}, status=self.failure_status, headers=headers)

    async def _stream(self, stream: _SSE, reply: Reply, pieces: list[str], include_usage: bool) -> None:
        completion = stream.completion
        await asyncio.sleep(self.first_token_delay_s)
        if reply.tool_call is None:
            if not await stream.chunk({"role": "assistant", "content": "", "refusal": None}):
                return
            for piece in pieces:
                if not await stream.chunk({"content": piece}):
                    return
                completion.sent_tokens += 1
                completion.text_sent += piece
                await asyncio.sleep(self.token_delay_s)
            finish_reason = "stop"
        else:
            call = reply.tool_call
            opening = {"index": 0, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
            if not await stream.chunk({"role": "assistant", "content": None, "tool_calls": [opening]}):
                return
            completion.sent_tokens += count_tokens(call.name)
            for piece in pieces:
                if not await stream.chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}):
                    return
                completion.sent_tokens += 1
                await asyncio.sleep(self.token_delay_s)
            finish_reason = "tool_calls"
        if not await stream.chunk({}, finish_reason=finish_reason):
            return
        if include_usage and not await stream.usage():
            return
        if await stream.done():
            completion.finished = True


class _SSE:
    """Writes one completion's chunks; each write says whether the client is still there."""

    def __init__(self, request: web.Request, response: web.StreamResponse, completion: Completion) -> None:
        self.request = request
        self.response = response
        self.completion = completion
        self.id = f"chatcmpl-{uuid.uuid4().hex[:29]}"
        self.created = int(time.time())

    def _base(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.completion.model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake0001",
        }

    async def chunk(self, delta: dict[str, Any], *, finish_reason: str | None = None) -> bool:
        payload = {
            **self._base(),
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        payload["usage"] = None
        return await self._write(payload)

    async def usage(self) -> bool:
        return await self._write({**self._base(), "choices": [], "usage": self.completion.usage})

    async def done(self) -> bool:
        return await self._send(b"data: [DONE]\n\n")

    async def _write(self, payload: dict[str, Any]) -> bool:
        return await self._send(f"data: {json.dumps(payload)}\n\n".encode())

    async def _send(self, data: bytes) -> bool:
        transport = self.request.transport
        if transport is None or transport.is_closing():
            self.completion.cut = True
            return False
        try:
            await self.response.write(data)
        except (ConnectionError, RuntimeError):
            self.completion.cut = True
            return False
        return True


__all__ = [
    "DATED_MODELS",
    "SERVER_ERROR_MESSAGE",
    "Completion",
    "FailedRequest",
    "FakeOpenAI",
    "OpenAILedger",
    "Reply",
    "ToolCall",
    "count_tokens",
    "prompt_tokens",
    "tokens_of",
]
