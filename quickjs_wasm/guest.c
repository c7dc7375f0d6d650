/*
 * ClamBot's WebAssembly guest: a thin layer around QuickJS-NG.
 *
 * The host (clambot_tools/_guest.py) drives it through a handful of exports:
 *
 *   cb_init(stack)                    runtime + context + console glue (the host
 *                                     snapshots memory after this: the start image)
 *   cb_alloc(n) / cb_free(p)          buffers the host fills (code, results)
 *   cb_eval(buf, names_len, len, mem, cap, stack, seed)
 *                                     install `tools` (first run), start a script
 *   cb_compile(..., keep) / cb_load(...)
 *                                     cb_eval's first half: compile the script (and
 *                                     give its bytecode) or read bytecode back; READY
 *   cb_start(args, len)               cb_eval's second half: run what was prepared
 *   cb_resolve(id, status, p, len)    settle a pending tool call
 *   cb_timers()                       fire due setTimeout callbacks
 *   cb_io()                           address of the CbIo block below
 *   cb_interrupt_addr()               address of the flag the host sets at the deadline
 *
 * Each of cb_eval / cb_start / cb_resolve / cb_timers returns a state: DONE (the JSON
 * of the value is in the output buffer), ERROR (a JSON error record is there) or WAIT
 * (tool calls or timers are pending; the host answers and calls back in). cb_compile
 * and cb_load return READY (or ERROR): the script is ready for cb_start.
 *
 * The only imports are the three "clambot" functions below and five WASI calls
 * that the host implements as stubs: no files, sockets or environment exist here.
 *
 * quickjs.c is included (one translation unit) so the guest can reseed
 * Math.random per run and read class ids without patching upstream.
 */
#include "quickjs.c"

#define CB_IMPORT(n) __attribute__((import_module("clambot"), import_name(n)))
#define CB_EXPORT(n) __attribute__((export_name(n)))

/* Console output; the host enforces the log cap (and traps past it). */
CB_IMPORT("log") int32_t host_log(int32_t level, const char *p, int32_t len);
/* A tool call was made: the host queues it and settles it through cb_resolve. */
CB_IMPORT("call") int32_t host_call(int32_t id, int32_t tool, const char *args, int32_t len);
/* Ends the run at once (the host traps); kind is one of ABORT_*. */
CB_IMPORT("abort") void host_abort(int32_t kind);
/* Lets the host run its own pending work (a Ctrl-C on its main thread) during long
   JavaScript: called from the interrupt handler every `poll_every` checks when the
   host asks for it. The host traps to stop the run. */
CB_IMPORT("poll") void host_poll(void);

enum { ST_DONE = 0, ST_ERROR = 1, ST_WAIT = 2, ST_READY = 3 };
enum { ABORT_MEMORY = 1 };
enum { RESOLVE_OK = 0, RESOLVE_FAILED = 1, RESOLVE_DENIED = 2, RESOLVE_BAD_ARGS = 3,
       RESOLVE_TOO_LARGE = 4 };
enum { KIND_NONE = 0, KIND_BINDING_FAILED = 1, KIND_BINDING_DENIED = 2, KIND_OUTPUT = 3 };

static void note_binding_error(JSContext *ctx, JSValueConst err, int kind);

#define MAX_DEPTH 1000
#define MAX_MESSAGE 4096
#define MAX_STACK 8192
/* script frames remembered per tool call, for the stack of its error */
#define CALL_FRAMES 4

typedef struct {
    int32_t out_ptr;       /* output of the last state change */
    int32_t out_len;
    int32_t pending;       /* tool calls not yet settled */
    int32_t next_timer_ms; /* -1: no timer */
    int32_t mem_used;      /* bytes the JS heap holds */
    int32_t inline_ptr;    /* where the host may answer a tool call at once */
    int32_t inline_cap;
    int32_t poll_every;    /* written by the host: call host_poll every N interrupt
                              checks (0: never) */
    int32_t log_cap;       /* written by the host: bytes of console output the run may
                              keep (0: no cap); a longer string is cut before it is copied */
} CbIo;

/* A tool call the host answers during `call` (a fast sync binding, or a refusal):
   [status byte][payload][NUL]; `call` returns 1 + payload length. */
#define INLINE_CAP 65536
static char g_inline[INLINE_CAP];

/* Where a tool call was made: a bytecode function and the pc in it (the line and
   column are worked out only if the call fails). */
typedef struct {
    JSValue func; /* JS_UNDEFINED when unused */
    uint32_t pc;
} CallFrame;

typedef struct {
    int32_t id;
    JSValue funcs[2]; /* resolve, reject */
    CallFrame where[CALL_FRAMES];
} Pending;


static CbIo g_io;
static JSContext *g_ctx;
static volatile int32_t g_interrupt; /* written by the host's ticker thread */
static int g_interrupted;
static size_t g_mem_used, g_mem_limit = SIZE_MAX;
static JSRuntime *g_rt;
static size_t g_result_cap = 1 << 20;
static JSValue g_main = JS_UNDEFINED;   /* the promise of the running script */
static JSValue g_timers = JS_UNDEFINED; /* glue: fire due timers, return next delay */
static JSValue g_to_list = JS_UNDEFINED; /* glue: Array.from */
static JSValue g_make_tools = JS_UNDEFINED; /* glue: the Proxy around `tools` */
static Pending *g_pending;
static int g_npending, g_cap_pending;
static int32_t g_call_seq;
/* a symbol only the guest holds: the kind of an error made for a tool call is stored
   on the error under it (uncaught, it decides the run's kind) */
static JSAtom g_kind_atom;
/* the last name looked up in `tools` that is not granted, and the line of the script
   where that happened (0: none) */
static JSAtom g_missing_atom = JS_ATOM_NULL;
static int g_missing_line;
static int g_tools_installed;
static int g_runs; /* runs started in this instance: more than one in a session */

/* ---------- memory: every JS allocation is counted against the run's cap ----------
 *
 * The cap is on live memory. When an allocation would cross it, the guest first asks
 * QuickJS for a garbage collection at its next safe point (by zeroing the GC threshold)
 * and lets allocations run into a reserve of a quarter of the cap meanwhile. If the
 * collection does not bring usage back under the cap, or the reserve runs out, the
 * run ends with kind "memory" (the host traps; nothing in JS can catch it).
 */

static int g_gc_requested;

static void check_limit(size_t need)
{
    size_t reserve = g_mem_limit / 4;
    if (g_mem_used + need <= g_mem_limit)
        return;
    if (g_mem_limit == SIZE_MAX || g_mem_used + need > g_mem_limit + reserve || !g_rt)
        host_abort(ABORT_MEMORY);
    if (!g_gc_requested) {
        g_gc_requested = 1;
        g_rt->malloc_gc_threshold = 0; /* js_trigger_gc runs at the next object creation */
        return;
    }
    if (g_rt->malloc_gc_threshold != 0) {
        /* the collection ran and usage is still over the cap */
        host_abort(ABORT_MEMORY);
    }
}

static void *cb_js_calloc(void *opaque, size_t count, size_t size)
{
    size_t total;
    void *p;
    if (__builtin_mul_overflow(count, size, &total))
        return NULL;
    check_limit(total);
    p = calloc(count, size);
    if (!p)
        host_abort(ABORT_MEMORY);
    g_mem_used += malloc_usable_size(p);
    return p;
}

static void *cb_js_malloc(void *opaque, size_t size)
{
    void *p;
    check_limit(size);
    p = malloc(size);
    if (!p && size)
        host_abort(ABORT_MEMORY);
    if (p)
        g_mem_used += malloc_usable_size(p);
    return p;
}

static void cb_js_free(void *opaque, void *ptr)
{
    if (!ptr)
        return;
    g_mem_used -= malloc_usable_size(ptr);
    free(ptr);
    if (g_gc_requested && g_mem_used <= g_mem_limit)
        g_gc_requested = 0;
}

static void *cb_js_realloc(void *opaque, void *ptr, size_t size)
{
    size_t old = ptr ? malloc_usable_size(ptr) : 0;
    void *p;
    if (size == 0) {
        cb_js_free(opaque, ptr);
        return NULL;
    }
    if (size > old)
        check_limit(size - old);
    p = realloc(ptr, size);
    if (!p)
        host_abort(ABORT_MEMORY);
    g_mem_used = g_mem_used - old + malloc_usable_size(p);
    return p;
}

static size_t cb_js_usable_size(const void *ptr)
{
    return malloc_usable_size((void *)ptr);
}

static const JSMallocFunctions cb_malloc_funcs = {
    cb_js_calloc, cb_js_malloc, cb_js_free, cb_js_realloc, cb_js_usable_size,
};

static int32_t g_poll_countdown;

static int cb_interrupt_handler(JSRuntime *rt, void *opaque)
{
    if (!g_interrupt && g_io.poll_every > 0 && --g_poll_countdown <= 0) {
        g_poll_countdown = g_io.poll_every;
        host_poll(); /* may trap: the run ends here */
    }
    if (g_interrupt) {
        g_interrupted = 1;
        return 1;
    }
    return 0;
}

/* ---------- output buffer (outside the JS heap, bounded by the result cap) ---------- */

typedef struct {
    char *buf;
    size_t len, cap, limit;
    int overflow;
} Out;

static Out g_out;

static void settle_call(JSContext *ctx, int32_t id, int32_t status, const char *p, int32_t len);

static void out_reset(size_t limit)
{
    g_out.len = 0;
    g_out.overflow = 0;
    g_out.limit = limit;
}

static int out_put(const char *s, size_t n)
{
    if (g_out.overflow)
        return -1;
    if (g_out.len + n > g_out.limit) {
        g_out.overflow = 1;
        return -1;
    }
    if (g_out.len + n > g_out.cap) {
        size_t cap = g_out.cap ? g_out.cap : 4096;
        char *nb;
        while (cap < g_out.len + n)
            cap *= 2;
        nb = realloc(g_out.buf, cap);
        if (!nb)
            host_abort(ABORT_MEMORY);
        g_out.buf = nb;
        g_out.cap = cap;
    }
    memcpy(g_out.buf + g_out.len, s, n);
    g_out.len += n;
    return 0;
}

static int out_str(const char *s) { return out_put(s, strlen(s)); }

/* JSON string literal from UTF-8 (lone surrogates arrive WTF-8 encoded; the host
   decodes with surrogatepass, so nothing is lost). */
static int out_quoted(const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t i, run = 0;
    if (out_put("\"", 1))
        return -1;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[6];
        if (c == '"') esc = "\\\"";
        else if (c == '\\') esc = "\\\\";
        else if (c == '\n') esc = "\\n";
        else if (c == '\r') esc = "\\r";
        else if (c == '\t') esc = "\\t";
        else if (c < 0x20) {
            u[0] = '\\'; u[1] = 'u'; u[2] = '0'; u[3] = '0';
            u[4] = hex[c >> 4]; u[5] = hex[c & 15];
        } else
            continue;
        if (out_put(s + run, i - run))
            return -1;
        if (esc ? out_str(esc) : out_put(u, 6))
            return -1;
        run = i + 1;
    }
    if (out_put(s + run, n - run))
        return -1;
    return out_put("\"", 1);
}

static int out_jsstring(JSContext *ctx, JSValueConst v)
{
    size_t n;
    const char *s = JS_ToCStringLen(ctx, &n, v);
    int r;
    if (!s)
        return -2;
    r = out_quoted(s, n);
    JS_FreeCString(ctx, s);
    return r;
}

/* ---------- helpers ---------- */

/* Drop a pending exception; keeps the interrupted state (the flag stays set). */
static void clear_exception(JSContext *ctx)
{
    JS_FreeValue(ctx, JS_GetException(ctx));
}

/* A property as a C string, or NULL (exception cleared). */
static const char *get_str_prop(JSContext *ctx, JSValueConst obj, const char *name, size_t *len)
{
    JSValue v = JS_GetPropertyStr(ctx, obj, name);
    const char *s = NULL;
    if (JS_IsException(v)) {
        clear_exception(ctx);
        return NULL;
    }
    if (JS_IsString(v)) {
        s = JS_ToCStringLen(ctx, len, v);
        if (!s)
            clear_exception(ctx);
    }
    JS_FreeValue(ctx, v);
    return s;
}

/* Length in UTF-16 units of a string or a rope (0 for anything else). */
static uint32_t string_length(JSValueConst v)
{
    if (JS_VALUE_GET_TAG(v) == JS_TAG_STRING)
        return JS_VALUE_GET_STRING(v)->len;
    if (JS_VALUE_GET_TAG(v) == JS_TAG_STRING_ROPE)
        return JS_VALUE_GET_STRING_ROPE(v)->len;
    return 0;
}

/* The first `n` units of string or rope `v` (n <= its length), without flattening a
   rope whose left side already holds them. */
static JSValue string_prefix(JSContext *ctx, JSValueConst v, uint32_t n)
{
    while (JS_VALUE_GET_TAG(v) == JS_TAG_STRING_ROPE &&
           string_length(JS_VALUE_GET_STRING_ROPE(v)->left) >= n)
        v = JS_VALUE_GET_STRING_ROPE(v)->left;
    if (JS_VALUE_GET_TAG(v) == JS_TAG_STRING)
        return js_sub_string(ctx, JS_VALUE_GET_STRING(v), 0, (int)n);
    {
        JSValue flat = JS_ToString(ctx, v), cut;
        if (JS_IsException(flat))
            return flat;
        cut = js_sub_string(ctx, JS_VALUE_GET_STRING(flat), 0, (int)n);
        JS_FreeValue(ctx, flat);
        return cut;
    }
}

/* Any value as text for an error message; never runs more than its own toString. */
static char *describe_value(JSContext *ctx, JSValueConst v)
{
    char *res;
    const char *s = NULL;
    size_t n = 0;
    JSValue str = JS_UNDEFINED;
    if (JS_IsSymbol(v)) {
        JSValue d = JS_GetPropertyStr(ctx, v, "description");
        if (JS_IsException(d))
            clear_exception(ctx);
        else if (JS_IsString(d)) {
            const char *ds = JS_ToCString(ctx, d);
            if (ds) {
                size_t dl = strlen(ds);
                res = malloc(dl + 9);
                if (res)
                    snprintf(res, dl + 9, "Symbol(%s)", ds);
                JS_FreeCString(ctx, ds);
                JS_FreeValue(ctx, d);
                return res;
            }
            clear_exception(ctx);
        }
        JS_FreeValue(ctx, d);
        return strdup("Symbol()");
    }
    str = JS_ToString(ctx, v);
    if (JS_IsException(str)) {
        clear_exception(ctx);
        return strdup(JS_IsObject(v) ? "[object with a failing toString]" : "[value]");
    }
    /* a thrown string may be huge: only the start is ever shown (MAX_MESSAGE) */
    if (string_length(str) > MAX_MESSAGE) {
        JSValue cut = string_prefix(ctx, str, MAX_MESSAGE);
        JS_FreeValue(ctx, str);
        str = cut;
        if (JS_IsException(str)) {
            clear_exception(ctx);
            return strdup("[value]");
        }
    }
    s = JS_ToCStringLen(ctx, &n, str);
    JS_FreeValue(ctx, str);
    if (!s) {
        clear_exception(ctx);
        return strdup("[value]");
    }
    res = malloc(n + 1);
    if (!res)
        host_abort(ABORT_MEMORY);
    memcpy(res, s, n);
    res[n] = 0;
    JS_FreeCString(ctx, s);
    return res;
}

/* ---------- the result: JSON, serialised here under the run's limits ---------- */

typedef struct {
    JSObject *path[MAX_DEPTH + 1];
    int depth;
    const char *error;   /* static description when serialisation refuses a value */
    char where[256];     /* JSON path of the offending value, built while unwinding */
} Ser;

static void ser_where_prepend(Ser *st, const char *seg)
{
    size_t sl = strlen(seg), wl = strlen(st->where);
    if (sl + wl >= sizeof(st->where))
        return;
    memmove(st->where + sl, st->where, wl + 1);
    memcpy(st->where, seg, sl);
}

static int ser_any(JSContext *ctx, Ser *st, JSValueConst v, JSValueConst key, int use_tojson);

static int ser_value(JSContext *ctx, Ser *st, JSValueConst v, JSValueConst key)
{
    return ser_any(ctx, st, v, key, 1);
}

static int ser_number(JSContext *ctx, JSValueConst v)
{
    char buf[32];
    if (JS_VALUE_GET_TAG(v) == JS_TAG_INT) {
        snprintf(buf, sizeof buf, "%d", JS_VALUE_GET_INT(v));
        return out_str(buf);
    } else {
        double d = JS_VALUE_GET_FLOAT64(v);
        if (isnan(d))
            return out_str("NaN");
        if (isinf(d))
            return out_str(d > 0 ? "Infinity" : "-Infinity");
        if (d == 0)
            return out_str(signbit(d) ? "-0.0" : "0");
        {
            size_t n;
            const char *s = JS_ToCStringLen(ctx, &n, v);
            int r;
            if (!s)
                return -2;
            r = out_put(s, n);
            /* An integral double past 2^53 prints as digits ("47713050016540750") that
               Python would read as an int of a different value: mark it as a float. */
            if (!r && fabs(d) >= 9007199254740992.0 && !memchr(s, 'e', n) && !memchr(s, '.', n))
                r = out_put(".0", 2);
            JS_FreeCString(ctx, s);
            return r;
        }
    }
}

static int ser_bigint(JSContext *ctx, JSValueConst v)
{
    size_t n;
    const char *s = JS_ToCStringLen(ctx, &n, v);
    int r;
    if (!s)
        return -2;
    /* Python's int() refuses more than 4300 digits: past that, keep the digits as text. */
    r = n > 4000 ? out_quoted(s, n) : out_put(s, n);
    JS_FreeCString(ctx, s);
    return r;
}

/* `len` < 0: read the array's length; else the element count (a typed array's own) */
static int ser_array_like(JSContext *ctx, Ser *st, JSValueConst arr, int64_t len)
{
    int64_t i;
    char seg[32];
    if (len < 0 && JS_GetLength(ctx, arr, &len))
        return -2;
    if (out_put("[", 1))
        return -1;
    for (i = 0; i < len; i++) {
        JSValue e;
        int r;
        if (g_interrupt)
            return -2;
        if (i && out_put(",", 1))
            return -1;
        e = JS_GetPropertyInt64(ctx, arr, i);
        if (JS_IsException(e))
            return -2;
        if (JS_IsUndefined(e) || JS_IsFunction(ctx, e) || JS_IsSymbol(e)) {
            /* holes and undefined read as null, as in JSON */
            if (!JS_IsUndefined(e)) {
                st->error = JS_IsSymbol(e) ? "a symbol" : "a function";
                JS_FreeValue(ctx, e);
                snprintf(seg, sizeof seg, "[%lld]", (long long)i);
                ser_where_prepend(st, seg);
                return -3;
            }
            r = out_put("null", 4);
        } else {
            JSValue k = JS_NewInt64(ctx, i);
            r = ser_value(ctx, st, e, k);
            JS_FreeValue(ctx, k);
        }
        JS_FreeValue(ctx, e);
        if (r) {
            if (r == -3) {
                snprintf(seg, sizeof seg, "[%lld]", (long long)i);
                ser_where_prepend(st, seg);
            }
            return r;
        }
    }
    return out_put("]", 1);
}

static int ser_key_segment(JSContext *ctx, Ser *st, JSAtom atom)
{
    const char *k = JS_AtomToCString(ctx, atom);
    char seg[80];
    if (!k)
        return 0;
    snprintf(seg, sizeof seg, ".%.70s", k);
    JS_FreeCString(ctx, k);
    ser_where_prepend(st, seg);
    return 0;
}

static int ser_object(JSContext *ctx, Ser *st, JSValueConst obj)
{
    JSPropertyEnum *tab = NULL;
    uint32_t len = 0, i;
    int first = 1, r = 0;
    if (JS_GetOwnPropertyNames(ctx, &tab, &len, obj, JS_GPN_STRING_MASK | JS_GPN_ENUM_ONLY))
        return -2;
    if (out_put("{", 1)) {
        r = -1;
        goto done;
    }
    for (i = 0; i < len; i++) {
        JSValue pv, k;
        if (g_interrupt) {
            r = -2;
            goto done;
        }
        pv = JS_GetProperty(ctx, obj, tab[i].atom);
        if (JS_IsException(pv)) {
            r = -2;
            goto done;
        }
        if (JS_IsUndefined(pv)) /* as in JSON: the key is left out */
            continue;
        if (JS_IsFunction(ctx, pv) || JS_IsSymbol(pv)) {
            st->error = JS_IsSymbol(pv) ? "a symbol" : "a function";
            JS_FreeValue(ctx, pv);
            ser_key_segment(ctx, st, tab[i].atom);
            r = -3;
            goto done;
        }
        k = JS_AtomToString(ctx, tab[i].atom);
        if (JS_IsException(k)) {
            JS_FreeValue(ctx, pv);
            r = -2;
            goto done;
        }
        if ((!first && out_put(",", 1)) || (r = out_jsstring(ctx, k)) || out_put(":", 1)) {
            JS_FreeValue(ctx, k);
            JS_FreeValue(ctx, pv);
            r = r ? r : -1;
            goto done;
        }
        first = 0;
        r = ser_value(ctx, st, pv, k);
        JS_FreeValue(ctx, k);
        JS_FreeValue(ctx, pv);
        if (r) {
            if (r == -3)
                ser_key_segment(ctx, st, tab[i].atom);
            goto done;
        }
    }
    r = out_put("}", 1);
done:
    JS_FreePropertyEnum(ctx, tab, len);
    return r;
}

/* Map becomes an object keyed by String(key); Set and typed arrays become arrays. */
static int ser_collection(JSContext *ctx, Ser *st, JSValueConst obj, int is_map)
{
    JSValue list = JS_Call(ctx, g_to_list, JS_UNDEFINED, 1, &obj);
    int64_t len, i;
    int r = 0;
    if (JS_IsException(list))
        return -2;
    if (!is_map) {
        r = ser_array_like(ctx, st, list, -1);
        JS_FreeValue(ctx, list);
        return r;
    }
    if (JS_GetLength(ctx, list, &len)) {
        JS_FreeValue(ctx, list);
        return -2;
    }
    if (out_put("{", 1)) {
        JS_FreeValue(ctx, list);
        return -1;
    }
    for (i = 0; i < len && !r; i++) {
        JSValue ent = JS_GetPropertyInt64(ctx, list, i);
        JSValue k = JS_UNDEFINED, v = JS_UNDEFINED, ks = JS_UNDEFINED;
        if (JS_IsException(ent)) {
            r = -2;
            break;
        }
        k = JS_GetPropertyInt64(ctx, ent, 0);
        v = JS_GetPropertyInt64(ctx, ent, 1);
        ks = JS_IsException(k) ? JS_EXCEPTION : JS_ToString(ctx, k);
        if (JS_IsException(v) || JS_IsException(ks))
            r = -2;
        else if ((i && out_put(",", 1)) || (r = out_jsstring(ctx, ks)) || out_put(":", 1))
            r = r ? r : -1;
        else if (JS_IsUndefined(v))
            r = out_put("null", 4);
        else if (JS_IsFunction(ctx, v) || JS_IsSymbol(v)) {
            st->error = JS_IsSymbol(v) ? "a symbol" : "a function";
            r = -3;
        } else
            r = ser_value(ctx, st, v, ks);
        JS_FreeValue(ctx, ent);
        JS_FreeValue(ctx, k);
        JS_FreeValue(ctx, v);
        JS_FreeValue(ctx, ks);
    }
    JS_FreeValue(ctx, list);
    return r ? r : out_put("}", 1);
}

static int ser_error_object(JSContext *ctx, JSValueConst v)
{
    static const char *names[] = {"name", "message", "stack"};
    int i, first = 1;
    if (out_put("{", 1))
        return -1;
    for (i = 0; i < 3; i++) {
        size_t n;
        const char *s = get_str_prop(ctx, v, names[i], &n);
        int r = 0;
        if (!s)
            continue;
        if ((!first && out_put(",", 1)) || out_quoted(names[i], strlen(names[i])) ||
            out_put(":", 1) || out_quoted(s, n))
            r = -1;
        JS_FreeCString(ctx, s);
        if (r)
            return r;
        first = 0;
    }
    return out_put("}", 1);
}

/* Returns 0, -1 (output cap), -2 (JS exception pending or interrupted), -3 (st->error). */
static int ser_any(JSContext *ctx, Ser *st, JSValueConst v, JSValueConst key, int use_tojson)
{
    int tag = JS_VALUE_GET_NORM_TAG(v), r, i;
    JSObject *p;
    JSValue tojson;
    JSClassID cid;

    switch (tag) {
    case JS_TAG_INT:
    case JS_TAG_FLOAT64:
        return ser_number(ctx, v);
    case JS_TAG_BOOL:
        return out_str(JS_VALUE_GET_BOOL(v) ? "true" : "false");
    case JS_TAG_NULL:
    case JS_TAG_UNDEFINED:
        return out_put("null", 4);
    case JS_TAG_STRING:
    case JS_TAG_STRING_ROPE: /* a string built by concatenation */
        return out_jsstring(ctx, v);
    case JS_TAG_SHORT_BIG_INT:
    case JS_TAG_BIG_INT:
        return ser_bigint(ctx, v);
    case JS_TAG_SYMBOL:
        st->error = "a symbol";
        return -3;
    case JS_TAG_OBJECT:
        break;
    default:
        st->error = "a value of an unknown type";
        return -3;
    }
    if (JS_IsFunction(ctx, v)) {
        st->error = "a function";
        return -3;
    }
    if (JS_IsPromise(v)) {
        st->error = "a Promise (add await)";
        return -3;
    }
    /* toJSON first, as JSON.stringify does (Date gives its ISO string); the value
       it returns is serialised without a second toJSON, so a chain cannot loop */
    if (use_tojson) {
        tojson = JS_GetPropertyStr(ctx, v, "toJSON");
        if (JS_IsException(tojson))
            return -2;
        if (JS_IsFunction(ctx, tojson)) {
            /* the key as JSON.stringify gives it: always a string ("0" for an element) */
            JSValue k = JS_IsUndefined(key) ? JS_NewString(ctx, "")
                        : JS_IsString(key)  ? JS_DupValue(ctx, key)
                                            : JS_ToString(ctx, key);
            if (JS_IsException(k)) {
                JS_FreeValue(ctx, tojson);
                return -2;
            }
            JSValue nv = JS_Call(ctx, tojson, v, 1, (JSValueConst *)&k);
            JS_FreeValue(ctx, k);
            JS_FreeValue(ctx, tojson);
            if (JS_IsException(nv))
                return -2;
            r = JS_IsUndefined(nv) ? out_put("null", 4) : ser_any(ctx, st, nv, key, 0);
            JS_FreeValue(ctx, nv);
            return r;
        }
        JS_FreeValue(ctx, tojson);
    }

    /* Number, String, Boolean and BigInt objects become their primitive values, as in
       JSON.stringify (Number and String through ToNumber/ToString, which may run the
       script's valueOf/toString under the run's limits) */
    switch (JS_GetClassID(v)) {
    case JS_CLASS_NUMBER: {
        double d;
        if (JS_ToFloat64(ctx, &d, v))
            return -2;
        return ser_number(ctx, JS_NewFloat64(ctx, d));
    }
    case JS_CLASS_STRING: {
        JSValue sv = JS_ToString(ctx, v);
        if (JS_IsException(sv))
            return -2;
        r = out_jsstring(ctx, sv);
        JS_FreeValue(ctx, sv);
        return r;
    }
    case JS_CLASS_BOOLEAN:
        return out_str(JS_ToBool(ctx, JS_VALUE_GET_OBJ(v)->u.object_data) ? "true" : "false");
    case JS_CLASS_BIG_INT:
        return ser_bigint(ctx, JS_VALUE_GET_OBJ(v)->u.object_data);
    default:
        break;
    }
    p = JS_VALUE_GET_OBJ(v);
    for (i = 0; i < st->depth; i++) {
        if (st->path[i] == p) {
            st->error = "a cycle (an object that contains itself)";
            return -3;
        }
    }
    if (st->depth >= MAX_DEPTH) {
        st->error = "nesting deeper than 1000 levels";
        return -3;
    }
    st->path[st->depth++] = p;
    cid = JS_GetClassID(v);
    if (JS_IsError(v))
        r = ser_error_object(ctx, v);
    else if (cid == JS_CLASS_MAP)
        r = ser_collection(ctx, st, v, 1);
    else if (cid >= JS_CLASS_UINT8C_ARRAY && cid <= JS_CLASS_FLOAT64_ARRAY)
        /* element by element from the typed array itself: no copy, no getter */
        r = ser_array_like(ctx, st, v, typed_array_is_oob(JS_VALUE_GET_OBJ(v)) ? 0 :
                           (int64_t)JS_VALUE_GET_OBJ(v)->u.array.count);
    else if (cid == JS_CLASS_SET)
        r = ser_collection(ctx, st, v, 0);
    else {
        int is_arr = js_is_array(ctx, v);
        if (is_arr < 0)
            r = -2;
        else
            r = is_arr ? ser_array_like(ctx, st, v, -1) : ser_object(ctx, st, v);
    }
    st->depth--;
    return r;
}

static int32_t finish_output(void)
{
    g_io.out_ptr = (int32_t)(uintptr_t)g_out.buf;
    g_io.out_len = (int32_t)g_out.len;
    g_io.mem_used = (int32_t)g_mem_used;
    return 0;
}

/* ---------- errors: one JSON record {kind, name, message, stack} ---------- */

static int out_field(const char *name, const char *s, size_t n, size_t max, int first)
{
    char note[64];
    size_t keep = n > max ? max : n;
    /* do not cut a UTF-8 sequence in half */
    while (keep < n && keep > 0 && ((unsigned char)s[keep] & 0xC0) == 0x80)
        keep--;
    if ((!first && out_put(",", 1)) || out_quoted(name, strlen(name)) || out_put(":", 1))
        return -1;
    if (keep == n)
        return out_quoted(s, n);
    {
        size_t len = keep + sizeof note;
        char *tmp = malloc(len);
        int r, m;
        if (!tmp)
            host_abort(ABORT_MEMORY);
        memcpy(tmp, s, keep);
        m = snprintf(tmp + keep, sizeof note, "... [%zu more bytes]", n - keep);
        r = out_quoted(tmp, keep + (size_t)m);
        free(tmp);
        return r;
    }
}

static int is_binding_error(JSContext *ctx, JSValueConst exc)
{
    JSPropertyDescriptor desc;
    int32_t kind = KIND_NONE;
    if (!JS_IsObject(exc) || g_kind_atom == JS_ATOM_NULL)
        return KIND_NONE;
    /* the own data property only: no getter of the script's runs here */
    if (JS_GetOwnProperty(ctx, &desc, exc, g_kind_atom) > 0) {
        if (!(desc.flags & JS_PROP_GETSET) && JS_VALUE_GET_TAG(desc.value) == JS_TAG_INT)
            kind = JS_VALUE_GET_INT(desc.value);
        JS_FreeValue(ctx, desc.value);
        JS_FreeValue(ctx, desc.getter);
        JS_FreeValue(ctx, desc.setter);
    } else
        clear_exception(ctx);
    return kind;
}

/* Whether `v` is an error the engine made (its prototype is the real one of kind `k`). */
static int is_native_error(JSContext *ctx, JSValueConst v, JSErrorEnum k)
{
    JSObject *p;
    if (!JS_IsObject(v))
        return 0;
    p = JS_VALUE_GET_OBJ(v);
    return p->class_id == JS_CLASS_ERROR && p->shape->proto != NULL &&
           JS_VALUE_GET_OBJ(ctx->native_error_proto[k]) == p->shape->proto;
}

/* The line of the first `script.js:LINE:` frame of a stack, or -1. */
static int stack_line(const char *stack)
{
    const char *at = strstr(stack, "script.js:");
    long n;
    char *end;
    if (!at)
        return -1;
    n = strtol(at + 10, &end, 10);
    return (end == at + 10 || n <= 0 || n > 1000000000) ? -1 : (int)n;
}

static int32_t finish_error_kind(JSContext *ctx, JSValueConst exc, const char *forced_kind,
                                 int compile_phase)
{
    const char *kind = forced_kind, *name = NULL, *msg = NULL, *stack = NULL, *call = NULL;
    const char *missing = NULL;
    char *desc = NULL;
    size_t nn = 0, mn = 0, sn = 0, cn = 0;
    int bkind = KIND_NONE;

    out_reset(1 << 20); /* errors are bounded field by field, not by the result cap */
    if (JS_IsError(exc)) {
        name = get_str_prop(ctx, exc, "name", &nn);
        msg = get_str_prop(ctx, exc, "message", &mn);
        stack = get_str_prop(ctx, exc, "stack", &sn);
    } else {
        desc = describe_value(ctx, exc);
    }
    bkind = is_binding_error(ctx, exc);
    if (bkind != KIND_NONE && JS_IsError(exc))
        call = get_str_prop(ctx, exc, "call", &cn);
    if (!kind) {
        if (g_interrupted)
            kind = "timeout";
        else if (bkind == KIND_BINDING_FAILED)
            kind = "binding_failed";
        else if (bkind == KIND_BINDING_DENIED)
            kind = "binding_denied";
        else if (bkind == KIND_OUTPUT)
            kind = "output_limit";
        else if (compile_phase && name && nn == 11 && !memcmp(name, "SyntaxError", 11))
            kind = "syntax";
        else if (msg && ((is_native_error(ctx, exc, JS_RANGE_ERROR) &&
                          !strcmp(msg, "Maximum call stack size exceeded")) ||
                         (is_native_error(ctx, exc, JS_INTERNAL_ERROR) &&
                          !strcmp(msg, "stack overflow"))))
            kind = "stack"; /* the engine's own error, not a message that says so */
        else if (msg && is_native_error(ctx, exc, JS_INTERNAL_ERROR) &&
                 !strcmp(msg, "out of memory"))
            kind = "memory";
        else
            kind = "runtime";
    }
    if (!strcmp(kind, "runtime") && msg && !strcmp(msg, "not a function") &&
        is_native_error(ctx, exc, JS_TYPE_ERROR) && g_missing_atom != JS_ATOM_NULL &&
        stack && stack_line(stack) == g_missing_line)
        /* `tools.nope(...)`: the host names the missing tool and what is granted */
        missing = JS_AtomToCString(ctx, g_missing_atom);
    out_put("{", 1);
    out_field("kind", kind, strlen(kind), 64, 1);
    if (desc) {
        static const char pre[] = "the script threw a non-Error value: ";
        size_t dl = strlen(desc);
        char *m = malloc(sizeof pre + dl);
        if (!m)
            host_abort(ABORT_MEMORY);
        memcpy(m, pre, sizeof pre - 1);
        memcpy(m + sizeof pre - 1, desc, dl + 1);
        out_field("name", "NonErrorThrown", 14, 64, 0);
        out_field("message", m, strlen(m), MAX_MESSAGE, 0);
        free(m);
        free(desc);
    } else {
        out_field("name", name ? name : "Error", name ? nn : 5, 256, 0);
        out_field("message", msg ? msg : "", msg ? mn : 0, MAX_MESSAGE, 0);
        if (stack)
            out_field("stack", stack, sn, MAX_STACK, 0);
        if (call)
            out_field("call", call, cn, 512, 0);
        if (missing)
            out_field("missing_tool", missing, strlen(missing), 256, 0);
    }
    out_put("}", 1);
    if (name) JS_FreeCString(ctx, name);
    if (msg) JS_FreeCString(ctx, msg);
    if (stack) JS_FreeCString(ctx, stack);
    if (call) JS_FreeCString(ctx, call);
    if (missing) JS_FreeCString(ctx, missing);
    finish_output();
    return ST_ERROR;
}

static int32_t finish_error(JSContext *ctx, JSValue exc, int compile_phase)
{
    int32_t st = finish_error_kind(ctx, exc, NULL, compile_phase);
    JS_FreeValue(ctx, exc);
    return st;
}

static int32_t finish_message(const char *kind, const char *name, const char *msg)
{
    out_reset(1 << 20);
    out_put("{", 1);
    out_field("kind", kind, strlen(kind), 64, 1);
    out_field("name", name, strlen(name), 256, 0);
    out_field("message", msg, strlen(msg), MAX_MESSAGE, 0);
    out_put("}", 1);
    finish_output();
    return ST_ERROR;
}

/* The deadline passed (the host raised the flag), whatever the script made of the
   interrupt: the run ends as a timeout. */
static int32_t finish_interrupted(JSContext *ctx)
{
    g_interrupted = 1;
    clear_exception(ctx);
    return finish_message("timeout", "InternalError", "interrupted");
}

static int32_t finish_value(JSContext *ctx, JSValueConst v)
{
    static Ser st;
    int r;
    st.depth = 0;
    st.error = NULL;
    st.where[0] = 0;
    if (g_interrupted || g_interrupt)
        return finish_interrupted(ctx);
    out_reset(g_result_cap);
    r = ser_value(ctx, &st, v, JS_UNDEFINED);
    if (g_interrupted || g_interrupt) /* a getter swallowed the deadline's interrupt */
        return finish_interrupted(ctx);
    if (r == 0) {
        finish_output();
        return ST_DONE;
    }
    if (r == -1) {
        char m[160];
        snprintf(m, sizeof m, "the result is larger than the %zu-byte result limit", g_result_cap);
        return finish_message("output_limit", "OutputLimitError", m);
    }
    if (r == -3) {
        char m[512];
        snprintf(m, sizeof m, "the result cannot be converted to JSON: it contains %s at $%s",
                 st.error, st.where);
        return finish_message("runtime", "TypeError", m);
    }
    return finish_error(ctx, JS_GetException(ctx), 0);
}

/* ---------- glue: console, setTimeout; kept in closures, never on globalThis ---------- */

static const char glue_src[] =
    "(function (log) {\n"
    "  'use strict';\n"
    "  const g = globalThis, S = String, stringify = JSON.stringify, from = Array.from;\n"
    "  const now = Date.now, define = Object.defineProperty, max = Math.max, ceil = Math.ceil;\n"
    "  const ErrorCtor = Error;\n"
    "  function fmt(v) {\n"
    "    switch (typeof v) {\n"
    "      case 'string': return v;\n"
    "      case 'undefined': return 'undefined';\n"
    "      case 'function': return '[Function: ' + (v.name || 'anonymous') + ']';\n"
    "      case 'symbol': return S(v);\n"
    "      case 'bigint': return S(v) + 'n';\n"
    "      case 'object':\n"
    "        if (v === null) return 'null';\n"
    "        try {\n"
    "          if (v instanceof ErrorCtor) return S(v) + (v.stack ? '\\n' + S(v.stack).trimEnd() : '');\n"
    "          const s = stringify(v);\n"
    "          if (s !== undefined) return s;\n"
    "        } catch (e) {}\n"
    "        try { return S(v); } catch (e) { return '[object]'; }\n"
    "      default: return S(v);\n"
    "    }\n"
    "  }\n"
    "  const console = {};\n"
    "  const names = ['log', 'info', 'warn', 'error', 'debug'];\n"
    "  for (let level = 0; level < names.length; level++) {\n"
    "    const name = names[level];\n"
    "    const fn = { [name](...args) {\n"
    "      let s = args.length === 1 ? fmt(args[0]) : '';  // one argument: no copy\n"
    "      for (let i = 0; args.length > 1 && i < args.length; i++) { if (i) s += ' '; s += fmt(args[i]); }\n"
    "      log(level, s);\n"
    "    } }[name];\n"
    "    define(console, name, { value: fn, writable: true, enumerable: true, configurable: true });\n"
    "  }\n"
    "  define(g, 'console', { value: console, writable: true, configurable: true });\n"
    "  const MapCtor = Map;\n"
    "  let timers = new MapCtor();\n"
    "  let seq = 0;\n"
    "  function setTimeout(fn, ms, ...args) {\n"
    "    if (typeof fn !== 'function') throw new TypeError('setTimeout expects a function');\n"
    "    let d = +ms;\n"
    "    if (!(d > 0)) d = 0;\n"
    "    const id = ++seq;\n"
    "    timers.set(id, { at: now() + d, fn, args });\n"
    "    return id;\n"
    "  }\n"
    "  function clearTimeout(id) { timers.delete(id); }\n"
    "  define(g, 'setTimeout', { value: setTimeout, writable: true, configurable: true });\n"
    "  define(g, 'clearTimeout', { value: clearTimeout, writable: true, configurable: true });\n"
    "  function fire(run) {\n"
    "    if (run === 2) { timers = new MapCtor(); return -1; }  // no script-writable method\n"
    "    if (run) {\n"
    "      const t = now(), due = [];\n"
    "      for (const [id, tm] of timers) if (tm.at <= t) due.push([id, tm]);\n"
    "      due.sort((a, b) => a[1].at - b[1].at || a[0] - b[0]);\n"
    "      for (const [id, tm] of due) if (timers.delete(id)) tm.fn(...tm.args);\n"
    "    }\n"
    "    let next = -1;\n"
    "    const t2 = now();\n"
    "    for (const tm of timers.values()) {\n"
    "      const d = max(0, tm.at - t2);\n"
    "      if (next < 0 || d < next) next = d;\n"
    "    }\n"
    "    return next < 0 ? -1 : ceil(next);\n"
    "  }\n"
    "  // `tools`: the granted functions behind a Proxy whose `get` (in C, so no script\n"
    "  // code runs in it) remembers where a missing tool was looked up\n"
    "  const ProxyCtor = Proxy;\n"
    "  function makeTools(target, get) {\n"
    "    return new ProxyCtor(target, { __proto__: null, get });\n"
    "  }\n"
    "  return [fire, from, makeTools];\n"
    "})\n";

static JSValue cb_log_fn(JSContext *ctx, JSValueConst this_val, int argc, JSValueConst *argv)
{
    int32_t level = 0;
    size_t n;
    const char *s;
    JSValue text;
    if (argc < 2 || JS_ToInt32(ctx, &level, argv[0]))
        return JS_UNDEFINED;
    text = JS_DupValue(ctx, argv[1]);
    if (g_io.log_cap > 0 && string_length(text) > (uint32_t)g_io.log_cap) {
        /* over the cap whatever it holds: copy only enough for the host to say so */
        JSValue cut = string_prefix(ctx, text, (uint32_t)g_io.log_cap + 1);
        JS_FreeValue(ctx, text);
        if (JS_IsException(cut))
            return JS_EXCEPTION;
        text = cut;
    }
    s = JS_ToCStringLen(ctx, &n, text);
    JS_FreeValue(ctx, text);
    if (!s)
        return JS_EXCEPTION;
    host_log(level, s, (int32_t)n);
    JS_FreeCString(ctx, s);
    return JS_UNDEFINED;
}

/* ---------- tools: each binding is an async function on the frozen global `tools` ---------- */

/* The script frames on the stack now, innermost first (C functions are skipped). */
static void capture_call_site(JSContext *ctx, CallFrame *where)
{
    JSStackFrame *sf;
    int n = 0;
    for (sf = ctx->rt->current_stack_frame; sf != NULL && n < CALL_FRAMES; sf = sf->prev_frame) {
        JSObject *p;
        JSFunctionBytecode *b;
        if (JS_VALUE_GET_TAG(sf->cur_func) != JS_TAG_OBJECT || !sf->cur_pc)
            continue;
        p = JS_VALUE_GET_OBJ(sf->cur_func);
        if (!js_class_has_bytecode(p->class_id))
            continue;
        b = p->u.func.function_bytecode;
        where[n].func = JS_DupValue(ctx, sf->cur_func);
        where[n].pc = (uint32_t)(sf->cur_pc - b->byte_code_buf - 1);
        n++;
    }
    for (; n < CALL_FRAMES; n++)
        where[n].func = JS_UNDEFINED;
}

static void free_call_site(JSContext *ctx, CallFrame *where)
{
    int i;
    for (i = 0; i < CALL_FRAMES; i++) {
        JS_FreeValue(ctx, where[i].func);
        where[i].func = JS_UNDEFINED;
    }
}

/* "    at f (script.js:3:17)\n..." for the frames of a call, as QuickJS writes stacks. */
static JSValue call_site_stack(JSContext *ctx, CallFrame *where)
{
    char buf[CALL_FRAMES * 160];
    size_t len = 0;
    int i;
    buf[0] = 0;
    for (i = 0; i < CALL_FRAMES && !JS_IsUndefined(where[i].func); i++) {
        JSObject *p = JS_VALUE_GET_OBJ(where[i].func);
        JSFunctionBytecode *b = p->u.func.function_bytecode;
        const char *name = get_func_name(ctx, where[i].func);
        const char *file = b->filename ? JS_AtomToCString(ctx, b->filename) : NULL;
        int col = 1, line = find_line_num(ctx, b, where[i].pc, &col);
        int m = snprintf(buf + len, sizeof buf - len, "    at %.60s (%.40s:%d:%d)\n",
                         name && name[0] ? name : "<anonymous>", file ? file : "<null>",
                         line, col);
        JS_FreeCString(ctx, name);
        JS_FreeCString(ctx, file);
        if (m < 0 || (size_t)m >= sizeof buf - len)
            break;
        len += (size_t)m;
    }
    return JS_NewStringLen(ctx, buf, len);
}

static int pending_push(int32_t id, JSValue funcs[2])
{
    if (g_npending == g_cap_pending) {
        int cap = g_cap_pending ? g_cap_pending * 2 : 16;
        Pending *np = realloc(g_pending, sizeof(Pending) * (size_t)cap);
        if (!np)
            host_abort(ABORT_MEMORY);
        g_pending = np;
        g_cap_pending = cap;
    }
    g_pending[g_npending].id = id;
    g_pending[g_npending].funcs[0] = funcs[0];
    g_pending[g_npending].funcs[1] = funcs[1];
    capture_call_site(g_ctx, g_pending[g_npending].where);
    g_npending++;
    return 0;
}

static void settle(JSContext *ctx, JSValue funcs[2], int ok, JSValue v)
{
    JSValue r = JS_Call(ctx, funcs[ok ? 0 : 1], JS_UNDEFINED, 1, (JSValueConst *)&v);
    JS_FreeValue(ctx, r);
    JS_FreeValue(ctx, v);
    JS_FreeValue(ctx, funcs[0]);
    JS_FreeValue(ctx, funcs[1]);
}

static JSValue cb_tool_call(JSContext *ctx, JSValueConst this_val, int argc, JSValueConst *argv,
                            int magic, JSValueConst *data)
{
    JSValue funcs[2], promise, json, exc;
    const char *s;
    size_t n;
    int32_t id;

    promise = JS_NewPromiseCapability(ctx, funcs);
    if (JS_IsException(promise))
        return promise;
    if (argc < 1 || JS_IsUndefined(argv[0]))
        json = JS_NewString(ctx, "null");
    else
        json = JS_JSONStringify(ctx, argv[0], JS_UNDEFINED, JS_UNDEFINED);
    if (JS_IsException(json)) {
        exc = JS_GetException(ctx);
        if (JS_IsUncatchableError(exc) || g_interrupted) {
            JS_FreeValue(ctx, funcs[0]);
            JS_FreeValue(ctx, funcs[1]);
            JS_FreeValue(ctx, promise);
            return JS_Throw(ctx, exc);
        }
        settle(ctx, funcs, 0, exc);
        return promise;
    }
    if (!JS_IsString(json)) {
        JS_FreeValue(ctx, json);
        JS_ThrowTypeError(ctx, "tool arguments must be JSON data (an object, array, string, number, boolean or null)");
        settle(ctx, funcs, 0, JS_GetException(ctx));
        return promise;
    }
    s = JS_ToCStringLen(ctx, &n, json);
    JS_FreeValue(ctx, json);
    if (!s) {
        settle(ctx, funcs, 0, JS_GetException(ctx));
        return promise;
    }
    if (n > g_result_cap) {
        JS_FreeCString(ctx, s);
        JS_ThrowRangeError(ctx, "tool arguments are larger than the %zu-byte limit", g_result_cap);
        exc = JS_GetException(ctx);
        note_binding_error(ctx, exc, KIND_OUTPUT); /* uncaught, it is an output cap */
        settle(ctx, funcs, 0, exc);
        return promise;
    }
    id = ++g_call_seq;
    pending_push(id, funcs);
    {
        int32_t r = host_call(id, magic, s, (int32_t)n);
        JS_FreeCString(ctx, s);
        if (r > 0 && r <= INLINE_CAP - 1) /* answered at once */
            settle_call(ctx, id, (unsigned char)g_inline[0], g_inline + 1, r - 1);
    }
    return promise;
}

/* The line of the innermost script frame on the stack now (0 if there is none). */
static int current_script_line(JSContext *ctx)
{
    JSStackFrame *sf;
    for (sf = ctx->rt->current_stack_frame; sf != NULL; sf = sf->prev_frame) {
        JSObject *p;
        JSFunctionBytecode *b;
        int col;
        if (JS_VALUE_GET_TAG(sf->cur_func) != JS_TAG_OBJECT || !sf->cur_pc)
            continue;
        p = JS_VALUE_GET_OBJ(sf->cur_func);
        if (!js_class_has_bytecode(p->class_id))
            continue;
        b = p->u.func.function_bytecode;
        return find_line_num(ctx, b, (uint32_t)(sf->cur_pc - b->byte_code_buf - 1), &col);
    }
    return 0;
}

/* The `get` trap of `tools`: the granted function, or undefined (and the name and
   line of the lookup remembered, to name the tool if calling it fails). */
static JSValue cb_tools_get(JSContext *ctx, JSValueConst this_val, int argc, JSValueConst *argv)
{
    JSAtom atom;
    JSValue v = JS_UNDEFINED;
    int has;
    if (argc < 2 || !JS_IsObject(argv[0]))
        return JS_UNDEFINED;
    atom = JS_ValueToAtom(ctx, argv[1]);
    if (atom == JS_ATOM_NULL)
        return JS_EXCEPTION;
    /* the target is a frozen object with a null prototype: no script code runs here */
    has = JS_HasProperty(ctx, argv[0], atom);
    if (has > 0)
        v = JS_GetProperty(ctx, argv[0], atom);
    else if (has == 0 && JS_IsString(argv[1])) {
        JS_FreeAtom(ctx, g_missing_atom);
        g_missing_atom = JS_DupAtom(ctx, atom);
        g_missing_line = current_script_line(ctx);
    }
    JS_FreeAtom(ctx, atom);
    return has < 0 ? JS_EXCEPTION : v;
}

static int install_tools(JSContext *ctx, const char *names, int32_t len)
{
    JSValue tools = JS_NewObjectProto(ctx, JS_NULL), global, proxy;
    int32_t pos = 0, index = 0;
    if (JS_IsException(tools))
        return -1;
    while (pos < len) {
        const char *name = names + pos;
        size_t nl = strnlen(name, (size_t)(len - pos));
        JSValue fn = JS_NewCFunctionData2(ctx, cb_tool_call, name, 1, index, 0, NULL);
        if (JS_IsException(fn) ||
            JS_DefinePropertyValueStr(ctx, tools, name, fn, JS_PROP_ENUMERABLE) < 0)
            return -1;
        pos += (int32_t)nl + 1;
        index++;
    }
    if (JS_FreezeObject(ctx, tools) < 0)
        return -1;
    {
        JSValue args[2];
        args[0] = tools;
        args[1] = JS_NewCFunction(ctx, cb_tools_get, "get", 3);
        proxy = JS_Call(ctx, g_make_tools, JS_UNDEFINED, 2, (JSValueConst *)args);
        JS_FreeValue(ctx, args[1]);
    }
    JS_FreeValue(ctx, tools);
    if (JS_IsException(proxy))
        return -1;
    global = JS_GetGlobalObject(ctx);
    JS_DefinePropertyValueStr(ctx, global, "tools", proxy, 0);
    JS_FreeValue(ctx, global);
    return 0;
}

/* ---------- driving a run ---------- */

static void reset_run_state(JSContext *ctx)
{
    int i;
    for (i = 0; i < g_npending; i++) {
        JS_FreeValue(ctx, g_pending[i].funcs[0]);
        JS_FreeValue(ctx, g_pending[i].funcs[1]);
        free_call_site(ctx, g_pending[i].where);
    }
    g_npending = 0;
    JS_FreeValue(ctx, g_main);
    g_main = JS_UNDEFINED;
    g_interrupted = 0;
    g_interrupt = 0; /* a flag set at the end of the last run must not stop this one */
    JS_FreeAtom(ctx, g_missing_atom);
    g_missing_atom = JS_ATOM_NULL;
    g_missing_line = 0;
    g_io.pending = 0;
    g_io.next_timer_ms = -1;
}

static int32_t next_timer(JSContext *ctx, int run, JSValue *exc)
{
    JSValue arg = JS_NewBool(ctx, run);
    JSValue r = JS_Call(ctx, g_timers, JS_UNDEFINED, 1, (JSValueConst *)&arg);
    int32_t ms = -1;
    if (JS_IsException(r)) {
        *exc = JS_GetException(ctx);
        return -2;
    }
    JS_ToInt32(ctx, &ms, r);
    JS_FreeValue(ctx, r);
    return ms;
}

static int32_t cb_step(JSContext *ctx)
{
    for (;;) {
        JSContext *jctx;
        JSValue exc = JS_UNDEFINED;
        int r;
        int32_t ms;
        while ((r = JS_ExecutePendingJob(g_rt, &jctx)) != 0) {
            if (r < 0)
                return finish_error(ctx, JS_GetException(ctx), 0);
        }
        switch (JS_PromiseState(ctx, g_main)) {
        case JS_PROMISE_FULFILLED: {
            JSValue box = JS_PromiseResult(ctx, g_main);
            JSValue v = JS_GetPropertyStr(ctx, box, "value");
            int32_t st;
            JS_FreeValue(ctx, box);
            if (JS_IsException(v))
                return finish_error(ctx, JS_GetException(ctx), 0);
            st = finish_value(ctx, v);
            JS_FreeValue(ctx, v);
            return st;
        }
        case JS_PROMISE_REJECTED:
            return finish_error(ctx, JS_PromiseResult(ctx, g_main), 0);
        default:
            break;
        }
        ms = next_timer(ctx, 0, &exc);
        if (ms == -2)
            return finish_error(ctx, exc, 0);
        g_io.pending = g_npending;
        g_io.next_timer_ms = ms;
        if (g_npending > 0 || ms > 0)
            return ST_WAIT;
        if (ms < 0) {
            if (g_interrupted || g_interrupt) /* a promise lost to the deadline's interrupt */
                return finish_interrupted(ctx);
            return finish_message("runtime", "Error",
                                  "the script awaits a promise that nothing can settle: "
                                  "no tool call or timer is pending");
        }
        ms = next_timer(ctx, 1, &exc);
        if (ms == -2)
            return finish_error(ctx, exc, 0);
    }
}

CB_EXPORT("cb_init")
int32_t cb_init(int32_t stack_size)
{
    JSValue glue, fn, arr;
    g_rt = JS_NewRuntime2(&cb_malloc_funcs, NULL);
    if (!g_rt)
        return 1;
    JS_SetMaxStackSize(g_rt, (size_t)stack_size);
    JS_SetInterruptHandler(g_rt, cb_interrupt_handler, NULL);
    JS_SetCanBlock(g_rt, false);
    g_ctx = JS_NewContext(g_rt);
    if (!g_ctx)
        return 2;
    glue = JS_Eval(g_ctx, glue_src, sizeof glue_src - 1, "<clambot>", JS_EVAL_TYPE_GLOBAL | JS_EVAL_FLAG_STRICT);
    if (JS_IsException(glue))
        return 3;
    fn = JS_NewCFunction(g_ctx, cb_log_fn, "log", 2);
    arr = JS_Call(g_ctx, glue, JS_UNDEFINED, 1, (JSValueConst *)&fn);
    JS_FreeValue(g_ctx, fn);
    JS_FreeValue(g_ctx, glue);
    if (JS_IsException(arr))
        return 4;
    g_timers = JS_GetPropertyInt64(g_ctx, arr, 0);
    g_to_list = JS_GetPropertyInt64(g_ctx, arr, 1);
    g_make_tools = JS_GetPropertyInt64(g_ctx, arr, 2);
    {
        JSValue sym = JS_NewSymbol(g_ctx, "clambot.kind", false);
        g_kind_atom = JS_ValueToAtom(g_ctx, sym);
        JS_FreeValue(g_ctx, sym);
    }
    JS_FreeValue(g_ctx, arr);
    g_io.next_timer_ms = -1;
    g_io.inline_ptr = (int32_t)(uintptr_t)g_inline;
    g_io.inline_cap = INLINE_CAP;
    return 0;
}

CB_EXPORT("cb_alloc") void *cb_alloc(int32_t n) { return malloc((size_t)n); }
CB_EXPORT("cb_free") void cb_free(void *p) { free(p); }
CB_EXPORT("cb_io") CbIo *cb_io(void) { return &g_io; }
CB_EXPORT("cb_interrupt_addr") volatile int32_t *cb_interrupt_addr(void) { return &g_interrupt; }

/* A script compiled with JS_EVAL_FLAG_ASYNC ends with
       object; dup; get_loc _ret_; put_field "value"; return_async
   so its promise resolves to {value: <last expression>}, an ordinary object: a script
   that puts a `then` on Object.prototype would capture that promise (and a `value`
   setter the value) after the script itself has ended. The same bytes become
       special_object NULL_PROTO; get_loc _ret_; define_field "value"; return_async
   (same length, one stack slot less at the peak): a box with no prototype and an own
   data property, which nothing of the script can reach. */
static void box_the_result_safely(JSValueConst fn)
{
    JSFunctionBytecode *b;
    uint8_t *code, loc[3];
    int ret = -1, i, pos, nloc;
    uint32_t atom;
    if (JS_VALUE_GET_TAG(fn) != JS_TAG_FUNCTION_BYTECODE)
        return;
    b = JS_VALUE_GET_PTR(fn);
    for (i = 0; i < b->var_count; i++)
        if (b->vardefs[i].var_name == JS_ATOM__ret_)
            ret = i;
    if (ret < 0)
        return;
    if (ret < 4) { /* the short forms the compiler emits */
        loc[0] = (uint8_t)(OP_get_loc0 + ret);
        nloc = 1;
    } else if (ret < 256) {
        loc[0] = OP_get_loc8;
        loc[1] = (uint8_t)ret;
        nloc = 2;
    } else {
        loc[0] = OP_get_loc;
        loc[1] = (uint8_t)ret;
        loc[2] = (uint8_t)(ret >> 8);
        nloc = 3;
    }
    code = b->byte_code_buf;
    for (pos = 0; pos < b->byte_code_len; pos += short_opcode_info(code[pos]).size) {
        if (pos + 2 + nloc + 5 > b->byte_code_len || code[pos] != OP_object ||
            code[pos + 1] != OP_dup || memcmp(code + pos + 2, loc, (size_t)nloc) ||
            code[pos + 2 + nloc] != OP_put_field)
            continue;
        memcpy(&atom, code + pos + 3 + nloc, 4);
        if (atom != JS_ATOM_value)
            continue;
        code[pos] = OP_special_object;
        code[pos + 1] = OP_SPECIAL_OBJECT_NULL_PROTO;
        code[pos + 2 + nloc] = OP_define_field;
    }
}

/* Everything a run needs before its script: this run's limits and seed, the timers of
   a previous run (in a session) dropped, `tools` installed on the first run of this
   instance. Returns -1 when ready, else the state to return (an error record). */
static int32_t begin_run(const char *names, int32_t names_len, int32_t mem_limit,
                         int32_t result_cap, int32_t stack_size, int64_t seed)
{
    JSContext *ctx = g_ctx;
    reset_run_state(ctx);
    g_mem_limit = mem_limit > 0 ? (size_t)mem_limit : SIZE_MAX;
    g_result_cap = result_cap > 0 ? (size_t)result_cap : (1u << 20);
    ctx->random_state = seed ? (uint64_t)seed : 1;
    JS_SetMaxStackSize(g_rt, (size_t)stack_size);
    JS_UpdateStackTop(g_rt);
    if (g_runs++ > 0) {
        /* a session's next run: timers left by the previous run are dropped */
        JSValue arg = JS_NewInt32(ctx, 2), r = JS_Call(ctx, g_timers, JS_UNDEFINED, 1, &arg);
        if (JS_IsException(r))
            return finish_error(ctx, JS_GetException(ctx), 0);
        JS_FreeValue(ctx, r);
    }
    if (!g_tools_installed) {
        if (install_tools(ctx, names, names_len))
            return finish_error(ctx, JS_GetException(ctx), 0);
        g_tools_installed = 1;
    }
    return -1;
}

/* buf holds the tool names (NUL-separated, names_len bytes; installed on the first
   run of this instance) followed by the code (len bytes and a NUL). */
CB_EXPORT("cb_eval")
int32_t cb_eval(const char *buf, int32_t names_len, int32_t len, int32_t mem_limit,
                int32_t result_cap, int32_t stack_size, int64_t seed)
{
    JSContext *ctx = g_ctx;
    JSValue r;
    int32_t st = begin_run(buf, names_len, mem_limit, result_cap, stack_size, seed);
    if (st >= 0)
        return st;
    r = JS_Eval(ctx, buf + names_len, (size_t)len, "script.js",
                JS_EVAL_TYPE_GLOBAL | JS_EVAL_FLAG_ASYNC | JS_EVAL_FLAG_COMPILE_ONLY);
    if (JS_IsException(r))
        return finish_error(ctx, JS_GetException(ctx), 1);
    box_the_result_safely(r);
    r = JS_EvalFunction(ctx, r);
    if (JS_IsException(r))
        return finish_error(ctx, JS_GetException(ctx), 0);
    g_main = r;
    return cb_step(ctx);
}

/* ---------- compiled scripts: compile once, keep the bytecode, start it again ----------
 *
 * cb_eval in two halves, so the host can keep a script's bytecode and skip parsing
 * the next time: cb_compile (or cb_load) prepares the run and leaves the script's
 * function in g_compiled (state READY); cb_start then runs it exactly as JS_Eval
 * would (JS_Eval is compile + JS_EvalFunction on the global object).
 *
 * QuickJS's bytecode reader trusts its input (hostile bytes can corrupt the heap), so
 * the host hands cb_load only bytes that cb_compile of this same guest build gave it
 * in this process, before any script ran in that instance, and checks them first.
 */

static JSValue g_compiled = JS_UNDEFINED; /* the compiled script, until cb_start */
static uint8_t *g_bytecode;               /* the bytecode cb_compile wrote, until cb_start */

static void drop_compiled(JSContext *ctx)
{
    JS_FreeValue(ctx, g_compiled);
    g_compiled = JS_UNDEFINED;
    if (g_bytecode) {
        js_free(ctx, g_bytecode);
        g_bytecode = NULL;
    }
}

/* cb_eval's arguments, and `keep`: write the bytecode out. READY: the bytecode is in
   the output (empty if not kept or it could not be written: the script still starts,
   it is just not kept); ERROR: the error record (a syntax error, say). */
CB_EXPORT("cb_compile")
int32_t cb_compile(const char *buf, int32_t names_len, int32_t len, int32_t mem_limit,
                   int32_t result_cap, int32_t stack_size, int64_t seed, int32_t keep)
{
    JSContext *ctx = g_ctx;
    size_t size = 0;
    int32_t st;
    drop_compiled(ctx);
    st = begin_run(buf, names_len, mem_limit, result_cap, stack_size, seed);
    if (st >= 0)
        return st;
    g_compiled = JS_Eval(ctx, buf + names_len, (size_t)len, "script.js",
                         JS_EVAL_TYPE_GLOBAL | JS_EVAL_FLAG_ASYNC | JS_EVAL_FLAG_COMPILE_ONLY);
    if (JS_IsException(g_compiled)) {
        g_compiled = JS_UNDEFINED;
        return finish_error(ctx, JS_GetException(ctx), 1);
    }
    g_bytecode = keep ? JS_WriteObject(ctx, &size, g_compiled, JS_WRITE_OBJ_BYTECODE) : NULL;
    if (!g_bytecode) {
        clear_exception(ctx);
        size = 0;
    }
    g_io.out_ptr = (int32_t)(uintptr_t)g_bytecode;
    g_io.out_len = (int32_t)size;
    g_io.mem_used = (int32_t)g_mem_used;
    return ST_READY;
}

/* buf holds the tool names (names_len bytes) followed by bytecode from cb_compile
   (len bytes); the other arguments as cb_eval. READY, or ERROR if it cannot be read. */
CB_EXPORT("cb_load")
int32_t cb_load(const char *buf, int32_t names_len, int32_t len, int32_t mem_limit,
                int32_t result_cap, int32_t stack_size, int64_t seed)
{
    JSContext *ctx = g_ctx;
    JSValue fn;
    int32_t st;
    drop_compiled(ctx);
    st = begin_run(buf, names_len, mem_limit, result_cap, stack_size, seed);
    if (st >= 0)
        return st;
    fn = JS_ReadObject(ctx, (const uint8_t *)buf + names_len, (size_t)len, JS_READ_OBJ_BYTECODE);
    if (JS_IsException(fn))
        return finish_error(ctx, JS_GetException(ctx), 0);
    if (JS_VALUE_GET_TAG(fn) != JS_TAG_FUNCTION_BYTECODE) {
        JS_FreeValue(ctx, fn);
        return finish_message("internal", "InternalError", "the bytecode is not a script");
    }
    g_compiled = fn;
    g_io.out_len = 0;
    g_io.mem_used = (int32_t)g_mem_used;
    return ST_READY;
}

/* Run the script cb_compile or cb_load prepared. args_len >= 0: the JSON at `args`
   (args_len bytes and a NUL) becomes the global `args` first. DONE / ERROR / WAIT as
   cb_eval. */
CB_EXPORT("cb_start")
int32_t cb_start(const char *args, int32_t args_len)
{
    JSContext *ctx = g_ctx;
    JSValue fn = g_compiled, r;
    g_compiled = JS_UNDEFINED;
    drop_compiled(ctx);
    JS_UpdateStackTop(g_rt);
    if (JS_IsUndefined(fn))
        return finish_message("internal", "InternalError", "no compiled script to start");
    if (args_len >= 0) {
        JSValue v = JS_ParseJSON(ctx, args, (size_t)args_len, "<args>"), global;
        int ok;
        if (JS_IsException(v)) {
            JS_FreeValue(ctx, fn);
            return finish_error(ctx, JS_GetException(ctx), 0);
        }
        global = JS_GetGlobalObject(ctx);
        ok = JS_DefinePropertyValueStr(ctx, global, "args", v,
                                       JS_PROP_WRITABLE | JS_PROP_CONFIGURABLE);
        JS_FreeValue(ctx, global);
        if (ok < 0) {
            JS_FreeValue(ctx, fn);
            return finish_error(ctx, JS_GetException(ctx), 0);
        }
    }
    box_the_result_safely(fn); /* loaded bytecode too: the box is made safe here */
    r = JS_EvalFunction(ctx, fn);
    if (JS_IsException(r))
        return finish_error(ctx, JS_GetException(ctx), 0);
    g_main = r;
    return cb_step(ctx);
}

/* Remember an error made for a tool call, so that left uncaught it ends the run with
   its own kind (binding_failed, binding_denied, output_limit) rather than runtime. */
static void note_binding_error(JSContext *ctx, JSValueConst err, int kind)
{
    if (JS_IsObject(err) && g_kind_atom != JS_ATOM_NULL)
        JS_DefinePropertyValue(ctx, err, g_kind_atom, JS_NewInt32(ctx, kind), 0);
}

/* Settle the pending call `id` (unknown ids are ignored); p[len] must be NUL. */
static void settle_call(JSContext *ctx, int32_t id, int32_t status, const char *p, int32_t len)
{
    JSValue funcs[2], v;
    CallFrame where[CALL_FRAMES];
    int i;
    for (i = g_npending - 1; i >= 0; i--)
        if (g_pending[i].id == id)
            break;
    if (i < 0)
        return;
    funcs[0] = g_pending[i].funcs[0];
    funcs[1] = g_pending[i].funcs[1];
    memcpy(where, g_pending[i].where, sizeof where);
    g_pending[i] = g_pending[--g_npending];
    if (status == RESOLVE_OK) {
        v = JS_ParseJSON(ctx, p, (size_t)len, "<tool result>");
        if (JS_IsException(v)) {
            settle(ctx, funcs, 0, JS_GetException(ctx));
        } else {
            settle(ctx, funcs, 1, v);
        }
    } else {
        /* the payload is "<call>\0<message>": `call` names the call
           (tools.x({...})) and becomes the error's `call` property; the message is
           set whole (the Throw* helpers cut at 255 bytes), and the stack is where the
           script made the call, whenever the answer arrives */
        const char *nul = memchr(p, 0, (size_t)len);
        int32_t clen = nul ? (int32_t)(nul - p) : 0, mstart = nul ? clen + 1 : 0;
        if (status == RESOLVE_BAD_ARGS)
            JS_ThrowTypeError(ctx, "tool call failed");
        else if (status == RESOLVE_TOO_LARGE)
            JS_ThrowRangeError(ctx, "tool call failed");
        else
            JS_ThrowPlainError(ctx, "tool call failed");
        v = JS_GetException(ctx);
        JS_DefinePropertyValueStr(ctx, v, "message",
                                  JS_NewStringLen(ctx, p + mstart, (size_t)(len - mstart)),
                                  JS_PROP_WRITABLE | JS_PROP_CONFIGURABLE);
        if (clen > 0)
            JS_DefinePropertyValueStr(ctx, v, "call", JS_NewStringLen(ctx, p, (size_t)clen),
                                      JS_PROP_WRITABLE | JS_PROP_CONFIGURABLE);
        JS_DefinePropertyValueStr(ctx, v, "stack", call_site_stack(ctx, where),
                                  JS_PROP_WRITABLE | JS_PROP_CONFIGURABLE);
        note_binding_error(ctx, v, status == RESOLVE_DENIED ? KIND_BINDING_DENIED
                                   : status == RESOLVE_TOO_LARGE ? KIND_OUTPUT
                                   : KIND_BINDING_FAILED);
        settle(ctx, funcs, 0, v);
    }
    free_call_site(ctx, where);
}

CB_EXPORT("cb_resolve")
int32_t cb_resolve(int32_t id, int32_t status, const char *p, int32_t len)
{
    JS_UpdateStackTop(g_rt);
    settle_call(g_ctx, id, status, p, len);
    return cb_step(g_ctx);
}

CB_EXPORT("cb_timers")
int32_t cb_timers(void)
{
    JSValue exc = JS_UNDEFINED;
    JS_UpdateStackTop(g_rt);
    if (next_timer(g_ctx, 1, &exc) == -2)
        return finish_error(g_ctx, exc, 0);
    return cb_step(g_ctx);
}
