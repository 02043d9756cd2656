/* Shared by the C files of callmeter._speedups. */
#ifndef CALLMETER_SPEEDUPS_H
#define CALLMETER_SPEEDUPS_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#define N_LLM 20
enum {
    F_TIMESTAMP, F_STARTED_AT, F_DURATION, F_LABEL, F_REQUEST_ID, F_TTFT, F_CANCELLED,
    F_COMPLETION, F_PROMPT, F_CACHED, F_CACHE_CREATION, F_REASONING, F_AUDIO_IN,
    F_AUDIO_OUT, F_TOTAL, F_TPS, F_REPORTED, F_ERROR, F_SPEECH_ID, F_METADATA
};
static const char *llm_fields[N_LLM] __attribute__((unused)) = {
    "timestamp", "started_at", "duration", "label", "request_id", "ttft", "cancelled",
    "completion_tokens", "prompt_tokens", "prompt_cached_tokens", "cache_creation_tokens",
    "reasoning_tokens", "input_audio_tokens", "output_audio_tokens", "total_tokens",
    "tokens_per_second", "usage_reported", "error", "speech_id", "metadata",
};

extern PyTypeObject *llm_type;   /* LLMMetrics, once configure() ran */
extern Py_ssize_t llm_off[N_LLM]; /* its field slots, by the enum above */

#define FIELD(o, off) (*(PyObject **)((char *)(o) + (off)))

/* The offset of a struct's object slot, found through its member descriptor. */
int slot_offset(PyTypeObject *tp, const char *name, Py_ssize_t *out);
/* 1 when an LLMMetrics is plainly valid; 0 when unsure (the Python check decides). */
int llm_valid(PyObject *m);
/* fn(self, *args, **kwargs) for the Python reference method fn of a C method (vectorcall
   arguments as received); RuntimeError when fn is not configured yet. */
PyObject *call_reference(PyObject *fn, PyObject *self, PyObject *const *args, size_t nargsf,
                         PyObject *kwnames);
/* SessionCore.llm_generation (_speedups_generation.c). */
PyObject *new_llm_generation(PyObject *session, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames);
/* Adds GenerationCore and configure_generation to the module (_speedups_generation.c). */
int generation_init(PyObject *module);
/* Adds SessionCore, CollectorCore and configure_record to the module (_speedups_record.c). */
int record_init(PyObject *module);

#endif
