"""A local Anthropic Messages API (``POST /v1/messages``, streamed) with a billing ledger.

It answers the ``anthropic`` client (``client.beta.messages.create(stream=True)``, as Pipecat's
``AnthropicLLMService`` calls it: ``POST /v1/messages?beta=true``) with the server-sent events of
the real API::

    message_start        message.model = the dated snapshot; usage: input_tokens NET of the cache,
                         cache_creation_input_tokens, cache_read_input_tokens, output_tokens=1
    content_block_start  a text block
    ping
    content_block_delta  text_delta, one word (with its leading space) per event
    content_block_stop
    message_delta        stop_reason end_turn; usage: the final (cumulative) counts
    message_stop

Tokens are counted with ``bpe_openai``'s o200k_base (Anthropic's tokenizer is not public): a
system prompt or message counts 3 + the tokens of its role + the tokens of each text value
(tools: their JSON), and the reply is primed with 3 more (OpenAI's cookbook formula).

Prompt caching follows Anthropic's rules on the request's ``cache_control`` breakpoints (tools,
then system, then messages, in that order): a request reads the longest cached prefix that ends
at a breakpoint or at one of the 20 blocks before it, and writes the prefix up to its last
breakpoint when that prefix is at least ``min_cacheable_tokens`` long and not cached yet.
``input_tokens`` is what is neither read nor written. The real minimum is model-dependent
(thousands of tokens for Haiku 4.5); tests lower it so a short call caches.

The ledger bills, per request, the input, cache-read, cache-creation and output tokens. A
stream the client abandons (a barge-in) is billed the prompt plus the tokens of the deltas sent
before the client went away; it gets no ``message_delta`` usage.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import bpe_openai  # type: ignore[import-untyped]  # ships no type information
from aiohttp import web

from tests.support.providers import HOST, ThreadedServer

API_KEY = "sk-ant-fake-key"
DATED_MODELS: Mapping[str, str] = {
    "claude-haiku-4-5": "claude-haiku-4-5-20251001",
    "claude-sonnet-4-5": "claude-sonnet-4-5-20250929",
    "claude-opus-4-1": "claude-opus-4-1-20250805",
}
"""The snapshot an alias resolves to, as the API names it in ``message.model``."""

FALLBACK_REPLY = "Okay."
CACHE_LOOKBACK_BLOCKS = 20
TOKENS_PER_MESSAGE = 3
REPLY_PRIMING_TOKENS = 3
_PIECE_RE = re.compile(r"\s*\S+")
_ENCODING = bpe_openai.get_encoding("o200k_base")


def count_tokens(text: str) -> int:
    """o200k_base tokens of ``text``."""
    return len(_ENCODING.encode(text))


def reply_deltas(text: str) -> list[str]:
    """The ``text_delta`` pieces a reply is streamed as: words with their leading whitespace."""
    return _PIECE_RE.findall(text)


@dataclass
class MessagesRequest:
    """One ``POST /v1/messages`` and what it is billed (the ledger entry).

    Attributes:
        body: The request JSON.
        headers: The request headers (lower-case names).
        model: The model requested.
        response_model: The dated snapshot the response names.
        prompt_tokens: Every input token, cached or not.
        input_tokens: Input tokens neither read from nor written to the cache (Anthropic's
            ``input_tokens``, net of the cache).
        cache_read_input_tokens: Input tokens read from the cache.
        cache_creation_input_tokens: Input tokens written to the cache.
        reply: The reply the fake meant to stream.
        deltas_sent: The text deltas written before the stream ended or the client went away.
        completed: Whether ``message_stop`` was sent (False: the client went away first).
    """

    body: dict[str, Any]
    headers: dict[str, str]
    model: str
    response_model: str
    prompt_tokens: int
    input_tokens: int
    cache_read_input_tokens: int
    cache_creation_input_tokens: int
    reply: str
    deltas_sent: list[str] = field(default_factory=list)
    completed: bool = False

    @property
    def text_sent(self) -> str:
        return "".join(self.deltas_sent)

    @property
    def output_tokens(self) -> int:
        """Output tokens billed: those of the deltas sent."""
        return sum(count_tokens(d) for d in self.deltas_sent)

    def billed(self) -> dict[str, int]:
        """What the request is billed, by Anthropic's usage names."""
        return {
            "input_tokens": self.input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "output_tokens": self.output_tokens,
        }


@dataclass(frozen=True)
class _Block:
    key: str  # hash of the prompt up to and including this block, cache markers left out
    tokens: int  # cumulative tokens up to and including this block
    breakpoint: bool


def _strip_cache_control(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_strip_cache_control(v) for v in value]
    return value


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _block_tokens(block: Mapping[str, Any]) -> int:
    kind = block.get("type")
    if kind == "text":
        return count_tokens(str(block.get("text", "")))
    if kind == "tool_use":
        return count_tokens(str(block.get("name", ""))) + count_tokens(json.dumps(block.get("input", {})))
    if kind == "tool_result":
        inner = block.get("content", "")
        return sum(_block_tokens(b) for b in _content_blocks(inner))
    return count_tokens(json.dumps(_strip_cache_control(dict(block)), sort_keys=True))


def prompt_blocks(body: Mapping[str, Any]) -> list[_Block]:
    """The request's prompt as cacheable blocks (tools, system, messages) with cumulative token counts.

    A message's (or the system prompt's) own overhead, 3 tokens plus its role, is counted with its
    first block.
    """
    items: list[tuple[Any, int, bool]] = []
    for tool in body.get("tools") or []:
        items.append(
            (tool, count_tokens(json.dumps(_strip_cache_control(tool), sort_keys=True)), "cache_control" in tool)
        )
    system = body.get("system")
    if system:
        overhead = TOKENS_PER_MESSAGE + count_tokens("system")
        for i, block in enumerate(_content_blocks(system)):
            items.append(
                (("system", block), _block_tokens(block) + (overhead if i == 0 else 0), "cache_control" in block)
            )
    for message in body.get("messages") or []:
        role = str(message.get("role", ""))
        overhead = TOKENS_PER_MESSAGE + count_tokens(role)
        blocks = _content_blocks(message.get("content"))
        if not blocks:
            items.append(((role, None), overhead, False))
        for i, block in enumerate(blocks):
            items.append(((role, block), _block_tokens(block) + (overhead if i == 0 else 0), "cache_control" in block))
    result: list[_Block] = []
    digest = hashlib.sha256()
    total = 0
    for item, tokens, breakpoint in items:
        digest.update(json.dumps(_strip_cache_control(item), sort_keys=True).encode())
        total += tokens
        result.append(_Block(key=digest.copy().hexdigest(), tokens=total, breakpoint=breakpoint))
    return result


class FakeAnthropic(ThreadedServer):
    """Anthropic's streamed Messages API on 127.0.0.1, replying with scripted texts in order.

    Args:
        replies: The text of each response, in request order; later requests get ``Okay.``.
        first_token_delay_s: Delay between ``message_start`` and the first text delta.
        token_delay_s: Delay between text deltas (so a barge-in can cut a stream).
        min_cacheable_tokens: Shortest prefix that is written to the cache.
        api_key: The ``x-api-key`` the fake accepts.
    """

    name = "fake-anthropic"

    def __init__(
        self,
        replies: Sequence[str],
        *,
        first_token_delay_s: float = 0.05,
        token_delay_s: float = 0.02,
        min_cacheable_tokens: int = 0,
        api_key: str = API_KEY,
    ) -> None:
        super().__init__()
        self.replies = list(replies)
        self.first_token_delay_s = first_token_delay_s
        self.token_delay_s = token_delay_s
        self.min_cacheable_tokens = min_cacheable_tokens
        self.api_key = api_key
        self.requests: list[MessagesRequest] = []
        """The ledger: one entry per streamed request, in arrival order."""
        self.rejected: list[tuple[int, str]] = []
        self._cache: set[str] = set()
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        """``ANTHROPIC_BASE_URL`` for the client."""
        return f"http://{HOST}:{self.port}"

    def totals(self) -> dict[str, int]:
        """The ledger summed over every request."""
        totals = dict.fromkeys(
            ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens", "output_tokens"), 0
        )
        for request in self.requests:
            for key, value in request.billed().items():
                totals[key] += value
        return totals

    # -- Server --------------------------------------------------------------------------

    async def _start_serving(self) -> int:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only through the asyncio server
        assert server is not None
        return int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    async def _stop_serving(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("x-api-key") != self.api_key:
            self.rejected.append((401, "x-api-key"))
            return _error(401, "authentication_error", "invalid x-api-key")
        body = await request.json()
        if not body.get("stream"):
            self.rejected.append((400, "stream"))
            return _error(400, "invalid_request_error", "this fake only streams")
        model = str(body.get("model", ""))
        entry = self._bill_prompt(body, {k.lower(): v for k, v in request.headers.items()}, model)
        with self._lock:
            self.requests.append(entry)

        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        response.headers["request-id"] = f"req_fake_{len(self.requests)}"
        await response.prepare(request)
        message_id = f"msg_fake_{len(self.requests):04d}"
        usage = {
            "input_tokens": entry.input_tokens,
            "cache_creation_input_tokens": entry.cache_creation_input_tokens,
            "cache_read_input_tokens": entry.cache_read_input_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": entry.cache_creation_input_tokens,
                "ephemeral_1h_input_tokens": 0,
            },
            "output_tokens": 1,
            "service_tier": "standard",
        }
        start = {
            "type": "message_start",
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": entry.response_model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": usage,
            },
        }
        try:
            await _event(response, "message_start", start)
            await asyncio.sleep(self.first_token_delay_s)
            if _gone(request):
                return response
            await _event(
                response,
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            )
            await _event(response, "ping", {"type": "ping"})
            for i, delta in enumerate(reply_deltas(entry.reply)):
                if i:
                    await asyncio.sleep(self.token_delay_s)
                if _gone(request):
                    return response
                await _event(
                    response,
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": delta}},
                )
                entry.deltas_sent.append(delta)
            await _event(response, "content_block_stop", {"type": "content_block_stop", "index": 0})
            final_usage = {
                "input_tokens": entry.input_tokens,
                "cache_creation_input_tokens": entry.cache_creation_input_tokens,
                "cache_read_input_tokens": entry.cache_read_input_tokens,
                "output_tokens": entry.output_tokens,
            }
            await _event(
                response,
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": final_usage,
                },
            )
            await _event(response, "message_stop", {"type": "message_stop"})
            entry.completed = True
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass  # the client went away: what was sent is what is billed
        return response

    def _bill_prompt(self, body: dict[str, Any], headers: dict[str, str], model: str) -> MessagesRequest:
        blocks = prompt_blocks(body)
        prompt_tokens = (blocks[-1].tokens if blocks else 0) + REPLY_PRIMING_TOKENS
        with self._lock:
            read = 0
            for i, block in enumerate(blocks):
                if not block.breakpoint:
                    continue
                for j in range(i, max(-1, i - CACHE_LOOKBACK_BLOCKS - 1), -1):
                    if blocks[j].key in self._cache:
                        read = max(read, blocks[j].tokens)
                        break
            breakpoints = [b for b in blocks if b.breakpoint and b.tokens >= self.min_cacheable_tokens]
            creation = 0
            if breakpoints and breakpoints[-1].key not in self._cache:
                creation = max(0, breakpoints[-1].tokens - read)
            self._cache.update(b.key for b in breakpoints)
            index = len(self.requests)
        reply = self.replies[index] if index < len(self.replies) else FALLBACK_REPLY
        return MessagesRequest(
            body=body,
            headers=headers,
            model=model,
            response_model=DATED_MODELS.get(model, model),
            prompt_tokens=prompt_tokens,
            input_tokens=prompt_tokens - read - creation,
            cache_read_input_tokens=read,
            cache_creation_input_tokens=creation,
            reply=reply,
        )


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _event(response: web.StreamResponse, name: str, data: Mapping[str, Any]) -> None:
    await response.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())


def _error(status: int, kind: str, message: str) -> web.Response:
    return web.json_response({"type": "error", "error": {"type": kind, "message": message}}, status=status)


__all__ = [
    "API_KEY",
    "DATED_MODELS",
    "FakeAnthropic",
    "MessagesRequest",
    "count_tokens",
    "prompt_blocks",
    "reply_deltas",
]
