"""Client-side and server-side costing give the same cost in Langfuse, end to end.

The offline call runs with ``LANGFUSE_COSTING=server`` after ``register_models`` put the price
table into the local Langfuse: the generations carry usage only, and the cost Langfuse's server
rules give each of them (``tests/support/langfuse_models.py``) is the tracer's own, exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from decimal import Decimal

import pytest

from app.offline import QUICK_SCRIPT, create_offline_services
from app.register_models import ExitCode, register
from pipecat_langfuse import PriceTable, TracingSettings, VoiceTracer
from tests.support.conversation import run_traced_call
from tests.support.langfuse_rules import COST_DETAILS, MODEL, USAGE_DETAILS, counts_in_model_usage, json_attribute
from tests.support.langfuse_server import StartLocalLangfuse
from tests.support.otel_global import fresh_global_tracer_provider


@pytest.fixture(autouse=True)
def _first_client_of_the_process() -> Iterator[None]:
    with fresh_global_tracer_provider():
        yield


def test_server_side_costing_sends_usage_only_and_langfuse_prices_it_as_the_tracer_would(
    local_langfuse: StartLocalLangfuse,
) -> None:
    server = local_langfuse(public_key="pk-lf-server-costing")
    env = {
        "LANGFUSE_PUBLIC_KEY": server.public_key,
        "LANGFUSE_SECRET_KEY": server.secret_key,
        "LANGFUSE_BASE_URL": server.url,
    }
    assert register(env).exit_code is ExitCode.OK
    settings = TracingSettings(
        enabled=True, public_key=server.public_key, secret_key=server.secret_key, base_url=server.url
    )
    tracer = VoiceTracer(dataclasses.replace(settings, costing="server"), conversation_id="server-costing")
    call = run_traced_call(server, tracer, create_offline_services(QUICK_SCRIPT))

    prices = PriceTable.load()
    generations = [s for s in call.spans if counts_in_model_usage(s)]
    assert len(generations) == 9
    total = Decimal(0)
    for generation in generations:
        assert COST_DETAILS not in generation.attributes, generation.name  # usage only
        model, usage = json_attribute(generation, MODEL), json_attribute(generation, USAGE_DETAILS)
        charged = server.server_cost(model, usage)
        client = prices.cost(model, usage)
        assert charged is not None, model
        assert client is not None, model
        assert charged.stored == {key: Decimal(repr(cost)) for key, cost in client.items()}, model
        total += charged.total_stored
    # The summary (priced locally either way) is what Langfuse shows for the trace.
    assert float(total) == pytest.approx(call.summary.total_cost_usd, abs=1e-9)
