"""OTelExporter: the real OpenTelemetry SDK with in-memory readers, and real OTLP/HTTP."""

from __future__ import annotations

import gzip
import http.server
import subprocess
import sys
import threading
import time
import zlib

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from callmeter import AgentSession, metrics
from callmeter.errors import InvalidArgumentError, SinkClosedError
from callmeter.export.otel import (
    DURATION_BUCKETS,
    SCHEMA_URL,
    TOKEN_BUCKETS,
    OTelExporter,
)

T0 = 1_790_000_000.0
NS = 1_000_000_000


@pytest.fixture
def otel():
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    spans = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(spans))
    exporter = OTelExporter(meter_provider=mp, tracer_provider=tp)
    yield exporter, reader, spans
    exporter.close()
    mp.shutdown()
    tp.shutdown()


def metric_map(reader) -> dict:
    out = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            assert sm.scope.name == "callmeter"
            assert sm.scope.schema_url == SCHEMA_URL
            for m in sm.metrics:
                out[m.name] = m
    return out


def points(metric, **attrs) -> list:
    return [
        dp
        for dp in metric.data.data_points
        if all(dp.attributes.get(k) == v for k, v in attrs.items())
    ]


def run_call(session: AgentSession, *, fail_tool: bool = False) -> None:
    with session:
        with session.turn() as turn:
            turn.user_stopped_speaking()
            with session.stt_request(model="nova-3", provider="deepgram") as stt:
                time.sleep(0.01)
                stt.set_usage(audio_duration=1.5)
            with session.llm_generation(model="gpt-4o-mini", provider="openai") as gen:
                time.sleep(0.02)
                gen.first_token()
                gen.set_usage(prompt_tokens=1200, completion_tokens=40, prompt_cached_tokens=200)
            try:
                with session.tool_call("lookup_order", call_id="call_1"):
                    time.sleep(0.01)
                    if fail_tool:
                        raise KeyError("order")
            except KeyError:
                pass
            with session.llm_generation(model="gpt-4o-mini", provider="openai") as gen:
                time.sleep(0.01)
                gen.first_token()
                gen.set_usage(prompt_tokens=1300, completion_tokens=60)
            with session.tts_request(model="aura-2", provider="deepgram") as tts:
                time.sleep(0.01)
                tts.first_byte()
                tts.set_usage(characters_count=120, audio_duration=2.0)
        # a measurement outside any turn hangs directly under the call
        with session.tool_call("hang_up"):
            pass


def test_metrics_names_units_attributes_buckets(otel):
    exporter, reader, _ = otel
    seen: list = []
    sessions = []
    for i in range(2):
        s = AgentSession(agent_name="support")
        s.on("metrics_collected", lambda ev: seen.append(ev.metrics))
        exporter.attach(s)
        sessions.append(s)
        run_call(s, fail_tool=(i == 1))
    assert exporter.flush(10)
    got = metric_map(reader)
    llm = [m for m in seen if isinstance(m, metrics.LLMMetrics)]
    tools = [m for m in seen if isinstance(m, metrics.ToolMetrics)]
    tts = [m for m in seen if isinstance(m, metrics.TTSMetrics)]
    turns = [m for m in seen if isinstance(m, metrics.TurnMetrics)]

    chat = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
    }
    dur = got["gen_ai.client.operation.duration"]
    assert dur.unit == "s"
    (dp,) = points(dur, **chat)
    assert dict(dp.attributes) == chat
    assert tuple(dp.explicit_bounds) == DURATION_BUCKETS
    assert dp.count == len(llm) == 4
    assert dp.sum == pytest.approx(sum(m.duration for m in llm), rel=1e-9)
    assert DURATION_BUCKETS == (
        0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92
    )  # fmt: skip

    ttfc = got["gen_ai.client.operation.time_to_first_chunk"]
    (dp,) = points(ttfc, **chat)
    assert ttfc.unit == "s" and tuple(dp.explicit_bounds) == DURATION_BUCKETS
    assert dp.sum == pytest.approx(sum(m.ttft for m in llm), rel=1e-9)

    tok = got["gen_ai.client.token.usage"]
    assert tok.unit == "{token}"
    (inp,) = points(tok, **chat, **{"gen_ai.token.type": "input"})
    (out,) = points(tok, **chat, **{"gen_ai.token.type": "output"})
    assert tuple(inp.explicit_bounds) == TOKEN_BUCKETS
    assert (inp.count, inp.sum) == (4, 2 * (1200 + 1300))
    assert (out.count, out.sum) == (4, 2 * (40 + 60))

    tool = got["gen_ai.execute_tool.duration"]
    assert tool.unit == "s"
    ok = points(tool, **{"gen_ai.tool.name": "lookup_order"})
    assert {dp.attributes.get("error.type") for dp in ok} == {None, "KeyError"}
    assert sum(dp.count for dp in ok) == 2
    for dp in tool.data.data_points:
        assert dp.attributes["gen_ai.operation.name"] == "execute_tool"
        assert tuple(dp.explicit_bounds) == DURATION_BUCKETS
    assert sum(dp.sum for dp in tool.data.data_points) == pytest.approx(
        sum(m.duration for m in tools), rel=1e-9
    )

    agent = got["gen_ai.invoke_agent.duration"]
    (dp,) = agent.data.data_points
    assert dict(dp.attributes) == {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "support",
    }
    assert dp.count == 2
    assert dp.sum == pytest.approx(sum(s.duration for s in sessions), rel=1e-9)

    e2e = got["callmeter.turn.e2e_latency"]
    (dp,) = e2e.data.data_points
    assert e2e.unit == "s" and dp.count == len(turns) == 2
    assert dp.sum == pytest.approx(sum(t.e2e_latency for t in turns), rel=1e-9)
    parts = got["callmeter.turn.latency.component"]
    names = {dp.attributes["callmeter.turn.component"] for dp in parts.data.data_points}
    assert {"llm_ttft", "tool", "tts_ttfb"} <= names
    ttfb = got["callmeter.tts.time_to_first_byte"]
    (dp,) = ttfb.data.data_points
    assert dp.sum == pytest.approx(sum(m.ttfb for m in tts), rel=1e-9)
    assert dict(dp.attributes) == {
        "gen_ai.provider.name": "deepgram",
        "gen_ai.request.model": "aura-2",
    }
    audio = got["callmeter.stt.audio.duration"]
    assert audio.unit == "s" and audio.data.is_monotonic
    assert audio.data.data_points[0].value == pytest.approx(3.0)

    cost = got["callmeter.cost"]
    assert cost.unit == "USD"
    expected: dict = {}
    for s in sessions:
        for mu in s.usage.by_model.values():
            expected[mu.kind] = expected.get(mu.kind, 0) + float(mu.cost)
    by_kind = {dp.attributes["callmeter.cost.kind"]: dp.value for dp in cost.data.data_points}
    assert set(by_kind) == {"llm", "stt", "tts"}
    for kind, usd in expected.items():
        assert by_kind[kind] == pytest.approx(usd, rel=1e-9)

    # never a session id on a metric
    for m in got.values():
        for dp in m.data.data_points:
            for v in dp.attributes.values():
                assert not any(s.session_id == v for s in sessions)


def test_spans_follow_the_measured_timeline(otel):
    exporter, _, spans = otel
    seen: list = []
    s = AgentSession(agent_name="support", labels={"tenant": "acme"})
    s.on("metrics_collected", lambda ev: seen.append(ev.metrics))
    exporter.attach(s)
    run_call(s, fail_tool=True)
    assert exporter.flush(10)
    finished = spans.get_finished_spans()
    by_name: dict = {}
    for sp in finished:
        by_name.setdefault(sp.name, []).append(sp)
    assert sorted(by_name) == sorted(
        [
            "invoke_agent support",
            "turn",
            "chat gpt-4o-mini",
            "execute_tool lookup_order",
            "execute_tool hang_up",
            "stt",
            "tts",
        ]
    )
    (root,) = by_name["invoke_agent support"]
    assert root.parent is None
    assert root.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert root.attributes["gen_ai.agent.name"] == "support"
    assert root.attributes["gen_ai.conversation.id"] == s.session_id
    assert root.attributes["callmeter.label.tenant"] == "acme"
    assert root.start_time == int(s.started_at * NS)
    assert (root.end_time - root.start_time) / NS == pytest.approx(s.duration, abs=1e-6)
    (turn,) = by_name["turn"]
    assert turn.parent.span_id == root.context.span_id
    (turn_m,) = [m for m in seen if isinstance(m, metrics.TurnMetrics)]
    assert turn.attributes["callmeter.turn.e2e_latency"] == turn_m.e2e_latency
    assert turn.attributes["callmeter.turn.speech_id"] == turn_m.speech_id

    def check(span, m) -> None:
        assert span.start_time == int(m.started_at * NS)
        assert span.end_time == int(m.started_at * NS) + int(m.duration * NS)
        assert root.start_time <= span.start_time <= span.end_time <= root.end_time

    llm = [m for m in seen if isinstance(m, metrics.LLMMetrics)]
    chats = sorted(by_name["chat gpt-4o-mini"], key=lambda sp: sp.start_time)
    assert len(chats) == 2
    for sp, m in zip(chats, llm, strict=True):
        check(sp, m)
        assert sp.parent.span_id == turn.context.span_id
        assert sp.kind == SpanKind.CLIENT
        assert sp.attributes["gen_ai.operation.name"] == "chat"
        assert sp.attributes["gen_ai.provider.name"] == "openai"
        assert sp.attributes["gen_ai.request.model"] == "gpt-4o-mini"
        assert sp.attributes["gen_ai.usage.input_tokens"] == m.prompt_tokens
        assert sp.attributes["gen_ai.usage.output_tokens"] == m.completion_tokens
        assert sp.attributes["gen_ai.response.time_to_first_chunk"] == m.ttft
    assert chats[0].attributes["gen_ai.usage.cache_read.input_tokens"] == 200
    assert chats[0].end_time <= chats[1].start_time  # the real order of the two steps
    tools = {m.tool_name: m for m in seen if isinstance(m, metrics.ToolMetrics)}
    (tool,) = by_name["execute_tool lookup_order"]
    check(tool, tools["lookup_order"])
    assert tool.parent.span_id == turn.context.span_id
    assert tool.attributes["gen_ai.tool.name"] == "lookup_order"
    assert tool.attributes["gen_ai.tool.call.id"] == "call_1"
    assert tool.attributes["error.type"] == "KeyError"
    assert tool.status.status_code == StatusCode.ERROR
    (hang,) = by_name["execute_tool hang_up"]
    assert hang.parent.span_id == root.context.span_id  # outside the turn
    check(hang, tools["hang_up"])
    (stt,) = by_name["stt"]
    check(stt, next(m for m in seen if isinstance(m, metrics.STTMetrics)))
    assert stt.attributes["callmeter.stt.audio_duration"] == 1.5
    (tts,) = by_name["tts"]
    check(tts, next(m for m in seen if isinstance(m, metrics.TTSMetrics)))
    assert tts.attributes["callmeter.tts.characters"] == 120
    assert turn.start_time <= min(sp.start_time for sp in (stt, tts, tool, *chats))
    assert turn.end_time >= max(sp.end_time for sp in (stt, tts, tool, *chats))


def test_failed_call_and_unclosed_call(otel):
    exporter, reader, spans = otel
    s = exporter.attach(AgentSession(agent_name="a"))
    with pytest.raises(ValueError), s:
        raise ValueError("boom")
    open_call = exporter.attach(AgentSession(agent_name="b"))
    open_call.start()
    with open_call.llm_generation(model="m"):
        pass
    assert exporter.flush(10)
    (failed,) = [sp for sp in spans.get_finished_spans() if sp.name == "invoke_agent a"]
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.attributes["error.type"] == "ValueError"
    agent = metric_map(reader)["gen_ai.invoke_agent.duration"]
    (dp,) = points(agent, **{"gen_ai.agent.name": "a"})
    assert dp.attributes["error.type"] == "ValueError"
    exporter.close()  # ends the call that never closed
    unfinished = [sp for sp in spans.get_finished_spans() if sp.name == "invoke_agent b"]
    assert len(unfinished) == 1 and unfinished[0].attributes["callmeter.call.unfinished"]
    assert any(sp.name == "chat m" for sp in spans.get_finished_spans())
    with pytest.raises(SinkClosedError):
        exporter.attach(AgentSession())


def test_bad_values_and_threads(otel):
    exporter, reader, spans = otel
    sessions = [exporter.attach(AgentSession()) for _ in range(8)]

    def work(s: AgentSession) -> None:
        def inject(m: object) -> None:  # past the session's validation: any source may err
            exporter.receive(
                metrics.MetricsCollectedEvent(
                    session_id=s.session_id, seq=0, created_at=T0, metrics=m
                )
            )

        with s:
            for i in range(200):
                s.emit_metrics(
                    metrics.ToolMetrics(
                        timestamp=T0, started_at=T0, duration=0.001 * i, tool_name=f"tool_{i}"
                    )
                )
            inject(metrics.LLMMetrics(timestamp=T0, started_at=T0, duration=float("nan")))
            inject(
                metrics.LLMMetrics(timestamp=T0, started_at=float("inf"), duration=0.1, ttft=-5.0)
            )
            inject(
                metrics.ToolMetrics(
                    timestamp=T0, started_at=T0, duration=0.1, tool_name="bad\udcff" * 100
                )
            )
            inject(metrics.STTMetrics(timestamp=T0, started_at=T0, duration=-1.0))

    threads = [threading.Thread(target=work, args=(s,)) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    exporter.receive(None)  # type: ignore[arg-type]
    assert exporter.flush(10)
    got = metric_map(reader)
    tool = got["gen_ai.execute_tool.duration"]
    names = {dp.attributes["gen_ai.tool.name"] for dp in tool.data.data_points}
    assert len(names) <= 51 and "other" in names  # capped on metrics
    assert sum(dp.count for dp in tool.data.data_points) == 8 * 201
    for m in got.values():
        for dp in m.data.data_points:
            if hasattr(dp, "sum"):
                assert dp.sum == dp.sum and dp.sum >= 0  # no NaN, nothing negative
    assert exporter.dropped >= 1 + 8  # None, and the span with an infinite start
    roots = [sp for sp in spans.get_finished_spans() if sp.name.startswith("invoke_agent")]
    assert len(roots) == 8


def test_arguments_are_checked():
    with pytest.raises(InvalidArgumentError):
        OTelExporter(meter_provider=object())
    with pytest.raises(InvalidArgumentError):
        OTelExporter(tracer_provider="tp")
    with pytest.raises(InvalidArgumentError):
        OTelExporter(max_names=0)
    with pytest.raises(InvalidArgumentError):
        OTelExporter(max_queue=-1)
    exp = OTelExporter()  # the global (no-op) providers: works, records nothing
    with pytest.raises(InvalidArgumentError):
        exp.attach(None)  # type: ignore[arg-type]
    run_call(exp.attach(AgentSession()))
    assert exp.flush(10)
    assert exp.dropped == 0
    exp.close()


def test_global_providers_are_used():
    code = """
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
spans = InMemorySpanExporter()
tp = TracerProvider()
tp.add_span_processor(SimpleSpanProcessor(spans))
trace.set_tracer_provider(tp)
from callmeter import AgentSession
from callmeter.export.otel import OTelExporter
exp = OTelExporter()
with exp.attach(AgentSession(agent_name="g")) as s, s.tool_call("t"):
    pass
exp.flush()
names = sorted(m.name for rm in reader.get_metrics_data().resource_metrics
               for sm in rm.scope_metrics for m in sm.metrics)
print(names, sorted(sp.name for sp in spans.get_finished_spans()))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "gen_ai.execute_tool.duration" in out.stdout
    assert "gen_ai.invoke_agent.duration" in out.stdout
    assert "'execute_tool t', 'invoke_agent g'" in out.stdout


class _Receiver(http.server.BaseHTTPRequestHandler):
    bodies: dict

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        enc = self.headers.get("Content-Encoding")
        if enc == "gzip":
            body = gzip.decompress(body)
        elif enc == "deflate":
            body = zlib.decompress(body)
        self.server.bodies.setdefault(self.path, []).append(  # type: ignore[attr-defined]
            (self.headers.get("Content-Type"), body)
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format, *args) -> None:
        pass


def test_otlp_http_to_a_loopback_receiver():
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.bodies = {}  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=f"{base}/v1/metrics", timeout=5),
            export_interval_millis=60_000,
        )
        mp = MeterProvider(metric_readers=[reader])
        tp = TracerProvider()
        tp.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces", timeout=5))
        )
        exporter = OTelExporter(meter_provider=mp, tracer_provider=tp)
        s = exporter.attach(AgentSession(agent_name="support"))
        seen: list = []
        s.on("metrics_collected", lambda ev: seen.append(ev.metrics))
        run_call(s)
        assert exporter.flush(10)
        assert tp.force_flush(10_000)
        assert mp.force_flush(10_000)
        exporter.close()
        mp.shutdown()
        tp.shutdown()
    finally:
        server.shutdown()
        server.server_close()
    bodies = server.bodies  # type: ignore[attr-defined]
    assert set(bodies) >= {"/v1/traces", "/v1/metrics"}
    spans = []
    for ctype, body in bodies["/v1/traces"]:
        assert ctype == "application/x-protobuf"
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                assert ss.scope.name == "callmeter"
                spans.extend(ss.spans)
    by_name = {sp.name: sp for sp in spans}
    assert {"invoke_agent support", "turn", "chat gpt-4o-mini", "tts", "stt"} <= set(by_name)
    chat = [sp for sp in spans if sp.name == "chat gpt-4o-mini"]
    llm = [m for m in seen if isinstance(m, metrics.LLMMetrics)]
    assert sorted(sp.start_time_unix_nano for sp in chat) == sorted(
        int(m.started_at * NS) for m in llm
    )
    attrs = {kv.key: kv.value for kv in chat[0].attributes}
    assert attrs["gen_ai.operation.name"].string_value == "chat"
    assert attrs["gen_ai.usage.input_tokens"].int_value in (1200, 1300)
    root = by_name["invoke_agent support"]
    assert by_name["turn"].parent_span_id == root.span_id
    assert by_name["turn"].trace_id == root.trace_id

    names = {}
    for _, body in bodies["/v1/metrics"]:
        req = ExportMetricsServiceRequest()
        req.ParseFromString(body)
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    names[m.name] = m
    dur = names["gen_ai.client.operation.duration"]
    assert dur.unit == "s"
    (dp,) = dur.histogram.data_points
    assert tuple(dp.explicit_bounds) == DURATION_BUCKETS
    assert dp.count == len(llm)
    assert dp.sum == pytest.approx(sum(m.duration for m in llm), rel=1e-9)
    tok = names["gen_ai.client.token.usage"]
    types = {
        next(kv.value.string_value for kv in p.attributes if kv.key == "gen_ai.token.type"): p.sum
        for p in tok.histogram.data_points
    }
    assert types == {"input": 2500, "output": 100}
    assert "callmeter.cost" in names and "gen_ai.invoke_agent.duration" in names


def test_import_is_light():
    code = "import sys, callmeter; print('opentelemetry' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
