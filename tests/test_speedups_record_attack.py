"""Attacks on the C recording path (SessionCore, CollectorCore, GenerationCore).

Each scenario runs against the C classes and against their pure-Python reference (the
twins of tests/test_speedups_record.py, or a subprocess with CALLMETER_PURE_PYTHON=1 when
the C path may crash the interpreter). The tests under "defects" each found a difference
(two of them a crash) that is now fixed; the comment above each says what it was. The
others are attacks the C path survived from the start.
"""

from __future__ import annotations

import copy
import gc
import logging
import os
import subprocess
import sys
import textwrap
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
SESSIONS = pytest.mark.parametrize("session_cls", ["c", "py"])


def _session_cls(name: str) -> type:
    return AgentSession if name == "c" else PySession


def _llm(i: int = 0, speech_id: str | None = "s1") -> metrics.LLMMetrics:
    return metrics.LLMMetrics(
        timestamp=T0 + i, started_at=T0, duration=0.5, prompt_tokens=3, metadata=MD,
        speech_id=speech_id,
    )  # fmt: skip


def _run(code: str, *, pure: bool) -> subprocess.CompletedProcess:
    env = dict(os.environ, CALLMETER_PURE_PYTHON="1" if pure else "0")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _both(code: str) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    py = _run(code, pure=True)
    assert py.returncode == 0, py.stderr  # the reference survives: the scenario is valid
    return _run(code, pure=False), py


# -- defects ---------------------------------------------------------------------------


# Was a defect of the C path: SessionCore.emit_metrics calls the C record() directly
# instead of self._record_checked(m): a subclass overriding _record_checked is bypassed
# for events that pass the fast check (the pure-Python emit_metrics calls the override)
def test_subclass_override_of_record_checked_is_honoured():
    seen: dict[str, int] = {}
    for name in ("c", "py"):

        class Sub(_session_cls(name)):
            def _record_checked(self, m, name=name):
                seen[name] = seen.get(name, 0) + 1
                super()._record_checked(m)

        Sub(session_id="x").emit_metrics(_llm())
    assert seen == {"py": 1, "c": 1}


# Was a defect of the C path: GenerationCore.__exit__ builds the metric in C (build())
# and never calls self._build_checked: a LLMGeneration subclass overriding it is
# bypassed (PyLLMGeneration.__exit__ calls the override)
def test_subclass_override_of_build_checked_is_honoured():
    seen: dict[str, int] = {}
    for name, base in (("c", timers.LLMGeneration), ("py", timers.PyLLMGeneration)):

        class Sub(base):
            def _build_checked(self, end, exc_type, name=name):
                seen[name] = seen.get(name, 0) + 1
                return super()._build_checked(end, exc_type)

        with Sub(AgentSession(session_id="x"), model="m") as g:
            g.set_usage(1, 2)
    assert seen == {"py": 1, "c": 1}


# Was a defect of the C path: CollectorCore.collect converts _batch with
# PyLong_AsSsize_t and returns NULL on OverflowError: a collector whose BATCH is an int
# above 2**63 raises OverflowError into the caller (collect promises never to raise;
# Python compares len(buf) >= batch and appends)
def test_collect_with_a_huge_batch_never_raises():
    class Huge(UsageCollector):
        BATCH = 2**64

    class PyHuge(PyCollector):
        BATCH = 2**64

    m = _llm()
    py = PyHuge()
    py.collect(m)
    assert py.get_summary().llm_requests == 1
    c = Huge()
    c.collect(m)  # OverflowError: Python int too large to convert to C ssize_t
    c(m)
    assert c.get_summary().llm_requests == 2


_FINALIZER_DELETES_PENDING = """
    import gc, logging
    from callmeter import AgentSession, metrics
    logging.disable(logging.CRITICAL)
    s, other = AgentSession(session_id="x"), AgentSession(session_id="y")

    class Bomb:
        def __del__(self):
            del s._pending

    class Tool(metrics.ToolMetrics):  # a valid subclass that carries one more field
        junk: object = None

    a = Tool(timestamp=1.79e9, started_at=1.79e9, duration=0.1, tool_name="t", junk=Bomb())
    other.emit_metrics(a)  # a is now validate.last_valid.event
    other._pending.clear()
    del a
    gc.collect()
    # Replacing last_valid.event frees a: Bomb.__del__ runs inside s.emit_metrics.
    s.emit_metrics(metrics.ToolMetrics(timestamp=1.79e9, started_at=1.79e9, duration=0.1,
                                       tool_name="t"))
    print("survived")
"""


# Was a defect of the C path: segfault: _speedups_record.c record() checks its slots,
# then Py_XSETREF(last_valid.event, m) frees the previous event, whose finalizer may run
# Python code that deletes _pending; PyList_Append(self->pending=NULL) crashes (Python:
# AttributeError, logged as 'recording a metrics event failed')
def test_finalizer_of_the_previous_event_deleting_pending_does_not_crash():
    c, py = _both(_FINALIZER_DELETES_PENDING)
    assert "survived" in py.stdout
    assert c.returncode == 0, f"C path died with {c.returncode}"
    assert "survived" in c.stdout


_GETATTR_DELETES_OPEN_TURNS = """
    import logging
    from callmeter import AgentSession, metrics
    logging.disable(logging.CRITICAL)
    s = AgentSession(session_id="x")
    reads = [0]

    class Tool(metrics.ToolMetrics):
        def __getattribute__(self, name):
            if name == "speech_id":
                reads[0] += 1
                if reads[0] == 2:  # the read in _record_checked (the 1st is the check's)
                    del s._open_turns
            return object.__getattribute__(self, name)

    class Turn:
        def _add(self, m):
            pass

    s._open_turns = {"s1": Turn()}
    s.emit_metrics(Tool(timestamp=1.79e9, started_at=1.79e9, duration=0.1, tool_name="t",
                        speech_id="s1"))
    print("survived")
"""


# Was a defect of the C path: segfault: _speedups_record.c record() reads getattr(m,
# 'speech_id') (Python code for a subclass) and then Py_NewRef(self->open_turns) without
# checking it again; deleted meanwhile it is NULL (replaced by a list: SystemError
# logged instead)
def test_speech_id_getter_deleting_open_turns_does_not_crash():
    c, py = _both(_GETATTR_DELETES_OPEN_TURNS)
    assert "survived" in py.stdout
    assert c.returncode == 0, f"C path died with {c.returncode}"
    assert "survived" in c.stdout


# Was a defect of the C path: record() re-checks _handlers with PyDict_CheckExact after
# Python code ran (_next_seq, a turn's _add, a flush) and fails with TypeError when it
# became a dict subclass: the event's handlers are not called and 'recording failed' is
# logged; Python calls _handlers.get() on any mapping and delivers it
def test_handlers_replaced_by_a_mapping_while_recording_still_receive(caplog):
    received: dict[str, list[int]] = {}
    for name in ("c", "py"):
        s = _session_cls(name)(session_id="x")
        got = received.setdefault(name, [])
        s.on("metrics_collected", lambda ev, got=got: got.append(ev.seq))
        next_seq = s._next_seq

        def seq(s=s, next_seq=next_seq):
            if type(s._handlers) is dict:  # e.g. another component wraps the table
                s._handlers = _Handlers(s._handlers)
            return next_seq()

        s._next_seq = seq
        for i in range(3):
            s.emit_metrics(_llm(i))
    assert received["py"] == [0, 1, 2]
    assert received["c"] == received["py"]
    assert "recording a metrics event failed" not in caplog.text


class _Handlers(dict):
    pass


# Was a defect of the C path: GenerationCore's public attributes are T_OBJECT members:
# after `del g.model` (or provider, speech_id) they read as None, so the C path (and the
# reference it falls back to) records the request as model=None; PyLLMGeneration raises
# AttributeError while building, logs it and counts the request rejected
def test_deleted_model_is_rejected_as_in_python():
    out = {}
    for name in ("c", "py"):
        s = AgentSession(session_id="x")
        gen = (
            s.llm_generation("gpt-4o-mini", "openai")
            if name == "c"
            else timers.PyLLMGeneration(s, model="gpt-4o-mini", provider="openai")
        )
        with gen as g:
            g.set_usage(1, 2)
            del g.model
        out[name] = (s.rejected_events, s.usage.llm_requests)
    assert out["py"] == (1, 0)
    assert out["c"] == out["py"]


# Was a defect of the C path: GenerationCore stores _t0/_wall0 as T_DOUBLE and _done as
# T_BOOL: assigning an int to _done, or a non-number to _t0, raises TypeError into the
# agent at the assignment; on PyLLMGeneration the assignment works and __exit__ logs and
# counts the bad value (or, for _done, treats it as truthy) without raising
def test_odd_private_attribute_values_never_raise_into_the_agent():
    s = AgentSession(session_id="x")
    ref = timers.PyLLMGeneration(s, model="m")
    with ref as g:
        g._done = 1
    with timers.PyLLMGeneration(s, model="m") as g:
        g._t0 = None
    assert s.rejected_events == 1 and s.usage.llm_requests == 0
    with s.llm_generation("m") as g:
        g._done = 1  # TypeError: attribute value type must be bool
    with s.llm_generation("m") as g:
        g._t0 = None  # TypeError: must be real number, not NoneType
    assert s.rejected_events == 2 and s.usage.llm_requests == 0


# Was a defect of the C path: GenerationCore.__exit__ sets done only after build()
# returns, and build() runs Python code (the metadata cache hashes the model name, the
# clock): a re-entrant __exit__ from there, or a second thread finishing the same
# generation (a cache miss lets the GIL switch), records the request twice;
# PyLLMGeneration sets _done first
def test_reentrant_exit_records_the_request_once():
    out = {}
    for name, cls in (("c", timers.LLMGeneration), ("py", timers.PyLLMGeneration)):
        s = AgentSession(session_id="x")
        pending: list = []

        class Model(str):
            def __hash__(self, pending=pending):
                if pending:  # finish the request again while its metric is being built
                    pending.pop().__exit__(None, None, None)
                return str.__hash__(self)

            __eq__ = str.__eq__

        with cls(s, model="m") as g:
            g.set_usage(1, 2)
            g.model = Model(f"reentrant-{name}")
            pending.append(g)
        out[name] = s.usage.llm_requests
    assert out == {"py": 1, "c": 1}


# Was a defect of the C path: the C bases keep their state in C members that copy/pickle
# do not see (no __reduce__/__getstate__ on GenerationCore or SessionCore): copy.copy()
# of a cannot picklepure-Python classes copy
def test_copy_of_a_generation_works_as_in_python():
    s = AgentSession(session_id="x")
    ref = copy.copy(timers.PyLLMGeneration(s, model="m", label="L"))
    assert (ref.model, ref.label, ref._session) == ("m", "L", s)
    c = copy.copy(s.llm_generation("m", label="L"))
    assert (c.model, c.label, c._session) == ("m", "L", s)


# -- attacks the C path survived -------------------------------------------------------


def test_no_reference_leaks_on_fast_and_failure_paths():
    # The same workload (fast path, rejected events, a raising handler, open turns,
    # generations with bad usage, errors and exceptions) leaves every shared object with
    # the same reference count on both paths.
    class Boom(Exception):
        pass

    def handler(ev):
        raise Boom

    class Turn:
        def _add(self, m):
            pass

    bad = metrics.LLMMetrics(timestamp=T0, started_at=T0, duration=-1.0)
    tool = metrics.ToolMetrics(timestamp=T0, started_at=T0, duration=0.1, tool_name="t")
    good = _llm()
    turn = Turn()

    def workload(session_cls, collector_cls, n):
        s = session_cls(session_id="x", labels={"a": "b"})
        c = collector_cls()
        s.on("metrics_collected", handler)
        s._open_turns = {"s1": turn}
        for _ in range(n):
            for m in (good, tool, bad):
                s.emit_metrics(m)
                c.collect(m)
                c(m)
            with s.llm_generation("gpt-4o-mini", "openai", speech_id="s1") as g:
                g.first_token()
                g.set_usage(1, -2)
            with s.llm_generation("gpt-4o-mini", "openai") as g:
                g.set_usage(1, 2, reasoning_tokens=3)
            g = s.llm_generation(model="m")
            g.error = "E"
            with g:
                pass
            try:
                with s.llm_generation("m") as g:
                    raise Boom
            except Boom:
                pass
            s._pending.clear()
            c._buf.clear()
        return s

    shared = (MD, handler, good, tool, bad, turn, "s1", Boom)
    logging.disable(logging.CRITICAL)
    try:
        for session_cls, collector_cls in (
            (AgentSession, UsageCollector),
            (PySession, PyCollector),
        ):
            workload(session_cls, collector_cls, 50)
            gc.collect()
            before = [sys.getrefcount(o) for o in shared]
            workload(session_cls, collector_cls, 2000)
            gc.collect()
            assert [sys.getrefcount(o) for o in shared] == before, session_cls
    finally:
        logging.disable(logging.NOTSET)


def test_eight_threads_with_handler_churn_keep_exact_totals():
    sys_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        s = AgentSession(session_id="x")
        c = UsageCollector()
        calls = [0]
        lock = threading.Lock()

        def count(ev):
            with lock:
                calls[0] += 1

        s.on("metrics_collected", count)
        stop = threading.Event()
        n = 1500

        def work(k):
            for _ in range(n):
                m = metrics.LLMMetrics(
                    timestamp=T0, started_at=T0, duration=0.5, prompt_tokens=k + 1, metadata=MD
                )
                s.emit_metrics(m)
                c.collect(m)
                with s.llm_generation("gpt-4o-mini", "openai") as g:
                    g.set_usage(k + 1, 1)

        def churn():
            while not stop.is_set():
                s.on("metrics_collected", lambda ev: None)
                s._handlers = {"metrics_collected": s._handlers["metrics_collected"][:1]}
                _ = s.usage

        threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        churner = threading.Thread(target=churn)
        churner.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        churner.join()
    finally:
        sys.setswitchinterval(sys_interval)
    expected = sum((k + 1) * n for k in range(8))
    assert s.usage.llm_requests == 16 * n
    assert s.usage.llm_prompt_tokens == 2 * expected
    assert c.get_summary().llm_prompt_tokens == expected
    assert calls[0] == 16 * n
    assert s._next_seq() == 16 * n
    assert s.rejected_events == 0


class _EvilKey(str):
    """An open turn's key whose __eq__ runs code that tears the session apart."""

    session: object = None
    mode = ""

    def __hash__(self):
        return str.__hash__(self)

    def __eq__(self, other):
        s = self.session
        if self.mode == "delete":
            for attr in ("_open_turns", "_handlers", "_pending", "labels", "_next_seq",
                         "_fast_handler"):  # fmt: skip
                if hasattr(s, attr):
                    delattr(s, attr)
        elif self.mode == "retype":
            s._open_turns, s._handlers, s._pending = None, None, None
        elif self.mode == "gc":
            gc.collect()
        return str.__eq__(self, other)


@pytest.mark.parametrize("mode", ["delete", "retype", "gc"])
def test_turn_key_that_tears_the_session_apart_behaves_as_in_python(mode, caplog):
    out = {}
    for name in ("c", "py"):
        s = _session_cls(name)(session_id="x")
        got: list = []
        s.on("metrics_collected", lambda ev, got=got: got.append(ev.seq))

        class Turn:
            def _add(self, m, got=got):
                got.append("turn")

        key = _EvilKey("s1")
        key.session, key.mode = s, mode
        s._open_turns = {key: Turn()}
        caplog.clear()
        for i in range(3):
            s.emit_metrics(_llm(i))
        out[name] = (got, caplog.text.count("recording a metrics event failed"))
    assert out["c"] == out["py"]


@SESSIONS
def test_recursive_emit_from_a_handler_is_bounded(session_cls):
    s = _session_cls(session_cls)(session_id="x")
    depth = [0]

    def again(ev):
        depth[0] += 1
        if depth[0] < 200:
            s.emit_metrics(_llm(depth[0]))

    s.on("metrics_collected", again)
    s.emit_metrics(_llm())
    assert depth[0] == 200
    assert s.usage.llm_requests == 200


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_propagating_exceptions_from_a_speech_id_hash_leave_both_paths(exc):
    class Key(str):
        def __hash__(self):
            raise exc

        __eq__ = str.__eq__

    for name in ("c", "py"):
        s = _session_cls(name)(session_id="x")
        s._open_turns = {"other": object()}
        # The check accepts only exact str speech_ids: a Key is rejected before the turn.
        s.emit_metrics(_llm(speech_id=Key("s1")))
        assert s.rejected_events == 1


def test_set_usage_argument_mixes_match_the_reference(caplog):
    values = (0, 1, -1, 2**64, -(2**64), 2**100, True, None, 1.0, "3")
    names = ("prompt_tokens", "completion_tokens", "total_tokens", "reasoning_tokens", "nope")
    s = AgentSession(session_id="x")
    cases = [((v,), {}) for v in values]
    cases += [((1, 2), {n: v}) for n in names for v in values]
    cases += [((1, 2, 3), {"prompt_tokens": 1}), ((1, 2, 3, 4), {}), ((), {"total_tokens": 2**70})]
    for args, kwargs in cases:
        out = []
        for cls in (timers.LLMGeneration, timers.PyLLMGeneration):
            g = cls(s, model="m")
            caplog.clear()
            try:
                g.set_usage(*args, **kwargs)
                out.append((g._usage, g._extra, [r.getMessage() for r in caplog.records]))
            except TypeError as e:
                out.append(("TypeError", str(e).replace("PyLLMGeneration", "LLMGeneration")))
        assert out[0] == out[1], (args, kwargs)
