"""Second round of attacks on the C recording path (SessionCore, GenerationCore, the
Metadata cache and the collector's batch loop), after the fixes of the first round.

Each scenario runs against the C classes and against their pure-Python reference (the
twins of tests/test_speedups_record.py). The tests parametrized with ``_both`` each found
a difference between the paths, now fixed: ``FIXED`` says what the C path did wrong. The
others are attacks the C path survived.
"""

from __future__ import annotations

import copy
import gc
import os
import subprocess
import sys
import threading

import pytest

from callmeter import AgentSession, metrics
from callmeter._native import speedups
from callmeter.metrics import UsageCollector
from callmeter.session import timers

pytestmark = pytest.mark.skipif(
    speedups is None, reason="callmeter._speedups is not built (pure-Python install)"
)

if speedups is not None:
    from test_speedups_record import PyCollector, PySession
else:  # pragma: no cover
    PySession = PyCollector = None

T0 = 1.79e9
MD = metrics.Metadata(model_name="gpt-4o-mini", model_provider="openai")
PATHS = pytest.mark.parametrize("path", ["c", "py"])


def _session(path: str, **kwargs: object) -> AgentSession:
    return (AgentSession if path == "c" else PySession)(session_id="x", **kwargs)


def _generation(path: str, session: AgentSession, model: str | None = "m") -> object:
    if path == "c":
        return session.llm_generation(model)
    return timers.PyLLMGeneration(session, model=model)


def _llm(i: int = 0, speech_id: str | None = "s1", md: object = MD) -> metrics.LLMMetrics:
    return metrics.LLMMetrics(
        timestamp=T0 + i, started_at=T0, duration=0.5, prompt_tokens=3, completion_tokens=2,
        metadata=md, speech_id=speech_id,
    )  # fmt: skip


# -- defects ---------------------------------------------------------------------------

FIXED = {
    "record_checked": (
        "SessionCore.emit_metrics looks _record_checked up on the type only "
        "(_PyType_Lookup in core_emit_metrics): an override set on the instance, which "
        "Recording.emit_metrics calls (self._record_checked), is bypassed"
    ),
    "build_checked": (
        "GenerationCore.__exit__ (gen_exit) checks for an override of _build_checked on "
        "the type only: one set on the instance, which PyLLMGeneration.__exit__ calls, is "
        "bypassed and the C build runs instead"
    ),
    "deleted_t0": (
        "GenerationCore members are T_OBJECT slots that read None once deleted, where "
        "PyLLMGeneration falls back to its class defaults (_t0 = _wall0 = 0.0, cancelled "
        "= _done = False): after `del gen._t0` the C path rejects the request (None - "
        "float) while Python records it"
    ),
    "metadata_cache": (
        "the identity cache of metadata() in _speedups_generation.c returns the last "
        "Metadata without calling timers._metadata (lru_cache, which hashes the model): "
        "a model name whose __hash__ raises is recorded on the C path, rejected in Python"
    ),
    "subclass_attribute": (
        "gen_exit reads error/cancelled/ended_at/label/... from the C slots: a subclass of "
        "LLMGeneration that overrides one of them (a property, or a class attribute that "
        "shadows the slot) is ignored, where PyLLMGeneration reads self.cancelled"
    ),
    "fallback_reruns": (
        "when the C build fails (metadata() raised), gen_exit resets _done and calls the "
        "Python __exit__, which runs the model's __hash__ a second time: a failure that "
        "happens once is recorded on the C path, rejected in Python"
    ),
    "pickle_protocol": (
        "pickle protocols 0 and 1 of a C LLMGeneration raise TypeError (cannot pickle "
        "'GenerationCore' object): copyreg._reduce_ex reduces it by its first C base, "
        "which has no __reduce__; the pure-Python class pickles with every protocol"
    ),
    "interval_crash": (
        "add_interval in _speedups.c keeps n = len(ends) across Python comparisons: a start "
        "(replaced on the event after its check) whose __gt__ empties the union's ends "
        "makes PyList_GET_ITEM(ends, n - 1) read the emptied list (NULL): segfault; Python logs an "
        "IndexError and goes on"
    ),
    "patched_clock": (
        "GenerationCore reads the clocks it was configured with (time.time and "
        "time.perf_counter, in configure_generation) where PyLLMGeneration calls the "
        "module's _wall and _perf: under freezegun.freeze_time, which replaces those module "
        "attributes, Python records the frozen time and the C path the real one"
    ),
}


def _both(key: str) -> list[str]:
    assert key in FIXED  # what the C path used to do wrong here
    return ["c", "py"]


@pytest.mark.parametrize("path", _both("record_checked"))
def test_instance_override_of_record_checked_is_honoured(path):
    # e.g. unittest.mock.patch.object(session, "_record_checked") in an agent's tests
    s = _session(path)
    seen: list[object] = []
    s._record_checked = seen.append
    m = _llm()
    s.emit_metrics(m)
    assert seen == [m]
    assert s.usage.llm_requests == 0  # the override replaced the recording


@pytest.mark.parametrize("path", _both("build_checked"))
def test_instance_override_of_build_checked_is_honoured(path):
    s = _session(path)
    gen = _generation(path, s)
    calls: list[float] = []
    original = gen._build_checked

    def build_checked(end, exc_type):
        calls.append(end)
        return original(end, exc_type)

    gen._build_checked = build_checked
    with gen:
        gen.set_usage(5, 7)
    assert len(calls) == 1
    assert s.usage.llm_completion_tokens == 7


@pytest.mark.parametrize("path", _both("deleted_t0"))
def test_deleted_start_time_falls_back_to_the_class_default(path):
    s = _session(path)
    gen = _generation(path, s)
    with gen:
        gen.set_usage(5, 7)
        del gen._t0  # back to the class default, 0.0
    assert s.rejected_events == 0
    assert s.usage.llm_requests == 1
    assert s.usage.llm_completion_tokens == 7


class _HashOnce(str):
    """A model name that can be hashed once (e.g. a handle to a config entry that was
    closed): every later hash raises."""

    hashed = 0

    def __hash__(self) -> int:
        type(self).hashed += 1
        if type(self).hashed > 1:
            raise TypeError("this model name cannot be hashed any more")
        return str.__hash__(self)

    def __eq__(self, other: object) -> bool:
        return str.__eq__(self, other)


@pytest.mark.parametrize("path", _both("metadata_cache"))
def test_metadata_cache_behaves_as_the_lru_cache(path):
    timers._metadata.cache_clear()
    _HashOnce.hashed = 0
    s = _session(path)
    model = _HashOnce("gpt-4o-mini")
    for _ in range(2):
        gen = _generation(path, s, None)
        gen.model = model
        with gen:
            gen.set_usage(1, 1)
    # Python: the second request's _metadata(model, None) raises, logged and rejected.
    assert s.rejected_events == 1
    assert len(s._pending) == 1  # not added up: the collector would hash the name again


@pytest.mark.parametrize("path", _both("subclass_attribute"))
def test_subclass_property_for_cancelled_is_read(path):
    base = timers.LLMGeneration if path == "c" else timers.PyLLMGeneration

    class StreamGeneration(base):  # cancelled when the stream was abandoned
        stream_abandoned = True

        @property
        def cancelled(self) -> bool:
            return self.stream_abandoned

        @cancelled.setter
        def cancelled(self, value: bool) -> None:
            self.stream_abandoned = value

    s = _session(path)
    with StreamGeneration(s, model="m") as gen:
        gen.set_usage(1, 2)
    assert s._pending[-1].cancelled is True


class _FailsOnce(str):
    """A model name whose first hash fails (a transient failure)."""

    hashed = 0

    def __hash__(self) -> int:
        type(self).hashed += 1
        if type(self).hashed == 1:
            raise RuntimeError("transient")
        return str.__hash__(self)

    def __eq__(self, other: object) -> bool:
        return str.__eq__(self, other)


@pytest.mark.parametrize("path", _both("fallback_reruns"))
def test_failed_build_runs_the_model_hash_once(path):
    timers._metadata.cache_clear()
    _FailsOnce.hashed = 0
    s = _session(path)
    gen = _generation(path, s)
    gen.model = _FailsOnce("gpt-4o-mini")
    with gen:
        gen.set_usage(1, 2)
    assert _FailsOnce.hashed == 1
    assert (s.rejected_events, len(s._pending)) == (1, 0)


_PICKLE_GENERATION = """
import pickle, sys
from callmeter.session import timers
gen = timers.LLMGeneration(None, model="m", label="L")
gen.set_usage(1, 2)
gen.first_token()
for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
    c = pickle.loads(pickle.dumps(gen, protocol))
    assert (c.model, c.label, c._usage, c._first) == ("m", "L", (1, 2, 0, 3), gen._first)
"""


@pytest.mark.parametrize("path", _both("pickle_protocol"))
def test_generation_pickles_with_every_protocol(path):
    env = dict(os.environ, CALLMETER_PURE_PYTHON="0" if path == "c" else "1")
    proc = subprocess.run(
        [sys.executable, "-c", _PICKLE_GENERATION], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


_EMPTIED_ENDS = """
from callmeter import metrics
from callmeter.metrics import UsageCollector
T0 = 1.79e9
coll = UsageCollector(prices=False)
def llm(st):
    return metrics.LLMMetrics(timestamp=T0, started_at=st, duration=0.5, prompt_tokens=3)
coll.collect(llm(T0))
coll.get_summary()  # one interval in the union

class Start(float):  # comparing it empties the union's ends
    def __gt__(self, other):
        del coll._timeline._ends[:]
        return False
    def __ge__(self, other):
        return True

m = llm(T0 + 0.1)
coll.collect(m)
m.started_at = Start(T0 + 0.1)  # after the check, before the batch is added up
coll.get_summary()
"""


@pytest.mark.parametrize("path", _both("interval_crash"))
def test_comparison_that_empties_the_interval_union_does_not_crash(path):
    env = dict(os.environ, CALLMETER_PURE_PYTHON="0" if path == "c" else "1")
    proc = subprocess.run(
        [sys.executable, "-c", _EMPTIED_ENDS], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("path", _both("patched_clock"))
def test_clocks_patched_on_the_module_are_used(path, monkeypatch):
    # What freezegun.freeze_time("2030-01-01") does: it replaces every module attribute
    # that holds time.time or time.perf_counter, here timers._wall and timers._perf.
    monkeypatch.setattr(timers, "_wall", lambda: 1893456000.0)
    monkeypatch.setattr(timers, "_perf", lambda: 100.0)
    s = _session(path)
    with _generation(path, s) as gen:
        gen.set_usage(1, 2)
    m = s._pending[-1]
    assert (m.timestamp, m.started_at, m.duration) == (1893456000.0, 1893456000.0, 0.0)


# -- attacks the C path survived -------------------------------------------------------


@PATHS
def test_copy_of_session_collector_and_generation_match(path):
    # copy.copy shares the state as the pure-Python classes do; deepcopy fails the same
    # way (the lock), and never crashes.
    s = _session(path, labels={"a": "b"})
    s.emit_metrics(_llm())
    c = copy.copy(s)
    assert (c.session_id, c.labels, c._pending is s._pending) == ("x", {"a": "b"}, True)
    c.emit_metrics(_llm(1))
    assert len(s._pending) == 2
    coll = UsageCollector() if path == "c" else PyCollector()
    coll.collect(_llm())
    cc = copy.copy(coll)
    cc.collect(_llm(1))
    assert cc.get_summary().llm_requests == 2
    gen = _generation(path, s)
    with gen:
        gen.set_usage(1, 2)
    g2 = copy.copy(gen)
    assert (g2.model, g2._done, g2._usage, g2._session) == ("m", True, (1, 2, 0, 3), s)
    with g2:  # done: records nothing, as in Python
        pass
    assert s.usage.llm_requests == 3
    for obj in (s, coll, gen):
        with pytest.raises(TypeError, match="pickle"):
            copy.deepcopy(obj)


def test_key_reuse_across_turns_matches_python():
    # One Metadata object over several turns, runs broken by queued events, None metadata:
    # the C loop reuses the ledger key while the Metadata object is the same.
    other = metrics.Metadata(model_name="gpt-4o-mini", model_provider="openai")  # equal
    stt = metrics.STTMetrics(timestamp=T0, started_at=T0, duration=0.2, audio_duration=1.0)
    events = []
    for i in range(60):
        md = (MD, other, None)[i % 3] if i % 7 else MD
        events.append(_llm(i, speech_id=f"s{i % 4}", md=md))
        if i % 11 == 0:
            events.append(stt)
    sums = []
    for coll in (UsageCollector(), PyCollector()):
        for e in events:
            coll.collect(e)
        s = coll.get_summary()
        sums.append((s.llm_requests, s.llm_prompt_tokens, sorted(s.by_model), s.cost))
        sums.append((s.cost_by_turn, coll._ledger.version))
    assert sums[0] == sums[2]
    assert sums[0][0] == 60
    assert sums[1] == sums[3]


def test_no_reference_leaks_on_the_metadata_cache_and_key_reuse():
    model, provider = "leak-model", "leak-provider"
    s = AgentSession(session_id="x")
    before = (sys.getrefcount(model), sys.getrefcount(provider), sys.getrefcount(MD))

    def work() -> None:
        for i in range(20_000):
            with s.llm_generation(model, provider) as gen:
                gen.set_usage(1, 2)
            if i % 5 == 0:  # fallback path: invalid usage, then an exception
                with s.llm_generation(model, provider) as gen:
                    gen.set_usage(-1)
            s.emit_metrics(_llm(i % 100, speech_id=("a", "b")[i % 2]))
        s.usage  # noqa: B018  (adds the pending events up)

    work()
    gc.collect()
    mid = (sys.getrefcount(model), sys.getrefcount(provider), sys.getrefcount(MD))
    work()
    gc.collect()
    after = (sys.getrefcount(model), sys.getrefcount(provider), sys.getrefcount(MD))
    assert after == mid, (before, mid, after)


def test_eight_threads_of_mixed_operations_keep_exact_totals():
    s = AgentSession(session_id="x")
    errors: list[BaseException] = []
    n = 1500

    def worker(k: int) -> None:
        try:
            for i in range(n):
                if k % 2:
                    with s.llm_generation(("m1", "m2")[i % 2], "p") as gen:
                        gen.first_token()
                        gen.set_usage(2, 3)
                else:
                    s.emit_metrics(_llm(i, speech_id=f"s{i % 3}"))
                if i % 100 == 0:
                    handler = s.on("metrics_collected", lambda ev: None)
                    s.usage  # noqa: B018
                    s.off("metrics_collected", handler)
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    u = s.usage
    assert u.llm_requests == 8 * n
    assert u.llm_prompt_tokens == 4 * n * 2 + 4 * n * 3
    assert u.llm_completion_tokens == 4 * n * 3 + 4 * n * 2
    assert s.rejected_events == 0


class _SlowHashName(str):
    """A model name whose hash runs Python code (and so lets other threads run)."""

    def __hash__(self) -> int:
        return str.__hash__(self)

    def __eq__(self, other: object) -> bool:
        return str.__eq__(self, other)


def test_metadata_cache_under_eight_threads_with_turns_and_two_sessions():
    # The last-model cache of metadata() is shared by every session and thread: each
    # metric must still carry its own model, and its turn's speech_id.
    sessions = [AgentSession(session_id="a"), AgentSession(session_id="b")]
    received: list[list[object]] = [[], []]
    for s, got in zip(sessions, received, strict=True):
        s.on("metrics_collected", got.append)
    errors: list[BaseException] = []
    n = 300

    def worker(k: int) -> None:
        s = sessions[k % 2]
        model = _SlowHashName(f"model-{k}")
        try:
            for j in range(n):
                with s.turn(f"t{k}-{j % 5}"):
                    gen = s.llm_generation(None, "p", label=f"L{k}")
                    gen.model = model if j % 2 else f"plain-{k}"
                    with gen:
                        gen.set_usage(1, 1)
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    seen = 0
    for s, got in zip(sessions, received, strict=True):
        for event in got:
            m = event.metrics
            assert event.session_id == s.session_id
            if not isinstance(m, metrics.LLMMetrics):
                continue  # the turns' own TurnMetrics
            k = m.label[1:]
            assert m.metadata.model_name in (f"model-{k}", f"plain-{k}")
            assert m.speech_id.startswith(f"t{k}-")
            seen += 1
        assert s.rejected_events == 0
        assert s.usage.llm_requests == sum(isinstance(e.metrics, metrics.LLMMetrics) for e in got)
    assert seen == 8 * n


class _Name(str):
    pass


def test_batch_loop_matches_python_on_huge_counts_int_times_and_odd_metadata():
    # Counts beyond 2**63 (the Python-int sums and the large-request path), int times,
    # Metadata of str subclasses, equal Metadata objects, runs broken by speech_id.
    mds = [
        MD,
        metrics.Metadata(model_name=_Name("gpt-4o-mini"), model_provider=_Name("openai")),
        None,
        metrics.Metadata(model_name="gpt-4o-mini", model_provider="openai"),
    ]
    events = []
    for i in range(60):
        big = [0, 1, 2**62, 2**63, 2**64 + 5, 10**30][i % 6]
        events.append(
            metrics.LLMMetrics(
                timestamp=int(T0) + i,
                started_at=int(T0) + i % 7,
                duration=i % 3,
                prompt_tokens=big + 10,
                completion_tokens=big,
                prompt_cached_tokens=i % 4,
                cache_creation_tokens=(i % 5 == 0) * big,
                input_audio_tokens=(i % 9 == 0) * (big + 11),
                output_audio_tokens=i,
                reasoning_tokens=big,
                total_tokens=2 * big + 10,
                usage_reported=bool(i % 4),
                error=None if i % 6 else "E",
                speech_id=[None, "a", "b"][i % 3],
                metadata=mds[i % 4],
            )
        )
    out = []
    for coll in (UsageCollector(), PyCollector()):
        for e in events:
            coll.collect(e)
        out.append((coll.get_summary().to_dict(), coll.rejected_events, coll._ledger.version))
    assert out[0] == out[1]
    assert out[0][0]["llm_requests"] == 60
