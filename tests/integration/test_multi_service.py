"""Two or more services of one kind in one call: each generation is attributed to the right one.

Each scenario is one short real call (harness: tests/support/multi_service.py): a real
``PipelineWorker`` with the tracer attached, the real Langfuse SDK exporting to the local endpoint.

1. Two LLMs in a ``ParallelPipeline``: the one that answers (gpt-4.1-mini) and a classifier
   (gpt-4.1-nano) whose text is never spoken. Per turn, one generation per LLM, each with its own
   model, processor, usage and cost, both under that turn, both with the turn's context as input.
   Run with the tracer's own turns and with Pipecat's tracing merged (its ``llm`` spans adopted as
   the generations: each must keep its own ``gen_ai.request.model``).
2. An ``LLMSwitcher`` with ``ServiceSwitcherStrategyFailover``: the primary fails at turn 2 with an
   error that leaves it unusable; the backup answers from then on.
3. Pipecat Flows (``pipecat.flows``, part of Pipecat) over two nodes, "greeting" -> "order",
   followed with ``tracer.attach(worker, flow_manager=...)``: each turn's metadata has
   ``flow_node`` (current when the turn started) and ``flow_next_node`` (current when it ended,
   only if it changed); each LLM generation has ``metadata.flow_node`` (current when it started).
   Flows is imported from Pipecat, not from the standalone, frozen ``pipecat-ai-flows`` package:
   with both installed, Pipecat logs an error at import.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pipecat.flows import FlowArgs, FlowManager, FlowsFunctionSchema, NodeConfig
from pipecat.pipeline.llm_switcher import LLMSwitcher
from pipecat.pipeline.parallel_pipeline import ParallelPipeline
from pipecat.pipeline.service_switcher import ServiceSwitcherStrategyFailover
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair

from pipecat_langfuse import PriceTable, TracingSettings, VoiceTracer
from tests.support.langfuse_rules import (
    COST_DETAILS,
    INPUT,
    LEVEL,
    METADATA,
    MODEL,
    OUTPUT,
    STATUS_MESSAGE,
    USAGE_DETAILS,
    observation_attributes,
    observation_type,
)
from tests.support.langfuse_server import LocalLangfuse, ReceivedSpan, StartLocalLangfuse
from tests.support.multi_service import (
    Answer,
    Caller,
    MultiServiceCall,
    Say,
    ScriptedLLM,
    Unspoken,
    run_multi_service_call,
    usage_of,
)
from tests.support.otel_global import fresh_global_tracer_provider

PRICES = PriceTable.load()
LLM = "llm-completion"
MAIN_MODEL, SMALL_MODEL = "gpt-4.1-mini", "gpt-4.1-nano"
SYSTEM = {"role": "system", "content": "You are the voice of Pizza Place. Be brief."}


@pytest.fixture(scope="module", autouse=True)
def _first_langfuse_client_of_the_process() -> Iterator[None]:
    # Pipecat's spans reach the client whose provider is the global one: make it this module's.
    with fresh_global_tracer_provider():
        yield


@pytest.fixture(scope="module")
def server(module_local_langfuse: StartLocalLangfuse) -> LocalLangfuse:
    return module_local_langfuse(public_key="pk-lf-multi-service")  # the SDK keeps one client per key


def new_tracer(server: LocalLangfuse, conversation_id: str) -> VoiceTracer:
    settings = TracingSettings(
        enabled=True, public_key=server.public_key, secret_key=server.secret_key, base_url=server.url
    )
    return VoiceTracer(settings, conversation_id=conversation_id)


def turns_of(call: MultiServiceCall) -> list[ReceivedSpan]:
    return sorted((s for s in call.spans if s.name.startswith("turn ")), key=lambda s: s.start_ns)


def llm_generations(call: MultiServiceCall) -> list[ReceivedSpan]:
    return sorted((s for s in call.spans if s.name == LLM), key=lambda s: s.start_ns)


def metadata_of(span: ReceivedSpan) -> dict[str, Any]:
    return dict(observation_attributes(span.attributes).get(METADATA, {}))


def attribute(span: ReceivedSpan, key: str) -> Any:
    return observation_attributes(span.attributes).get(key)


def by_turn(call: MultiServiceCall) -> list[list[tuple[str, str]]]:
    """Per turn, in order: the (processor, model) of each LLM generation under it, in start order."""
    generations = llm_generations(call)
    return [
        [(metadata_of(g)["processor"], attribute(g, MODEL)) for g in generations if g.parent_span_id == turn.span_id]
        for turn in turns_of(call)
    ]


def assert_priced(generation: ReceivedSpan, model: str, usage: dict[str, int]) -> None:
    """``generation`` is of ``model``, with exactly ``usage``, priced from the table's entry of ``model``."""
    assert attribute(generation, MODEL) == model
    assert attribute(generation, USAGE_DETAILS) == usage
    assert attribute(generation, COST_DETAILS) == PRICES.cost(model, usage)
    entry = PRICES.find(model, "llm")
    assert entry is not None
    assert metadata_of(generation)["price_entry"] == entry.name


# -- 1. Two LLMs in a ParallelPipeline ------------------------------------------------------------

PARALLEL_TURNS = (
    ("I'd like a pizza, please.", "Sure. Which one would you like?", "order"),
    ("What are your opening hours?", "We are open from noon to ten.", "question"),
    ("Thanks, bye.", "Goodbye!", "goodbye"),
)


@pytest.fixture(scope="module", params=[False, True], ids=["own-turns", "pipecat-tracing"])
def parallel(
    request: pytest.FixtureRequest, server: LocalLangfuse
) -> tuple[MultiServiceCall, ScriptedLLM, ScriptedLLM]:
    main = ScriptedLLM(MAIN_MODEL, [Answer(reply) for _, reply, _ in PARALLEL_TURNS], first_token_s=0.06)
    classifier = ScriptedLLM(SMALL_MODEL, [Answer(label) for _, _, label in PARALLEL_TURNS], first_token_s=0.02)
    caller = Caller([Say(text) for text, _, _ in PARALLEL_TURNS])
    call = run_multi_service_call(
        server,
        new_tracer(server, f"conv-parallel-{request.param_index}"),
        caller,
        [ParallelPipeline([main], [classifier, Unspoken()])],
        context=LLMContext(messages=[SYSTEM]),
        pipecat_tracing=request.param,
    )
    return call, main, classifier


def test_parallel_llms_each_have_one_generation_per_turn(
    parallel: tuple[MultiServiceCall, ScriptedLLM, ScriptedLLM],
) -> None:
    call, main, classifier = parallel
    assert call.speaker.spoken == [reply for _, reply, _ in PARALLEL_TURNS]  # the classifier is never spoken
    assert len(main.calls) == len(classifier.calls) == 3
    pairs = by_turn(call)
    assert len(pairs) == 3
    for turn in pairs:
        assert sorted(turn) == sorted([(main.name, MAIN_MODEL), (classifier.name, SMALL_MODEL)])
    assert {observation_type(g) for g in llm_generations(call)} == {"GENERATION"}


def test_parallel_llms_are_each_priced_with_their_own_model_and_usage(
    parallel: tuple[MultiServiceCall, ScriptedLLM, ScriptedLLM],
) -> None:
    call, main, classifier = parallel
    turns = turns_of(call)
    for service, model, column in ((main, MAIN_MODEL, 1), (classifier, SMALL_MODEL, 2)):
        mine = [g for g in llm_generations(call) if metadata_of(g)["processor"] == service.name]
        assert [g.parent_span_id for g in mine] == [t.span_id for t in turns], service.name
        for i, generation in enumerate(mine):
            answer = Answer(PARALLEL_TURNS[i][column])
            assert_priced(generation, model, usage_of(service.calls[i], answer))
            assert attribute(generation, OUTPUT) == answer.text
            assert metadata_of(generation)["turn"] == i + 1
    # gpt-4.1-mini: $0.40 / $1.60, gpt-4.1-nano: $0.10 / $0.40 per million input / output tokens.
    first_main = next(g for g in llm_generations(call) if metadata_of(g)["processor"] == main.name)
    first_small = next(g for g in llm_generations(call) if metadata_of(g)["processor"] == classifier.name)
    prompt = usage_of(main.calls[0], Answer())["input"]
    assert attribute(first_main, COST_DETAILS)["input"] == pytest.approx(prompt * 0.40e-6)
    assert attribute(first_small, COST_DETAILS)["input"] == pytest.approx(prompt * 0.10e-6)


def test_parallel_llms_both_get_the_turns_context_as_input(
    parallel: tuple[MultiServiceCall, ScriptedLLM, ScriptedLLM],
) -> None:
    call, main, classifier = parallel
    assert main.calls == classifier.calls  # one LLMContextFrame, given to both branches
    for service in (main, classifier):
        mine = [g for g in llm_generations(call) if metadata_of(g)["processor"] == service.name]
        assert [attribute(g, INPUT) for g in mine] == service.calls, service.name
    assert [m["content"] for m in main.calls[2] if m["role"] == "user"] == [t for t, _, _ in PARALLEL_TURNS]


def test_parallel_llms_keep_their_own_pipecat_llm_span(
    parallel: tuple[MultiServiceCall, ScriptedLLM, ScriptedLLM],
) -> None:
    call, main, classifier = parallel
    generations = llm_generations(call)
    assert len(generations) == 6
    if not call.tracer.merged_with_pipecat:  # the tracer's own turns: the generations are its own
        assert {g.scope for g in generations} == {"langfuse-sdk"}
        assert not any("gen_ai.request.model" in g.attributes for g in generations)
        return
    assert {g.scope for g in generations} == {"pipecat"}  # Pipecat's llm spans are the generations
    for generation in generations:
        model = attribute(generation, MODEL)
        assert generation.attributes["gen_ai.request.model"] == model, metadata_of(generation)["processor"]
        processor = metadata_of(generation)["processor"]
        assert model == {main.name: MAIN_MODEL, classifier.name: SMALL_MODEL}[processor]
        assert attribute(generation, OUTPUT) in {t[1] for t in PARALLEL_TURNS} | {t[2] for t in PARALLEL_TURNS}
        expected_output = {main.name: 1, classifier.name: 2}[processor]
        turn = metadata_of(generation)["turn"]
        assert attribute(generation, OUTPUT) == PARALLEL_TURNS[turn - 1][expected_output]


# -- 2. A fallback LLM that takes over mid-call ------------------------------------------------

AUTH_ERROR = "Incorrect API key provided"
PRIMARY_ANSWERS = (Answer("Yes, we are open until ten."), Answer(fail=AUTH_ERROR))
BACKUP_ANSWERS = (Answer("Of course. Which pizza would you like?"), Answer("One margherita, coming up."))
FAILOVER_UTTERANCES = (
    Say("Hi, are you open today?"),
    Say("Can I order a pizza?"),  # the primary fails: no reply
    Say("Hello? Can I order a pizza?"),  # the same turn (the bot has not spoken): the backup answers
    Say("A margherita, please."),
)


@pytest.fixture(scope="module", params=[False, True], ids=["own-turns", "pipecat-tracing"])
def failover(
    request: pytest.FixtureRequest, server: LocalLangfuse
) -> tuple[MultiServiceCall, ScriptedLLM, ScriptedLLM]:
    primary = ScriptedLLM(MAIN_MODEL, PRIMARY_ANSWERS)
    backup = ScriptedLLM(SMALL_MODEL, BACKUP_ANSWERS)
    switcher = LLMSwitcher(llms=[primary, backup], strategy_type=ServiceSwitcherStrategyFailover)
    call = run_multi_service_call(
        server,
        new_tracer(server, f"conv-failover-{request.param_index}"),
        Caller(FAILOVER_UTTERANCES),
        [switcher],
        context=LLMContext(messages=[SYSTEM]),
        pipecat_tracing=request.param,
    )
    assert switcher.strategy.active_service is backup
    assert not primary.is_usable
    return call, primary, backup


def test_failover_each_turn_has_the_generations_of_the_llm_that_served_it(
    failover: tuple[MultiServiceCall, ScriptedLLM, ScriptedLLM],
) -> None:
    call, primary, backup = failover
    assert call.speaker.spoken == [PRIMARY_ANSWERS[0].text, *(a.text for a in BACKUP_ANSWERS)]
    assert (len(primary.calls), len(backup.calls)) == (2, 2)
    assert by_turn(call) == [
        [(primary.name, MAIN_MODEL)],
        [(primary.name, MAIN_MODEL), (backup.name, SMALL_MODEL)],  # the failed request, then the backup's
        [(backup.name, SMALL_MODEL)],
    ]


def test_failover_generations_are_priced_with_their_own_model(
    failover: tuple[MultiServiceCall, ScriptedLLM, ScriptedLLM],
) -> None:
    call, primary, backup = failover
    first, _failed, taken_over, last = llm_generations(call)
    assert_priced(first, MAIN_MODEL, usage_of(primary.calls[0], PRIMARY_ANSWERS[0]))
    assert_priced(taken_over, SMALL_MODEL, usage_of(backup.calls[0], BACKUP_ANSWERS[0]))
    assert_priced(last, SMALL_MODEL, usage_of(backup.calls[1], BACKUP_ANSWERS[1]))
    for generation in (first, taken_over, last):
        assert attribute(generation, LEVEL) is None
        assert "error" not in metadata_of(generation)
    # The backup answered the turn's whole context: both tries of the caller.
    assert attribute(taken_over, INPUT) == backup.calls[0]
    assert [m["content"] for m in backup.calls[0] if m["role"] == "user"] == [
        "Hi, are you open today?",
        "Can I order a pizza?",
        "Hello? Can I order a pizza?",
    ]


def test_failover_the_failed_request_is_an_error_of_the_primary_without_usage(
    failover: tuple[MultiServiceCall, ScriptedLLM, ScriptedLLM],
) -> None:
    call, primary, _backup = failover
    failed = llm_generations(call)[1]
    attributes = observation_attributes(failed.attributes)
    assert attributes.get(MODEL) == MAIN_MODEL
    assert attributes.get(LEVEL) == "ERROR"
    assert attributes.get(STATUS_MESSAGE) == AUTH_ERROR
    assert USAGE_DETAILS not in attributes
    assert COST_DETAILS not in attributes
    assert attributes.get(INPUT) == primary.calls[1]
    metadata = attributes[METADATA]
    assert metadata["processor"] == primary.name
    assert metadata["turn"] == 2
    # The primary never worked again: its error did not recover.
    assert metadata["error"] == {
        "message": AUTH_ERROR,
        "fatal": False,
        "recovered": False,
        "category": "authentication",
    }
    (root,) = [s for s in call.spans if s.name == "voice-conversation"]
    assert metadata_of(root)["errors"] == 1
    assert metadata_of(root)["unrecovered_errors"] == 1


# -- 3. Pipecat Flows over two nodes ------------------------------------------------------------

GREETING_REPLY = "Welcome to Pizza Place! What can I get you?"
ORDER_QUESTION = "What size would you like?"
ORDER_CONFIRMATION = "One large pizza, coming up."
FLOW_ANSWERS = (
    Answer(GREETING_REPLY),
    Answer(tool_call=("start_order", {})),  # in "greeting": the transition
    Answer(ORDER_QUESTION),  # in "order", run by the transition
    Answer(ORDER_CONFIRMATION),
)


async def start_order(args: FlowArgs, flow_manager: FlowManager) -> tuple[None, NodeConfig]:
    return None, order_node()


def order_node() -> NodeConfig:
    return NodeConfig(
        name="order",
        task_messages=[{"role": "developer", "content": "Ask for the size, then confirm the order."}],
        functions=[],
    )


def greeting_node() -> NodeConfig:
    return NodeConfig(
        name="greeting",
        role_message="You are the voice of Pizza Place. Be brief.",
        task_messages=[{"role": "developer", "content": "Greet the caller. Call start_order when they want to order."}],
        functions=[
            FlowsFunctionSchema(
                name="start_order",
                description="The caller wants to order.",
                properties={},
                required=[],
                handler=start_order,
            )
        ],
    )


@pytest.fixture(scope="module", params=[False, True], ids=["own-turns", "pipecat-tracing"])
def flow(request: pytest.FixtureRequest, server: LocalLangfuse) -> tuple[MultiServiceCall, ScriptedLLM, FlowManager]:
    managers: list[FlowManager] = []
    llm = ScriptedLLM(MAIN_MODEL, FLOW_ANSWERS, note=lambda: managers[0].current_node)

    async def setup(worker: PipelineWorker, pair: LLMContextAggregatorPair) -> dict[str, Any]:
        manager = FlowManager(worker=worker, llm=llm, context_aggregator=pair)
        managers.append(manager)
        await manager.initialize(greeting_node())  # before the call: "greeting" is current from its start
        return {"flow_manager": manager}

    caller = Caller([Say("I'd like to order a pizza.", responses=2), Say("Large, please.")], greeting_responses=1)
    call = run_multi_service_call(
        server,
        new_tracer(server, f"conv-flow-{request.param_index}"),
        caller,
        [llm],
        pipecat_tracing=request.param,
        setup=setup,
    )
    return call, llm, managers[0]


def test_flow_runs_two_nodes_and_each_turn_has_its_generations(
    flow: tuple[MultiServiceCall, ScriptedLLM, FlowManager],
) -> None:
    call, llm, manager = flow
    assert manager.current_node == "order"
    assert llm.notes == ["greeting", "greeting", "order", "order"]  # the node of each request, as Flows saw it
    assert call.speaker.spoken == [GREETING_REPLY, ORDER_QUESTION, ORDER_CONFIRMATION]
    assert by_turn(call) == [[(llm.name, MAIN_MODEL)], [(llm.name, MAIN_MODEL)] * 2, [(llm.name, MAIN_MODEL)]]
    generations = llm_generations(call)
    for generation, messages, answer in zip(generations, llm.calls, FLOW_ANSWERS, strict=True):
        assert_priced(generation, MAIN_MODEL, usage_of(messages, answer))
    transition = generations[1]
    assert attribute(transition, OUTPUT) == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_start_order_2", "type": "function", "function": {"name": "start_order", "arguments": "{}"}}
        ],
    }
    (tool,) = [s for s in call.spans if s.name == "start_order"]
    assert tool.parent_span_id == turns_of(call)[1].span_id


def test_flow_each_turn_says_its_node_and_the_node_it_moved_to(
    flow: tuple[MultiServiceCall, ScriptedLLM, FlowManager],
) -> None:
    call, _llm, _manager = flow
    nodes = [
        {key: metadata_of(turn).get(key) for key in ("flow_node", "flow_next_node") if key in metadata_of(turn)}
        for turn in turns_of(call)
    ]
    assert nodes == [
        {"flow_node": "greeting"},
        {"flow_node": "greeting", "flow_next_node": "order"},  # start_order moved the flow during turn 2
        {"flow_node": "order"},
    ]


def test_flow_each_generation_says_the_node_it_started_in(
    flow: tuple[MultiServiceCall, ScriptedLLM, FlowManager],
) -> None:
    call, llm, _manager = flow
    assert [metadata_of(g).get("flow_node") for g in llm_generations(call)] == llm.notes
