"""The public names are a contract (design.md): this test pins them."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = {
    "callmeter": [
        "AgentSession",
        "CallmeterError",
        "CloseEvent",
        "InvalidArgumentError",
        "InvalidMetricsError",
        "MetricsCollectedEvent",
        "SessionStartedEvent",
        "__version__",
        "current_session",
        "current_speech_id",
        "log_metrics",
        "metrics",
    ],
    "callmeter.metrics": [
        "AgentMetrics",
        "CloseEvent",
        "EOUMetrics",
        "LLMMetrics",
        "LatencyBudgetExceededEvent",
        "LatencySummary",
        "Metadata",
        "MetricsCollectedEvent",
        "MetricsNotKeptError",
        "ModelUsage",
        "Prices",
        "RealtimeModelMetrics",
        "STTMetrics",
        "SessionStartedEvent",
        "TTSMetrics",
        "ToolMetrics",
        "ToolUsage",
        "TurnBreakdown",
        "TurnMetrics",
        "UsageCollector",
        "UsageSummary",
        "VADMetrics",
        "decode",
        "encode",
    ],
    "callmeter.records": [
        "RECORD_VERSION",
        "Record",
        "RecordReader",
        "decode",
        "encode",
        "encode_lines",
        "json_schema",
        "read_records",
    ],
    "callmeter.export": ["JSONLWriter", "QueueSink", "Sink", "SinkBase"],
    "callmeter.export.jsonl": ["JSONLWriter"],
    "callmeter.integrations.openai": ["instrument", "uninstrument", "run_turn", "tool"],
    "callmeter.agent": ["run_turn", "tool", "Tool", "ToolResult", "TurnResult"],
    "callmeter.errors": [
        "CallmeterError",
        "InvalidArgumentError",
        "InvalidMetricsError",
        "InvalidRecordError",
        "MetricsNotKeptError",
        "PriceFileError",
        "SimServerError",
        "SinkClosedError",
    ],
}


@pytest.mark.parametrize("module", PUBLIC)
def test_public_names_exist(module):
    mod = importlib.import_module(module)
    missing = [name for name in PUBLIC[module] if not hasattr(mod, name)]
    assert not missing, f"{module} lost public names: {missing}"


@pytest.mark.parametrize("module", ["callmeter", "callmeter.metrics", "callmeter.records"])
def test_all_lists_only_real_names(module):
    mod = importlib.import_module(module)
    assert all(hasattr(mod, name) for name in mod.__all__)
    assert set(PUBLIC[module]) <= set(mod.__all__)


def test_the_public_exceptions_are_the_ones_in_errors():
    import callmeter.metrics as m
    import callmeter.pricing as p
    from callmeter import errors
    from callmeter.sim import SimServerError

    assert m.MetricsNotKeptError is errors.MetricsNotKeptError
    assert m.PriceFileError is p.PriceFileError is errors.PriceFileError
    assert SimServerError is errors.SimServerError


def test_every_callmeter_exception_derives_from_callmeter_error():
    from callmeter import errors

    for name in dir(errors):
        obj = getattr(errors, name)
        if (
            isinstance(obj, type)
            and issubclass(obj, Exception)
            and obj.__module__ == errors.__name__
        ):
            assert issubclass(obj, errors.CallmeterError), name
