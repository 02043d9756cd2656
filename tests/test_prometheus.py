"""CallMonitor: real sessions, scraped over HTTP on loopback, parsed with prometheus_client."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
import urllib.error
import urllib.request
from decimal import Decimal

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

from callmeter import AgentSession, metrics
from callmeter.errors import InvalidArgumentError, SinkClosedError
from callmeter.export.jsonl import JSONLWriter
from callmeter.export.prometheus import (
    CALL_BUCKETS,
    OTHER,
    VOICE_BUCKETS,
    CallMonitor,
    HealthStatus,
)

T0 = 1_790_000_000.0


def scrape(url: str, openmetrics: bool = False) -> dict:
    """GET the metrics page and parse it: {family name: family}."""
    req = urllib.request.Request(url + "/metrics")
    if openmetrics:
        req.add_header("Accept", "application/openmetrics-text; version=1.0.0")
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read().decode("utf-8")
    parse = parse_openmetrics if openmetrics else text_string_to_metric_families
    return {f.name: f for f in parse(text)}


def samples(fam, name: str | None = None, **labels) -> list:
    name = name or fam.name
    return [
        s
        for s in fam.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def value(fam, name: str | None = None, **labels) -> float:
    found = samples(fam, name, **labels)
    assert len(found) == 1, (name, labels, found)
    return found[0].value


def run_call(session: AgentSession, *, fail_tool: bool = False) -> None:
    """One call: two turns with STT, LLM (twice around a tool call), TTS."""
    with session:
        for turn_no in range(2):
            with session.turn() as turn:
                turn.user_stopped_speaking()
                with session.stt_request(model="nova-3", provider="deepgram") as stt:
                    time.sleep(0.02)
                    stt.set_usage(audio_duration=1.5)
                with session.llm_generation(model="gpt-4o-mini", provider="openai") as gen:
                    time.sleep(0.03)
                    gen.first_token()
                    time.sleep(0.01)
                    gen.set_usage(
                        prompt_tokens=1200, completion_tokens=40, prompt_cached_tokens=200
                    )
                try:
                    with session.tool_call("lookup_order", call_id=f"c{turn_no}"):
                        time.sleep(0.015)
                        if fail_tool and turn_no == 1:
                            raise KeyError("order")
                except KeyError:
                    pass
                with session.llm_generation(model="gpt-4o-mini", provider="openai") as gen:
                    time.sleep(0.02)
                    gen.first_token()
                    gen.set_usage(prompt_tokens=1300, completion_tokens=60)
                with session.tts_request(model="aura-2", provider="deepgram") as tts:
                    time.sleep(0.025)
                    tts.first_byte()
                    tts.set_usage(characters_count=120, audio_duration=2.0)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def served(registry):
    monitor = CallMonitor(
        registry=registry, node_id="node-1", agent_name="support", max_calls=10, cpu_threshold=1.0
    )
    server = monitor.serve(0)
    yield monitor, server
    server.close()
    monitor.close()


def test_real_calls_scraped_over_http(served):
    monitor, server = served
    assert server.url.startswith("http://127.0.0.1:")
    seen: list = []
    sessions = []
    for i in range(3):
        s = AgentSession(agent_name="support")
        s.on("metrics_collected", lambda ev: seen.append(ev.metrics))
        monitor.attach(s)
        sessions.append(s)
        run_call(s, fail_tool=(i == 0))
    fams = scrape(server.url)
    const = {"node_id": "node-1", "agent_name": "support"}

    # every sample carries the constant labels, never a session id
    for fam in fams.values():
        for s in fam.samples:
            assert {k: s.labels[k] for k in const} == const, s
            assert not any(sess.session_id in s.labels.values() for sess in sessions)

    assert value(fams["callmeter_calls_active"]) == 0
    assert value(fams["callmeter_calls_started"], "callmeter_calls_started_total") == 3
    ended = fams["callmeter_calls_ended"]
    assert value(ended, "callmeter_calls_ended_total", outcome="ok") == 3
    assert value(ended, "callmeter_calls_ended_total", outcome="error") == 0

    # call duration: count and sum against the sessions' measured durations
    call = fams["callmeter_call_duration_seconds"]
    assert value(call, "callmeter_call_duration_seconds_count") == 3
    assert value(call, "callmeter_call_duration_seconds_sum") == pytest.approx(
        sum(s.duration for s in sessions), rel=1e-9
    )
    les = [float(s.labels["le"]) for s in samples(call, "callmeter_call_duration_seconds_bucket")]
    assert les == [*CALL_BUCKETS, math.inf]
    assert CALL_BUCKETS[0] == 1.0 and CALL_BUCKETS[-1] == 86400.0

    def hist_check(fam_name: str, measured: list[float], **labels) -> None:
        fam = fams[fam_name]
        assert value(fam, fam_name + "_count", **labels) == len(measured)
        assert value(fam, fam_name + "_sum", **labels) == pytest.approx(sum(measured), rel=1e-9)
        buckets = samples(fam, fam_name + "_bucket", **labels)
        assert [float(b.labels["le"]) for b in buckets] == [*VOICE_BUCKETS, math.inf]
        for b in buckets:  # each cumulative bucket counts exactly the values <= le
            le = float(b.labels["le"])
            assert b.value == sum(1 for v in measured if v <= le), (fam_name, le)

    llm = [m for m in seen if isinstance(m, metrics.LLMMetrics)]
    tools = [m for m in seen if isinstance(m, metrics.ToolMetrics)]
    stt = [m for m in seen if isinstance(m, metrics.STTMetrics)]
    tts = [m for m in seen if isinstance(m, metrics.TTSMetrics)]
    turns = [m for m in seen if isinstance(m, metrics.TurnMetrics)]
    assert (len(llm), len(tools), len(stt), len(tts), len(turns)) == (12, 6, 6, 6, 6)
    pm = {"provider": "openai", "model": "gpt-4o-mini"}
    hist_check("callmeter_llm_duration_seconds", [m.duration for m in llm], **pm)
    hist_check("callmeter_llm_ttft_seconds", [m.ttft for m in llm], **pm)
    hist_check(
        "callmeter_tts_ttfb_seconds", [m.ttfb for m in tts], provider="deepgram", model="aura-2"
    )
    hist_check(
        "callmeter_stt_duration_seconds",
        [m.duration for m in stt],
        provider="deepgram",
        model="nova-3",
    )
    ok_tools = [m.duration for m in tools if m.success]
    failed = [m.duration for m in tools if not m.success]
    assert len(failed) == 1
    hist_check("callmeter_tool_duration_seconds", ok_tools, tool="lookup_order", success="true")
    hist_check("callmeter_tool_duration_seconds", failed, tool="lookup_order", success="false")
    hist_check("callmeter_turn_e2e_latency_seconds", [m.e2e_latency for m in turns])
    for comp in ("llm_ttft", "tool", "tts_ttfb", "transcription"):
        parts = [getattr(m.breakdown, comp) for m in turns if getattr(m.breakdown, comp)]
        if parts:
            hist_check("callmeter_turn_latency_component_seconds", parts, component=comp)
    assert samples(
        fams["callmeter_turn_latency_component_seconds"],
        "callmeter_turn_latency_component_seconds_count",
        component="llm_ttft",
    )

    # counters: tokens, characters, audio seconds, cost against the sessions' own summaries
    tok = fams["callmeter_tokens"]
    assert value(tok, "callmeter_tokens_total", kind="input", **pm) == 6 * (1200 + 1300)
    assert value(tok, "callmeter_tokens_total", kind="output", **pm) == 6 * (40 + 60)
    assert value(tok, "callmeter_tokens_total", kind="cached_input", **pm) == 6 * 200
    chars = fams["callmeter_tts_characters"]
    assert value(chars, "callmeter_tts_characters_total", model="aura-2") == 6 * 120
    audio = fams["callmeter_stt_audio_seconds"]
    assert value(audio, "callmeter_stt_audio_seconds_total", model="nova-3") == pytest.approx(9.0)
    cost = fams["callmeter_cost_usd"]
    by_kind: dict[tuple[str, str], Decimal] = {}
    for s in sessions:
        for mu in s.usage.by_model.values():
            assert mu.cost is not None, mu
            key = (mu.kind, mu.model)
            by_kind[key] = by_kind.get(key, Decimal(0)) + mu.cost
    assert set(by_kind) == {("llm", "gpt-4o-mini"), ("stt", "nova-3"), ("tts", "aura-2")}
    for (kind, model), usd in by_kind.items():
        got = value(cost, "callmeter_cost_usd_total", kind=kind, model=model)
        assert got == pytest.approx(float(usd), rel=1e-12), (kind, model)
        assert got > 0
    assert value(fams["callmeter_turns_over_budget"], "callmeter_turns_over_budget_total") == 0
    dropped = fams["callmeter_dropped_records"]
    assert value(dropped, "callmeter_dropped_records_total", source="monitor") == 0

    # units: in the names (text format) and as UNIT metadata (OpenMetrics)
    om = scrape(server.url, openmetrics=True)
    assert om["callmeter_call_duration_seconds"].unit == "seconds"
    assert om["callmeter_llm_ttft_seconds"].unit == "seconds"
    assert om["callmeter_cost_usd"].unit == "usd"
    assert om["callmeter_stt_audio_seconds"].unit == "seconds"
    assert "time to first token" in fams["callmeter_llm_ttft_seconds"].documentation


def test_budget_and_error_outcome(registry):
    monitor = CallMonitor(registry=registry, cpu_threshold=1.0)
    s = monitor.attach(AgentSession())
    s.set_latency_budget(e2e=0.001)
    with pytest.raises(RuntimeError), s, s.turn():
        with s.llm_generation(model="gpt-4o-mini", provider="openai") as gen:
            time.sleep(0.01)
            gen.first_token()
        raise RuntimeError("hang up")
    fams = {f.name: f for f in registry.collect()}
    assert value(fams["callmeter_calls_ended"], "callmeter_calls_ended_total", outcome="error") == 1
    assert value(fams["callmeter_turns_over_budget"], "callmeter_turns_over_budget_total") == 1
    exc = fams["callmeter_budget_excesses"]
    assert value(exc, "callmeter_budget_excesses_total", limit="e2e") == 1


def test_tool_and_model_labels_are_capped(registry):
    monitor = CallMonitor(registry=registry, max_tools=20, max_models=5)
    s = monitor.attach(AgentSession())
    with s:
        for i in range(10_000):
            s.emit_metrics(
                metrics.ToolMetrics(
                    timestamp=T0, started_at=T0, duration=0.01 * (i % 7), tool_name=f"tool_{i}"
                )
            )
        for i in range(50):
            md = metrics.Metadata(model_name=f"model-{i}", model_provider="openai")
            s.emit_metrics(
                metrics.LLMMetrics(
                    timestamp=T0, started_at=T0, duration=0.5, prompt_tokens=10, metadata=md
                )
            )
    fams = {f.name: f for f in registry.collect()}
    tool_counts = samples(
        fams["callmeter_tool_duration_seconds"], "callmeter_tool_duration_seconds_count"
    )
    names = {s.labels["tool"] for s in tool_counts}
    assert len(names) == 21  # N + 1
    assert OTHER in names and "tool_0" in names and "tool_19" in names and "tool_20" not in names
    assert sum(s.value for s in tool_counts) == 10_000
    other = [s for s in tool_counts if s.labels["tool"] == OTHER]
    assert other[0].value == 10_000 - 20
    models = {
        s.labels["model"]
        for s in samples(
            fams["callmeter_llm_duration_seconds"], "callmeter_llm_duration_seconds_count"
        )
    }
    assert len(models) == 6 and OTHER in models
    assert len(monitor._tools) == 20  # memory stays at the cap


def test_scrapes_during_load_are_consistent(served):
    monitor, server = served
    stop = threading.Event()
    errors: list[BaseException] = []

    def emitter(k: int) -> None:
        try:
            while not stop.is_set():
                time.sleep(0.002)  # leave the scraper some of the GIL
                s = monitor.attach(AgentSession())
                with s:
                    for i in range(100):
                        s.emit_metrics(
                            metrics.ToolMetrics(
                                timestamp=T0,
                                started_at=T0,
                                duration=0.001 * (i % 50),
                                tool_name=f"t{k}",
                                success=bool(i % 3),
                            )
                        )
                        md = metrics.Metadata(model_name="gpt-4o-mini", model_provider="openai")
                        s.emit_metrics(
                            metrics.LLMMetrics(
                                timestamp=T0,
                                started_at=T0,
                                duration=0.3,
                                ttft=0.1,
                                prompt_tokens=100,
                                completion_tokens=10,
                                metadata=md,
                            )
                        )
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=emitter, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    try:
        previous: dict = {}
        for _ in range(4):
            time.sleep(0.02)
            fams = scrape(server.url)
            current: dict = {}
            for fam in fams.values():
                for s in fam.samples:
                    key = (s.name, tuple(sorted(s.labels.items())))
                    current[key] = s.value
                if fam.type == "histogram":
                    groups: dict = {}
                    for s in fam.samples:
                        base = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
                        groups.setdefault(base, {})[s.name, s.labels.get("le")] = s.value
                    for base, g in groups.items():
                        buckets = [v for (n, _le), v in g.items() if n.endswith("_bucket")]
                        assert buckets == sorted(buckets), (fam.name, base)
                        assert g[fam.name + "_count", None] == g[fam.name + "_bucket", "+Inf"]
            for key, v in previous.items():
                if key[0].endswith(("_total", "_count", "_sum", "_bucket")):
                    assert current.get(key, 0) >= v, key
            previous = current
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    # after the load: everything folded adds up
    fams = {f.name: f for f in monitor.registry.collect()}
    llm_count = value(
        fams["callmeter_llm_duration_seconds"], "callmeter_llm_duration_seconds_count"
    )
    tokens = value(fams["callmeter_tokens"], "callmeter_tokens_total", kind="input")
    assert tokens == 100 * llm_count
    started = value(fams["callmeter_calls_started"], "callmeter_calls_started_total")
    ended = value(fams["callmeter_calls_ended"], "callmeter_calls_ended_total", outcome="ok")
    assert started == ended > 0
    assert value(fams["callmeter_calls_active"]) == 0


def test_health_under_load_at_max_calls(registry):
    monitor = CallMonitor(registry=registry, max_calls=3, cpu_threshold=1.0)
    server = monitor.serve(0)
    try:
        sessions = [monitor.attach(AgentSession()) for _ in range(4)]
        assert monitor.health() == HealthStatus.OK
        with urllib.request.urlopen(server.url + "/health", timeout=5) as resp:
            assert resp.status == 200
            assert json.loads(resp.read())["status"] == "ok"
        for s in sessions[:2]:
            s.start()
        assert monitor.active_calls == 2
        assert monitor.health() == "ok"
        assert 2 / 3 - 1e-9 <= monitor.load() <= 1.0  # max(CPU, 2 of 3 calls)
        for s in sessions[2:]:
            s.start()  # 4 active, past the maximum of 3
        assert monitor.active_calls == 4
        assert monitor.health() == HealthStatus.UNDER_LOAD == "under load"
        assert monitor.load() == 1.0
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(server.url + "/health", timeout=5)
        assert err.value.code == 503
        body = json.loads(err.value.read())
        assert body["status"] == "under load" and body["active_calls"] == 4
        fams = scrape(server.url)
        assert value(fams["callmeter_calls_active"]) == 4
        for s in sessions:
            s.close()
        assert monitor.health() == HealthStatus.OK
        with urllib.request.urlopen(server.url + "/health", timeout=5) as resp:
            assert resp.status == 200
        monitor.stop()
        assert monitor.health() == HealthStatus.STOPPED
        assert monitor.load() == 1.0
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(server.url + "/health", timeout=5)
        assert err.value.code == 503
    finally:
        server.close()
        monitor.close()


def test_health_under_cpu_load(registry):
    """CPU over the threshold: a busy loop makes the machine's utilisation non-zero."""
    monitor = CallMonitor(registry=registry, cpu_threshold=0.01)
    monitor._cpu = None
    monitor.cpu_utilisation()  # first sample
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:
        sum(range(1000))
    assert monitor.cpu_utilisation() > 0.01
    assert monitor.health() == HealthStatus.UNDER_LOAD
    assert 0.0 < monitor.load() <= 1.0
    monitor.close()
    assert monitor.health() == HealthStatus.STOPPED


def test_asgi_and_wsgi_apps(registry):
    monitor = CallMonitor(registry=registry, max_calls=1, cpu_threshold=1.0)
    app = monitor.asgi_app()

    async def call(path: str) -> tuple[int, bytes]:
        sent: list = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(msg):
            sent.append(msg)

        scope = {
            "type": "http",
            "method": "GET",
            "path": path,
            "query_string": b"",
            "headers": [],
        }
        await app(scope, receive, send)
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    status, body = asyncio.run(call("/metrics"))
    assert status == 200 and b"callmeter_calls_active 0.0" in body
    status, body = asyncio.run(call("/health"))
    assert status == 200 and json.loads(body)["status"] == "ok"
    monitor.attach(AgentSession()).start()
    status, body = asyncio.run(call("/health"))
    assert status == 503 and json.loads(body)["status"] == "under load"

    async def lifespan() -> list:
        inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        sent: list = []

        async def receive():
            return inbox.pop(0)

        async def send(msg):
            sent.append(msg["type"])

        await app({"type": "lifespan"}, receive, send)
        return sent

    assert asyncio.run(lifespan()) == ["lifespan.startup.complete", "lifespan.shutdown.complete"]

    wsgi = monitor.wsgi_app()
    got: list = []
    out = wsgi({"PATH_INFO": "/health", "REQUEST_METHOD": "GET"}, lambda st, h: got.append(st))
    assert got == ["503 Service Unavailable"] and b"under load" in b"".join(out)
    monitor.close()


def test_bad_values_never_raise_and_are_counted(registry):
    monitor = CallMonitor(registry=registry)
    s = monitor.attach(AgentSession())
    md = metrics.Metadata(model_name="gpt-4o-mini", model_provider="openai")
    bad = [
        metrics.LLMMetrics(timestamp=T0, started_at=T0, duration=float("nan"), metadata=md),
        metrics.LLMMetrics(timestamp=T0, started_at=T0, duration=-1.0, metadata=md),
        metrics.LLMMetrics(timestamp=T0, started_at=T0, duration=float("inf"), metadata=md),
        metrics.LLMMetrics(timestamp=T0, started_at=T0, duration=None, metadata=md),  # type: ignore[arg-type]
        metrics.LLMMetrics(
            timestamp=T0, started_at=T0, duration=0.2, ttft=float("nan"), prompt_tokens=-5
        ),
        metrics.ToolMetrics(timestamp=T0, started_at=T0, duration="slow", tool_name="x"),  # type: ignore[arg-type]
        metrics.ToolMetrics(timestamp=T0, started_at=T0, duration=0.1, tool_name="bad\udcff"),
        metrics.ToolMetrics(timestamp=T0, started_at=T0, duration=0.1, tool_name="x" * 10_000),
        metrics.TTSMetrics(timestamp=T0, started_at=T0, duration=1e300, ttfb=0.1),
        metrics.STTMetrics(timestamp=T0, started_at=T0, duration=0.1, audio_duration=float("nan")),
    ]
    with s:
        for m in bad:  # the session rejects these; a sink must survive them from any source
            s.emit_metrics(m)
            monitor.receive(
                metrics.MetricsCollectedEvent(
                    session_id=s.session_id, seq=0, created_at=T0, metrics=m
                )
            )
    assert s.rejected_events >= 8
    monitor.receive("not a record")  # type: ignore[arg-type]
    monitor.receive(None)  # type: ignore[arg-type]
    server = monitor.serve(0)
    try:
        fams = scrape(server.url)  # renders and parses: labels were made encodable
    finally:
        server.close()
    assert value(fams["callmeter_invalid_values"], "callmeter_invalid_values_total") >= 5
    assert (
        value(
            fams["callmeter_dropped_records"], "callmeter_dropped_records_total", source="monitor"
        )
        == 2
    )
    llm = fams["callmeter_llm_duration_seconds"]
    assert all(math.isfinite(x.value) for x in llm.samples)
    tools = {
        x.labels["tool"]
        for x in samples(
            fams["callmeter_tool_duration_seconds"], "callmeter_tool_duration_seconds_count"
        )
    }
    assert "bad?" in tools
    assert max(len(t) for t in tools) <= 128
    monitor.close()


def test_dropped_records_of_watched_sinks(registry, tmp_path):
    monitor = CallMonitor(registry=registry)
    writer = monitor.watch(JSONLWriter(tmp_path / "calls.jsonl"))
    writer.close()
    s = AgentSession()
    monitor.attach(s)
    s.on("metrics_collected", writer.receive)  # the closed writer drops what it receives
    with s, s.llm_generation(model="m"):
        pass
    fams = {f.name: f for f in registry.collect()}
    dropped = fams["callmeter_dropped_records"]
    assert value(dropped, "callmeter_dropped_records_total", source="JSONLWriter") == 1
    fams = {f.name: f for f in registry.collect()}  # scraping again does not add it twice
    dropped = fams["callmeter_dropped_records"]
    assert value(dropped, "callmeter_dropped_records_total", source="JSONLWriter") == 1
    monitor.close()


def test_arguments_are_checked(registry):
    for kwargs in (
        {"namespace": "bad-name"},
        {"namespace": None},
        {"const_labels": {"bad label": "x"}},
        {"const_labels": {"x": 1}},
        {"const_labels": {"model": "x"}},
        {"const_labels": ["x"]},
        {"max_tools": 0},
        {"max_models": "5"},
        {"max_calls": -1},
        {"max_calls": True},
        {"cpu_threshold": 0},
        {"cpu_threshold": float("nan")},
        {"cpu_threshold": 1.5},
        {"latency_buckets": [1, 0.5]},
        {"latency_buckets": [float("nan")]},
        {"latency_buckets": "abc"},
        {"call_buckets": []},
    ):
        with pytest.raises(InvalidArgumentError):
            CallMonitor(registry=registry, **kwargs)
    monitor = CallMonitor(registry=registry, namespace="voice")
    with pytest.raises(InvalidArgumentError, match="registry"):
        CallMonitor(registry=registry, namespace="voice")  # same names in one registry
    with pytest.raises(InvalidArgumentError):
        monitor.attach("session")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        monitor.serve(-1)
    with pytest.raises(InvalidArgumentError):
        monitor.watch(object())
    names = {f.name for f in registry.collect()}
    assert "voice_calls_active" in names and not any(n.startswith("callmeter_") for n in names)
    monitor.close()
    with pytest.raises(SinkClosedError):
        monitor.attach(AgentSession())
    assert monitor.health() == HealthStatus.STOPPED
    CallMonitor(registry=registry, namespace="voice").close()  # names were released


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, callmeter; print('prometheus_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_grafana_dashboard_and_docs_queries_use_exported_metrics(registry):
    """The committed dashboard parses, has the required panels, and every metric its
    queries (and the PromQL in docs/monitoring.md) name is one the monitor exports."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    dash = json.loads((root / "docs/grafana/callmeter.json").read_text())
    assert dash["uid"] and dash["schemaVersion"] >= 30
    assert dash["__inputs"][0]["pluginId"] == "prometheus"
    titles = " | ".join(p["title"] for p in dash["panels"]).lower()
    for needed in ("active calls", "p50", "p95", "component", "tool error rate", "cost per hour"):
        assert needed in titles, needed
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    doc = (root / "docs/monitoring.md").read_text()
    exprs += re.findall(r"```text\n((?:histogram_quantile|sum)[^`]*)```", doc)
    assert len(exprs) >= 12

    monitor = CallMonitor(registry=registry, cpu_threshold=1.0)
    s = monitor.attach(AgentSession())
    run_call(s, fail_tool=True)
    exported = {x.name for f in registry.collect() for x in f.samples}
    used = {name for e in exprs for name in re.findall(r"\bcallmeter_[a-z0-9_]+", e)}
    assert used and used <= exported, used - exported
    monitor.close()


def test_cost_between_scrapes_and_large_requests(registry):
    """Cost is priced per scrape on the new usage only; large requests alone. The total
    equals the session's own exact cost and never goes down."""
    monitor = CallMonitor(registry=registry)
    s = monitor.attach(AgentSession())

    def cost() -> float:
        fams = {f.name: f for f in registry.collect()}
        found = samples(fams["callmeter_cost_usd"], "callmeter_cost_usd_total", kind="llm")
        return found[0].value if found else 0.0

    costs = []
    with s:
        for prompt in (1000, 40_000, 2000, 250_000, 10):
            with s.llm_generation(model="gemini-1.5-pro", provider="google") as gen:
                gen.set_usage(prompt_tokens=prompt, completion_tokens=100)
            costs.append(cost())
    assert costs == sorted(costs) and costs[0] > 0
    (mu,) = s.usage.by_model.values()
    assert mu.cost is not None
    assert costs[-1] == pytest.approx(float(mu.cost), rel=1e-12)
    fams = {f.name: f for f in registry.collect()}
    assert value(fams["callmeter_tokens"], "callmeter_tokens_total", kind="input") == 293_010
    monitor.close()


def test_dropped_records_of_sessions_never_go_down(registry):
    """Sessions that count what they drop (a ``dropped`` attribute) are summed as deltas:
    the counter keeps them after the session is gone."""

    class CountingSession(AgentSession):
        dropped = 0

    monitor = CallMonitor(registry=registry)
    s = monitor.attach(CountingSession())
    s.start()

    def dropped() -> float:
        fams = {f.name: f for f in registry.collect()}
        return value(
            fams["callmeter_dropped_records"], "callmeter_dropped_records_total", source="session"
        )

    assert dropped() == 0
    s.dropped = 3
    assert dropped() == 3
    s.dropped = 5
    assert dropped() == 5
    s.close()  # detached: its drops stay counted
    del s
    assert dropped() == 5
    monitor.close()


def test_default_registry_is_used_and_released():
    from prometheus_client import REGISTRY, generate_latest

    monitor = CallMonitor(namespace="callmeter_default_test")
    try:
        with monitor.attach(AgentSession()):
            pass
        text = generate_latest(REGISTRY).decode()
        assert "callmeter_default_test_calls_ended_total" in text
    finally:
        monitor.close()
    assert "callmeter_default_test_" not in generate_latest(REGISTRY).decode()


def test_a_hung_client_does_not_block_scrapes(served):
    """A client that connects and never sends a request holds only its own thread."""
    import socket

    _monitor, server = served
    hung = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        hung.sendall(b"GET /metrics HTTP/1.1\r\n")  # and never finishes the request
        fams = scrape(server.url)
        assert "callmeter_calls_active" in fams
        with urllib.request.urlopen(server.url + "/health", timeout=5) as resp:
            assert resp.status == 200
    finally:
        hung.close()


def test_speech_cost_applies_per_request_billing_rules(registry):
    """Groq whisper bills at least 10 s per request: ten 2 s requests cost what the
    session's own summary says, per request, not 20 s at the per-second rate."""
    monitor = CallMonitor(registry=registry)
    s = monitor.attach(AgentSession())
    with s:
        for _ in range(10):
            with s.stt_request(model="whisper-large-v3", provider="groq") as stt:
                stt.set_usage(audio_duration=2.0)
    fams = {f.name: f for f in registry.collect()}
    got = value(fams["callmeter_cost_usd"], "callmeter_cost_usd_total", kind="stt")
    expected = s.usage.cost_by_kind["stt"]
    assert got == pytest.approx(float(expected), rel=1e-12)
    assert float(expected) == pytest.approx(10 * 10 * 0.111 / 3600, rel=1e-9)
    monitor.close()
