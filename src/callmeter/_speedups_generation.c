/*
 * The measurement helper of an LLM request in C: GenerationCore is the base of
 * callmeter.session.timers.LLMGeneration when this module is built, and
 * SessionCore.llm_generation builds one without a Python frame.
 *
 * Each method handles the common case only: a request that completes with plainly valid
 * values. Anything else (an exception, an error or cancel flag, ended_at set, usage that
 * is not plain non-negative ints, keyword arguments it does not know, a failure while
 * building) calls the pure-Python method it mirrors, which stays the reference, so both
 * paths give the same metric; the tests compare them.
 */
#include "_speedups.h"
#include <math.h>

typedef struct {
    PyObject_HEAD
    PyObject *session;
    PyObject *model, *provider, *label, *request_id, *speech_id;
    PyObject *error, *cancelled, *ended_at;
    PyObject *first; /* _first: perf_counter() at the first token, or None */
    PyObject *usage; /* _usage: (prompt, completion, cached, total), or None */
    PyObject *extra; /* _extra: (cache_creation, reasoning, audio_in, audio_out), or None */
    PyObject *t0, *wall0; /* _t0, _wall0: perf_counter() and time() at the start */
    PyObject *done;       /* _done */
} Generation;

static PyTypeObject *gen_type = NULL;  /* LLMGeneration (the Python subclass) */
static PyObject *py_exit, *py_set_usage, *py_enter, *py_first_token; /* the references */
PyObject *py_llm_generation = NULL;
static PyObject *metadata_of = NULL;   /* timers._metadata(model, provider) */
static PyObject *speech_id_var = NULL; /* the ContextVar of the current speech_id */
/* timers' globals: _wall, _perf and _metadata are read from there at each use, so that
   patching them (freezegun, a test) reaches the C path as it reaches Python's. */
static PyObject *timers_globals = NULL;
static PyObject *s_wall, *s_perf, *s_metadata;

static PyObject *
timers_global(PyObject *name)
{
    PyObject *v = PyDict_GetItemWithError(timers_globals, name);
    if (v == NULL && !PyErr_Occurred())
        PyErr_Format(PyExc_NameError, "name '%U' is not defined", name);
    return Py_XNewRef(v);
}

/* A clock of the timers module, called: the float it returns (new reference). */
static PyObject *
call_clock(PyObject *name, double *out)
{
    PyObject *clock = timers_global(name);
    if (clock == NULL)
        return NULL;
    PyObject *t = PyObject_CallNoArgs(clock);
    Py_DECREF(clock);
    if (t == NULL)
        return NULL;
    if (!PyFloat_CheckExact(t)) { /* the reference handles whatever a patched clock gives */
        Py_DECREF(t);
        PyErr_SetString(PyExc_TypeError, "a clock returned something not a float");
        return NULL;
    }
    *out = PyFloat_AS_DOUBLE(t);
    return t;
}
static PyObject *s_record_checked, *s_emit_metrics;
static PyObject *empty_str, *zero, *float_zero;
static PyObject *py_build_checked = NULL; /* PyLLMGeneration._build_checked */
static PyObject *s_build_checked = NULL;

#define N_USAGE 8
static const char *usage_names[N_USAGE] = {
    "prompt_tokens", "completion_tokens", "prompt_cached_tokens", "cache_creation_tokens",
    "reasoning_tokens", "input_audio_tokens", "output_audio_tokens", "total_tokens",
};
static PyObject *usage_keys[N_USAGE];
#define N_GEN_ARGS 5
static const char *gen_names[N_GEN_ARGS] = {
    "model", "provider", "label", "request_id", "speech_id",
};
static PyObject *gen_keys[N_GEN_ARGS];

static int
gen_traverse(Generation *self, visitproc visit, void *arg)
{
    Py_VISIT(self->session);
    Py_VISIT(self->model);
    Py_VISIT(self->provider);
    Py_VISIT(self->label);
    Py_VISIT(self->request_id);
    Py_VISIT(self->speech_id);
    Py_VISIT(self->error);
    Py_VISIT(self->cancelled);
    Py_VISIT(self->ended_at);
    Py_VISIT(self->first);
    Py_VISIT(self->usage);
    Py_VISIT(self->extra);
    Py_VISIT(self->t0);
    Py_VISIT(self->wall0);
    Py_VISIT(self->done);
    return 0;
}

static int
gen_clear(Generation *self)
{
    Py_CLEAR(self->session);
    Py_CLEAR(self->model);
    Py_CLEAR(self->provider);
    Py_CLEAR(self->label);
    Py_CLEAR(self->request_id);
    Py_CLEAR(self->speech_id);
    Py_CLEAR(self->error);
    Py_CLEAR(self->cancelled);
    Py_CLEAR(self->ended_at);
    Py_CLEAR(self->first);
    Py_CLEAR(self->usage);
    Py_CLEAR(self->extra);
    Py_CLEAR(self->t0);
    Py_CLEAR(self->wall0);
    Py_CLEAR(self->done);
    return 0;
}

static void
gen_dealloc(Generation *self)
{
    PyObject_GC_UnTrack(self);
    gen_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A new generation of type tp with the defaults of LLMGeneration's class attributes. */
static PyObject *
gen_alloc(PyTypeObject *tp)
{
    Generation *self = (Generation *)tp->tp_alloc(tp, 0);
    if (self == NULL)
        return NULL;
    self->session = Py_NewRef(Py_None);
    self->model = Py_NewRef(Py_None);
    self->provider = Py_NewRef(Py_None);
    self->label = Py_NewRef(empty_str);
    self->request_id = Py_NewRef(empty_str);
    self->speech_id = Py_NewRef(Py_None);
    self->error = Py_NewRef(Py_None);
    self->cancelled = Py_NewRef(Py_False);
    self->ended_at = Py_NewRef(Py_None);
    self->first = Py_NewRef(Py_None);
    self->usage = Py_NewRef(Py_None);
    self->extra = Py_NewRef(Py_None);
    self->t0 = Py_NewRef(float_zero);
    self->wall0 = Py_NewRef(float_zero);
    self->done = Py_NewRef(Py_False);
    return (PyObject *)self;
}

static PyObject *
gen_new(PyTypeObject *tp, PyObject *args, PyObject *kwargs)
{
    return gen_alloc(tp);
}

static int
ready(void)
{
    if (gen_type != NULL)
        return 1;
    PyErr_SetString(PyExc_RuntimeError, "callmeter._speedups is not configured");
    return 0;
}

static PyObject *
gen_enter(Generation *self, PyObject *unused)
{
    if (!ready())
        return NULL;
    if (Py_TYPE(self) != gen_type) /* a subclass may override what is read: Python's way */
        return call_reference(py_enter, (PyObject *)self, NULL, 0, NULL);
    if (self->speech_id == NULL) {
        PyErr_SetString(PyExc_AttributeError, "speech_id");
        return NULL;
    }
    if (self->speech_id == Py_None) {
        PyObject *sid;
        if (PyContextVar_Get(speech_id_var, Py_None, &sid) < 0)
            return NULL;
        Py_XSETREF(self->speech_id, sid);
    }
    double wall, perf;
    PyObject *w = call_clock(s_wall, &wall);
    if (w == NULL)
        return NULL;
    Py_XSETREF(self->wall0, w);
    PyObject *t = call_clock(s_perf, &perf);
    if (t == NULL)
        return NULL;
    Py_XSETREF(self->t0, t);
    return Py_NewRef(self);
}

static PyObject *
gen_first_token(Generation *self, PyObject *unused)
{
    if (!ready())
        return NULL;
    if (Py_TYPE(self) != gen_type)
        return call_reference(py_first_token, (PyObject *)self, NULL, 0, NULL);
    if (self->first == Py_None || self->first == NULL) {
        double perf;
        PyObject *t = call_clock(s_perf, &perf);
        if (t == NULL)
            return NULL;
        Py_XSETREF(self->first, t);
    }
    Py_RETURN_NONE;
}

/* The sign of an int (-1, 0, 1). */
static inline int
long_sign(PyObject *x)
{
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(x, &overflow);
    return overflow ? overflow : (v > 0) - (v < 0);
}

static inline int
is_count(PyObject *x) /* type(x) is int and x >= 0 */
{
    return PyLong_CheckExact(x) && long_sign(x) >= 0;
}

static inline int
is_zero(PyObject *x) /* x is an int */
{
    return long_sign(x) == 0;
}

static PyObject *
gen_set_usage(Generation *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (!ready())
        return NULL;
    PyObject *v[N_USAGE] = {zero, zero, zero, zero, zero, zero, zero, Py_None};
    int fast = nargs <= 3 && Py_TYPE(self) == gen_type;
    for (Py_ssize_t i = 0; fast && i < nargs; i++)
        v[i] = args[i];
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t i = 0; fast && i < nkw; i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i);
        int found = 0;
        for (int k = 0; k < N_USAGE; k++) {
            if (key == usage_keys[k]) {
                if (k < nargs) /* given twice: the reference raises the TypeError */
                    fast = 0;
                v[k] = args[nargs + i];
                found = 1;
                break;
            }
        }
        fast = fast && found;
    }
    for (int k = 0; fast && k < N_USAGE - 1; k++)
        fast = is_count(v[k]);
    fast = fast && (v[7] == Py_None || is_count(v[7]));
    if (!fast) /* not plain non-negative ints: the reference logs it and forgets the usage */
        return call_reference(py_set_usage, (PyObject *)self, args, nargs, kwnames);
    PyObject *total = v[7] == Py_None ? PyNumber_Add(v[0], v[1]) : Py_NewRef(v[7]);
    if (total == NULL)
        return NULL;
    PyObject *usage = PyTuple_Pack(4, v[0], v[1], v[2], total);
    Py_DECREF(total);
    if (usage == NULL)
        return NULL;
    PyObject *extra = Py_None;
    if (!(is_zero(v[3]) && is_zero(v[4]) && is_zero(v[5]) && is_zero(v[6]))) {
        if ((extra = PyTuple_Pack(4, v[3], v[4], v[5], v[6])) == NULL) {
            Py_DECREF(usage);
            return NULL;
        }
    }
    else {
        Py_INCREF(extra);
    }
    Py_XSETREF(self->usage, usage);
    Py_XSETREF(self->extra, extra);
    Py_RETURN_NONE;
}

static inline int
str_or_none(PyObject *x)
{
    return x == Py_None || PyUnicode_CheckExact(x);
}

/* timers._metadata(model, provider), remembering the last answer: the same model and
   provider objects (a model name from the agent's configuration) give the same Metadata. */
static PyObject *last_model, *last_provider, *last_metadata;

static PyObject *
metadata(PyObject *model, PyObject *provider)
{
    PyObject *fn = timers_global(s_metadata);
    if (fn == NULL)
        return NULL;
    /* Only for exact str (their hash runs no code) and the original cache function. */
    int cacheable = fn == metadata_of && str_or_none(model) && str_or_none(provider);
    if (cacheable && last_metadata != NULL && model == last_model && provider == last_provider) {
        Py_DECREF(fn);
        return Py_NewRef(last_metadata);
    }
    PyObject *md = PyObject_CallFunctionObjArgs(fn, model, provider, NULL);
    Py_DECREF(fn);
    if (md != NULL && cacheable) { /* all three replaced before any old one is released (and its
                          finalizer runs Python code) */
        PyObject *old[3] = {last_model, last_provider, last_metadata};
        last_model = Py_NewRef(model);
        last_provider = Py_NewRef(provider);
        last_metadata = Py_NewRef(md);
        for (int i = 0; i < 3; i++)
            Py_XDECREF(old[i]);
    }
    return md;
}


/* The LLMMetrics of a request that completed (no exception, no error or cancel flag),
   set field by field as msgspec does from keyword arguments; *checked says whether it is
   valid by construction (LLMGeneration._build_checked). NULL (with an exception) when
   the reference must do it. Python code runs in here (the metadata cache, the clock):
   everything read from the generation is owned first, as the reference's locals are. */
enum { S_USAGE, S_EXTRA, S_FIRST, S_LABEL, S_REQUEST_ID, S_SPEECH_ID, S_MODEL, S_PROVIDER,
       N_SNAP };

static PyObject *
build(Generation *self, double end, int *checked)
{
    PyObject *snap[N_SNAP] = {self->usage, self->extra, self->first, self->label,
                              self->request_id, self->speech_id, self->model, self->provider};
    for (int i = 0; i < N_SNAP; i++) {
        if (snap[i] == NULL) { /* deleted: the reference says what is wrong */
            PyErr_SetString(PyExc_AttributeError, "a generation attribute was deleted");
            return NULL;
        }
    }
    for (int i = 0; i < N_SNAP; i++)
        Py_INCREF(snap[i]);
    PyObject *m = NULL, *md = NULL, *timestamp = NULL;
    PyObject *values[N_LLM] = {NULL};
    PyObject *usage = snap[S_USAGE], *extra = snap[S_EXTRA], *first_obj = snap[S_FIRST];
    PyObject *p = zero, *c = zero, *k = zero, *total = zero, *reported = Py_True;
    PyObject *e = zero, *r = zero, *ai = zero, *ao = zero;
    if (usage == Py_None) {
        reported = Py_False;
    }
    else if (PyTuple_CheckExact(usage) && PyTuple_GET_SIZE(usage) == 4) {
        p = PyTuple_GET_ITEM(usage, 0);
        c = PyTuple_GET_ITEM(usage, 1);
        k = PyTuple_GET_ITEM(usage, 2);
        total = PyTuple_GET_ITEM(usage, 3);
        if (extra != Py_None) {
            if (!PyTuple_CheckExact(extra) || PyTuple_GET_SIZE(extra) != 4)
                goto unusual;
            e = PyTuple_GET_ITEM(extra, 0);
            r = PyTuple_GET_ITEM(extra, 1);
            ai = PyTuple_GET_ITEM(extra, 2);
            ao = PyTuple_GET_ITEM(extra, 3);
        }
    }
    else {
        goto unusual;
    }
    if (self->t0 == NULL || !PyFloat_CheckExact(self->t0) || self->wall0 == NULL ||
        !PyFloat_CheckExact(self->wall0))
        goto unusual;
    double t0 = PyFloat_AS_DOUBLE(self->t0), wall0 = PyFloat_AS_DOUBLE(self->wall0);
    double duration = end - t0, ttft, tps;
    if (first_obj == Py_None) {
        ttft = -1.0;
        tps = 0.0;
    }
    else if (PyFloat_CheckExact(first_obj)) {
        double first = PyFloat_AS_DOUBLE(first_obj);
        ttft = first - t0;
        double gen_time = end - first;
        if (gen_time > 0) {
            if (!PyLong_CheckExact(c))
                goto unusual;
            double out = PyLong_AsDouble(c); /* as int / float converts it */
            if (out == -1.0 && PyErr_Occurred())
                goto error;
            tps = out / gen_time;
        }
        else {
            tps = 0.0;
        }
    }
    else {
        goto unusual;
    }
    md = metadata(snap[S_MODEL], snap[S_PROVIDER]);
    if (md == NULL)
        goto error;
    double wall;
    if ((timestamp = call_clock(s_wall, &wall)) == NULL)
        goto error;
    if ((values[F_STARTED_AT] = PyFloat_FromDouble(wall0)) == NULL ||
        (values[F_DURATION] = PyFloat_FromDouble(duration)) == NULL ||
        (values[F_TTFT] = PyFloat_FromDouble(ttft)) == NULL ||
        (values[F_TPS] = PyFloat_FromDouble(tps)) == NULL)
        goto error;
    values[F_TIMESTAMP] = Py_NewRef(timestamp);
    values[F_METADATA] = Py_NewRef(md);
    values[F_LABEL] = Py_NewRef(snap[S_LABEL]);
    values[F_REQUEST_ID] = Py_NewRef(snap[S_REQUEST_ID]);
    values[F_CANCELLED] = Py_NewRef(Py_False);
    values[F_COMPLETION] = Py_NewRef(c);
    values[F_PROMPT] = Py_NewRef(p);
    values[F_CACHED] = Py_NewRef(k);
    values[F_CACHE_CREATION] = Py_NewRef(e);
    values[F_REASONING] = Py_NewRef(r);
    values[F_AUDIO_IN] = Py_NewRef(ai);
    values[F_AUDIO_OUT] = Py_NewRef(ao);
    values[F_TOTAL] = Py_NewRef(total);
    values[F_REPORTED] = Py_NewRef(reported);
    values[F_ERROR] = Py_NewRef(Py_None);
    values[F_SPEECH_ID] = Py_NewRef(snap[S_SPEECH_ID]);
    *checked = PyUnicode_CheckExact(snap[S_LABEL]) && PyUnicode_CheckExact(snap[S_REQUEST_ID]) &&
               str_or_none(snap[S_SPEECH_ID]) && str_or_none(snap[S_MODEL]) &&
               str_or_none(snap[S_PROVIDER]) && 0.0 <= duration && duration <= 1e9 &&
               (ttft == -1.0 || (0.0 <= ttft && ttft <= 1e9)) && tps <= 1e9 && 0.0 <= wall &&
               wall <= 1e11 && 0.0 <= wall0 && wall0 <= 1e11;
    if ((m = llm_type->tp_alloc(llm_type, llm_type->tp_itemsize)) == NULL)
        goto error;
    for (int i = 0; i < N_LLM; i++) {
        FIELD(m, llm_off[i]) = values[i]; /* the struct takes the reference */
        values[i] = NULL;
    }
    goto done;

unusual:
    PyErr_SetString(PyExc_ValueError, "unusual state: the reference builds it");
error:
    Py_CLEAR(m);
done:
    for (int i = 0; i < N_LLM; i++)
        Py_XDECREF(values[i]);
    Py_XDECREF(md);
    Py_XDECREF(timestamp);
    for (int i = 0; i < N_SNAP; i++)
        Py_DECREF(snap[i]);
    return m;
}

static PyObject *
gen_exit(Generation *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (!ready())
        return NULL;
    if (self->done == Py_True)
        Py_RETURN_NONE;
    /* The fast path: exactly LLMGeneration, not shadowed, completed, plain names (their
       hash runs no code, so a fallback below never runs Python code twice). */
    PyObject **dictptr = _PyObject_GetDictPtr((PyObject *)self);
    PyObject *own = NULL;
    if (dictptr != NULL && *dictptr != NULL &&
        (own = PyDict_GetItemWithError(*dictptr, s_build_checked)) == NULL && PyErr_Occurred())
        return NULL;
    if (Py_TYPE(self) != gen_type || own != NULL || self->done != Py_False || nargs < 1 ||
        nargs > 3 || kwnames != NULL || args[0] != Py_None || self->error != Py_None ||
        self->cancelled != Py_False || self->ended_at != Py_None || self->session == NULL ||
        self->model == NULL || !str_or_none(self->model) || self->provider == NULL ||
        !str_or_none(self->provider))
        return call_reference(py_exit, (PyObject *)self, args, nargs, kwnames);
    /* Done before anything that can run Python code (the clock, the metadata cache), as
       in Python: a second exit, from that code or another thread, records nothing. */
    Py_XSETREF(self->done, Py_NewRef(Py_True));
    double end;
    PyObject *t = call_clock(s_perf, &end);
    int checked = 0;
    PyObject *m = t == NULL ? NULL : build(self, end, &checked);
    Py_XDECREF(t);
    if (m == NULL) { /* the reference redoes it, and logs and counts what fails */
        if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt) ||
            PyErr_ExceptionMatches(PyExc_SystemExit))
            return NULL;
        PyErr_Clear();
        Py_XSETREF(self->done, Py_NewRef(Py_False));
        return call_reference(py_exit, (PyObject *)self, args, nargs, kwnames);
    }
    if (self->session == NULL) { /* deleted while the metric was built */
        Py_DECREF(m);
        PyErr_SetString(PyExc_AttributeError, "_session");
        return NULL;
    }
    PyObject *session = Py_NewRef(self->session);
    PyObject *res = PyObject_CallMethodOneArg(session, checked ? s_record_checked : s_emit_metrics,
                                              m);
    Py_DECREF(session);
    Py_DECREF(m);
    if (res == NULL)
        return NULL;
    Py_DECREF(res);
    Py_RETURN_NONE;
}

static PyMethodDef gen_methods[] = {
    {"__enter__", (PyCFunction)gen_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))gen_exit, METH_FASTCALL | METH_KEYWORDS, NULL},
    {"first_token", (PyCFunction)gen_first_token, METH_NOARGS,
     "first_token($self, /)\n--\n\n"
     "Mark the first token (or tool-call delta); later calls are ignored."},
    {"set_usage", (PyCFunction)(void (*)(void))gen_set_usage, METH_FASTCALL | METH_KEYWORDS,
     "set_usage($self, /, prompt_tokens=0, completion_tokens=0, prompt_cached_tokens=0, *, "
     "cache_creation_tokens=0, reasoning_tokens=0, input_audio_tokens=0, "
     "output_audio_tokens=0, total_tokens=None)\n--\n\n"
     "Record the token usage the provider reported.\n\n"
     "Counts must be non-negative ints. Invalid values are logged and the request is\n"
     "recorded as ``usage_reported=False`` (measuring never raises into the agent)."},
    {NULL, NULL, 0, NULL},
};

#define MEMBER(name, field) {name, T_OBJECT_EX, offsetof(Generation, field), 0, NULL}
static PyMemberDef gen_members[] = {
    /* Set by __init__ in Python: deleted, they raise AttributeError as there. */
    MEMBER("_session", session),
    MEMBER("model", model),
    MEMBER("provider", provider),
    MEMBER("label", label),
    MEMBER("request_id", request_id),
    MEMBER("speech_id", speech_id),
    {NULL, 0, 0, 0, NULL},
};
#undef MEMBER

/* The attributes with a class default in Python: deleted, they read the default again. */
enum { D_ERROR, D_CANCELLED, D_ENDED_AT, D_FIRST, D_USAGE, D_EXTRA, D_T0, D_WALL0, D_DONE,
       N_DEFAULTED };
static PyObject *defaults[N_DEFAULTED];

static PyObject **
defaulted(Generation *self, void *closure)
{
    switch ((int)(intptr_t)closure) {
    case D_ERROR: return &self->error;
    case D_CANCELLED: return &self->cancelled;
    case D_ENDED_AT: return &self->ended_at;
    case D_FIRST: return &self->first;
    case D_USAGE: return &self->usage;
    case D_EXTRA: return &self->extra;
    case D_T0: return &self->t0;
    case D_WALL0: return &self->wall0;
    default: return &self->done;
    }
}

static PyObject *
get_defaulted(Generation *self, void *closure)
{
    PyObject *v = *defaulted(self, closure);
    return Py_NewRef(v != NULL ? v : defaults[(int)(intptr_t)closure]);
}

static int
set_defaulted(Generation *self, PyObject *value, void *closure)
{
    if (value == NULL)
        value = defaults[(int)(intptr_t)closure];
    Py_XSETREF(*defaulted(self, closure), Py_NewRef(value));
    return 0;
}

#define DEFAULTED(name, i) {name, (getter)get_defaulted, (setter)set_defaulted, NULL, (void *)(i)}
static PyGetSetDef gen_getset[] = {
    DEFAULTED("error", D_ERROR),
    DEFAULTED("cancelled", D_CANCELLED),
    DEFAULTED("ended_at", D_ENDED_AT),
    DEFAULTED("_first", D_FIRST),
    DEFAULTED("_usage", D_USAGE),
    DEFAULTED("_extra", D_EXTRA),
    DEFAULTED("_t0", D_T0),
    DEFAULTED("_wall0", D_WALL0),
    DEFAULTED("_done", D_DONE),
    {NULL, NULL, NULL, NULL, NULL},
};
#undef DEFAULTED

static PyTypeObject GenerationCore_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "callmeter._speedups.GenerationCore",
    .tp_doc = "LLMGeneration's common case in C (see callmeter.session.timers).",
    .tp_basicsize = sizeof(Generation),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = gen_new,
    .tp_dealloc = (destructor)gen_dealloc,
    .tp_traverse = (traverseproc)gen_traverse,
    .tp_clear = (inquiry)gen_clear,
    .tp_methods = gen_methods,
    .tp_members = gen_members,
    .tp_getset = gen_getset,
};

/* SessionCore.llm_generation(model=None, provider=None, label="", *, request_id="",
   speech_id=None): the generation, built without a Python frame. */
PyObject *
new_llm_generation(PyObject *session, PyObject *const *args, Py_ssize_t nargs,
                   PyObject *kwnames)
{
    if (!ready())
        return NULL;
    PyObject *v[N_GEN_ARGS] = {Py_None, Py_None, empty_str, empty_str, Py_None};
    int fast = nargs <= 3;
    for (Py_ssize_t i = 0; fast && i < nargs; i++)
        v[i] = args[i];
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t i = 0; fast && i < nkw; i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i);
        int found = 0;
        for (int k = 0; k < N_GEN_ARGS; k++) {
            if (key == gen_keys[k]) {
                fast = k >= nargs;
                v[k] = args[nargs + i];
                found = 1;
                break;
            }
        }
        fast = fast && found;
    }
    /* Bad model or provider types raise InvalidArgumentError in the reference. */
    if (!fast || !str_or_none(v[0]) || !str_or_none(v[1]))
        return call_reference(py_llm_generation, session, args, nargs, kwnames);
    Generation *gen = (Generation *)gen_alloc(gen_type);
    if (gen == NULL)
        return NULL;
    Py_XSETREF(gen->session, Py_NewRef(session));
    Py_XSETREF(gen->model, Py_NewRef(v[0]));
    Py_XSETREF(gen->provider, Py_NewRef(v[1]));
    Py_XSETREF(gen->label, Py_NewRef(v[2]));
    Py_XSETREF(gen->request_id, Py_NewRef(v[3]));
    Py_XSETREF(gen->speech_id, Py_NewRef(v[4]));
    return (PyObject *)gen;
}

static PyObject *
configure_generation(PyObject *module, PyObject *args)
{
    PyObject *tp, *enter, *first_token, *exit_, *build_checked, *set_usage, *llm_gen, *md, *var;
    PyObject *globals;
    if (!PyArg_ParseTuple(args, "O!OOOOOOOOO!", &PyType_Type, &tp, &enter, &first_token, &exit_,
                          &build_checked, &set_usage, &llm_gen, &md, &var, &PyDict_Type,
                          &globals))
        return NULL;
    if (llm_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure() the LLMMetrics type first");
        return NULL;
    }
    if (!PyType_IsSubtype((PyTypeObject *)tp, &GenerationCore_Type)) {
        PyErr_SetString(PyExc_TypeError, "the generation type must subclass GenerationCore");
        return NULL;
    }
    if (!PyContextVar_CheckExact(var)) {
        PyErr_SetString(PyExc_TypeError, "the speech_id variable must be a ContextVar");
        return NULL;
    }
    for (int i = 0; i < N_USAGE; i++)
        if (usage_keys[i] == NULL &&
            (usage_keys[i] = PyUnicode_InternFromString(usage_names[i])) == NULL)
            return NULL;
    for (int i = 0; i < N_GEN_ARGS; i++)
        if (gen_keys[i] == NULL && (gen_keys[i] = PyUnicode_InternFromString(gen_names[i])) == NULL)
            return NULL;
    if ((s_record_checked == NULL &&
         (s_record_checked = PyUnicode_InternFromString("_record_checked")) == NULL) ||
        (s_emit_metrics == NULL &&
         (s_emit_metrics = PyUnicode_InternFromString("emit_metrics")) == NULL) ||
        (s_build_checked == NULL &&
         (s_build_checked = PyUnicode_InternFromString("_build_checked")) == NULL))
        return NULL;
    Py_XSETREF(gen_type, (PyTypeObject *)Py_NewRef(tp));
    Py_XSETREF(py_exit, Py_NewRef(exit_));
    Py_XSETREF(py_build_checked, Py_NewRef(build_checked));
    Py_XSETREF(py_set_usage, Py_NewRef(set_usage));
    Py_XSETREF(py_llm_generation, Py_NewRef(llm_gen));
    Py_XSETREF(metadata_of, Py_NewRef(md));
    Py_XSETREF(speech_id_var, Py_NewRef(var));
    Py_XSETREF(timers_globals, Py_NewRef(globals));
    Py_XSETREF(py_enter, Py_NewRef(enter));
    Py_XSETREF(py_first_token, Py_NewRef(first_token));
    Py_RETURN_NONE;
}

static PyMethodDef generation_functions[] = {
    {"configure_generation", configure_generation, METH_VARARGS,
     "configure_generation(LLMGeneration, enter, first_token, exit, build_checked, set_usage, "
     "llm_generation, metadata, speech_id_var, timers_globals): the references and what the C "
     "path uses."},
    {NULL, NULL, 0, NULL},
};

int
generation_init(PyObject *module)
{
    if ((zero = PyLong_FromLong(0)) == NULL || (float_zero = PyFloat_FromDouble(0.0)) == NULL ||
        (empty_str = PyUnicode_InternFromString("")) == NULL ||
        (s_wall = PyUnicode_InternFromString("_wall")) == NULL ||
        (s_perf = PyUnicode_InternFromString("_perf")) == NULL ||
        (s_metadata = PyUnicode_InternFromString("_metadata")) == NULL)
        return -1;
    PyObject *values[N_DEFAULTED] = {Py_None, Py_False, Py_None, Py_None, Py_None, Py_None,
                                     float_zero, float_zero, Py_False};
    for (int i = 0; i < N_DEFAULTED; i++)
        defaults[i] = Py_NewRef(values[i]);
    if (PyType_Ready(&GenerationCore_Type) < 0)
        return -1;
    if (PyModule_AddObjectRef(module, "GenerationCore", (PyObject *)&GenerationCore_Type) < 0)
        return -1;
    return PyModule_AddFunctions(module, generation_functions);
}
