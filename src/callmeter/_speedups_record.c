/*
 * The per-event recording path of callmeter._speedups: two base types whose methods are
 * the C counterparts of pure-Python ones that stay the reference.
 *
 *   SessionCore   emit_metrics / _record_checked of callmeter.session.recording.Recording
 *                 (the check, the session's own buffer, the open turn, seq, the
 *                 MetricsCollectedEvent and its one plain handler)
 *   CollectorCore collect (and __call__) of callmeter.usage.collecting.Collecting
 *
 * The state they read lives in their slots (session_id, _pending, _handlers, ...), which
 * Python code reads and writes as ordinary attributes. Everything that is not the common
 * case (an event the check is unsure of, several or async handlers, a handler that
 * raises, state of an unexpected type, keyword arguments) calls the Python methods that
 * handle it, so both paths behave the same; the tests compare them.
 */
#include "_speedups.h"

#define N_MCE 7
static const char *mce_fields[N_MCE] = {
    "v", "session_id", "seq", "created_at", "agent_name", "labels", "metrics",
};
enum { E_V, E_SESSION_ID, E_SEQ, E_CREATED_AT, E_AGENT_NAME, E_LABELS, E_METRICS };

static PyTypeObject *mce_type = NULL; /* MetricsCollectedEvent */
static Py_ssize_t mce_off[N_MCE];
static PyObject *mce_version = NULL;  /* its default of v */
static PyTypeObject *close_type = NULL; /* CloseEvent */
static PyObject *checks = NULL;       /* callmeter.model.validate.CHECKS */
static PyObject *last_valid = NULL;   /* callmeter.model.validate.last_valid */
static Py_ssize_t last_valid_off;     /* its "event" slot */
static Py_ssize_t lazy_batch = 8192;  /* events a session holds before adding them up */
extern PyObject *py_llm_generation; /* Recording.llm_generation (_speedups_generation.c) */
static PyObject *py_emit = NULL;      /* Recording.emit_metrics */
static PyObject *py_record = NULL;    /* Recording._record_checked */
static PyObject *py_collect = NULL;   /* Collecting.collect */
static PyObject *isawaitable = NULL;  /* inspect.isawaitable */
static PyObject *as_counted = NULL;   /* validate.as_counted */

/* 1 when m's class is a callmeter metrics class (collectors add up exact classes),
   0 for a subclass, -1 on error. */
static int
exact_class(PyObject *m)
{
    if (Py_TYPE(m) == llm_type)
        return 1;
    return PyDict_Contains(checks, (PyObject *)Py_TYPE(m));
}

static PyTypeObject *session_type = NULL;   /* AgentSession: the C path serves it exactly */
static PyTypeObject *collector_type = NULL; /* UsageCollector */
static PyObject *s_metrics_collected, *s_get, *s_record_checked, *s_emit_slow, *s_flush, *s_add, *s_handler_failed,
    *s_schedule, *s_dispatch, *s_record_failed, *s_collect_close, *s_collect_slow,
    *s_speech_id, *s_timestamp;

/* 1 when the C path may serve self: its class is exactly the one configured (a subclass
   may override any attribute the C code reads, with a property or a class attribute)
   and the instance does not shadow the method `name` (a mock, a wrapper). */
static int
served(PyObject *self, PyTypeObject *exact, PyObject *name)
{
    if (exact == NULL || Py_TYPE(self) != exact)
        return 0;
    if (name != NULL) {
        PyObject **dictptr = _PyObject_GetDictPtr(self);
        if (dictptr != NULL && *dictptr != NULL) {
            PyObject *own = PyDict_GetItemWithError(*dictptr, name);
            if (own != NULL || PyErr_Occurred()) {
                PyErr_Clear();
                return 0;
            }
        }
    }
    return 1;
}

static int
configured(void)
{
    if (llm_type != NULL && py_collect != NULL && mce_type != NULL)
        return 1;
    PyErr_SetString(PyExc_RuntimeError, "callmeter._speedups is not configured");
    return 0;
}

static inline int
must_propagate(void)
{
    return PyErr_ExceptionMatches(PyExc_KeyboardInterrupt) ||
           PyErr_ExceptionMatches(PyExc_SystemExit);
}

/* The check of validate.CHECKS for m's exact class: 1 valid, 0 not (or unsure), -1 on an
   exception that must propagate (the Python paths catch only Exception here). */
static int
check_event(PyObject *m)
{
    PyTypeObject *tp = Py_TYPE(m);
    if (tp == llm_type)
        return llm_valid(m);
    PyObject *fn = PyDict_GetItemWithError(checks, (PyObject *)tp); /* borrowed */
    if (fn == NULL) {
        if (PyErr_Occurred())
            PyErr_Clear();
        return 0;
    }
    Py_INCREF(fn);
    PyObject *reason = PyObject_CallOneArg(fn, m);
    Py_DECREF(fn);
    if (reason == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            return -1;
        PyErr_Clear();
        return 0;
    }
    int ok = reason == Py_None;
    Py_DECREF(reason);
    return ok;
}

/* Calls obj.name(*args) with the current exception as the one being handled (as inside
   an ``except`` block, so logger.exception() sees it). The exception is consumed.
   Returns 0, or -1 with an exception set when the call itself raised. */
static int
call_handling(PyObject *obj, PyObject *name, PyObject *a, PyObject *b)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);
    PyObject *old = PyErr_GetHandledException();
    PyErr_SetHandledException(value);
    PyObject *res = a == NULL ? PyObject_CallMethodNoArgs(obj, name)
                              : PyObject_CallMethodObjArgs(obj, name, a, b, NULL);
    PyErr_SetHandledException(old);
    Py_XDECREF(old);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    if (res == NULL)
        return -1;
    Py_DECREF(res);
    return 0;
}

/* -- SessionCore ------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    PyObject *session_id, *agent_name, *labels;
    PyObject *pending;      /* _pending: the session's own collector's buffer */
    PyObject *collector;    /* _collector */
    PyObject *open_turns;   /* _open_turns: speech_id -> Turn */
    PyObject *next_seq;     /* _next_seq */
    PyObject *handlers;     /* _handlers: event name -> tuple of (callback, async, once) */
    PyObject *fast_handler; /* _fast_handler */
} SessionCore;

static int
core_traverse(SessionCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->session_id);
    Py_VISIT(self->agent_name);
    Py_VISIT(self->labels);
    Py_VISIT(self->pending);
    Py_VISIT(self->collector);
    Py_VISIT(self->open_turns);
    Py_VISIT(self->next_seq);
    Py_VISIT(self->handlers);
    Py_VISIT(self->fast_handler);
    return 0;
}

static int
core_clear(SessionCore *self)
{
    Py_CLEAR(self->session_id);
    Py_CLEAR(self->agent_name);
    Py_CLEAR(self->labels);
    Py_CLEAR(self->pending);
    Py_CLEAR(self->collector);
    Py_CLEAR(self->open_turns);
    Py_CLEAR(self->next_seq);
    Py_CLEAR(self->handlers);
    Py_CLEAR(self->fast_handler);
    return 0;
}

static void
core_dealloc(SessionCore *self)
{
    PyObject_GC_UnTrack(self);
    core_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A MetricsCollectedEvent built as msgspec builds it from keyword arguments (allocate,
   set every field), without parsing them. */
static PyObject *
new_event(SessionCore *self, PyObject *seq, PyObject *created_at, PyObject *m)
{
    PyObject *values[N_MCE] = {mce_version, self->session_id, seq, created_at,
                               self->agent_name, self->labels, m};
    for (int i = 0; i < N_MCE; i++) {
        if (values[i] == NULL) {
            PyErr_SetString(PyExc_AttributeError, "session_id, agent_name or labels");
            return NULL;
        }
    }
    for (int i = 0; i < N_MCE; i++) /* owned before the allocation (a collection may run) */
        Py_INCREF(values[i]);
    PyObject *ev = mce_type->tp_alloc(mce_type, mce_type->tp_itemsize);
    if (ev == NULL) {
        for (int i = 0; i < N_MCE; i++)
            Py_DECREF(values[i]);
        return NULL;
    }
    for (int i = 0; i < N_MCE; i++)
        FIELD(ev, mce_off[i]) = values[i];
    return ev;
}

/* The one plain sync handler: called directly (as Recording._record_checked does).
   Returns 0, or -1 when an exception must leave (KeyboardInterrupt, SystemExit) or
   reporting the failure failed. */
static int
call_fast(SessionCore *self, PyObject *fast, PyObject *event)
{
    PyObject *result = PyObject_CallOneArg(fast, event);
    if (result == NULL)
        goto failed;
    if (result != Py_None) {
        PyObject *aw = PyObject_CallOneArg(isawaitable, result);
        int yes = aw == NULL ? -1 : PyObject_IsTrue(aw);
        Py_XDECREF(aw);
        if (yes > 0) {
            PyObject *res = PyObject_CallMethodObjArgs((PyObject *)self, s_schedule,
                                                       s_metrics_collected, fast, result, NULL);
            Py_XDECREF(res);
            yes = res == NULL ? -1 : 0;
        }
        if (yes < 0) {
            Py_DECREF(result);
            goto failed;
        }
    }
    Py_DECREF(result);
    return 0;
failed:
    if (must_propagate())
        return -1;
    return call_handling((PyObject *)self, s_handler_failed, s_metrics_collected, fast);
}

/* mapping.get(key) as Python evaluates it: a dict directly, anything else by its get. */
static PyObject *
mapping_get(PyObject *mapping, PyObject *key)
{
    if (PyDict_CheckExact(mapping)) {
        PyObject *v = PyDict_GetItemWithError(mapping, key);
        if (v == NULL)
            return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
        return Py_NewRef(v);
    }
    return PyObject_CallMethodOneArg(mapping, s_get, key);
}

/* self.<slot>, or AttributeError as Python raises it for a deleted attribute. */
static PyObject *
slot(PyObject *value, const char *name)
{
    if (value == NULL)
        PyErr_SetString(PyExc_AttributeError, name);
    return Py_XNewRef(value);
}

static PyObject *record_body(SessionCore *self, PyObject *m);

/* What comes after the check (Recording._record_checked); NULL only for
   KeyboardInterrupt and SystemExit. */
static PyObject *
record(SessionCore *self, PyObject *m)
{
    if (Py_EnterRecursiveCall(" while recording a metrics event")) {
        if (must_propagate())
            return NULL;
        if (call_handling((PyObject *)self, s_record_failed, NULL, NULL) < 0 && must_propagate())
            return NULL;
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    /* As in Python, first: the previous event may be released here and its finalizer may
       run Python code, so the slots are checked after it. */
    Py_INCREF(m);
    Py_XSETREF(FIELD(last_valid, last_valid_off), m);
    PyObject *res;
    if (self->session_id == NULL || self->agent_name == NULL || self->labels == NULL ||
        self->collector == NULL || self->fast_handler == NULL || self->next_seq == NULL ||
        self->pending == NULL || !PyList_CheckExact(self->pending) ||
        self->open_turns == NULL || !PyDict_CheckExact(self->open_turns) ||
        self->handlers == NULL || !PyDict_CheckExact(self->handlers))
        res = PyObject_CallFunctionObjArgs(py_record, (PyObject *)self, m, NULL);
    else
        res = record_body(self, m);
    Py_LeaveRecursiveCall();
    return res;
}

static PyObject *
record_body(SessionCore *self, PyObject *m)
{
    PyObject *seq = NULL, *created_at = NULL, *handlers = NULL, *event = NULL, *fast = NULL;
    PyObject *turns = NULL, *sid = NULL, *turn = NULL, *next_seq = NULL;
    int exact = exact_class(m);
    if (exact < 0)
        goto fail;
    if (exact) {
        if (PyList_Append(self->pending, m) < 0)
            goto fail;
    }
    else { /* a valid subclass: added up as its callmeter class */
        PyObject *counted = PyObject_CallOneArg(as_counted, m);
        if (counted == NULL)
            goto fail;
        PyObject *pending = slot(self->pending, "_pending");
        int rc = pending == NULL ? -1 : PyList_Append(pending, counted);
        Py_XDECREF(pending);
        Py_DECREF(counted);
        if (rc < 0)
            goto fail;
    }
    if (self->pending != NULL && PyList_Check(self->pending) &&
        PyList_GET_SIZE(self->pending) >= lazy_batch) {
        PyObject *collector = Py_NewRef(self->collector);
        PyObject *res = PyObject_CallMethodNoArgs(collector, s_flush);
        Py_DECREF(collector);
        if (res == NULL)
            goto fail;
        Py_DECREF(res);
    }
    /* From here on Python code may have run (the flush; another thread): every slot is
       read again, and used as Python would use whatever it now holds. */
    if ((turns = slot(self->open_turns, "_open_turns")) == NULL)
        goto fail;
    int open = PyDict_CheckExact(turns) ? PyDict_GET_SIZE(turns) > 0 : PyObject_IsTrue(turns);
    if (open < 0)
        goto fail;
    if (open) { /* hand the event to its open turn (the mapping read before speech_id) */
        if (Py_TYPE(m) == llm_type) {
            sid = FIELD(m, llm_off[F_SPEECH_ID]);
            sid = Py_NewRef(sid == NULL ? Py_None : sid);
        }
        else if ((sid = PyObject_GetAttr(m, s_speech_id)) == NULL) { /* getattr(m, .., None) */
            if (!PyErr_ExceptionMatches(PyExc_AttributeError))
                goto fail;
            PyErr_Clear();
            sid = Py_NewRef(Py_None);
        }
        if ((turn = mapping_get(turns, sid)) == NULL)
            goto fail;
        if (turn != Py_None) {
            PyObject *res = PyObject_CallMethodOneArg(turn, s_add, m);
            if (res == NULL)
                goto fail;
            Py_DECREF(res);
        }
    }
    if ((next_seq = slot(self->next_seq, "_next_seq")) == NULL ||
        (seq = PyObject_CallNoArgs(next_seq)) == NULL)
        goto fail;
    PyObject *all = slot(self->handlers, "_handlers");
    if (all == NULL)
        goto fail;
    handlers = mapping_get(all, s_metrics_collected);
    Py_DECREF(all);
    if (handlers == NULL)
        goto fail;
    int any = PyObject_IsTrue(handlers);
    if (any < 0)
        goto fail;
    if (!any)
        goto done;
    if (Py_TYPE(m) == llm_type) {
        created_at = FIELD(m, llm_off[F_TIMESTAMP]);
        if (created_at == NULL) {
            PyErr_SetString(PyExc_AttributeError, "timestamp");
            goto fail;
        }
        Py_INCREF(created_at);
    }
    else if ((created_at = PyObject_GetAttr(m, s_timestamp)) == NULL) {
        goto fail;
    }
    if ((event = new_event(self, seq, created_at, m)) == NULL)
        goto fail;
    fast = self->fast_handler;
    if (fast != NULL && fast != Py_None && PyTuple_CheckExact(handlers) &&
        PyTuple_GET_SIZE(handlers) > 0 && PyTuple_CheckExact(PyTuple_GET_ITEM(handlers, 0)) &&
        PyTuple_GET_SIZE(PyTuple_GET_ITEM(handlers, 0)) > 0 &&
        PyTuple_GET_ITEM(PyTuple_GET_ITEM(handlers, 0), 0) == fast) {
        Py_INCREF(fast);
        if (call_fast(self, fast, event) < 0)
            goto fail;
    }
    else {
        fast = NULL;
        PyObject *args = PyTuple_Pack(1, event);
        PyObject *res = args == NULL ? NULL
                                     : PyObject_CallMethodObjArgs((PyObject *)self, s_dispatch,
                                                                  s_metrics_collected, handlers,
                                                                  args, NULL);
        Py_XDECREF(args);
        if (res == NULL)
            goto fail;
        Py_DECREF(res);
    }
done:
    Py_XDECREF(fast);
    Py_XDECREF(event);
    Py_XDECREF(created_at);
    Py_XDECREF(handlers);
    Py_XDECREF(seq);
    Py_XDECREF(next_seq);
    Py_XDECREF(turn);
    Py_XDECREF(sid);
    Py_XDECREF(turns);
    Py_RETURN_NONE;

fail:
    Py_XDECREF(fast);
    Py_XDECREF(event);
    Py_XDECREF(created_at);
    Py_XDECREF(handlers);
    Py_XDECREF(seq);
    Py_XDECREF(next_seq);
    Py_XDECREF(turn);
    Py_XDECREF(sid);
    Py_XDECREF(turns);
    if (must_propagate())
        return NULL;
    /* Anything else is logged (Recording._record_failed) and never reaches the caller. */
    if (call_handling((PyObject *)self, s_record_failed, NULL, NULL) < 0) {
        if (must_propagate())
            return NULL;
        PyErr_Clear();
    }
    Py_RETURN_NONE;
}

static PyObject *
core_emit_metrics(SessionCore *self, PyObject *const *args, Py_ssize_t nargs,
                  PyObject *kwnames)
{
    if (!configured())
        return NULL;
    if (nargs != 1 || kwnames != NULL || !served((PyObject *)self, session_type, s_record_checked))
        return call_reference(py_emit, (PyObject *)self, args, nargs, kwnames);
    PyObject *m = args[0];
    int ok = check_event(m);
    if (ok < 0)
        return NULL;
    if (!ok) /* the Python check names what is wrong, or accepts a subclass */
        return PyObject_CallMethodOneArg((PyObject *)self, s_emit_slow, m);
    return record(self, m);
}

static PyObject *
core_record_checked(SessionCore *self, PyObject *m)
{
    if (!configured())
        return NULL;
    if (!served((PyObject *)self, session_type, NULL))
        return PyObject_CallFunctionObjArgs(py_record, (PyObject *)self, m, NULL);
    return record(self, m);
}

static PyObject *
core_llm_generation(SessionCore *self, PyObject *const *args, Py_ssize_t nargs,
                    PyObject *kwnames)
{
    if (!served((PyObject *)self, session_type, NULL))
        return call_reference(py_llm_generation, (PyObject *)self, args, nargs, kwnames);
    return new_llm_generation((PyObject *)self, args, nargs, kwnames);
}

static PyMethodDef core_methods[] = {
    {"llm_generation", (PyCFunction)(void (*)(void))core_llm_generation,
     METH_FASTCALL | METH_KEYWORDS,
     "llm_generation($self, /, model=None, provider=None, label='', *, request_id='', "
     "speech_id=None)\n--\n\n"
     "Time one LLM request (``with`` or ``async with``); emits one ``LLMMetrics``."},
    {"emit_metrics", (PyCFunction)(void (*)(void))core_emit_metrics,
     METH_FASTCALL | METH_KEYWORDS,
     "emit_metrics($self, /, metrics)\n--\n\n"
     "Record a metrics event: add it to :attr:`usage` and emit ``metrics_collected``.\n\n"
     "Sources (integrations, the measurement helpers) call this. Never raises: an invalid\n"
     "event (see :mod:`callmeter.model.validate`) is rejected as a whole, logged\n"
     "(rate-limited) and counted in :attr:`rejected_events`."},
    {"_record_checked", (PyCFunction)core_record_checked, METH_O,
     "_record_checked($self, metrics, /)\n--\n\nRecord an event already checked."},
    {NULL, NULL, 0, NULL},
};

#define MEMBER(name, field) {name, T_OBJECT_EX, offsetof(SessionCore, field), 0, NULL}
static PyMemberDef core_members[] = {
    MEMBER("session_id", session_id),
    MEMBER("agent_name", agent_name),
    MEMBER("labels", labels),
    MEMBER("_pending", pending),
    MEMBER("_collector", collector),
    MEMBER("_open_turns", open_turns),
    MEMBER("_next_seq", next_seq),
    MEMBER("_handlers", handlers),
    MEMBER("_fast_handler", fast_handler),
    {NULL, 0, 0, 0, NULL},
};
#undef MEMBER

static PyTypeObject SessionCore_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "callmeter._speedups.SessionCore",
    .tp_doc = "The recording path of AgentSession in C (see callmeter.session.recording).",
    .tp_basicsize = sizeof(SessionCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)core_dealloc,
    .tp_traverse = (traverseproc)core_traverse,
    .tp_clear = (inquiry)core_clear,
    .tp_methods = core_methods,
    .tp_members = core_members,
};

/* -- CollectorCore ---------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *buf;   /* _buf: appended to, added up in batches */
    PyObject *batch; /* _batch: the batch size, an int */
} CollectorCore;

static int
ccore_traverse(CollectorCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->buf);
    Py_VISIT(self->batch);
    return 0;
}

static int
ccore_clear(CollectorCore *self)
{
    Py_CLEAR(self->buf);
    Py_CLEAR(self->batch);
    return 0;
}

static void
ccore_dealloc(CollectorCore *self)
{
    PyObject_GC_UnTrack(self);
    ccore_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
ccore_collect(CollectorCore *self, PyObject *const *args, Py_ssize_t nargs,
              PyObject *kwnames)
{
    if (py_collect == NULL || llm_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "callmeter._speedups is not configured");
        return NULL;
    }
    if (nargs != 1 || kwnames != NULL || !served((PyObject *)self, collector_type, NULL))
        return call_reference(py_collect, (PyObject *)self, args, nargs, kwnames);
    PyObject *m = args[0];
    if (m == FIELD(last_valid, last_valid_off)) { /* just validated by a session */
        int exact = exact_class(m);
        if (exact < 0)
            return NULL;
        if (!exact) /* a subclass: counted as its base class */
            return PyObject_CallMethodOneArg((PyObject *)self, s_collect_slow, m);
    }
    else {
        if (Py_TYPE(m) == close_type)
            return PyObject_CallMethodOneArg((PyObject *)self, s_collect_close, m);
        int ok = check_event(m);
        if (ok < 0)
            return NULL;
        if (!ok)
            return PyObject_CallMethodOneArg((PyObject *)self, s_collect_slow, m);
    }
    /* Checked after the check, which may run Python code (another thread may too). */
    PyObject *buf = self->buf;
    if (buf == NULL || !PyList_CheckExact(buf) || self->batch == NULL ||
        !PyLong_CheckExact(self->batch)) /* odd state: the Python path appends */
        return PyObject_CallMethodOneArg((PyObject *)self, s_collect_slow, m);
    Py_ssize_t batch = PyLong_AsSsize_t(self->batch);
    if (batch == -1 && PyErr_Occurred()) { /* beyond a C size: Python compares it */
        PyErr_Clear();
        return PyObject_CallMethodOneArg((PyObject *)self, s_collect_slow, m);
    }
    if (PyList_Append(buf, m) < 0) /* atomic: no lock on the per-event path */
        return NULL;
    if (PyList_GET_SIZE(buf) >= batch)
        return PyObject_CallMethodNoArgs((PyObject *)self, s_flush);
    Py_RETURN_NONE;
}

static PyObject *
ccore_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    if (kwargs == NULL && PyTuple_GET_SIZE(args) == 1)
        return ccore_collect((CollectorCore *)self, &PyTuple_GET_ITEM(args, 0), 1, NULL);
    if (py_collect == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "callmeter._speedups is not configured");
        return NULL;
    }
    PyObject *bound = PyMethod_New(py_collect, self);
    PyObject *res = bound == NULL ? NULL : PyObject_Call(bound, args, kwargs);
    Py_XDECREF(bound);
    return res;
}

static PyMethodDef ccore_methods[] = {
    {"collect", (PyCFunction)(void (*)(void))ccore_collect, METH_FASTCALL | METH_KEYWORDS,
     "collect($self, /, metrics)\n--\n\n"
     "Add one metrics event; an invalid one is rejected (logged, counted). Never raises.\n\n"
     "Event types without totals (``VADMetrics``) are kept but add to no total."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef ccore_members[] = {
    {"_buf", T_OBJECT_EX, offsetof(CollectorCore, buf), 0, NULL},
    {"_batch", T_OBJECT_EX, offsetof(CollectorCore, batch), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject CollectorCore_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "callmeter._speedups.CollectorCore",
    .tp_doc = "The per-event path of UsageCollector in C (see callmeter.usage.collecting).",
    .tp_basicsize = sizeof(CollectorCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)ccore_dealloc,
    .tp_traverse = (traverseproc)ccore_traverse,
    .tp_clear = (inquiry)ccore_clear,
    .tp_call = ccore_call,
    .tp_methods = ccore_methods,
    .tp_members = ccore_members,
};

/* -- configuration ---------------------------------------------------------------------- */

static int
intern_names(void)
{
    struct { PyObject **s; const char *text; } names[] = {
        {&s_metrics_collected, "metrics_collected"}, {&s_emit_slow, "_emit_slow"},
        {&s_get, "get"}, {&s_record_checked, "_record_checked"},
        {&s_flush, "_flush"}, {&s_add, "_add"}, {&s_handler_failed, "_handler_failed"},
        {&s_schedule, "_schedule"}, {&s_dispatch, "_dispatch"},
        {&s_record_failed, "_record_failed"}, {&s_collect_close, "_collect_close"},
        {&s_collect_slow, "_collect_slow"}, {&s_speech_id, "speech_id"},
        {&s_timestamp, "timestamp"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (*names[i].s == NULL &&
            (*names[i].s = PyUnicode_InternFromString(names[i].text)) == NULL)
            return -1;
    return 0;
}

static PyObject *
configure_collect(PyObject *module, PyObject *args)
{
    PyObject *close, *checks_, *last, *coll, *counted;
    if (!PyArg_ParseTuple(args, "O!O!OOO", &PyType_Type, &close, &PyDict_Type, &checks_, &last,
                          &coll, &counted))
        return NULL;
    if (llm_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure() the LLMMetrics type first");
        return NULL;
    }
    if (slot_offset(Py_TYPE(last), "event", &last_valid_off) < 0 || intern_names() < 0)
        return NULL;
    Py_XSETREF(close_type, (PyTypeObject *)Py_NewRef(close));
    Py_XSETREF(checks, Py_NewRef(checks_));
    Py_XSETREF(last_valid, Py_NewRef(last));
    Py_XSETREF(py_collect, Py_NewRef(coll));
    Py_XSETREF(as_counted, Py_NewRef(counted));
    Py_RETURN_NONE;
}

static PyObject *
configure_record(PyObject *module, PyObject *args)
{
    PyObject *mce, *version, *emit, *rec, *aw;
    Py_ssize_t batch;
    if (!PyArg_ParseTuple(args, "O!OnOOO", &PyType_Type, &mce, &version, &batch, &emit, &rec,
                          &aw))
        return NULL;
    if (py_collect == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure_collect() first");
        return NULL;
    }
    for (int i = 0; i < N_MCE; i++)
        if (slot_offset((PyTypeObject *)mce, mce_fields[i], &mce_off[i]) < 0)
            return NULL;
    if (batch < 1) {
        PyErr_SetString(PyExc_ValueError, "the batch size must be positive");
        return NULL;
    }
    lazy_batch = batch;
    Py_XSETREF(mce_type, (PyTypeObject *)Py_NewRef(mce));
    Py_XSETREF(mce_version, Py_NewRef(version));
    Py_XSETREF(py_emit, Py_NewRef(emit));
    Py_XSETREF(py_record, Py_NewRef(rec));
    Py_XSETREF(isawaitable, Py_NewRef(aw));
    Py_RETURN_NONE;
}

static PyObject *
serve_classes(PyObject *module, PyObject *args)
{
    PyObject *session, *collector;
    if (!PyArg_ParseTuple(args, "O!O!", &PyType_Type, &session, &PyType_Type, &collector))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)session, &SessionCore_Type) ||
        !PyType_IsSubtype((PyTypeObject *)collector, &CollectorCore_Type)) {
        PyErr_SetString(PyExc_TypeError, "the classes must have the C bases");
        return NULL;
    }
    Py_XSETREF(session_type, (PyTypeObject *)Py_NewRef(session));
    Py_XSETREF(collector_type, (PyTypeObject *)Py_NewRef(collector));
    Py_RETURN_NONE;
}

static PyMethodDef record_functions[] = {
    {"serve_classes", serve_classes, METH_VARARGS,
     "serve_classes(AgentSession, UsageCollector): the exact classes the C path serves "
     "(instances of subclasses take the Python path)."},
    {"configure_collect", configure_collect, METH_VARARGS,
     "configure_collect(close_type, checks, last_valid, collect, as_counted): what "
     "CollectorCore uses."},
    {"configure_record", configure_record, METH_VARARGS,
     "configure_record(event_type, version, lazy_batch, emit_metrics, record_checked, "
     "isawaitable): what SessionCore uses."},
    {NULL, NULL, 0, NULL},
};

int
record_init(PyObject *module)
{
    if (PyType_Ready(&SessionCore_Type) < 0 || PyType_Ready(&CollectorCore_Type) < 0)
        return -1;

    if (PyModule_AddObjectRef(module, "SessionCore", (PyObject *)&SessionCore_Type) < 0 ||
        PyModule_AddObjectRef(module, "CollectorCore", (PyObject *)&CollectorCore_Type) < 0)
        return -1;
    return PyModule_AddFunctions(module, record_functions);
}
