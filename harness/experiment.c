/* experiment.c - reading and validating experiment files; see experiment.h. */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../base/kv_error.h"
#include "../datasets/chat.h"
#include "../datasets/dataset.h"
#include "../datasets/longbench.h"
#include "../datasets/ruler.h"
#include "../datasets/template.h"
#include "../engine/dtype.h"
#include "../engine/kernels.h"
#include "../metrics/longbench.h"
#include "experiment.h"
#include "paths.h"
#include "tasks.h"

/* The kinds' names, default templates and the templates they read are the
 * kind table's (tasks.c). */
const char *hx_task_kind_name(hx_task_kind k) { return hx_task_kind_get(k)->name; }

/* ---------------------------------------------------------------- parsing state */

typedef enum sect_kind { S_NONE, S_EXPERIMENT, S_MODEL, S_TASK, S_POLICY, S_SWEEP } sect_kind;

typedef struct parse_state {
    hx_experiment *e;
    FILE *f;
    int line;        /* line the reader returned last */
    char *buf;       /* the line read whole (getline) */
    size_t buf_cap;
    char *long_value; /* the value of a line too long for inih's buffer (see reader) */
    sect_kind sect;  /* the section being read */
    int idx;         /* its index in the model/task/policy arrays */
    int rc;          /* first error */
    /* the sweep's lists, resolved once every section is read */
    char *sweep_models, *sweep_tasks, *sweep_policies, *sweep_budgets;
    int line_models, line_tasks, line_policies, line_budgets, line_sweep;
    int have_experiment;
} parse_state;

static int fail(parse_state *st, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(parse_state *st, int line, const char *fmt, ...) {
    if (st->rc) return st->rc;
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    st->rc = kv_errorf(KV_EINVAL, "%s:%d: %s", st->e->path, line, msg);
    return st->rc;
}

char *hx_expand_env(const char *s, const char **missing) {
    static _Thread_local char miss[128];
    size_t cap = strlen(s) + 1, n = 0;
    char *out = malloc(cap);
    if (!out) return NULL;
    for (const char *p = s; *p;) {
        const char *val = NULL;
        size_t vlen = 0, skip = 1;
        if (p[0] == '$' && (p[1] == '{' || isalpha((unsigned char)p[1]) || p[1] == '_')) {
            const char *b = p + 1 + (p[1] == '{'), *q = b;
            while (isalnum((unsigned char)*q) || *q == '_') q++;
            if (p[1] == '{' && *q != '}') {
                val = p; vlen = 1; /* not a variable: copy the '$' */
            } else {
                snprintf(miss, sizeof miss, "%.*s", (int)(q - b), b);
                val = getenv(miss);
                if (!val) {
                    free(out);
                    if (missing) *missing = miss;
                    return NULL;
                }
                vlen = strlen(val);
                skip = (size_t)(q - p) + (p[1] == '{');
            }
        } else {
            val = p;
            vlen = 1;
        }
        if (n + vlen + 1 > cap) {
            while (n + vlen + 1 > cap) cap *= 2;
            char *b = realloc(out, cap);
            if (!b) { free(out); return NULL; }
            out = b;
        }
        memcpy(out + n, val, vlen);
        n += vlen;
        p += skip;
    }
    out[n] = 0;
    return out;
}

/* Reads an int in [lo, hi]. */
static int get_int(parse_state *st, const char *sect, const char *key, const char *v, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi)
        return fail(st, st->line, "[%s] %s: expected an integer in %ld..%ld, got '%s'", sect, key, lo, hi, v);
    *out = (int)x;
    return 0;
}

static int get_bool(parse_state *st, const char *sect, const char *key, const char *v, int *out) {
    if (!strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "on") || !strcmp(v, "1")) *out = 1;
    else if (!strcmp(v, "no") || !strcmp(v, "false") || !strcmp(v, "off") || !strcmp(v, "0")) *out = 0;
    else return fail(st, st->line, "[%s] %s: expected yes or no, got '%s'", sect, key, v);
    return 0;
}

/* A comma-separated list of integers in [lo, hi]. */
static int get_int_list(parse_state *st, const char *sect, const char *key, const char *v, long lo, long hi,
                        int32_t *out, int *n) {
    *n = 0;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", v);
    char *save = NULL;
    for (char *t = strtok_r(buf, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        if (*n == HX_MAX_ITEMS) return fail(st, st->line, "[%s] %s: at most %d values", sect, key, HX_MAX_ITEMS);
        int x = 0;
        if (get_int(st, sect, key, t, lo, hi, &x)) return st->rc;
        out[(*n)++] = x;
    }
    if (!*n) return fail(st, st->line, "[%s] %s: expected a list of integers", sect, key);
    return 0;
}

static int set_str(parse_state *st, char **dst, const char *v, const char *sect, const char *key) {
    if (*dst) return fail(st, st->line, "[%s] %s: given twice", sect, key);
    const char *missing = NULL;
    *dst = hx_expand_env(v, &missing);
    if (!*dst) {
        if (missing) return fail(st, st->line, "[%s] %s: environment variable $%s is not set", sect, key, missing);
        return fail(st, st->line, "out of memory");
    }
    return 0;
}

/* ------------------------------------------------------------ budgets */

int hx_parse_budgets(const char *s, pol_budget *out, int max, int *n) {
    *n = 0;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", s);
    char *save = NULL;
    for (char *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        while (*item == ' ') item++;
        size_t l = strlen(item);
        while (l && item[l - 1] == ' ') item[--l] = 0;
        char *dots = strstr(item, "..");
        if (!dots) {
            if (*n == max) return kv_errorf(KV_EINVAL, "at most %d budgets", max);
            if (pol_budget_parse(item, &out[*n])) return KV_EINVAL;
            (*n)++;
            continue;
        }
        /* A range: "A..B step S" in one convention (all percentages or all tokens). */
        *dots = 0;
        char *rest = dots + 2, *step = strstr(rest, "step");
        if (!step) return kv_errorf(KV_EINVAL, "budget range '%s..%s': expected 'A..B step S'", item, rest);
        *step = 0;
        step += 4;
        pol_budget a, b, st;
        char *ta = item, *tb = rest, *ts = step;
        while (*tb == ' ') tb++;
        for (char *e = tb + strlen(tb); e > tb && e[-1] == ' ';) *--e = 0;
        while (*ts == ' ') ts++;
        if (pol_budget_parse(ta, &a) || pol_budget_parse(tb, &b) || pol_budget_parse(ts, &st)) return KV_EINVAL;
        if (a.kind != b.kind || a.kind != st.kind || a.kind == POL_BUDGET_NONE)
            return kv_errorf(KV_EINVAL, "budget range '%s..%s step %s': the three must be all percentages or all token counts",
                             ta, tb, ts);
        if (b.value < a.value || st.value <= 0)
            return kv_errorf(KV_EINVAL, "budget range '%s..%s step %s': expected A <= B and a positive step", ta, tb, ts);
        for (int k = 0;; k++) {
            double v = a.value + k * st.value;
            if (v > b.value + 1e-9) break;
            if (*n == max) return kv_errorf(KV_EINVAL, "at most %d budgets", max);
            out[*n] = a;
            out[*n].value = a.kind == POL_BUDGET_FRACTION ? round(v * 1e6) / 1e6 : v;
            (*n)++;
        }
    }
    if (*n == 0) return kv_errorf(KV_EINVAL, "empty budget list");
    return KV_OK;
}

/* -------------------------------------------------------------- sections */

static int find_name(char *const *names, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(names[i], name)) return i;
    return -1;
}

/* Called by the reader for each "[...]" line, so that sections without keys
 * exist too and every section knows its line. */
static void on_section(parse_state *st, const char *text) {
    hx_experiment *e = st->e;
    char name[256];
    const char *rb = strchr(text, ']');
    size_t n = rb ? (size_t)(rb - text - 1) : strlen(text + 1);
    if (n >= sizeof name) n = sizeof name - 1;
    memcpy(name, text + 1, n);
    name[n] = 0;
    char kind[32] = "", label[200] = "";
    int got = sscanf(name, "%31s %199s", kind, label);
    st->sect = S_NONE;
    if (!strcmp(kind, "experiment") && got == 1) {
        if (st->have_experiment) { fail(st, st->line, "[experiment] given twice"); return; }
        st->have_experiment = 1;
        st->sect = S_EXPERIMENT;
    } else if (!strcmp(kind, "sweep") && got == 1) {
        if (st->line_sweep) { fail(st, st->line, "[sweep] given twice"); return; }
        st->line_sweep = st->line;
        st->sect = S_SWEEP;
    } else if ((!strcmp(kind, "model") || !strcmp(kind, "task") || !strcmp(kind, "policy")) && got == 2) {
        char *names[HX_MAX_ITEMS];
        int count, *cnt;
        if (kind[0] == 'm') { cnt = &e->n_models; for (int i = 0; i < *cnt; i++) names[i] = e->model[i].name; }
        else if (kind[0] == 't') { cnt = &e->n_tasks; for (int i = 0; i < *cnt; i++) names[i] = e->task[i].name; }
        else { cnt = &e->n_policies; for (int i = 0; i < *cnt; i++) names[i] = e->policy[i].label; }
        count = *cnt;
        if (find_name(names, count, label) >= 0) { fail(st, st->line, "[%s %s] defined twice", kind, label); return; }
        if (count == HX_MAX_ITEMS) { fail(st, st->line, "at most %d %s sections", HX_MAX_ITEMS, kind); return; }
        char *dup = strdup(label);
        if (!dup) { fail(st, st->line, "out of memory"); return; }
        st->idx = count;
        (*cnt)++;
        if (kind[0] == 'm') {
            st->sect = S_MODEL;
            e->model[count] = (hx_model_def){.name = dup, .line = st->line};
        } else if (kind[0] == 't') {
            st->sect = S_TASK;
            e->task[count] = (hx_task_def){.name = dup, .line = st->line, .kind = -1, .max_new_tokens = 64, .context_buffer = -1, .needle_scorer = -1,
                                           .fidelity = 1, .per_cell = 1, .chunk = 1, .curve_bucket = 64};
        } else {
            st->sect = S_POLICY;
            e->policy[count] = (hx_policy_def){.label = dup, .line = st->line};
        }
    } else {
        fail(st, st->line, "unknown section [%s]: expected [experiment], [model NAME], [task NAME], [policy NAME] or [sweep]", name);
    }
}

/* A value as inih leaves it: an inline comment (';' after whitespace) cut
 * off, surrounding whitespace trimmed. In place. */
static char *ini_value(char *v) {
    for (char *p = v; *p; p++)
        if (*p == ';' && p > v && (p[-1] == ' ' || p[-1] == '\t')) {
            *p = 0;
            break;
        }
    while (*v == ' ' || *v == '\t') v++;
    size_t n = strlen(v);
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == '\r' || v[n - 1] == '\n')) v[--n] = 0;
    return v;
}

#define LONG_VALUE "\x01" /* stands for st->long_value in what inih is handed */

/* inih's stream reader, reading each line whole: Debian's libinih reads
 * into a 200-byte buffer and would take the rest of a longer line for a
 * line of its own (the tail of a long comment becoming a real setting). A
 * long comment is handed on as an empty one; a long `key = value` as
 * `key = LONG_VALUE`, its value kept aside for the handler. A NUL byte is
 * an error, not a silent cut. */
static char *reader(char *buf, int size, void *user) {
    parse_state *st = user;
    if (st->rc) return NULL;
    ssize_t n = getline(&st->buf, &st->buf_cap, st->f);
    if (n < 0) return NULL;
    st->line++;
    if (memchr(st->buf, 0, (size_t)n)) {
        fail(st, st->line, "a NUL byte at column %d (expected text)", (int)((char *)memchr(st->buf, 0, (size_t)n) - st->buf) + 1);
        return NULL;
    }
    const char *p = st->buf;
    while (*p == ' ' || *p == '\t') p++;
    if (*p == '[') on_section(st, p);
    if (n < size) return memcpy(buf, st->buf, (size_t)n + 1);
    if (*p == ';' || *p == '#') return strcpy(buf, ";\n");
    const char *eq = strchr(p, '=');
    size_t klen = eq ? (size_t)(eq - p) : 0;
    if (*p == '[' || !eq || klen + sizeof LONG_VALUE + 3 > (size_t)size) {
        fail(st, st->line, *p == '[' ? "a section header of %d bytes (expected a short [kind NAME])"
                                     : "a line of %d bytes that is not 'key = value' with a short key", (int)n);
        return NULL;
    }
    free(st->long_value);
    if (!(st->long_value = strdup(eq + 1))) {
        fail(st, st->line, "out of memory");
        return NULL;
    }
    memmove(st->long_value, ini_value(st->long_value), strlen(ini_value(st->long_value)) + 1);
    snprintf(buf, (size_t)size, "%.*s= " LONG_VALUE "\n", (int)klen, p);
    return buf;
}

#define SECT_NAME(buf, kind, label) (snprintf(buf, sizeof buf, "%s%s%s", kind, label ? " " : "", label ? label : ""), buf)

/* chat = auto, none, or a family kvbench renders (named with its list). */
static int check_chat(parse_state *st, const char *sn, const char *value) {
    if (!strcmp(value, "auto") || !strcmp(value, "none")) return 0;
    const ds_chat_family *f;
    if (ds_chat_resolve(value, NULL, &f)) return fail(st, st->line, "[%s] chat: %s", sn, kv_last_error());
    return 0;
}

/* The needle task's keys (datasets/needle.c); 1 when `key` is one of them. */
static int needle_key(parse_state *st, hx_task_def *t, const char *sn, const char *key, const char *value) {
    if (!strcmp(key, "needle_protocol")) {
        if (!strcmp(value, "kvbench")) t->needle_protocol = DS_NEEDLE_KVBENCH;
        else if (!strcmp(value, "kvcache-factory")) t->needle_protocol = DS_NEEDLE_FACTORY;
        else fail(st, st->line, "[%s] needle_protocol: expected kvbench or kvcache-factory, got '%s'", sn, value);
    } else if (!strcmp(key, "needle")) set_str(st, &t->needle_text, value, sn, key);
    else if (!strcmp(key, "needle_question")) set_str(st, &t->needle_question, value, sn, key);
    else if (!strcmp(key, "needle_answer")) set_str(st, &t->needle_answer, value, sn, key);
    else if (!strcmp(key, "depth_intervals")) get_int(st, sn, key, value, 1, HX_MAX_ITEMS, &t->depth_intervals);
    else if (!strcmp(key, "depth_spacing")) {
        if (!strcmp(value, "linear")) t->depth_sigmoid = 0;
        else if (!strcmp(value, "sigmoid")) t->depth_sigmoid = 1;
        else fail(st, st->line, "[%s] depth_spacing: expected linear or sigmoid, got '%s'", sn, value);
    } else if (!strcmp(key, "final_context_length_buffer")) get_int(st, sn, key, value, 0, 1 << 20, &t->context_buffer);
    else if (!strcmp(key, "needle_scorer")) {
        if (!strcmp(value, "contains")) t->needle_scorer = HX_NEEDLE_CONTAINS;
        else if (!strcmp(value, "rouge1")) t->needle_scorer = HX_NEEDLE_ROUGE1;
        else fail(st, st->line, "[%s] needle_scorer: expected contains or rouge1, got '%s'", sn, value);
    } else return 0;
    return 1;
}

/* longbench_task = one of LongBench v1's 21 datasets; those whose scorer
 * segments Chinese with jieba are refused by name (metrics/longbench.h):
 * kvbench does not implement jieba, and another segmentation would give
 * other numbers. */
static int check_longbench_task(parse_state *st, const char *sn, const char *value, hx_task_def *t) {
    const ds_lb_task *lt = ds_lb_task_find(value);
    if (!lt) {
        char names[1024] = "";
        for (int i = 0; i < ds_lb_task_count(); i++)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "", ds_lb_task_at(i)->name);
        return fail(st, st->line, "[%s] longbench_task: unknown LongBench task '%s' (expected one of %s)", sn, value, names);
    }
    const met_lb_task *mt = met_lb_task_find(value);
    if (!mt || met_lb_scorer_needs_jieba(mt->scorer))
        return fail(st, st->line, "[%s] longbench_task: %s is refused: its scorer %s segments Chinese with jieba, which "
                    "kvbench does not implement (docs/LONGBENCH.md)", sn, value, lt->scorer);
    return set_str(st, &t->longbench_task, value, sn, "longbench_task");
}

static int handler(void *user, const char *section, const char *key, const char *value) {
    (void)section;
    parse_state *st = user;
    hx_experiment *e = st->e;
    if (st->rc) return 0;
    if (!strcmp(value, LONG_VALUE) && st->long_value) value = st->long_value;
    char sn[256];
    switch (st->sect) {
    case S_NONE:
        fail(st, st->line, "key '%s' outside any known section", key);
        break;
    case S_EXPERIMENT:
        SECT_NAME(sn, "experiment", (char *)NULL);
        if (!strcmp(key, "name")) set_str(st, &e->name, value, sn, key);
        else if (!strcmp(key, "description")) set_str(st, &e->description, value, sn, key);
        else if (!strcmp(key, "mirrors")) set_str(st, &e->mirrors, value, sn, key);
        else if (!strcmp(key, "db")) set_str(st, &e->db, value, sn, key);
        else if (!strcmp(key, "threads")) get_int(st, sn, key, value, 0, 1024, &e->threads);
        else if (!strcmp(key, "bootstrap")) get_int(st, sn, key, value, 0, 1000000, &e->bootstrap);
        else if (!strcmp(key, "seed")) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(value, &end, 10);
            if (errno || end == value || *end || value[0] == '-') fail(st, st->line, "[experiment] seed: expected a non-negative integer, got '%s'", value);
            e->seed = s;
        } else fail(st, st->line, "[experiment] unknown key '%s' (expected name, description, mirrors, seed, db, threads, bootstrap)", key);
        break;
    case S_MODEL: {
        hx_model_def *m = &e->model[st->idx];
        SECT_NAME(sn, "model", m->name);
        if (!strcmp(key, "path")) set_str(st, &m->path, value, sn, key);
        else if (!strcmp(key, "tokenizer")) set_str(st, &m->tokenizer, value, sn, key);
        else if (!strcmp(key, "dtype")) {
            kv_dtype dt;
            if (kv_dtype_parse(value, &dt) || dt == KV_Q8_G)
                fail(st, st->line, "[%s] dtype: expected f32, f16, bf16, q8_0 or q4_0, got '%s'", sn, value);
            else set_str(st, &m->dtype, value, sn, key);
        } else if (!strcmp(key, "kv_type")) {
            if (kv_cache_type_parse(value, &m->kv_type))
                fail(st, st->line, "[%s] kv_type: expected f32, f16 or q8_0, got '%s'", sn, value);
        } else if (!strcmp(key, "kernels")) {
            kv_kernel_mode km;
            if (kv_kernel_mode_parse(value, &km))
                fail(st, st->line, "[%s] kernels: expected float or int8, got '%s'", sn, value);
            else set_str(st, &m->kernels, value, sn, key);
        } else if (!strcmp(key, "ctx_len")) get_int(st, sn, key, value, 16, 1 << 24, &m->ctx_len);
        else if (!strcmp(key, "rope_base") || !strcmp(key, "norm_eps")) {
            char *end;
            errno = 0;
            double x = strtod(value, &end);
            int eps = key[0] == 'n';
            if (errno || end == value || *end || !(x > 0) || x > (eps ? 1.0 : 1e12))
                fail(st, st->line, "[%s] %s: expected a number in (0, %s], got '%s'", sn, key, eps ? "1" : "1e12", value);
            else if (eps) m->norm_eps = (float)x;
            else m->rope_base = (float)x;
        } else if (!strcmp(key, "chat")) {
            if (check_chat(st, sn, value)) break;
            set_str(st, &m->chat, value, sn, key);
        } else if (!strcmp(key, "gelu")) {
            if (kv_gelu_parse(value, &m->gelu)) fail(st, st->line, "[%s] gelu: expected tanh or erf, got '%s'", sn, value);
        } else fail(st, st->line, "[%s] unknown key '%s' (expected path, tokenizer, dtype, kv_type, kernels, rope_base, ctx_len, norm_eps, gelu, chat)", sn, key);
        break;
    }
    case S_TASK: {
        hx_task_def *t = &e->task[st->idx];
        SECT_NAME(sn, "task", t->name);
        if (!strcmp(key, "kind")) {
            const hx_task_kind_info *ki = hx_task_kind_find(value);
            if (!ki) fail(st, st->line, "[%s] kind: unknown kind '%s' (expected %s)", sn, value, hx_task_kind_names());
            else t->kind = ki->kind;
        } else if (!strcmp(key, "data")) set_str(st, &t->data, value, sn, key);
        else if (!strcmp(key, "haystack")) set_str(st, &t->haystack, value, sn, key);
        else if (!strcmp(key, "ruler_task")) {
            if (!ds_ruler_task_find(value))
                fail(st, st->line, "[%s] ruler_task: unknown RULER task '%s' (niah_single_1/2/3, niah_multikey_1/2/3, "
                     "niah_multivalue, niah_multiquery, vt, cwe, fwe, qa_1, qa_2)", sn, value);
            else set_str(st, &t->ruler_task, value, sn, key);
        } else if (!strcmp(key, "qa_data")) set_str(st, &t->qa_data, value, sn, key);
        else if (!strcmp(key, "longbench_task")) check_longbench_task(st, sn, value, t);
        else if (!strcmp(key, "longbench_e")) get_bool(st, sn, key, value, &t->longbench_e);
        else if (!strcmp(key, "samples")) get_int(st, sn, key, value, 1, INT_MAX, &t->samples);
        else if (!strcmp(key, "template")) {
            if (!ds_template_find(value)) fail(st, st->line, "[%s] template: unknown template '%s' (see 'kvbench list templates')", sn, value);
            else set_str(st, &t->template_name, value, sn, key);
        } else if (!strcmp(key, "max_prompt_tokens")) get_int(st, sn, key, value, 1, 1 << 24, &t->max_prompt_tokens);
        else if (!strcmp(key, "max_new_tokens")) {
            get_int(st, sn, key, value, 0, 1 << 20, &t->max_new_tokens);
            t->max_new_set = 1;
        } else if (needle_key(st, t, sn, key, value)) {
            /* handled */
        } else if (!strcmp(key, "stop")) {
            t->stop_set = 1;
            if (!strcmp(value, "newline")) t->stop_newline = 1;
            else if (!strcmp(value, "eos")) t->stop_newline = 0;
            else fail(st, st->line, "[%s] stop: expected eos or newline, got '%s'", sn, value);
        } else if (!strcmp(key, "fidelity")) get_bool(st, sn, key, value, &t->fidelity);
        else if (!strcmp(key, "chat")) {
            if (!check_chat(st, sn, value)) set_str(st, &t->chat, value, sn, key);
        } else if (!strcmp(key, "system")) set_str(st, &t->system, value, sn, key);
        else if (!strcmp(key, "question")) {
            if (!strcmp(value, "in_prompt")) t->question_after = 0;
            else if (!strcmp(value, "after_compression")) t->question_after = 1;
            else fail(st, st->line, "[%s] question: expected in_prompt or after_compression, got '%s'", sn, value);
        }
        else if (!strcmp(key, "bad_rows")) {
            if (!strcmp(value, "skip")) t->bad_rows = DS_BAD_SKIP;
            else if (!strcmp(value, "fail")) t->bad_rows = DS_BAD_FAIL;
            else fail(st, st->line, "[%s] bad_rows: expected skip or fail, got '%s'", sn, value);
        } else if (!strcmp(key, "doc_field")) set_str(st, &t->doc_field, value, sn, key);
        else if (!strcmp(key, "ref_field")) set_str(st, &t->ref_field, value, sn, key);
        else if (!strcmp(key, "lengths")) get_int_list(st, sn, key, value, 16, 1 << 22, t->lengths, &t->n_lengths);
        else if (!strcmp(key, "depths")) get_int_list(st, sn, key, value, 0, 100, t->depths, &t->n_depths);
        else if (!strcmp(key, "per_cell")) get_int(st, sn, key, value, 1, 10000, &t->per_cell);
        else if (!strcmp(key, "tokens")) get_int(st, sn, key, value, 2, INT_MAX, &t->tokens);
        else if (!strcmp(key, "chunk")) get_int(st, sn, key, value, 1, 1 << 16, &t->chunk);
        else if (!strcmp(key, "min_chars")) get_int(st, sn, key, value, 0, INT_MAX, &t->min_chars);
        else if (!strcmp(key, "curve_bucket")) get_int(st, sn, key, value, 1, 1 << 20, &t->curve_bucket);
        else fail(st, st->line, "[%s] unknown key '%s' (expected kind, data, haystack, samples, template, max_prompt_tokens, max_new_tokens, stop, fidelity, question, chat, system, ruler_task, qa_data, longbench_task, longbench_e, bad_rows, doc_field, ref_field, lengths, depths, per_cell, tokens, chunk, min_chars, curve_bucket, needle_protocol, needle, needle_question, needle_answer, depth_intervals, depth_spacing, final_context_length_buffer, needle_scorer)", sn, key);
        break;
    }
    case S_POLICY: {
        hx_policy_def *p = &e->policy[st->idx];
        SECT_NAME(sn, "policy", p->label);
        if (!strcmp(key, "policy")) set_str(st, &p->policy, value, sn, key);
        else {
            if (p->n_settings == POL_MAX_PARAMS + 1) { fail(st, st->line, "[%s] too many parameters", sn); break; }
            size_t n = strlen(key) + strlen(value) + 2;
            char *kv = malloc(n);
            if (!kv) { fail(st, st->line, "out of memory"); break; }
            snprintf(kv, n, "%s=%s", key, value);
            p->setting_line[p->n_settings] = st->line;
            p->settings[p->n_settings++] = kv;
        }
        break;
    }
    case S_SWEEP:
        if (!strcmp(key, "models")) { set_str(st, &st->sweep_models, value, "sweep", key); st->line_models = st->line; }
        else if (!strcmp(key, "tasks")) { set_str(st, &st->sweep_tasks, value, "sweep", key); st->line_tasks = st->line; }
        else if (!strcmp(key, "policies")) { set_str(st, &st->sweep_policies, value, "sweep", key); st->line_policies = st->line; }
        else if (!strcmp(key, "budgets")) { set_str(st, &st->sweep_budgets, value, "sweep", key); st->line_budgets = st->line; }
        else fail(st, st->line, "[sweep] unknown key '%s' (expected models, tasks, policies, budgets)", key);
        break;
    }
    return st->rc == 0;
}

/* ----------------------------------------------------------- validation */

/* Counts the '|'-separated items of s. */
static int n_items(const char *s) {
    int n = 1;
    for (; *s; s++) n += *s == '|';
    return n;
}

/* A needle task's protocol defaults (KVCache-Factory's: its template,
 * 30 new tokens, a newline stop, the ROUGE-1 scorer) and the depth grid:
 * `depths`, or the tester's depth_intervals / depth_spacing. */
static int check_needle(parse_state *st, hx_task_def *t, const char *sn) {
    const int factory = t->needle_protocol == DS_NEEDLE_FACTORY;
    if (t->depth_intervals && t->n_depths)
        return fail(st, t->line, "[%s] depths and depth_intervals: give one", sn);
    if (t->depth_sigmoid && !t->depth_intervals)
        return fail(st, t->line, "[%s] depth_spacing = sigmoid: goes with depth_intervals", sn);
    if (!factory && t->context_buffer >= 0)
        return fail(st, t->line, "[%s] final_context_length_buffer: only the kvcache-factory protocol takes one", sn);
    if (t->needle_text && n_items(t->needle_text) > DS_MAX_NEEDLES)
        return fail(st, t->line, "[%s] needle: at most %d needles", sn, DS_MAX_NEEDLES);
    if (t->needle_answer && n_items(t->needle_answer) != (t->needle_text ? n_items(t->needle_text) : 1))
        return fail(st, t->line, "[%s] needle_answer: one answer per needle ('|'-separated)", sn);
    if (t->needle_text && n_items(t->needle_text) > 1 && !t->needle_answer)
        return fail(st, t->line, "[%s] needle_answer: required with several needles", sn);
    if (t->needle_scorer < 0) t->needle_scorer = factory ? HX_NEEDLE_ROUGE1 : HX_NEEDLE_CONTAINS;
    if (t->needle_scorer == HX_NEEDLE_ROUGE1 && t->needle_text && n_items(t->needle_text) > 1)
        return fail(st, t->line, "[%s] needle_scorer = rouge1: scores one needle; several are scored by contains", sn);
    if (factory) {
        if (t->context_buffer < 0) t->context_buffer = 200;
        if (!t->max_new_set) t->max_new_tokens = 30;
        if (!t->stop_set) t->stop_newline = 1;
        if (!t->template_name && !(t->template_name = strdup("needle-factory"))) return fail(st, t->line, "out of memory");
    }
    if (t->depth_intervals) {
        if (ds_needle_depths(t->depth_intervals, t->depth_sigmoid, t->needle_depths, HX_MAX_ITEMS))
            return fail(st, t->line, "[%s] %s", sn, kv_last_error());
        t->n_needle_depths = t->depth_intervals;
        t->n_depths = t->depth_intervals; /* the grid's cells, for counts and reports */
        for (int i = 0; i < t->n_depths; i++) t->depths[i] = (int32_t)lround(t->needle_depths[i]);
    } else {
        for (int i = 0; i < t->n_depths; i++) t->needle_depths[i] = t->depths[i];
        t->n_needle_depths = t->n_depths;
    }
    return 0;
}

static int file_exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

/* Resolves a comma-separated list of names (or "*" for all) into indexes. */
static int resolve_list(parse_state *st, const char *list, int line, const char *what, char *const *names, int n_names,
                        int *out, int *n_out) {
    *n_out = 0;
    if (!list) return fail(st, st->line_sweep, "[sweep] %s: missing (list the %s sections to run, or *)", what, what);
    if (!strcmp(list, "*")) {
        for (int i = 0; i < n_names; i++) out[(*n_out)++] = i;
        if (!n_names) return fail(st, line, "[sweep] %s: no sections defined", what);
        return 0;
    }
    char buf[2048];
    snprintf(buf, sizeof buf, "%s", list);
    char *save = NULL;
    for (char *t = strtok_r(buf, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        int k = find_name(names, n_names, t);
        if (k < 0) return fail(st, line, "[sweep] %s: '%s' is not defined by any section", what, t);
        for (int i = 0; i < *n_out; i++)
            if (out[i] == k) return fail(st, line, "[sweep] %s: '%s' listed twice", what, t);
        out[(*n_out)++] = k;
    }
    if (!*n_out) return fail(st, line, "[sweep] %s: empty list", what);
    return 0;
}

/* Whether policy pd's instances compress the prompt once: a parameter may
 * decide (knorm and random with schedule=prompt are one-shot, with
 * schedule=every_step not), so an instance is made with pd's settings
 * (already validated) and its flags read. */
static int policy_is_one_shot(const hx_policy_def *pd) {
    const kv_model_info mi = {.n_layers = 1, .n_kv_heads = 1, .n_heads = 1, .head_dim = 8, .dim = 8, .ctx_len = 512};
    const pol_budget b = {POL_BUDGET_TOKENS, 16};
    kv_policy *inst = NULL;
    if (pol_new(pd->policy, (const char *const *)pd->settings, pd->n_settings, &b, 0, &mi, &inst)) return 0;
    const int one_shot = pol_is_one_shot(inst);
    pol_free(inst);
    return one_shot;
}

int hx_task_data_path(const hx_task_def *t, char *buf, size_t cap) {
    char dp[4096];
    const char *p = hx_resolve_data(t->data, dp, sizeof dp);
    struct stat sb;
    if (t->kind == HX_TASK_LONGBENCH && stat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
        return ds_lb_data_path(p, ds_lb_task_find(t->longbench_task), t->longbench_e, buf, cap);
    if (snprintf(buf, cap, "%s", p) >= (int)cap) return kv_errorf(KV_EINVAL, "data path too long: %s", p);
    return KV_OK;
}

/* A longbench task names its LongBench dataset, reads its file (data = the
 * file, or a LongBench folder holding TASK.jsonl / TASK_e.jsonl), and
 * generates and stops as pred.py does: max_new_tokens defaults to the
 * task's dataset2maxlen, and stop is not a setting of it. */
static int validate_longbench(parse_state *st, const char *sn, hx_task_def *t) {
    if (t->kind != HX_TASK_LONGBENCH) {
        if (t->longbench_task) return fail(st, t->line, "[%s] longbench_task: only longbench tasks take one", sn);
        if (t->longbench_e) return fail(st, t->line, "[%s] longbench_e: only longbench tasks take it", sn);
        return 0;
    }
    if (!t->longbench_task) return fail(st, t->line, "[%s] longbench_task: missing (the LongBench dataset to run, e.g. multi_news)", sn);
    const ds_lb_task *lt = ds_lb_task_find(t->longbench_task);
    if (t->longbench_e && !lt->in_e) return fail(st, t->line, "[%s] longbench_e: LongBench-E has no %s", sn, lt->name);
    if (t->stop_set)
        return fail(st, t->line, "[%s] stop: a longbench task stops as LongBench's pred.py does (at EOS; samsum also at "
                    "its newline token)", sn);
    if (!t->max_new_set) t->max_new_tokens = lt->max_new_tokens;
    char path[4096];
    if (hx_task_data_path(t, path, sizeof path)) return fail(st, t->line, "[%s] data: %s", sn, kv_last_error());
    if (!file_exists(path))
        return fail(st, t->line, "[%s] data: '%s' not found (data = a LongBench folder holding %s%s.jsonl, or the file)",
                    sn, path, lt->name, t->longbench_e ? "_e" : "");
    return 0;
}

/* A relative path that is neither found as given nor under
 * $KVBENCH_MODELS is looked up beside the experiment file, so that a
 * shipped experiment can name a model shipped in the repository
 * (../models/probe/kvprobe.gguf) from any working directory. On success
 * *path becomes the joined path. */
static int model_beside_file(const hx_experiment *e, char **path) {
    char buf[4096];
    if (file_exists(hx_resolve_model(*path, buf, sizeof buf)) || (*path)[0] == '/') return KV_OK;
    const char *slash = strrchr(e->path, '/');
    const int dir = slash ? (int)(slash - e->path) : 1;
    if (snprintf(buf, sizeof buf, "%.*s/%s", dir, slash ? e->path : ".", *path) >= (int)sizeof buf) return KV_OK;
    if (!file_exists(buf)) return KV_OK;
    char *joined = strdup(buf);
    if (!joined) return kv_errorf(KV_ENOMEM, "out of memory");
    free(*path);
    *path = joined;
    return KV_OK;
}

static int validate(parse_state *st) {
    hx_experiment *e = st->e;
    if (!st->have_experiment) return fail(st, 1, "missing [experiment] section");
    if (!e->name) return fail(st, 1, "[experiment] name: missing");
    if (!st->line_sweep) return fail(st, st->line, "missing [sweep] section");
    char buf[4096];
    for (int i = 0; i < e->n_models; i++) {
        hx_model_def *m = &e->model[i];
        if (!m->path) return fail(st, m->line, "[model %s] path: missing", m->name);
        if (model_beside_file(e, &m->path)) return st->rc = KV_ENOMEM;
        if (!file_exists(hx_resolve_model(m->path, buf, sizeof buf)))
            return fail(st, m->line, "[model %s] path: '%s' not found (also looked under $KVBENCH_MODELS = %s and beside %s)",
                        m->name, m->path, hx_models_dir(), e->path);
        if (m->tokenizer && !file_exists(hx_resolve_model(m->tokenizer, buf, sizeof buf)))
            return fail(st, m->line, "[model %s] tokenizer: '%s' not found (also looked under $KVBENCH_MODELS = %s)", m->name, m->tokenizer, hx_models_dir());
    }
    for (int i = 0; i < e->n_tasks; i++) {
        hx_task_def *t = &e->task[i];
        char sn[256];
        snprintf(sn, sizeof sn, "task %s", t->name);
        if ((int)t->kind < 0) return fail(st, t->line, "[%s] kind: missing", sn);
        const int gen_ruler = t->kind == HX_TASK_RULER && t->ruler_task;
        if (t->ruler_task && t->kind != HX_TASK_RULER) return fail(st, t->line, "[%s] ruler_task: only ruler tasks take one", sn);
        if (gen_ruler && !t->n_lengths) return fail(st, t->line, "[%s] lengths: required to generate RULER task %s", sn, t->ruler_task);
        if (t->qa_data && !(gen_ruler && !strncmp(t->ruler_task, "qa_", 3)))
            return fail(st, t->line, "[%s] qa_data: only the generated RULER tasks qa_1 and qa_2 take one", sn);
        if (t->qa_data && !file_exists(hx_resolve_data(t->qa_data, buf, sizeof buf)))
            return fail(st, t->line, "[%s] qa_data: '%s' not found (also looked under $KVBENCH_DATA = %s)", sn, t->qa_data, hx_data_dir());
        int needs_data = t->kind != HX_TASK_PASSKEY && t->kind != HX_TASK_NEEDLE && !gen_ruler;
        if (needs_data && !t->data) return fail(st, t->line, "[%s] data: missing (a %s task reads a file)", sn, hx_task_kind_name(t->kind));
        if (!needs_data && t->data) return fail(st, t->line, "[%s] data: a %s task generates its prompts and reads no data file", sn, hx_task_kind_name(t->kind));
        if (t->data && !file_exists(hx_resolve_data(t->data, buf, sizeof buf)))
            return fail(st, t->line, "[%s] data: '%s' not found (also looked under $KVBENCH_DATA = %s)", sn, t->data, hx_data_dir());
        if (validate_longbench(st, sn, t)) return st->rc;
        if (t->kind == HX_TASK_NEEDLE) {
            if (!t->haystack) return fail(st, t->line, "[%s] haystack: missing (a folder of .txt files)", sn);
            if (!file_exists(hx_resolve_data(t->haystack, buf, sizeof buf)))
                return fail(st, t->line, "[%s] haystack: '%s' not found (also looked under $KVBENCH_DATA = %s)", sn, t->haystack, hx_data_dir());
        } else if (t->haystack) return fail(st, t->line, "[%s] haystack: only needle tasks take one", sn);
        if (t->kind == HX_TASK_NEEDLE && check_needle(st, t, sn)) return st->rc;
        else if (t->kind != HX_TASK_NEEDLE && (t->needle_text || t->needle_question || t->needle_answer ||
                                               t->depth_intervals || t->needle_protocol || t->context_buffer >= 0 ||
                                               t->needle_scorer >= 0))
            return fail(st, t->line, "[%s] needle settings: only needle tasks take them", sn);
        int grid = t->kind == HX_TASK_PASSKEY || t->kind == HX_TASK_NEEDLE;
        if (grid && (!t->n_lengths || !t->n_depths)) return fail(st, t->line, "[%s] lengths and depths: required for a %s task", sn, hx_task_kind_name(t->kind));
        if (!grid && t->n_depths) return fail(st, t->line, "[%s] depths: only passkey and needle tasks take them", sn);
        if (!grid && !gen_ruler && t->n_lengths) return fail(st, t->line, "[%s] lengths: only passkey, needle and generated ruler tasks take them", sn);
        if (!t->template_name) {
            t->template_name = strdup(hx_task_kind_get(t->kind)->template_dflt);
            if (!t->template_name) return fail(st, t->line, "out of memory");
        }
        const ds_template *tp = ds_template_find(t->template_name);
        const char *want = hx_task_kind_get(t->kind)->template_kind; /* NULL: any */
        if (want && strcmp(tp->kind, want) != 0)
            return fail(st, t->line, "[%s] template: '%s' is written for %s tasks, not %s", sn, t->template_name, tp->kind, hx_task_kind_name(t->kind));
        if (t->question_after && !tp->qsplit)
            return fail(st, t->line, "[%s] question = after_compression: template %s@%d has no question part to ask "
                        "after the context (templates with one: passkey, needle)", sn, tp->name, tp->version);
    }
    kv_model_info dummy = {.n_layers = 1, .n_kv_heads = 1, .n_heads = 1, .head_dim = 8, .dim = 8, .ctx_len = 512};
    for (int i = 0; i < e->n_policies; i++) {
        hx_policy_def *p = &e->policy[i];
        if (!p->policy && !(p->policy = strdup(p->label))) return fail(st, p->line, "out of memory");
        if (!pol_find(p->policy)) return fail(st, p->line, "[policy %s] policy: unknown policy '%s' (see 'kvbench list policies')", p->label, p->policy);
        pol_budget none = {POL_BUDGET_TOKENS, 16}; /* any budget: only the parameters are checked here */
        /* All settings together; when they fail, one setting more at a time,
         * so that the error names the line of the first key at fault (a
         * setting that needs a later one, prefill = streaming before chunk,
         * is no fault when the whole set holds). */
        kv_policy *inst = NULL;
        if (pol_new(p->policy, (const char *const *)p->settings, p->n_settings, &none, 0, &dummy, &inst) == KV_OK) {
            pol_free(inst);
            continue;
        }
        int chunk_later = 0; /* prefill = streaming is checked once its chunk is in */
        for (int k = p->n_settings - 1; k >= 0 && !chunk_later; k--) chunk_later = !strncmp(p->settings[k], "chunk=", 6);
        for (int k = 0; k <= p->n_settings; k++) {
            int waits = chunk_later && k > 0 && !strncmp(p->settings[k - 1], "prefill=", 8);
            if (pol_new(p->policy, (const char *const *)p->settings, k, &none, 0, &dummy, &inst)) {
                if (waits) continue;
                return fail(st, k ? p->setting_line[k - 1] : p->line, "[policy %s] %s", p->label, kv_last_error());
            }
            pol_free(inst);
            if (!strncmp(p->settings[k > 0 ? k - 1 : 0], "chunk=", 6)) chunk_later = 0;
        }
    }
    char *names[HX_MAX_ITEMS];
    for (int i = 0; i < e->n_models; i++) names[i] = e->model[i].name;
    if (resolve_list(st, st->sweep_models, st->line_models, "models", names, e->n_models, e->sweep_model, &e->n_sweep_models)) return st->rc;
    for (int i = 0; i < e->n_tasks; i++) names[i] = e->task[i].name;
    if (resolve_list(st, st->sweep_tasks, st->line_tasks, "tasks", names, e->n_tasks, e->sweep_task, &e->n_sweep_tasks)) return st->rc;
    for (int i = 0; i < e->n_policies; i++) names[i] = e->policy[i].label;
    if (resolve_list(st, st->sweep_policies, st->line_policies, "policies", names, e->n_policies, e->sweep_policy, &e->n_sweep_policies)) return st->rc;
    if (!st->sweep_budgets) return fail(st, st->line_sweep, "[sweep] budgets: missing (e.g. 20%%..90%% step 10%% or 128,256)");
    if (hx_parse_budgets(st->sweep_budgets, e->budget, HX_MAX_ITEMS, &e->n_budgets))
        return fail(st, st->line_budgets, "[sweep] budgets: %s", kv_last_error());
    /* A streaming task has no prompt to take a percentage of, nor one to
     * compress once. */
    for (int i = 0; i < e->n_sweep_tasks; i++) {
        hx_task_def *t = &e->task[e->sweep_task[i]];
        if (t->kind != HX_TASK_PERPLEXITY) continue;
        for (int k = 0; k < e->n_sweep_policies; k++) {
            const hx_policy_def *pd = &e->policy[e->sweep_policy[k]];
            if (policy_is_one_shot(pd))
                return fail(st, st->line_policies, "[sweep] policies: %s compresses a prompt once, and task %s streams its text without one",
                            pd->label, t->name);
        }
        for (int b = 0; b < e->n_budgets; b++)
            if (e->budget[b].kind == POL_BUDGET_FRACTION)
                return fail(st, st->line_budgets, "[sweep] budgets: task %s streams its text (no prompt), so budgets must be token counts", t->name);
    }
    return 0;
}

int hx_experiment_load(const char *path, hx_experiment *e) {
    memset(e, 0, sizeof *e);
    e->seed = 12345;
    e->bootstrap = 1000;
    parse_state st = {.e = e};
    if (!(e->path = strdup(path))) return kv_errorf(KV_ENOMEM, "out of memory");
    st.f = fopen(path, "r");
    if (!st.f) return kv_errorf(KV_EIO, "%s: cannot open: %s", path, strerror(errno));
    int r = ini_parse_stream(reader, &st, handler, &st);
    fclose(st.f);
    free(st.buf);
    free(st.long_value);
    if (!st.rc && r > 0) fail(&st, r, "expected 'key = value' or '[section]'");
    if (!st.rc && r < 0) st.rc = kv_errorf(KV_EIO, "%s: cannot read", path);
    if (!st.rc) validate(&st);
    if (!st.rc && !e->db && !(e->db = strdup("results/kvbench.db"))) st.rc = kv_errorf(KV_ENOMEM, "out of memory");
    free(st.sweep_models);
    free(st.sweep_tasks);
    free(st.sweep_policies);
    free(st.sweep_budgets);
    if (st.rc) hx_experiment_free(e);
    return st.rc;
}

void hx_experiment_free(hx_experiment *e) {
    free(e->path);
    free(e->name);
    free(e->description);
    free(e->mirrors);
    free(e->db);
    for (int i = 0; i < e->n_models; i++) {
        free(e->model[i].name);
        free(e->model[i].path);
        free(e->model[i].tokenizer);
        free(e->model[i].dtype);
        free(e->model[i].kernels);
        free(e->model[i].chat);
    }
    for (int i = 0; i < e->n_tasks; i++) {
        hx_task_def *t = &e->task[i];
        free(t->name);
        free(t->data);
        free(t->haystack);
        free(t->template_name);
        free(t->doc_field);
        free(t->ref_field);
        free(t->chat);
        free(t->system);
        free(t->ruler_task);
        free(t->longbench_task);
        free(t->qa_data);
        free(t->needle_text);
        free(t->needle_question);
        free(t->needle_answer);
    }
    for (int i = 0; i < e->n_policies; i++) {
        free(e->policy[i].label);
        free(e->policy[i].policy);
        for (int k = 0; k < e->policy[i].n_settings; k++) free(e->policy[i].settings[k]);
    }
    memset(e, 0, sizeof *e);
}
