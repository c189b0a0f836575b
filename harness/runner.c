/* runner.c - `kvbench run FILE`: expands an experiment's sweep and runs
 * every (model, task, sample, policy, budget) unit not yet stored, writing
 * each finished sample to the results database in its own transaction.
 *
 * Order: model, task, sample, then the sweep's (policy, budget) runs, so
 * that a model and a task's data are loaded once and the full cache's
 * reference output for a sample (for the fidelity metrics) is computed once
 * and reused by every compressed run of that sample. Units are numbered in
 * that order; `--shard I/N` takes the units whose number is I modulo N. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../datasets/dataset.h"
#include "../datasets/longbench.h"
#include "../datasets/template.h"
#include "../engine/context.h"
#include "../engine/dtype.h"
#include "../engine/export.h"
#include "../engine/kernels.h"
#include "../base/file.h"
#include "../base/hash.h"
#include "../base/kv_error.h"
#include "../engine/model.h"
#include "../metrics/kld.h"
#include "../metrics/stats.h"
#include "../policies/policy.h"
#include "../base/clock.h"
#include "chat_gguf.h"
#include "commands.h"
#include "driver.h"
#include "experiment.h"
#include "identity.h"
#include "opts.h"
#include "paths.h"
#include "prompt.h"
#include "resultsdb.h"
#include "tasks.h"


/* ------------------------------------------------------------ the sweep */

/* One run: a (model, task, policy, budget) cell. */
typedef struct run_cell {
    int model, task, policy; /* indexes into the experiment's arrays */
    pol_budget budget;
} run_cell;

/* --only filters: key=value pairs; the same key repeated means any of them. */
typedef struct only_filter {
    char key[16][16], val[16][64];
    int n;
} only_filter;

static int parse_only(const char *s, only_filter *f) {
    f->n = 0;
    if (!s) return 0;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", s);
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(t, '=');
        if (!eq || f->n == 16) {
            fprintf(stderr, "kvbench run: --only: expected key=value pairs (model, task, policy, budget), got '%s'\n", t);
            return -1;
        }
        *eq = 0;
        if (strcmp(t, "model") && strcmp(t, "task") && strcmp(t, "policy") && strcmp(t, "budget")) {
            fprintf(stderr, "kvbench run: --only: unknown key '%s' (expected model, task, policy or budget)\n", t);
            return -1;
        }
        snprintf(f->key[f->n], sizeof f->key[0], "%s", t);
        snprintf(f->val[f->n], sizeof f->val[0], "%s", eq + 1);
        f->n++;
    }
    return 0;
}

/* 1 if the value passes the filters on key (no filter on key passes). */
static int only_pass(const only_filter *f, const char *key, const char *v1, const char *v2) {
    int any = 0;
    for (int i = 0; i < f->n; i++) {
        if (strcmp(f->key[i], key)) continue;
        any = 1;
        if (!strcmp(f->val[i], v1) || (v2 && !strcmp(f->val[i], v2))) return 1;
    }
    return !any;
}

static int expand_sweep(const hx_experiment *e, const only_filter *f, run_cell **out, int *n_out) {
    int cap = e->n_sweep_models * e->n_sweep_tasks * e->n_sweep_policies * e->n_budgets + 1;
    run_cell *r = malloc((size_t)cap * sizeof *r);
    if (!r) return -1;
    int n = 0;
    for (int mi = 0; mi < e->n_sweep_models; mi++)
        for (int ti = 0; ti < e->n_sweep_tasks; ti++)
            for (int pi = 0; pi < e->n_sweep_policies; pi++) {
                int m = e->sweep_model[mi], t = e->sweep_task[ti], p = e->sweep_policy[pi];
                const hx_policy_def *pd = &e->policy[p];
                if (!only_pass(f, "model", e->model[m].name, NULL) || !only_pass(f, "task", e->task[t].name, NULL) ||
                    !only_pass(f, "policy", pd->label, pd->policy))
                    continue;
                int is_full = !strcmp(pd->policy, "full");
                for (int b = 0; b < (is_full ? 1 : e->n_budgets); b++) {
                    pol_budget bud = is_full ? (pol_budget){POL_BUDGET_NONE, 0} : e->budget[b];
                    char bs[32];
                    pol_budget_str(&bud, bs, sizeof bs);
                    if (!only_pass(f, "budget", bs, NULL)) continue;
                    r[n++] = (run_cell){m, t, p, bud};
                }
            }
    *out = r;
    *n_out = n;
    return 0;
}

/* llama-perplexity's --kl-divergence figures of one sample's teacher-forced
 * steps (order statistics over its steps; the report averages them over
 * samples, where llama.cpp pools the tokens of one text). */
static int put_kld(hx_metric_list *l, const met_kld *acc) {
    met_kld_summary s;
    int rc = met_kld_summarize(acc, &s);
    if (rc || s.count == 0) return rc;
    /* met_kld_kld_fractions: 99.9 99 95 90 10 5 1 0.1 % */
    static const struct { const char *name; int idx; } pct[] = {
        {"fid_kl_p999", 0}, {"fid_kl_p99", 1}, {"fid_kl_p10", 4}, {"fid_kl_p5", 5}, {"fid_kl_p1", 6}};
    hx_metric_put(l, "fid_kl_max", s.kld_max);
    for (size_t i = 0; i < sizeof pct / sizeof pct[0]; i++) hx_metric_put(l, pct[i].name, s.kld_pct[pct[i].idx]);
    hx_metric_put(l, "fid_kl_median", s.kld_median);
    hx_metric_put(l, "fid_kl_min", s.kld_min);
    hx_metric_put(l, "fid_dp_mean", s.dp);
    hx_metric_put(l, "fid_dp_rms", s.dp_rms);
    hx_metric_put(l, "fid_same_top", s.same_top);
    hx_metric_put(l, "fid_ln_ppl_ratio", s.ln_ratio);
    return KV_OK;
}

/* ---------------------------------------------------------- LongBench */

/* The run's tokenizer as LongBench's pred.py calls it: tokenizer(text)
 * with BOS as the run adds it, and decode(ids, skip_special_tokens=True). */
typedef struct lb_user {
    hx_tokbuf *tc;
    int bos;
} lb_user;

static int64_t lb_encode(void *user, const char *text, size_t len, const int32_t **ids) {
    lb_user *u = user;
    int64_t n = hx_tokbuf_encode(u->tc, text, len, u->bos);
    *ids = u->tc->buf;
    return n;
}

/* Hugging Face's decode(ids, skip_special_tokens=True): the special tokens
 * (control and unknown: BOS, EOS, <unk>) are dropped first, then the rest
 * is printed piece by piece, the first as after BOS (SentencePiece drops
 * its leading space; a space after a dropped token mid-text stays). */
static int lb_decode(void *user, const int32_t *ids, int64_t n, char **out, size_t *len) {
    const kv_tokenizer *tok = ((lb_user *)user)->tc->tok;
    int32_t prev = kv_tokenizer_bos(tok);
    size_t total = 0, k;
    for (int64_t i = 0; i < n; i++) {
        kv_tokenizer_piece(tok, prev, ids[i], &k);
        total += k + 1; /* a bound: a piece after BOS is never longer */
    }
    if (!(*out = malloc(total + 1))) return kv_errorf(KV_ENOMEM, "out of memory");
    *len = 0;
    for (int64_t i = 0; i < n; i++) {
        const int type = kv_tokenizer_token_type(tok, ids[i]);
        if (type == 2 || type == 3) continue; /* GGUF's unknown and control types */
        const char *p = kv_tokenizer_piece(tok, prev, ids[i], &k);
        memcpy(*out + *len, p, k);
        *len += k;
        prev = ids[i];
    }
    (*out)[*len] = 0;
    return KV_OK;
}

/* pred.py's extra end token for samsum: tokenizer.encode("\n",
 * add_special_tokens=False)[-1]; -1 for every other task. */
static int32_t longbench_stop_id(const hx_task_def *t, hx_tokbuf *tc) {
    const ds_lb_task *lt = t->kind == HX_TASK_LONGBENCH ? ds_lb_task_find(t->longbench_task) : NULL;
    if (!lt || !lt->newline_stop) return -1;
    int64_t n = hx_tokbuf_encode(tc, "\n", 1, 0);
    return n > 0 ? tc->buf[n - 1] : -1;
}

/* --------------------------------------------------------- one sample */

/* Where the question begins in a sample's prompt tokens (ids [n], the
 * rendered prompt tokenized once): the tokens of the context part alone,
 * as far as they agree with the prompt's own (a merge across the join is
 * left to the question), so that both protocols read the same tokens. */
static int question_split(hx_tokbuf *tc, const ds_sample *s, const hx_prompt *hp, int bos, const int32_t *ids,
                          int64_t n, int32_t *split) {
    int64_t m = hx_tokbuf_encode(tc, hp->text, hp->question_at, bos);
    if (m < 0) return (int)m;
    int64_t k = 0;
    while (k < m && k < n && tc->buf[k] == ids[k]) k++;
    if (k < 1 || k >= n)
        return kv_errorf(KV_EINVAL, "sample %s: the question leaves no context or no question tokens", s->id);
    *split = (int32_t)k;
    return KV_OK;
}

/* A model as the runner holds it: the driver's engine and what identifies
 * the runs made with it. */
typedef struct engine {
    hx_engine d;
    char model_hash[HX_IDENTITY_BUF];
    char model_path[4096];
    char tokenizer_path[4096]; /* the tokenizer given apart from the model ("" none) */
    char swa_note[320];        /* "/swa=W:layers" for models with sliding-window layers, else "" */
    kv_kernel_mode kernels;    /* the products' kernels this model runs with (set process-wide while it runs) */
} engine;

/* A perplexity task's curve: the mean NLL per bucket of positions. */
typedef struct nll_curve {
    int32_t *pos;
    double *nll;
    int n, bucket;
} nll_curve;

static void curve_add(void *user, int32_t pos, double nll) {
    nll_curve *c = user;
    c->nll[(pos - 1) / c->bucket] += nll;
}

/* Streaming perplexity: every token through one cache the policy keeps
 * within its budget; per-token NLL, bucketed into the curve. */
static int stream_ppl(engine *en, kv_policy *pol, const int32_t *ids, int32_t n, int chunk, int bucket, double *nll_out,
                      double *seconds, nll_curve *cv, hx_gen_result *g) {
    int nb = (n - 1 + bucket - 1) / bucket;
    cv->pos = malloc((size_t)nb * sizeof *cv->pos);
    cv->nll = calloc((size_t)nb, sizeof *cv->nll);
    cv->bucket = bucket;
    if (!cv->pos || !cv->nll) return kv_errorf(KV_ENOMEM, "out of memory");
    hx_nll_params np = {.chunk = chunk, .every = bucket, .on_nll = curve_add, .user = cv};
    int rc = hx_drv_stream_nll(&en->d, pol, ids, n, &np, nll_out, seconds, g);
    if (rc) return rc;
    for (int b = 0; b < nb; b++) {
        int32_t lo = b * bucket + 1, hi = (b + 1) * bucket < n - 1 ? (b + 1) * bucket : n - 1;
        cv->pos[b] = lo;
        cv->nll[b] /= (double)(hi - lo + 1);
    }
    cv->n = nb;
    return KV_OK;
}

/* ----------------------------------------------------------- progress */

typedef struct progress {
    int tty, quiet;
    long total, done, skipped;
    double t0, last;
} progress;

static void progress_show(progress *p, const char *what) {
    if (p->quiet) return;
    double t = kv_now_s(), el = t - p->t0;
    long work = p->done - p->skipped;
    double rate = el > 0 ? work / el : 0;
    long left = p->total - p->done;
    double eta = rate > 0 ? left / rate : 0;
    if (p->tty) {
        if (t - p->last < 0.1 && p->done < p->total) return;
        p->last = t;
        int w = 30, fill = p->total ? (int)(w * p->done / p->total) : w;
        char bar[64];
        for (int i = 0; i < w; i++) bar[i] = i < fill ? '#' : '.';
        bar[w] = 0;
        fprintf(stderr, "\r[%s] %ld/%ld  %.2f/s  left %d:%02d  %-40.40s", bar, p->done, p->total, rate,
                (int)(eta / 60), (int)eta % 60, what);
        if (p->done == p->total) fputc('\n', stderr);
    } else if (p->done == p->total || t - p->last >= 10 || p->last == 0) {
        /* not a terminal (a log file, a batch job): a line every 10 s */
        p->last = t;
        fprintf(stderr, "kvbench run: %ld/%ld %s (%.2f/s, about %.0f s left)\n", p->done, p->total, what, rate, eta);
    }
}

/* ------------------------------------------------------- interruption */

/* The first SIGINT or SIGTERM asks the sweep to stop after the unit in
 * flight, which is then stored whole; a second ends the process at once.
 * That is safe too: a sample is one SQLite transaction, and one cut short
 * is rolled back when the database is next opened. */
static volatile sig_atomic_t run_stop_signal;

static void run_on_signal(int sig) {
    if (run_stop_signal) {
        static const char now[] = "\nkvbench run: stopped at once; the sample in flight was not stored\n";
        if (write(2, now, sizeof now - 1) < 0) { /* nothing left to tell */ }
        _exit(128 + (run_stop_signal == SIGTERM || sig == SIGTERM ? SIGTERM : SIGINT));
    }
    run_stop_signal = sig;
    static const char msg[] = "\nkvbench run: stopping after the sample in flight (Ctrl-C again to stop at once)\n";
    if (write(2, msg, sizeof msg - 1) < 0) { /* the flag is what matters */ }
}

static void run_catch_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = run_on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART; /* a read or a lock wait goes on; the flag is checked between units */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* The command line again, to say how to resume. */
static void print_command(FILE *f, int argc, char **argv) {
    fprintf(f, "kvbench run");
    for (int i = 0; i < argc; i++) {
        if (argv[i][strcspn(argv[i], " \t'\"$\\;&|<>()*?")]) {
            fputs(" '", f);
            for (const char *c = argv[i]; *c; c++) fputs(*c == '\'' ? "'\\''" : (char[2]){*c, 0}, f);
            fputc('\'', f);
        } else
            fprintf(f, " %s", argv[i]);
    }
}

/* ---------------------------------------------------------------- run */

typedef struct run_state {
    hx_experiment *e;
    hx_db *db;
    run_cell *cells;
    int n_cells;
    int shard_i, shard_n;
    long unit;            /* units numbered so far (for sharding) */
    progress prog;
    long failed_budget;   /* samples whose cache exceeded the budget */
    long stored;          /* samples written by this run (the summary counts what was stored) */
    long others;          /* units claimed by other processes sharing the database */
    long raced;           /* units computed here but stored first by another process */
    long counted[HX_MAX_ITEMS][HX_MAX_ITEMS]; /* units per (model, task) already in prog.total */
    int dry;
    kv_kernel_mode kernels; /* KVBENCH_KERNELS's (float without it): a model's unless it names its own */
} run_state;

/* The chat template a (model, task) reads its prompts with: the task's
 * `chat`, else the model's, else none (prompts for base models stay plain). */
typedef struct chat_wrap {
    const ds_chat_family *family; /* NULL: the template's text as is */
    const char *system;
    int bos;                      /* add the tokenizer's BOS id (a ChatML wrap has none) */
    char name[48];                /* "llama3.1@1", or "none": in the run's spec */
    char *jinja;                  /* the model's template text, for what a family reads from it (Mistral v7
                                     Tekken's default system message); malloc'd or NULL */
} chat_wrap;

/* chat = auto: the template the model carries (a tokenizer folder's
 * tokenizer_config.json, else the GGUF's tokenizer.chat_template). */
static int chat_source(const engine *en, ds_chat_source *src) {
    char cfg[4200];
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", en->tokenizer_path);
    if (en->tokenizer_path[0] && access(cfg, R_OK) == 0) return ds_chat_source_config(cfg, src);
    /* a llama2.c checkpoint carries no template: none, not an error */
    return kv_model_get_info(en->d.model)->format == KV_FORMAT_GGUF ? hx_chat_source_gguf(en->model_path, src) : KV_OK;
}

static int chat_setup(const hx_experiment *e, int model, const hx_task_def *t, const engine *en, chat_wrap *cw) {
    memset(cw, 0, sizeof *cw);
    cw->bos = 1;
    cw->system = t->system;
    snprintf(cw->name, sizeof cw->name, "none");
    const char *set = t->chat ? t->chat : e->model[model].chat ? e->model[model].chat : "none";
    if (!strcmp(set, "none")) return KV_OK;
    ds_chat_source src = {0};
    int rc = chat_source(en, &src);
    if (rc && strcmp(set, "auto")) rc = KV_OK; /* a named family needs no template text */
    if (!rc) rc = ds_chat_resolve(set, src.jinja, &cw->family);
    cw->jinja = src.jinja; /* kept for the family (freed with the wrap) */
    src.jinja = NULL;
    ds_chat_source_free(&src);
    if (rc || !cw->family) return rc;
    cw->bos = ds_chat_bos(cw->family)[0] != 0;
    snprintf(cw->name, sizeof cw->name, "%s@%d", ds_chat_name(cw->family), ds_chat_version(cw->family));
    return KV_OK;
}

/* The canonical description of a run and its hash. */
static int run_identity(const run_state *rs, const engine *en, const run_cell *rc, const kv_policy *pol,
                        const chat_wrap *cw, char *spec, size_t cap, char *params, size_t pcap, hx_run_row *row) {
    const hx_experiment *e = rs->e;
    const hx_task_def *t = &e->task[rc->task];
    const ds_template *tp = ds_template_find(t->template_name);
    params[0] = 0;
    for (int i = 0; i < pol_n_params(pol); i++)
    {
        char v[64];
        snprintf(params + strlen(params), pcap - strlen(params), "%s%s=%s", i ? "," : "", pol_param_name(pol, i),
                 pol_param_str(pol, i, v, sizeof v));
    }
    char common[96];
    snprintf(params + strlen(params), pcap - strlen(params), "%s%s", pol_n_params(pol) ? "," : "",
             pol_common_str(pol, common, sizeof common));
    char bs[32], lens[512] = "", deps[512] = "";
    pol_budget_str(&rc->budget, bs, sizeof bs);
    for (int i = 0; i < t->n_lengths; i++) snprintf(lens + strlen(lens), sizeof lens - strlen(lens), "%d ", t->lengths[i]);
    for (int i = 0; i < t->n_depths; i++) snprintf(deps + strlen(deps), sizeof deps - strlen(deps), "%d ", t->depths[i]);
    int n = snprintf(spec, cap,
                     "kvbench-run/2 version=%s model_hash=%s arch=%g/%d/%g%s%s%s%s%s task_kind=%s data=%s haystack=%s template=%s@%d "
                     "max_prompt_tokens=%d max_new_tokens=%d stop_newline=%d fidelity=%d doc_field=%s ref_field=%s "
                     "lengths=%s depths=%s per_cell=%d tokens=%d chunk=%d min_chars=%d curve_bucket=%d question=%s chat=%s "
                     "system=[%s] ruler_task=%s qa_data=%s%s%s%s policy=%s params=%s budget=%s seed=%llu",
                     KVBENCH_VERSION, en->model_hash, (double)en->d.mi->rope_base, en->d.mi->ctx_len, (double)en->d.mi->norm_eps,
                     /* MPT's GELU, only when not the default (other runs' ids unchanged) */
                     en->d.mi->arch == KV_ARCH_MPT && en->d.mi->gelu == KV_GELU_ERF ? "/gelu=erf" : "",
                     /* sliding-window layers, for the report (absent otherwise: other runs' ids unchanged) */
                     en->swa_note,
                     /* the cache's storage, only when not f32 (other runs' ids unchanged) */
                     en->d.kv_type != KV_CACHE_F32 ? "/kv_type=" : "",
                     en->d.kv_type != KV_CACHE_F32 ? kv_cache_type_name(en->d.kv_type) : "",
                     /* int8 kernels, only when chosen (other runs' ids unchanged) */
                     en->kernels == KV_KERNELS_INT8 ? "/kernels=int8" : "",
                     hx_task_kind_name(t->kind), t->data ? t->data : "",
                     t->haystack ? t->haystack : "", tp->name, tp->version, t->max_prompt_tokens, t->max_new_tokens,
                     t->stop_newline, t->fidelity, t->doc_field ? t->doc_field : "", t->ref_field ? t->ref_field : "",
                     lens, deps, t->per_cell, t->tokens, t->chunk, t->min_chars, t->curve_bucket,
                     t->question_after ? "after_compression" : "in_prompt", cw->name, cw->system ? cw->system : "",
                     t->ruler_task ? t->ruler_task : "", t->qa_data ? t->qa_data : "",
                     /* LongBench's task, only for longbench runs (other runs' ids unchanged) */
                     t->kind == HX_TASK_LONGBENCH ? " longbench_task=" : "",
                     t->kind == HX_TASK_LONGBENCH ? t->longbench_task : "",
                     t->kind == HX_TASK_LONGBENCH && t->longbench_e ? "/e" : "", pol_name(pol), params, bs,
                     (unsigned long long)e->seed);
    if (n < 0 || (size_t)n >= cap) return kv_errorf(KV_EINVAL, "run description too long");
    /* a needle task's protocol, when not kvbench's defaults (other runs' ids unchanged) */
    if (t->kind == HX_TASK_NEEDLE && (t->needle_protocol || t->needle_text || t->needle_question || t->needle_answer ||
                                      t->depth_intervals || t->needle_scorer != HX_NEEDLE_CONTAINS)) {
        char depths[1024] = "";
        for (int i = 0; i < t->n_needle_depths; i++)
            snprintf(depths + strlen(depths), sizeof depths - strlen(depths), "%s%.3f", i ? "," : "", t->needle_depths[i]);
        int m = snprintf(spec + n, cap - (size_t)n, " needle=%s/buffer=%d/scorer=%s/depths=%s/[%s]/[%s]/[%s]",
                         t->needle_protocol == DS_NEEDLE_FACTORY ? "kvcache-factory" : "kvbench", t->context_buffer,
                         t->needle_scorer == HX_NEEDLE_ROUGE1 ? "rouge1" : "contains", depths,
                         t->needle_text ? t->needle_text : "", t->needle_question ? t->needle_question : "",
                         t->needle_answer ? t->needle_answer : "");
        if (m < 0 || (size_t)m >= cap - (size_t)n) return kv_errorf(KV_EINVAL, "run description too long");
    }
    uint64_t h = kv_fnv1a64(KV_FNV1A64_INIT, spec, strlen(spec));
    snprintf(row->id, sizeof row->id, "%016llx", (unsigned long long)h);
    return KV_OK;
}

/* One run of a task: its cell, policy instance and identity. */
typedef struct task_run {
    run_cell *cell;
    kv_policy *pol;
    hx_run_row row;
    char spec[4096], params[1024], budget[32], template_name[96];
    hx_ctx_snap snap; /* question = after_compression: the last context compressed */
} task_run;

/* A (model, task) pair being run: what all its samples and runs share. */
typedef struct task_ctx {
    run_state *rs;
    engine *en;
    int model, task;
    hx_task_def *t;
    const hx_task_kind_info *ki;
    int stream;              /* the kind streams a text (perplexity): no prompt, no generation */
    hx_tokbuf tc;
    ds_set set;
    chat_wrap cw;
    const ds_template *tp;
    lb_user lbu;
    ds_lb_codec lbc;         /* the tokenizer as LongBench's pred.py calls it */
    int32_t stop_id;         /* LongBench's extra end token, or -1 */
    int max_prompt;
    task_run *tr;            /* [n_runs] */
    int n_runs;
    int *todo;               /* the runs of the sample in hand that are ours to do */
    hx_ctx_snap after;       /* a policy's state right after a prompt, for its fidelity run */
} task_ctx;

/* One sample: its prompt, rendered and truncated once for every run. */
typedef struct sample_ctx {
    ds_sample *s;
    int si;
    int n_todo, need_ref;
    hx_prompt hp;
    int32_t *ids;
    int64_t n_prompt;
    int max_new;
    int32_t q_split;         /* question = after_compression: where it begins */
    hx_gen_result ref;          /* the full cache's run (fidelity), or empty */
} sample_ctx;

/* Keeps the first `keep` samples of a set (a generated set may be larger than asked). */
static void set_truncate(ds_set *set, int keep) {
    if (keep <= 0 || set->n <= keep) return;
    for (int i = keep; i < set->n; i++) {
        ds_sample *s = &set->s[i];
        free(s->id);
        free(s->reference);
        for (int f = 0; f < s->n_fields; f++) free(s->field[f].name), free(s->field[f].value);
    }
    set->n = keep;
}

/* The task's chat wrap, samples, template, tokenizer views and prompt length. */
static int task_open(task_ctx *tk) {
    const hx_task_def *t = tk->t;
    engine *en = tk->en;
    tk->tc.tok = en->d.tok;
    if (chat_setup(tk->rs->e, tk->model, t, en, &tk->cw)) {
        fprintf(stderr, "kvbench run: task %s on model %s: %s\n", t->name, tk->rs->e->model[tk->model].name,
                kv_last_error());
        return -1;
    }
    hx_task_env env = {.t = t, .tb = &tk->tc, .seed = tk->rs->e->seed};
    if (tk->ki->load(&env, &tk->set)) {
        fprintf(stderr, "kvbench run: task %s: %s\n", t->name, kv_last_error());
        return -1;
    }
    set_truncate(&tk->set, t->samples);
    tk->tp = ds_template_find(t->template_name);
    tk->lbu = (lb_user){&tk->tc, tk->cw.bos};
    /* SentencePiece decodes per byte */
    tk->lbc = (ds_lb_codec){lb_encode, lb_decode, &tk->lbu, !kv_tokenizer_byte_level(en->d.tok)};
    tk->stop_id = longbench_stop_id(t, &tk->tc);
    tk->max_prompt = t->max_prompt_tokens;
    if (tk->max_prompt <= 0) tk->max_prompt = en->d.mi->ctx_len - t->max_new_tokens - 1;
    if (tk->max_prompt < 8) tk->max_prompt = 8;
    return 0;
}

static void task_close(task_ctx *tk) {
    for (int k = 0; k < tk->n_runs; k++) {
        pol_free(tk->tr[k].pol);
        hx_snap_free(&tk->tr[k].snap);
    }
    hx_snap_free(&tk->after);
    free(tk->cw.jinja);
    free(tk->tr);
    free(tk->todo);
    ds_set_free(&tk->set);
    free(tk->tc.buf);
}

/* A policy's settings for this task: the experiment's, after `steps` = the
 * task's generation length for a policy with a schedule over the new
 * tokens (Keyformer's tau) when the experiment does not set it. */
static int policy_settings(const hx_policy_def *pd, const hx_task_def *t, const char **set, char *steps, size_t cap) {
    int n_set = 0, has_steps = 0, given = 0;
    const pol_ops *ops = pol_find(pd->policy);
    for (int i = 0; ops && i < pol_ops_n_params(ops); i++) has_steps |= !strcmp(pol_ops_param(ops, i)->name, "steps");
    for (int i = 0; i < pd->n_settings; i++) given |= !strncmp(pd->settings[i], "steps=", 6);
    if (has_steps && !given && t->max_new_tokens > 0) {
        snprintf(steps, cap, "steps=%d", t->max_new_tokens);
        set[n_set++] = steps;
    }
    for (int i = 0; i < pd->n_settings; i++) set[n_set++] = pd->settings[i];
    return n_set;
}

/* Run k of the task: its policy instance, identity and row, stored unless dry. */
static int open_run(task_ctx *tk, task_run *tr, run_cell *c) {
    const hx_experiment *e = tk->rs->e;
    const hx_policy_def *pd = &e->policy[c->policy];
    const char *set[POL_MAX_PARAMS + 2];
    char steps[48];
    int n_set = policy_settings(pd, tk->t, set, steps, sizeof steps);
    tr->cell = c;
    if (pol_new(pd->policy, set, n_set, &c->budget, e->seed, tk->en->d.mi, &tr->pol) ||
        pol_check_model(tr->pol, tk->en->d.model) ||
        run_identity(tk->rs, tk->en, c, tr->pol, &tk->cw, tr->spec, sizeof tr->spec, tr->params, sizeof tr->params,
                     &tr->row)) {
        fprintf(stderr, "kvbench run: policy %s: %s\n", pd->label, kv_last_error());
        return -1;
    }
    pol_budget_str(&c->budget, tr->budget, sizeof tr->budget);
    snprintf(tr->template_name, sizeof tr->template_name, "%s@%d", tk->tp->name, tk->tp->version);
    hx_run_row *r = &tr->row;
    r->model = e->model[tk->model].name;
    r->model_path = tk->en->model_path;
    r->model_hash = tk->en->model_hash;
    r->task = tk->t->name;
    r->task_kind = tk->ki->name;
    r->data = tk->t->data ? tk->t->data : tk->t->haystack;
    r->template_name = tr->template_name;
    r->policy_label = pd->label;
    r->policy = pd->policy;
    r->params = tr->params;
    r->budget = tr->budget;
    r->budget_kind = c->budget.kind;
    r->budget_value = c->budget.value;
    r->seed = e->seed;
    r->max_prompt_tokens = tk->max_prompt;
    r->max_new_tokens = tk->t->max_new_tokens;
    r->spec = tr->spec;
    if (!tk->rs->dry && hx_db_put_run(tk->rs->db, e->name, r)) {
        fprintf(stderr, "kvbench run: %s\n", kv_last_error());
        return -1;
    }
    return 0;
}

/* This task's runs, their policies and identities. */
static int open_runs(task_ctx *tk) {
    run_state *rs = tk->rs;
    tk->tr = calloc((size_t)rs->n_cells, sizeof *tk->tr);
    tk->todo = calloc((size_t)rs->n_cells, sizeof *tk->todo);
    if (!tk->tr || !tk->todo) {
        fprintf(stderr, "kvbench run: out of memory\n");
        return -1;
    }
    for (int i = 0; i < rs->n_cells; i++) {
        run_cell *c = &rs->cells[i];
        if (c->model != tk->model || c->task != tk->task) continue;
        if (open_run(tk, &tk->tr[tk->n_runs++], c)) return -1;
    }
    return 0;
}

/* Which of the sample's units are ours (this shard's) and not yet stored:
 * claimed here, or counted as stored or as another process's. */
static int claim_units(task_ctx *tk, sample_ctx *sc) {
    run_state *rs = tk->rs;
    for (int k = 0; k < tk->n_runs; k++) {
        long unit = rs->unit++;
        if (rs->shard_n > 1 && unit % rs->shard_n != rs->shard_i) continue;
        int have = hx_db_claim(rs->db, tk->tr[k].row.id, sc->s->id);
        if (have < 0) {
            fprintf(stderr, "kvbench run: %s\n", kv_last_error());
            return -1;
        }
        if (have != HX_CLAIM_OURS) {
            rs->prog.done++;
            if (have == HX_CLAIM_STORED) rs->prog.skipped++;
            else rs->others++;
            continue;
        }
        tk->todo[sc->n_todo++] = k;
        if (tk->t->fidelity && strcmp(pol_name(tk->tr[k].pol), "full") != 0 && !tk->stream) sc->need_ref = 1;
    }
    return 0;
}

/* The sample's tokens into tk->tc.buf: a stream's document, or its
 * prompt rendered (with the chat wrap) and cut to max_prompt. Returns the
 * count or < 0. */
static int64_t render_prompt(task_ctx *tk, sample_ctx *sc) {
    const hx_task_def *t = tk->t;
    if (tk->stream) {
        const char *doc = ds_sample_field(sc->s, "document");
        int64_t n = hx_tokbuf_encode(&tk->tc, doc, strlen(doc), 1);
        return n >= 0 && t->tokens > 0 && n > t->tokens ? t->tokens : n;
    }
    hx_prompt_spec ps = {.tp = tk->tp, .chat = tk->cw.family, .system = tk->cw.system, .jinja = tk->cw.jinja,
                         .max_tokens = tk->max_prompt, .want_question = t->question_after,
                         .suffix_field = t->kind == HX_TASK_RULER ? "answer_prefix" : NULL,
                         .count = hx_tokbuf_count, .user = &tk->tc};
    int rc = t->kind == HX_TASK_LONGBENCH
                 ? hx_prompt_longbench(&ps, ds_lb_task_find(t->longbench_task), sc->s, &tk->lbc, &sc->hp)
                 : hx_prompt_render(&ps, sc->s, &sc->hp);
    return rc ? rc : hx_tokbuf_encode(&tk->tc, sc->hp.text, strlen(sc->hp.text), tk->cw.bos);
}

/* The sample's prompt ids, generation length and question split. */
static int sample_prompt(task_ctx *tk, sample_ctx *sc) {
    const hx_task_def *t = tk->t;
    sc->n_prompt = render_prompt(tk, sc);
    if (sc->n_prompt < 2) {
        fprintf(stderr, "kvbench run: task %s sample %s: %s\n", t->name, sc->s->id,
                sc->n_prompt < 0 ? kv_last_error() : "fewer than 2 tokens");
        return -1;
    }
    if (!(sc->ids = malloc((size_t)sc->n_prompt * sizeof *sc->ids))) return -1;
    memcpy(sc->ids, tk->tc.buf, (size_t)sc->n_prompt * sizeof *sc->ids);
    /* RULER samples say how much their task generates (its
     * tokens_to_generate, within the sample's length), at most the task's */
    sc->max_new = t->max_new_tokens;
    const char *mn = ds_sample_field(sc->s, "max_new_tokens");
    if (mn && atoi(mn) > 0 && atoi(mn) < sc->max_new) sc->max_new = atoi(mn);
    if (t->question_after && question_split(&tk->tc, sc->s, &sc->hp, tk->cw.bos, sc->ids, sc->n_prompt, &sc->q_split)) {
        fprintf(stderr, "kvbench run: task %s: %s\n", t->name, kv_last_error());
        return -1;
    }
    return 0;
}

/* The full cache's run of the sample, every step's logits kept: what
 * fidelity compares each policy with. full: its policy (a member of pass
 * when pass is given). */
static int reference_run(task_ctx *tk, sample_ctx *sc, kv_policy *full, hx_prompt_pass *pass) {
    hx_gen_params gp = {.max_new = sc->max_new, .q_split = sc->q_split, .stop_newline = tk->t->stop_newline,
                        .stop_id = tk->stop_id, .keep_logits = 1, .pass = pass};
    /* a shared pass began the recording before it read the prompt */
    int rc = pass ? KV_OK : hx_drv_ref_record_begin(&tk->en->d, full, sc->ids, (int32_t)sc->n_prompt, sc->q_split);
    if (!rc) rc = hx_drv_generate(&tk->en->d, full, sc->ids, (int32_t)sc->n_prompt, &gp, &sc->ref);
    hx_drv_ref_record_end(&tk->en->d, full, rc ? NULL : &sc->ref);
    if (rc)
        fprintf(stderr, "kvbench run: task %s sample %s (full-cache reference): %s\n", tk->t->name, sc->s->id,
                kv_last_error());
    return rc ? -1 : 0;
}

/* What one unit produced. */
typedef struct unit_out {
    hx_gen_result g;
    hx_metric_list ml;
    char *pred;     /* the output stored when not the generated text, or NULL */
    nll_curve cv;   /* a stream's NLL curve */
} unit_out;

/* A stream: its NLL, perplexity and speed. */
static int run_stream(task_ctx *tk, sample_ctx *sc, kv_policy *pol, unit_out *u) {
    double nll = 0, secs = 1;
    int rc = stream_ppl(tk->en, pol, sc->ids, (int32_t)sc->n_prompt, tk->t->chunk, tk->t->curve_bucket, &nll, &secs,
                        &u->cv, &u->g);
    if (rc) return rc;
    hx_metric_put(&u->ml, "nll", nll);
    hx_metric_put(&u->ml, "ppl", exp(nll));
    hx_metric_put(&u->ml, "tokens_per_s", (double)(sc->n_prompt - 1) / secs);
    u->g.decode_ms = secs * 1e3;
    return KV_OK;
}

/* Time to first token, decode speed and per-step latency percentiles. */
static void put_timing(hx_metric_list *ml, const hx_gen_result *g) {
    hx_metric_put(ml, "ttft_ms", g->ttft_ms);
    if (g->n <= 1) return;
    hx_metric_put(ml, "decode_tokens_per_s", (g->n - 1) / (g->decode_ms / 1e3));
    double *lat = malloc((size_t)(g->n - 1) * sizeof *lat);
    if (!lat) return;
    memcpy(lat, g->step_ms, (size_t)(g->n - 1) * sizeof *lat);
    hx_metric_put(ml, "latency_p50_ms", met_percentile(lat, (size_t)(g->n - 1), 50));
    hx_metric_put(ml, "latency_p95_ms", met_percentile(lat, (size_t)(g->n - 1), 95));
    hx_metric_put(ml, "latency_p99_ms", met_percentile(lat, (size_t)(g->n - 1), 99));
    free(lat);
}

/* A policy's drift from the full cache's run of the sample: the output's
 * agreement, then the teacher-forced divergence and the mass lost (into
 * kld; fo: the steps the generation did). */
static int put_fidelity(task_ctx *tk, sample_ctx *sc, task_run *tr, unit_out *u, met_kld *kld, hx_fid_online *fo) {
    const hx_gen_result *g = &u->g, *ref = &sc->ref;
    int same = 0;
    while (same < g->n && same < ref->n && g->tokens[same] == ref->tokens[same]) same++;
    hx_metric_put(&u->ml, "fid_prefix_match", ref->n ? (double)same / ref->n : 1);
    int rc = hx_metric_put_rouge(&u->ml, "fid", g->text, ref->text) ? KV_ENOMEM : KV_OK;
    hx_fid_result fr;
    if (!rc)
        rc = hx_drv_fidelity(&tk->en->d, tr->pol, sc->ids, (int32_t)sc->n_prompt, sc->q_split,
                             tk->t->question_after ? &tr->snap : NULL, &tk->after, fo, ref, kld, &fr);
    if (!rc) {
        hx_metric_put(&u->ml, "fid_kl", fr.kl_mean);
        hx_metric_put(&u->ml, "fid_top1_agree", fr.top1);
        hx_metric_put(&u->ml, "attn_mass_lost", fr.mass_lost);
        rc = put_kld(&u->ml, kld);
    }
    return rc;
}

/* A generation: the output, the kind's scores, timings and fidelity. */
static int run_generate(task_ctx *tk, sample_ctx *sc, task_run *tr, unit_out *u, hx_prompt_pass *pass) {
    const hx_task_def *t = tk->t;
    const int is_full = !strcmp(pol_name(tr->pol), "full");
    /* fidelity resumes from this run's post-prompt state */
    const int fid = sc->need_ref && tk->en->d.share && !is_full;
    tk->after.key = 0;
    met_kld *kld = sc->ref.tokens && !is_full ? met_kld_new() : NULL;
    if (sc->ref.tokens && !is_full && !kld) return kv_errorf(KV_ENOMEM, "out of memory");
    /* the steps where the policy's tokens are the full cache's are done
     * during its generation, when the sample's full-cache rows are kept */
    hx_fid_online *fo = fid ? hx_fid_online_new(&tk->en->d, sc->ids, (int32_t)sc->n_prompt, &sc->ref, kld) : NULL;
    hx_gen_params gp = {.max_new = sc->max_new, .q_split = sc->q_split, .stop_newline = t->stop_newline,
                        .stop_id = tk->stop_id, .snap = t->question_after ? &tr->snap : NULL,
                        .after = fid ? &tk->after : NULL, .fid = fo, .pass = pass};
    int rc = hx_drv_generate(&tk->en->d, tr->pol, sc->ids, (int32_t)sc->n_prompt, &gp, &u->g);
    if (!rc && t->question_after) hx_metric_put(&u->ml, "context_reused", u->g.context_reused);
    /* how many runs the prompt's pass served (1: its own), beside the timings it explains */
    if (!rc) hx_metric_put(&u->ml, "prompt_pass_runs", u->g.prompt_shared ? u->g.prompt_shared : 1);
    hx_score_in in = {.t = t, .s = sc->s, .g = &u->g, .lbc = &tk->lbc};
    if (!rc && tk->ki->score) rc = tk->ki->score(&u->ml, &in, &u->pred);
    if (!rc) put_timing(&u->ml, &u->g);
    if (!rc && kld) rc = put_fidelity(tk, sc, tr, u, kld, fo);
    hx_fid_online_free(fo);
    met_kld_free(kld);
    return rc;
}

/* The unit's memory figures and budget check, then its row and metrics in
 * one transaction. */
static int write_unit(task_ctx *tk, sample_ctx *sc, task_run *tr, unit_out *u) {
    run_state *rs = tk->rs;
    const hx_gen_result *g = &u->g;
    const kv_policy *pol = tr->pol;
    hx_metric_put(&u->ml, "kv_bytes_peak", (double)g->bytes_peak);
    if (tk->cw.family) hx_metric_put(&u->ml, "chat_wrap_tokens", sc->hp.wrap_tokens);
    if (!tk->stream) { /* a stream has no prompt phase */
        hx_metric_put(&u->ml, "kv_bytes_prompt_peak", (double)g->bytes_prompt_peak);
        hx_metric_put(&u->ml, "kv_bytes_steady_peak", (double)g->bytes_steady_peak);
    }
    hx_metric_put(&u->ml, "budget_exceeded", g->over_budget);
    if (g->over_budget) {
        rs->failed_budget++;
        fprintf(stderr, "\nkvbench run: warning: %s at %s held %d slots in one head, over what it may hold (budget %d)\n",
                pol_name(pol), tr->budget, g->slots_max, pol_limit(pol));
    }
    const ds_sample *s = sc->s;
    hx_sample_row row = {
        .run = tr->row.id, .sample = s->id, .idx = sc->si, .length = s->length, .depth = s->depth_pct,
        .prompt_tokens = (int)sc->n_prompt, .generated_tokens = g->n, .cut_chars = (long)sc->hp.cut_chars,
        .ttft_ms = g->ttft_ms, .decode_ms = g->decode_ms, .kv_bytes_peak = (int64_t)g->bytes_peak,
        .kv_bytes_final = (int64_t)g->bytes_final, .kv_slots_max = g->slots_max,
        .budget_slots = pol_limit(pol) == INT32_MAX ? -1 : pol_limit(pol),
        .output = u->pred ? u->pred : g->text ? g->text : "", .reference = s->reference,
        .stop_reason = tk->stream ? NULL : g->stop};
    hx_curve nc = {u->cv.pos, u->cv.nll, u->cv.n}, kc = {g->trace_pos, g->trace_bytes, g->n_trace};
    int rc = u->ml.lost ? kv_errorf(KV_EINVAL, "internal: %d metrics over HX_MAX_METRICS", u->ml.lost)
                        : hx_db_put_sample(rs->db, &row, u->ml.m, u->ml.n, &nc, &kc);
    if (rc == 1) rs->prog.skipped++, rs->raced++; /* another process stored it first */
    else if (!rc) rs->stored++;
    return rc == 1 ? 0 : rc;
}

/* One unit: run k of the task on the sample, scored and stored. */
static int run_unit(task_ctx *tk, sample_ctx *sc, int k, hx_prompt_pass *pass) {
    task_run *tr = &tk->tr[k];
    const char *label = tk->rs->e->policy[tr->cell->policy].label;
    unit_out u = {0};
    /* this sample's own random draws (Keyformer's noise), the same in
     * every run, shard and resume */
    pol_set_sample_seed(tr->pol, kv_fnv1a64(KV_FNV1A64_INIT, sc->s->id, strlen(sc->s->id)));
    int rc = tk->stream ? run_stream(tk, sc, tr->pol, &u) : run_generate(tk, sc, tr, &u, pass);
    if (!rc) rc = write_unit(tk, sc, tr, &u);
    if (rc)
        fprintf(stderr, "\nkvbench run: task %s sample %s policy %s budget %s: %s\n", tk->t->name, sc->s->id, label,
                tr->budget, kv_last_error());
    hx_gen_free(&u.g);
    free(u.pred);
    free(u.cv.pos);
    free(u.cv.nll);
    tk->rs->prog.done++;
    char what[128];
    snprintf(what, sizeof what, "%s %s %s %s", tk->t->name, sc->s->id, label, tr->budget);
    progress_show(&tk->rs->prog, what);
    return rc ? -1 : 0;
}

/* The sample's policies that read the prompt: the full-cache reference's
 * (unit -1, when fidelity needs it) and each unit's; a unit resuming a
 * context compressed before (question after compression) reads none. */
typedef struct share_plan {
    kv_policy **pol;  /* [n] */
    int *unit;        /* [n] an index into todo, or -1: the reference */
    uint8_t *done;    /* [n] */
    int n;
    kv_policy **grp;  /* [n] a group's policies */
    int *idx;         /* [n] and their candidates */
} share_plan;

/* One group: candidate a and every later one not yet run that is
 * compatible with all the group's (pol_share_compatible), read
 * in one pass; the reference first, then the units. Returns 1 when the
 * group was run, 0 when a has no partner, -1 on failure. */
static int run_group(task_ctx *tk, sample_ctx *sc, share_plan *sp, int a, int *ref_done) {
    kv_policy **pols = sp->grp;
    int *idx = sp->idx, n = 0, with_ref = 0;
    for (int b = a; b < sp->n; b++) {
        int fits = !sp->done[b] && pol_shares_prompt(sp->pol[b]);
        for (int i = 0; i < n && fits; i++) fits = pol_share_compatible(pols[i], sp->pol[b]);
        if (fits) {
            pols[n] = sp->pol[b];
            idx[n++] = b;
            with_ref |= sp->unit[b] < 0;
        }
    }
    if (n < 2) return 0;
    /* fidelity's reference comes before any unit: on its own pass if not in this group */
    if (sc->need_ref && !*ref_done && !with_ref) {
        if (reference_run(tk, sc, sp->pol[0], NULL)) return -1;
        sp->done[0] = 1;
        *ref_done = 1;
    }
    hx_prompt_pass pass;
    /* the reference's rows are recorded as the pass reads its prompt */
    if (with_ref &&
        hx_drv_ref_record_begin(&tk->en->d, sp->pol[0], sc->ids, (int32_t)sc->n_prompt, sc->q_split)) {
        fprintf(stderr, "kvbench run: %s\n", kv_last_error());
        return -1;
    }
    if (hx_drv_prompt_pass(&tk->en->d, pols, n, sc->ids, hx_drv_pass_tokens((int32_t)sc->n_prompt, sc->q_split),
                           &pass)) {
        fprintf(stderr, "kvbench run: task %s sample %s (the shared prompt pass): %s\n", tk->t->name, sc->s->id,
                kv_last_error());
        return -1;
    }
    int status = 0;
    for (int i = 0; i < n && status == 0 && !run_stop_signal; i++) {
        sp->done[idx[i]] = 1;
        if (sp->unit[idx[i]] < 0) {
            status = reference_run(tk, sc, pols[i], &pass);
            *ref_done = 1;
        } else {
            status = run_unit(tk, sc, tk->todo[sp->unit[idx[i]]], &pass);
        }
    }
    hx_prompt_pass_free(&pass);
    return status ? -1 : 1;
}

/* The sample's units and fidelity's reference, groups of compatible
 * policies each on one prompt pass (pol_share_compatible), the rest on
 * their own. */
static int run_sample_units(task_ctx *tk, sample_ctx *sc, kv_policy *ref) {
    share_plan sp = {0};
    const int cap = sc->n_todo + 1;
    sp.pol = malloc((size_t)cap * sizeof *sp.pol);
    sp.unit = malloc((size_t)cap * sizeof *sp.unit);
    sp.done = calloc((size_t)cap, 1);
    sp.grp = malloc((size_t)cap * sizeof *sp.grp);
    sp.idx = malloc((size_t)cap * sizeof *sp.idx);
    int status = sp.pol && sp.unit && sp.done && sp.grp && sp.idx ? 0 : -1, ref_done = !ref;
    if (ref && !status) sp.pol[sp.n] = ref, sp.unit[sp.n++] = -1;
    for (int q = 0; q < sc->n_todo && !status; q++) {
        task_run *tr = &tk->tr[tk->todo[q]];
        pol_set_sample_seed(tr->pol, kv_fnv1a64(KV_FNV1A64_INIT, sc->s->id, strlen(sc->s->id)));
        if (!hx_drv_snap_holds(tk->t->question_after ? &tr->snap : NULL, sc->ids, (int32_t)sc->n_prompt, sc->q_split))
            sp.pol[sp.n] = tr->pol, sp.unit[sp.n++] = q;
    }
    const int share = !tk->stream && tk->en->d.share;
    for (int a = 0; share && a < sp.n && !status && !run_stop_signal; a++)
        if (!sp.done[a] && pol_shares_prompt(sp.pol[a]) && run_group(tk, sc, &sp, a, &ref_done) < 0) status = -1;
    if (!status && !ref_done) status = reference_run(tk, sc, ref, NULL);
    for (int q = 0; q < sc->n_todo && status == 0 && !run_stop_signal; q++) {
        int own = 1;
        for (int i = 0; i < sp.n; i++)
            if (sp.unit[i] == q && sp.done[i]) own = 0;
        if (own) status = run_unit(tk, sc, tk->todo[q], NULL);
    }
    free(sp.pol);
    free(sp.unit);
    free(sp.done);
    free(sp.grp);
    free(sp.idx);
    return status;
}

/* Every unit of sample si that is ours to do. A stop asked for ends the
 * sample after its unit in flight; the units claimed and not run are
 * released at the end. */
static int run_sample(task_ctx *tk, int si) {
    sample_ctx sc = {.s = &tk->set.s[si], .si = si};
    if (claim_units(tk, &sc)) return -1;
    if (sc.n_todo == 0) return 0;
    int status = sample_prompt(tk, &sc);
    kv_policy *ref = NULL;
    pol_budget none = {POL_BUDGET_NONE, 0};
    if (!status && sc.need_ref && pol_new("full", NULL, 0, &none, tk->rs->e->seed, tk->en->d.mi, &ref)) {
        fprintf(stderr, "kvbench run: %s\n", kv_last_error());
        status = -1;
    }
    if (!status) status = run_sample_units(tk, &sc, ref);
    if (ref) hx_drv_ref_record_end(&tk->en->d, ref, NULL); /* after a failure: nothing stays recording */
    pol_free(ref);
    hx_gen_free(&sc.ref);
    hx_prompt_free(&sc.hp);
    free(sc.ids);
    return status;
}

/* A dry run's lines for the task's runs. */
static void print_runs(const task_ctx *tk) {
    for (int k = 0; k < tk->n_runs; k++) {
        const hx_run_row *r = &tk->tr[k].row;
        printf("  run %s  model=%s task=%s policy=%s budget=%s  (%d samples)\n", r->id, r->model, r->task,
               r->policy_label, r->budget, tk->set.n);
    }
}

/* Runs every unit of one (model, task) pair. */
static int run_task(run_state *rs, engine *en, int model, int task) {
    task_ctx tk = {.rs = rs, .en = en, .model = model, .task = task, .t = &rs->e->task[task]};
    tk.ki = hx_task_kind_get(tk.t->kind);
    tk.stream = (tk.ki->flags & HX_KIND_STREAM) != 0;
    int status = task_open(&tk) || open_runs(&tk) ? -1 : 0;
    if (!status) {
        /* The progress total counted this task with the samples it asked
         * for; correct it by what the set holds. */
        rs->prog.total += ((long)tk.n_runs * tk.set.n - rs->counted[model][task]) / rs->shard_n;
        if (rs->dry) {
            print_runs(&tk);
            rs->unit += (long)tk.n_runs * tk.set.n;
        }
    }
    for (int si = 0; !rs->dry && si < tk.set.n && status == 0 && !run_stop_signal; si++) status = run_sample(&tk, si);
    task_close(&tk);
    return status;
}

/* A model asked for in another weight type runs from a converted copy,
 * made once beside the results database (cache/NAME-HASH-TYPE.gguf) and
 * reused: its bytes then identify the runs. */
static int convert_model(engine *en, const hx_model_def *md, const char *db, const kv_model_params *p) {
    kv_dtype want;
    if (kv_dtype_parse(md->dtype, &want)) return -1;
    if (kv_model_get_info(en->d.model)->wtype == want) return KV_OK;
    char src_hash[HX_IDENTITY_BUF], dir[4096], path[4300], tmp[4400];
    if (hx_file_identity(en->model_path, src_hash)) return -1;
    snprintf(dir, sizeof dir, "%s", db);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
    snprintf(path, sizeof path, "%s/cache", dir);
    if (mkdir(path, 0777) != 0 && errno != EEXIST) return kv_errorf(KV_EIO, "%s: cannot create: %s", path, strerror(errno));
    snprintf(path, sizeof path, "%s/cache/%s-%s-%s.gguf", dir, md->name, src_hash, md->dtype);
    struct stat sb;
    if (stat(path, &sb) != 0) {
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        int rc = kv_model_export_gguf(en->d.model, tmp, want);
        if (rc == KV_OK && rename(tmp, path) != 0) rc = kv_errorf(KV_EIO, "%s: cannot rename into place", path);
        if (rc) {
            unlink(tmp);
            return rc;
        }
        fprintf(stderr, "kvbench run: model %s converted to %s: %s\n", md->name, md->dtype, path);
    }
    kv_model_free(en->d.model);
    en->d.model = NULL;
    size_t n = strlen(path);
    if (n >= sizeof en->model_path) return kv_errorf(KV_EINVAL, "%s: path too long", path);
    memcpy(en->model_path, path, n + 1);
    return kv_model_load(en->model_path, p, &en->d.model);
}

static int load_engine(const hx_experiment *e, const char *db, int model, int threads, kv_kernel_mode kernels,
                       engine *en) {
    memset(en, 0, sizeof *en);
    const hx_model_def *md = &e->model[model];
    /* int8 kernels round activations as llama.cpp does and read prompts a
     * token at a time: other logits, so the mode is part of the runs' spec */
    en->kernels = kernels;
    if (md->kernels && kv_kernel_mode_parse(md->kernels, &en->kernels)) return -1;
    kv_kernels_set_mode(en->kernels);
    char tp[4096];
    kv_model_params p = kv_model_default_params();
    if (md->tokenizer) p.tokenizer_path = hx_resolve_model(md->tokenizer, tp, sizeof tp);
    if (md->tokenizer) snprintf(en->tokenizer_path, sizeof en->tokenizer_path, "%s", tp);
    p.rope_base = md->rope_base;
    p.ctx_len = md->ctx_len;
    p.norm_eps = md->norm_eps;
    p.gelu = md->gelu;
    if (hx_weights_mmap(&p.weights_mmap)) return -1;
    hx_resolve_model(md->path, en->model_path, sizeof en->model_path);
    if (kv_model_load(en->model_path, &p, &en->d.model)) return -1;
    if (md->dtype && convert_model(en, md, db, &p)) return -1;
    const kv_model_info *mi = kv_model_get_info(en->d.model);
    en->swa_note[0] = '\0';
    if (mi->n_swa_layers > 0) {
        char layers[256];
        kv_model_swa_layers(en->d.model, layers, sizeof layers);
        snprintf(en->swa_note, sizeof en->swa_note, "/swa=%d:%s", mi->swa_window, layers);
    }
    if (!kv_model_tokenizer(en->d.model))
        return kv_errorf(KV_EINVAL, "model %s: %s has no tokenizer; give one with 'tokenizer ='", md->name, en->model_path);
    if (hx_engine_open(&en->d, en->d.model, threads, md->kv_type)) return -1;
    return hx_file_identity(en->model_path, en->model_hash);
}

static void free_engine(engine *en) {
    kv_model *m = en->d.model;
    hx_engine_close(&en->d);
    kv_model_free(m);
    memset(en, 0, sizeof *en);
}

/* Makes the folder that will hold the database. */
static int ensure_parent_dir(const char *path) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash) return 0;
    *slash = 0;
    for (char *p = dir + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(dir, 0777);
            *p = '/';
        }
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "kvbench run: cannot create %s: %s\n", dir, strerror(errno));
        return -1;
    }
    return 0;
}

/* The size of the sweep in units, for the progress bar: runs per task x
 * samples (a grid's from its cells; a data file's as asked, corrected
 * once it is loaded). */
static void count_units(run_state *rs) {
    const hx_experiment *e = rs->e;
    long total = 0;
    for (int mj = 0; mj < e->n_sweep_models; mj++)
        for (int ti = 0; ti < e->n_sweep_tasks; ti++) {
            int runs = 0;
            for (int i = 0; i < rs->n_cells; i++)
                runs += rs->cells[i].model == e->sweep_model[mj] && rs->cells[i].task == e->sweep_task[ti];
            if (!runs) continue;
            const hx_task_def *t = &e->task[e->sweep_task[ti]];
            long ns = t->samples;
            if (hx_task_kind_get(t->kind)->flags & HX_KIND_GRID) {
                long cells = (long)t->n_lengths * t->n_depths * (t->kind == HX_TASK_PASSKEY ? t->per_cell : 1);
                ns = ns > 0 && ns < cells ? ns : cells;
            } /* a data file without a sample count: known once loaded */
            rs->counted[e->sweep_model[mj]][e->sweep_task[ti]] += (long)runs * ns;
            total += (long)runs * ns;
        }
    rs->prog.total = rs->shard_n > 1 ? (total + rs->shard_n - 1) / rs->shard_n : total;
}

/* After a stop asked for: what is kept and how to resume (said even with
 * -q: the user asked, and needs to know). Returns the exit status. */
static int print_stopped(const run_state *rs, int quiet, int argc, char **argv) {
    fprintf(stderr, "%skvbench run: %s: stopped by %s: %ld units stored (%ld now, %ld before), no partial sample "
            "kept, about %ld left; resume with: ", rs->prog.tty && !quiet ? "\n" : "", rs->e->name,
            run_stop_signal == SIGINT ? "SIGINT" : "SIGTERM", rs->stored + rs->prog.skipped, rs->stored,
            rs->prog.skipped, rs->prog.total > rs->prog.done ? rs->prog.total - rs->prog.done : 0);
    print_command(stderr, argc, argv);
    fputc('\n', stderr);
    return 128 + run_stop_signal;
}

/* What is in the database, not what was attempted (a failed write is not done). */
static void print_summary(const run_state *rs, double dt, const char *dbp) {
    const char *name = rs->e->name;
    fprintf(stderr, "%skvbench run: %s: %ld units done (%ld already stored), %ld over budget, %.1f s, results in %s\n",
            rs->prog.tty ? "\n" : "", name, rs->stored + rs->prog.skipped, rs->prog.skipped, rs->failed_budget, dt,
            dbp);
    if (rs->raced) /* only when a claim lapsed: work done twice, stored once */
        fprintf(stderr, "kvbench run: %s: %ld units computed here were stored first by another process (their "
                "claims had lapsed); kept once\n", name, rs->raced);
    if (rs->others)
        fprintf(stderr, "kvbench run: %s: %ld units were claimed by other processes running on %s and are "
                "theirs to finish (a rerun takes over those of a process that died)\n", name, rs->others, dbp);
}

/* The database opened for writing (its folder made) and the experiment's
 * file stored in it. */
static int open_db(run_state *rs, const char *dbp, const char *file, char **text) {
    if (ensure_parent_dir(dbp) || hx_db_open(dbp, 1, &rs->db)) {
        if (rs->db == NULL) fprintf(stderr, "kvbench run: %s\n", kv_last_error());
        return 1;
    }
    run_catch_signals(); /* from here on a stop keeps the database whole */
    kv_read_file(file, text, NULL);
    if (hx_db_put_experiment(rs->db, rs->e->name, file, *text, rs->e->description, rs->e->mirrors)) {
        fprintf(stderr, "kvbench run: %s\n", kv_last_error());
        return 1;
    }
    return 0;
}

/* Every task of model m in the sweep, its engine loaded once. The first
 * model of a real run counts the sweep's units for the progress bar (a
 * dry run counts as it goes). */
static int run_model(run_state *rs, int m, const char *dbp, int threads, int no_share) {
    const hx_experiment *e = rs->e;
    int used = 0;
    for (int i = 0; i < rs->n_cells; i++) used |= rs->cells[i].model == m;
    if (!used) return 0;
    engine en;
    if (load_engine(e, dbp, m, threads, rs->kernels, &en)) {
        fprintf(stderr, "kvbench run: model %s: %s\n", e->model[m].name, kv_last_error());
        free_engine(&en);
        return 1;
    }
    en.d.share = !no_share;
    if (rs->dry)
        printf("model %s: %s (%lld parameters; %s kernels%s%s)\n", e->model[m].name, en.model_path,
               (long long)en.d.mi->n_params, kv_kernel_mode_name(en.kernels), en.d.kv_type != KV_CACHE_F32 ? ", cache " : "",
               en.d.kv_type != KV_CACHE_F32 ? kv_cache_type_name(en.d.kv_type) : "");
    if (!rs->dry && rs->prog.total == 0) count_units(rs);
    int status = 0;
    for (int ti = 0; ti < e->n_sweep_tasks && status == 0 && !run_stop_signal; ti++) {
        int task = e->sweep_task[ti], runs = 0;
        for (int i = 0; i < rs->n_cells; i++) runs += rs->cells[i].model == m && rs->cells[i].task == task;
        if (!runs) continue;
        if (rs->dry)
            printf("task %s (%s, template %s):\n", e->task[task].name, hx_task_kind_name(e->task[task].kind),
                   e->task[task].template_name);
        if (run_task(rs, &en, m, task)) status = 1;
    }
    free_engine(&en);
    return status;
}

int hx_cmd_run(int argc, char **argv, int help) {
    const char *db_path = NULL, *only = NULL, *shard = NULL;
    int dry = 0, threads = -1, quiet = 0, no_share = 0;
    hx_opt opts[] = {
        {"dry-run", 0, HX_OPT_FLAG, &dry, NULL, "print the expanded sweep and its size, run nothing"},
        {"no-share", 0, HX_OPT_FLAG, &no_share, NULL,
         "each run reads its own prompt, fidelity recomputes what it shares (the same results, slower: a check, "
         "and per-method prompt timings)"},
        {"only", 0, HX_OPT_STR, &only, "K=V,...", "run only these models, tasks, policies (label or name) or budgets"},
        {"shard", 0, HX_OPT_STR, &shard, "I/N", "run the units whose number is I modulo N (I from 0)"},
        {"db", 0, HX_OPT_STR, &db_path, "PATH", "results database (default: the experiment's db)"},
        {"threads", 't', HX_OPT_INT, &threads, "N", "threads (default: the experiment's, else all cores; one for a model under 8 MB of weights)"},
        {"quiet", 'q', HX_OPT_FLAG, &quiet, NULL, "no progress output"},
    };
    if (help) {
        printf("usage: kvbench run FILE.ini [--dry-run] [--only policy=h2o,budget=60%%] [--shard I/N] [--db PATH]\n\n"
               "Runs every (model, task, policy, budget, sample) of the experiment's sweep that the\n"
               "results database does not hold yet; each finished sample is committed at once, so an\n"
               "interrupted run resumes where it stopped. Ctrl-C (or SIGTERM) stops after the sample in\n"
               "flight and says how to resume (exit 130, 143); a second one stops at once. Several runs on\n"
               "one database share the work: each claims a sample before running it. See docs/EXPERIMENTS.md.\n\n");
        hx_opts_print(opts, N_OPTS(opts));
        return 0;
    }
    const char *pos[1];
    int np;
    if (hx_opts_parse("run", argc, argv, opts, N_OPTS(opts), pos, 1, &np)) return 2;
    if (np != 1) {
        fprintf(stderr, "kvbench run: expected one experiment file (kvbench run FILE.ini)\n");
        return 2;
    }
    only_filter of;
    if (parse_only(only, &of)) return 2;
    int shard_i = 0, shard_n = 1;
    if (shard) {
        char extra;
        if (sscanf(shard, "%d/%d%c", &shard_i, &shard_n, &extra) != 2 || shard_n < 1 || shard_i < 0 || shard_i >= shard_n) {
            fprintf(stderr, "kvbench run: --shard: expected I/N with 0 <= I < N, got '%s'\n", shard);
            return 2;
        }
    }
    hx_experiment e;
    if (hx_experiment_load(pos[0], &e)) {
        fprintf(stderr, "kvbench run: %s\n", kv_last_error());
        return 2;
    }
    run_state rs = {.e = &e, .shard_i = shard_i, .shard_n = shard_n, .dry = dry};
    if (kv_kernels_env_mode(&rs.kernels)) {
        fprintf(stderr, "kvbench run: %s\n", kv_last_error());
        hx_experiment_free(&e);
        return 2;
    }
    if (expand_sweep(&e, &of, &rs.cells, &rs.n_cells)) {
        hx_experiment_free(&e);
        return 1;
    }
    int status = 0;
    char *text = NULL; /* the experiment file, as stored */
    if (rs.n_cells == 0) {
        fprintf(stderr, "kvbench run: %s: nothing to run (the --only filter matches no run)\n", pos[0]);
        status = 2;
        goto out;
    }
    if (threads < 0) threads = e.threads;
    const char *dbp = db_path ? db_path : e.db;
    if (dry) {
        printf("experiment %s (%s)\n", e.name, pos[0]);
        if (e.mirrors) printf("mirrors: %s\n", e.mirrors);
        printf("database: %s\n", dbp);
    } else if ((status = open_db(&rs, dbp, pos[0], &text))) {
        goto out;
    }
    /* The progress bar's total: a dry run counts units as it goes; a real
     * one counts them first (count_units). */
    rs.prog.tty = isatty(2);
    rs.prog.quiet = quiet;
    rs.prog.t0 = kv_now_s();
    double t_start = kv_now_s();
    for (int mi = 0; mi < e.n_sweep_models && status == 0 && !run_stop_signal; mi++)
        status = run_model(&rs, e.sweep_model[mi], dbp, threads, no_share);
    if (rs.db && hx_db_release_claims(rs.db)) {
        fprintf(stderr, "kvbench run: %s\n", kv_last_error());
        status = 1;
    }
    if (dry) printf("total: %d runs, %ld units (run x sample)%s\n", rs.n_cells, rs.unit, shard_n > 1 ? " before sharding" : "");
    else if (run_stop_signal) status = print_stopped(&rs, quiet, argc, argv);
    else if (!quiet) print_summary(&rs, kv_now_s() - t_start, dbp);
out:
    free(text);
    hx_db_close(rs.db);
    free(rs.cells);
    hx_experiment_free(&e);
    return status;
}
