/*
 * callmeter._speedups: the per-event hot path in C (optional).
 *
 * Each function is the exact counterpart of a pure-Python one that stays the
 * reference (and runs wherever this module is not built); _speedups_record.c adds the
 * per-event recording path of sessions and collectors. Here:
 *
 *   llm_check(m)         callmeter.model.validate._llm: None when the LLMMetrics is
 *                        valid; anything this code is unsure of goes to the Python
 *                        check, so the C code may only ever accept less, never more.
 *   add_llm_events(...)  the loop of UsageCollector._add_llm_events: adds a batch of
 *                        validated events to the ledger and the interval union.
 *
 * Fields are read from msgspec's struct slots (member descriptors) by offset; the
 * offsets are looked up once by configure() and checked against the field names.
 */
#include "_speedups.h"

PyTypeObject *llm_type = NULL;
static PyTypeObject *md_type = NULL;
static PyObject *py_check = NULL; /* the Python check, for everything not plainly valid */
static PyObject *str_llm = NULL;  /* "llm" */
static PyObject *str_vectors, *str_totals, *str_cost, *str_version; /* attribute names */
static PyObject *str_model_provider, *str_model_name;
Py_ssize_t llm_off[N_LLM];
static Py_ssize_t md_name_off, md_provider_off;

int
slot_offset(PyTypeObject *tp, const char *name, Py_ssize_t *out)
{
    PyObject *descr = PyDict_GetItemString(tp->tp_dict, name); /* borrowed */
    if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a struct slot", tp->tp_name, name);
        return -1;
    }
    PyMemberDef *def = ((PyMemberDescrObject *)descr)->d_member;
    if (def->type != T_OBJECT_EX && def->type != T_OBJECT) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot", tp->tp_name, name);
        return -1;
    }
    *out = def->offset;
    return 0;
}

static PyObject *
configure(PyObject *self, PyObject *args)
{
    PyObject *llm, *md, *check;
    if (!PyArg_ParseTuple(args, "O!O!O", &PyType_Type, &llm, &PyType_Type, &md, &check))
        return NULL;
    for (int i = 0; i < N_LLM; i++)
        if (slot_offset((PyTypeObject *)llm, llm_fields[i], &llm_off[i]) < 0)
            return NULL;
    if (slot_offset((PyTypeObject *)md, "model_name", &md_name_off) < 0 ||
        slot_offset((PyTypeObject *)md, "model_provider", &md_provider_off) < 0)
        return NULL;
    if ((str_llm == NULL && (str_llm = PyUnicode_InternFromString("llm")) == NULL) ||
        (str_vectors == NULL && (str_vectors = PyUnicode_InternFromString("vectors")) == NULL) ||
        (str_totals == NULL && (str_totals = PyUnicode_InternFromString("totals")) == NULL) ||
        (str_cost == NULL && (str_cost = PyUnicode_InternFromString("cost")) == NULL) ||
        (str_version == NULL && (str_version = PyUnicode_InternFromString("version")) == NULL) ||
        (str_model_provider == NULL &&
         (str_model_provider = PyUnicode_InternFromString("model_provider")) == NULL) ||
        (str_model_name == NULL &&
         (str_model_name = PyUnicode_InternFromString("model_name")) == NULL))
        return NULL;
    Py_INCREF(llm);
    Py_INCREF(md);
    Py_INCREF(check);
    Py_XSETREF(llm_type, (PyTypeObject *)llm);
    Py_XSETREF(md_type, (PyTypeObject *)md);
    Py_XSETREF(py_check, check);
    Py_RETURN_NONE;
}

PyObject *
call_reference(PyObject *fn, PyObject *self, PyObject *const *args, size_t nargsf,
               PyObject *kwnames)
{
    if (fn == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "callmeter._speedups is not configured");
        return NULL;
    }
    PyObject *bound = PyMethod_New(fn, self);
    PyObject *res = bound == NULL ? NULL : PyObject_Vectorcall(bound, args, nargsf, kwnames);
    Py_XDECREF(bound);
    return res;
}

/* -- the check ------------------------------------------------------------------------ */

/* A float or int (exact classes) with lo <= x <= hi, or x == -1 when minus_one. */
static inline int
real_in(PyObject *x, double lo, double hi, int minus_one)
{
    double v;
    if (PyFloat_CheckExact(x)) {
        v = PyFloat_AS_DOUBLE(x);
    }
    else if (PyLong_CheckExact(x)) {
        int overflow;
        long long i = PyLong_AsLongLongAndOverflow(x, &overflow);
        if (overflow)
            return 0; /* beyond 2**63: outside every range here */
        if (i == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        v = (double)i; /* exact below 2**53; above it, still outside every range */
    }
    else {
        return 0;
    }
    return (lo <= v && v <= hi) || (minus_one && v == -1.0);
}

static inline int
count_ok(PyObject *x)
{
    if (!PyLong_CheckExact(x))
        return 0;
    int overflow;
    long long i = PyLong_AsLongLongAndOverflow(x, &overflow);
    if (overflow)
        return overflow > 0;
    if (i == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return i >= 0;
}

#define STR_OR_NONE(x) ((x) == Py_None || PyUnicode_CheckExact(x))
#define STR_OR_NONE_SUB(x) ((x) == Py_None || PyUnicode_Check(x))

int
llm_valid(PyObject *m)
{
    if (llm_type == NULL || !Py_IS_TYPE(m, llm_type))
        return 0;
    PyObject *f[N_LLM];
    for (int i = 0; i < N_LLM; i++) {
        f[i] = FIELD(m, llm_off[i]);
        if (f[i] == NULL)
            return 0; /* an unset slot: the Python check says what is wrong */
    }
    if (!(real_in(f[F_TIMESTAMP], 0.0, 1e11, 0) && real_in(f[F_STARTED_AT], 0.0, 1e11, 0) &&
          real_in(f[F_DURATION], 0.0, 1e9, 0) && real_in(f[F_TPS], 0.0, 1e9, 0) &&
          real_in(f[F_TTFT], 0.0, 1e9, 1)))
        return 0;
    for (int i = F_COMPLETION; i <= F_TOTAL; i++)
        if (!count_ok(f[i]))
            return 0;
    if (!(Py_IS_TYPE(f[F_CANCELLED], &PyBool_Type) && Py_IS_TYPE(f[F_REPORTED], &PyBool_Type) &&
          PyUnicode_CheckExact(f[F_LABEL]) && PyUnicode_CheckExact(f[F_REQUEST_ID]) &&
          STR_OR_NONE(f[F_ERROR]) && STR_OR_NONE(f[F_SPEECH_ID])))
        return 0;
    PyObject *md = f[F_METADATA];
    if (md == Py_None)
        return 1;
    if (!Py_IS_TYPE(md, md_type))
        return 0;
    PyObject *name = FIELD(md, md_name_off), *provider = FIELD(md, md_provider_off);
    return name != NULL && provider != NULL && STR_OR_NONE_SUB(name) &&
           STR_OR_NONE_SUB(provider);
}

static PyObject *
llm_check(PyObject *self, PyObject *m)
{
    if (llm_valid(m))
        Py_RETURN_NONE;
    if (py_check == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "callmeter._speedups is not configured");
        return NULL;
    }
    return PyObject_CallOneArg(py_check, m);
}

/* -- the batch loop ------------------------------------------------------------------- */

/* A sum of non-negative ints: in a C integer while it fits, in a Python int beyond. */
typedef struct {
    long long small;
    PyObject *big; /* NULL while everything fits in small */
} Sum;

static int
sum_add(Sum *s, PyObject *x)
{
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(x, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (!overflow && !__builtin_add_overflow(s->small, v, &v)) {
        s->small = v;
        return 0;
    }
    PyObject *total = s->big == NULL ? (Py_INCREF(x), x) : PyNumber_Add(s->big, x);
    if (total == NULL)
        return -1;
    Py_XSETREF(s->big, total);
    return 0;
}

/* The sum as a new Python int (and reset to 0). */
static PyObject *
sum_take(Sum *s)
{
    PyObject *small = PyLong_FromLongLong(s->small);
    s->small = 0;
    if (small == NULL || s->big == NULL) {
        Py_CLEAR(s->big);
        return small;
    }
    PyObject *total = PyNumber_Add(s->big, small);
    Py_DECREF(small);
    Py_CLEAR(s->big);
    return total;
}

enum { S_PROMPT, S_CACHED, S_CREATED, S_COMPLETION, S_AUDIO_IN, S_AUDIO_OUT, N_SUMS };

typedef struct {
    PyObject *part; /* NULL: no run yet */
    PyObject *key;
    PyObject *sid;
    PyObject *md;
    long long requests, unreported, errors;
    Sum sums[N_SUMS];
    double duration;
} Run;

static void
run_clear(Run *r)
{
    Py_CLEAR(r->part);
    Py_CLEAR(r->key);
    Py_CLEAR(r->sid);
    Py_CLEAR(r->md);
    for (int i = 0; i < N_SUMS; i++)
        Py_CLEAR(r->sums[i].big);
}

/* The vector layout of callmeter.pricing.ledger (checked by the caller). */
enum { V_REQUESTS = 0, V_PROMPT = 1, V_CACHED = 2, V_CREATED = 3, V_COMPLETION = 4,
       V_AUDIO_IN = 5, V_AUDIO_OUT = 6, V_UNREPORTED = 10, V_DURATION = 13, V_ERRORS = 14,
       V_LEN = 15 };

static int
vector_add(PyObject *v, int index, PyObject *x)
{
    PyObject *total = PyNumber_Add(PyList_GET_ITEM(v, index), x);
    if (total == NULL)
        return -1;
    return PyList_SetItem(v, index, total); /* steals total */
}

/* Ledger.add_llm for the current run: its sums go into the part's vector and the call's
   totals for the run's model, then they are zeroed (like the Python loop, the run's sid
   and md stay until the next event replaces them). */
static int
run_flush(Run *r, PyObject *ledger, PyObject *new_vector)
{
    if (r->part == NULL)
        return 0;
    PyObject *a[N_SUMS + 4] = {NULL}; /* requests, the sums, unreported, duration, errors */
    PyObject *dicts[2] = {NULL, NULL};
    PyObject *vecs[2] = {NULL, NULL};
    int rc = -1;
    if ((a[0] = PyLong_FromLongLong(r->requests)) == NULL)
        goto done;
    for (int i = 0; i < N_SUMS; i++)
        if ((a[1 + i] = sum_take(&r->sums[i])) == NULL)
            goto done;
    if ((a[N_SUMS + 1] = PyLong_FromLongLong(r->unreported)) == NULL ||
        (a[N_SUMS + 2] = PyFloat_FromDouble(r->duration)) == NULL ||
        (a[N_SUMS + 3] = PyLong_FromLongLong(r->errors)) == NULL)
        goto done;
    int extra = PyObject_IsTrue(a[1 + S_CREATED]) || PyObject_IsTrue(a[1 + S_AUDIO_IN]) ||
            PyObject_IsTrue(a[1 + S_AUDIO_OUT]);
    if ((dicts[0] = PyObject_GetAttr(r->part, str_vectors)) == NULL ||
        (dicts[1] = PyObject_GetAttr(ledger, str_totals)) == NULL)
        goto done;
    for (int k = 0; k < 2; k++) {
        if (!PyDict_Check(dicts[k])) {
            PyErr_SetString(PyExc_TypeError, "ledger vectors must be a dict");
            goto done;
        }
        PyObject *v = PyDict_GetItemWithError(dicts[k], r->key); /* borrowed */
        if (v == NULL) {
            if (PyErr_Occurred())
                goto done;
            PyObject *fresh = PyObject_CallNoArgs(new_vector);
            if (fresh == NULL)
                goto done;
            int set = PyDict_SetItem(dicts[k], r->key, fresh);
            Py_DECREF(fresh);
            if (set < 0)
                goto done;
            v = fresh; /* the dict holds it */
        }
        if (!PyList_CheckExact(v) || PyList_GET_SIZE(v) != V_LEN) {
            PyErr_SetString(PyExc_TypeError, "a ledger vector must be a list of 15 items");
            goto done;
        }
        Py_INCREF(v);
        vecs[k] = v;
    }
    /* Like Ledger.add_llm: both vectors exist before either is added to. */
    for (int k = 0; k < 2; k++) {
        PyObject *v = vecs[k];
        if (vector_add(v, V_REQUESTS, a[0]) < 0 ||
            vector_add(v, V_PROMPT, a[1 + S_PROMPT]) < 0 ||
            vector_add(v, V_CACHED, a[1 + S_CACHED]) < 0 ||
            vector_add(v, V_COMPLETION, a[1 + S_COMPLETION]) < 0)
            goto done;
        if (extra && (vector_add(v, V_CREATED, a[1 + S_CREATED]) < 0 ||
                      vector_add(v, V_AUDIO_IN, a[1 + S_AUDIO_IN]) < 0 ||
                      vector_add(v, V_AUDIO_OUT, a[1 + S_AUDIO_OUT]) < 0))
            goto done;
        if (vector_add(v, V_UNREPORTED, a[N_SUMS + 1]) < 0 ||
            vector_add(v, V_DURATION, a[N_SUMS + 2]) < 0 ||
            vector_add(v, V_ERRORS, a[N_SUMS + 3]) < 0)
            goto done;
    }
    if (PyObject_SetAttr(r->part, str_cost, Py_None) < 0)
        goto done;
    PyObject *version = PyObject_GetAttr(ledger, str_version);
    if (version == NULL)
        goto done;
    PyObject *one = PyLong_FromLong(1);
    PyObject *next = one ? PyNumber_Add(version, one) : NULL;
    Py_DECREF(version);
    Py_XDECREF(one);
    if (next == NULL)
        goto done;
    int set = PyObject_SetAttr(ledger, str_version, next);
    Py_DECREF(next);
    if (set < 0)
        goto done;
    rc = 0;
done:
    for (int i = 0; i < N_SUMS + 4; i++)
        Py_XDECREF(a[i]);
    Py_XDECREF(dicts[0]);
    Py_XDECREF(dicts[1]);
    Py_XDECREF(vecs[0]);
    Py_XDECREF(vecs[1]);
    r->requests = r->unreported = r->errors = 0;
    r->duration = 0.0;
    for (int i = 0; i < N_SUMS; i++) {
        r->sums[i].small = 0;
        Py_CLEAR(r->sums[i].big);
    }
    Py_CLEAR(r->part); /* the Python loop sets part = None after an in-order flush */
    return rc;
}

static inline int
as_double(PyObject *x, double *out)
{
    if (PyFloat_CheckExact(x)) {
        *out = PyFloat_AS_DOUBLE(x);
        return 0;
    }
    if (PyLong_CheckExact(x)) /* converted as float + int converts it */
        *out = PyLong_AsDouble(x);
    else {
        PyErr_SetString(PyExc_TypeError, "a checked duration is a float or an int");
        return -1;
    }
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

/* a > b as Python compares them (-1 on error). */
static inline int
greater(PyObject *a, PyObject *b)
{
    if (PyFloat_CheckExact(a) && PyFloat_CheckExact(b))
        return PyFloat_AS_DOUBLE(a) > PyFloat_AS_DOUBLE(b);
    return PyObject_RichCompareBool(a, b, Py_GT);
}

static inline int
greater_equal(PyObject *a, PyObject *b)
{
    if (PyFloat_CheckExact(a) && PyFloat_CheckExact(b))
        return PyFloat_AS_DOUBLE(a) >= PyFloat_AS_DOUBLE(b);
    return PyObject_RichCompareBool(a, b, Py_GE);
}

/* p >= large or c + w > p or ai > p, as Python computes it (-1 on error). */
static int
is_large(PyObject *p, PyObject *c, PyObject *w, PyObject *ai, long long large)
{
    int o1, o2, o3, o4;
    long long vp = PyLong_AsLongLongAndOverflow(p, &o1);
    long long vc = PyLong_AsLongLongAndOverflow(c, &o2);
    long long vw = PyLong_AsLongLongAndOverflow(w, &o3);
    long long va = PyLong_AsLongLongAndOverflow(ai, &o4);
    long long cw;
    if (PyErr_Occurred())
        return -1;
    if (!(o1 | o2 | o3 | o4) && !__builtin_add_overflow(vc, vw, &cw))
        return vp >= large || cw > vp || va > vp;
    /* huge counts: let Python do it */
    PyObject *lg = PyLong_FromLongLong(large);
    if (lg == NULL)
        return -1;
    int r = PyObject_RichCompareBool(p, lg, Py_GE);
    Py_DECREF(lg);
    if (r != 0)
        return r;
    PyObject *sum = PyNumber_Add(c, w);
    if (sum == NULL)
        return -1;
    r = PyObject_RichCompareBool(sum, p, Py_GT);
    Py_DECREF(sum);
    if (r != 0)
        return r;
    return PyObject_RichCompareBool(ai, p, Py_GT);
}

/* The interval union's add for one event (see IntervalUnion.add_timed). */
static int
add_interval(PyObject *st, PyObject *d, PyObject *starts, PyObject *ends, PyObject *insert)
{
    PyObject *end;
    if (PyFloat_CheckExact(st) && PyFloat_CheckExact(d))
        end = PyFloat_FromDouble(PyFloat_AS_DOUBLE(st) + PyFloat_AS_DOUBLE(d));
    else
        end = PyNumber_Add(st, d);
    if (end == NULL)
        return -1;
    int rc = -1, r;
    /* A comparison may run Python code (a float subclass) that changes the lists: each
       item is owned while compared, and the size is read again after every comparison,
       as Python's ends[-1] would raise on an emptied list. */
    PyObject *last = NULL;
    Py_ssize_t n = PyList_GET_SIZE(ends);
    if (n) {
        last = Py_NewRef(PyList_GET_ITEM(ends, n - 1));
        r = greater(st, last);
        Py_CLEAR(last);
        if (r < 0)
            goto done;
        if (r) {
            if (PyList_Append(starts, st) < 0 || PyList_Append(ends, end) < 0)
                goto done;
            rc = 0;
            goto done;
        }
    }
    n = PyList_GET_SIZE(ends);
    if (n && PyList_GET_SIZE(starts) == n) {
        last = Py_NewRef(PyList_GET_ITEM(starts, n - 1));
        r = greater_equal(st, last);
        Py_CLEAR(last);
        if (r < 0)
            goto done;
        if (r) {
            n = PyList_GET_SIZE(ends);
            if (n == 0) {
                PyErr_SetString(PyExc_IndexError, "list index out of range");
                goto done;
            }
            last = Py_NewRef(PyList_GET_ITEM(ends, n - 1));
            r = greater(end, last);
            Py_CLEAR(last);
            if (r < 0)
                goto done;
            n = PyList_GET_SIZE(ends);
            if (r && n == 0) {
                PyErr_SetString(PyExc_IndexError, "list assignment index out of range");
                goto done;
            }
            if (r) {
                Py_INCREF(end);
                if (PyList_SetItem(ends, n - 1, end) < 0) /* steals end, releases the old */
                    goto done;
            }
            rc = 0;
            goto done;
        }
    }
    PyObject *res = PyObject_CallFunctionObjArgs(insert, st, end, NULL);
    if (res == NULL)
        goto done;
    Py_DECREF(res);
    rc = 0;
done:
    Py_DECREF(end);
    return rc;
}

/* The fields the batch loop reads, in this order. */
#define N_READ 12
static const int read_fields[N_READ] = {
    F_STARTED_AT, F_DURATION, F_COMPLETION, F_PROMPT, F_CACHED, F_CACHE_CREATION,
    F_AUDIO_IN, F_AUDIO_OUT, F_REPORTED, F_ERROR, F_SPEECH_ID, F_METADATA,
};

static PyObject *
add_llm_events(PyObject *self, PyObject *args)
{
    PyObject *buf, *queued, *ledger, *new_vector, *part_of, *keep_large, *queue, *amounts;
    PyObject *starts, *ends, *insert;
    long long large;
    if (!PyArg_ParseTuple(args, "O!OOOOOOOO!O!OL", &PyList_Type, &buf, &queued, &ledger,
                          &new_vector, &part_of, &keep_large, &queue, &amounts, &PyList_Type,
                          &starts, &PyList_Type, &ends, &insert, &large))
        return NULL;
    if (llm_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "callmeter._speedups is not configured");
        return NULL;
    }
    PyObject *llm = PyList_New(0), *others = PyList_New(0);
    Run run = {0};
    if (llm == NULL || others == NULL)
        goto error;
    /* Iterate over a copy: a Python callback could change the list. */
    PyObject *items = PySequence_Tuple(buf);
    if (items == NULL)
        goto error;
    Py_ssize_t n = PyTuple_GET_SIZE(items);
    PyObject *f[N_READ] = {NULL};
    for (Py_ssize_t i = 0; i < n; i++) {
        for (int k = 0; k < N_READ; k++)
            Py_CLEAR(f[k]); /* the previous event's fields */
        PyObject *m = PyTuple_GET_ITEM(items, i);
        if (!Py_IS_TYPE(m, llm_type)) {
            int q = PySet_Contains(queued, (PyObject *)Py_TYPE(m));
            if (q < 0)
                goto error_items;
            if (q) { /* in order: a turn dropped stays dropped */
                if (run_flush(&run, ledger, new_vector) < 0)
                    goto error_items;
                Py_CLEAR(run.sid);
                Py_CLEAR(run.md);
                PyObject *res = PyObject_CallOneArg(queue, m);
                if (res == NULL)
                    goto error_items;
                Py_DECREF(res);
            }
            if (PyList_Append(others, m) < 0)
                goto error_items;
            continue;
        }
        if (PyList_Append(llm, m) < 0)
            goto error_items;
        /* Own a reference to every field read (as astuple does): Python code runs below
           (Metadata.__eq__ of a str subclass, the ledger's callbacks) and could replace
           the event's fields, releasing the values. */
        for (int k = 0; k < N_READ; k++) {
            PyObject *x = FIELD(m, llm_off[read_fields[k]]);
            if (x == NULL) {
                for (int j = 0; j < k; j++)
                    Py_CLEAR(f[j]);
                PyErr_SetString(PyExc_AttributeError, "LLMMetrics field is not set");
                goto error_items;
            }
            Py_INCREF(x);
            f[k] = x;
        }
        PyObject *st = f[0], *d = f[1], *out = f[2], *p = f[3], *c = f[4], *w = f[5];
        PyObject *ai = f[6], *ao = f[7], *reported = f[8], *err = f[9], *sid = f[10];
        PyObject *md = f[11];
        int new_run = run.sid == NULL;
        if (!new_run) {
            new_run = PyObject_RichCompareBool(sid, run.sid, Py_NE);
            if (new_run < 0)
                goto error_items;
        }
        if (!new_run && md != run.md) {
            new_run = PyObject_RichCompareBool(md, run.md, Py_NE);
            if (new_run < 0)
                goto error_items;
        }
        if (new_run) {
            if (run_flush(&run, ledger, new_vector) < 0)
                goto error_items;
            /* The key is a function of the (frozen) Metadata: kept while it is the same. */
            int same_md = run.md == md && run.key != NULL;
            Py_INCREF(sid);
            Py_XSETREF(run.sid, sid);
            Py_INCREF(md);
            Py_XSETREF(run.md, md);
            PyObject *part = PyObject_CallOneArg(part_of, sid);
            if (part == NULL)
                goto error_items;
            Py_XSETREF(run.part, part);
            PyObject *key = NULL;
            if (same_md) {
                key = Py_NewRef(run.key);
            }
            else if (md == Py_None) {
                key = PyTuple_Pack(3, str_llm, Py_None, Py_None);
            }
            else {
                PyObject *prov = PyObject_GetAttr(md, str_model_provider);
                PyObject *name = prov ? PyObject_GetAttr(md, str_model_name) : NULL;
                key = name ? PyTuple_Pack(3, str_llm, prov, name) : NULL;
                Py_XDECREF(prov);
                Py_XDECREF(name);
            }
            if (key == NULL)
                goto error_items;
            Py_XSETREF(run.key, key);
        }
        double dv;
        if (as_double(d, &dv) < 0)
            goto error_items;
        run.duration += dv;
        if (err != Py_None)
            run.errors += 1;
        int rep = PyObject_IsTrue(reported);
        if (rep < 0)
            goto error_items;
        if (rep) {
            run.requests += 1;
            if (sum_add(&run.sums[S_PROMPT], p) < 0 || sum_add(&run.sums[S_CACHED], c) < 0 ||
                sum_add(&run.sums[S_COMPLETION], out) < 0 ||
                sum_add(&run.sums[S_CREATED], w) < 0 ||
                sum_add(&run.sums[S_AUDIO_IN], ai) < 0 ||
                sum_add(&run.sums[S_AUDIO_OUT], ao) < 0)
                goto error_items;
            int big = is_large(p, c, w, ai, large);
            if (big < 0)
                goto error_items;
            if (big) { /* priced on its own (see the ledger) */
                PyObject *one = PyLong_FromLong(1);
                PyObject *a = one ? PyObject_CallFunctionObjArgs(amounts, one, p, c, w, out,
                                                                 ai, ao, NULL)
                                  : NULL;
                Py_XDECREF(one);
                if (a == NULL)
                    goto error_items;
                PyObject *res = PyObject_CallFunctionObjArgs(keep_large, run.part, run.key, a,
                                                             NULL);
                Py_DECREF(a);
                if (res == NULL)
                    goto error_items;
                Py_DECREF(res);
            }
        }
        else {
            run.unreported += 1;
        }
        if (add_interval(st, d, starts, ends, insert) < 0)
            goto error_items;
    }
    for (int k = 0; k < N_READ; k++)
        Py_CLEAR(f[k]);
    Py_DECREF(items);
    if (run_flush(&run, ledger, new_vector) < 0)
        goto error;
    run_clear(&run);
    return Py_BuildValue("(NN)", llm, others);

error_items:
    for (int k = 0; k < N_READ; k++)
        Py_CLEAR(f[k]);
    Py_DECREF(items);
error:
    run_clear(&run);
    Py_XDECREF(llm);
    Py_XDECREF(others);
    return NULL;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(llm_type, metadata_type, python_check): look up the field slots."},
    {"llm_check", llm_check, METH_O,
     "None when an LLMMetrics is valid, else what the Python check says."},
    {"add_llm_events", add_llm_events, METH_VARARGS,
     "The batch loop of UsageCollector._add_llm_events."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_speedups", "The per-event hot path in C (optional).", -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && (record_init(m) < 0 || generation_init(m) < 0))
        Py_CLEAR(m);
    return m;
}
