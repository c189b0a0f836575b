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
#include <ctype.h>
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
#include "../datasets/ruler.h"
#include "../datasets/template.h"
#include "../engine/context.h"
#include "../engine/dtype.h"
#include "../engine/export.h"
#include "../engine/kv_error.h"
#include "../engine/model.h"
#include "../engine/sampler.h"
#include "../metrics/kld.h"
#include "../metrics/longbench.h"
#include "../metrics/rouge.h"
#include "../metrics/ruler.h"
#include "../metrics/stats.h"
#include "../policies/policy.h"
#include "clock.h"
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


typedef hx_gen_result gen_result;

/* A model as the runner holds it: the driver's engine and what identifies
 * the runs made with it. */
typedef struct engine {
    hx_engine d;
    char model_hash[HX_IDENTITY_BUF];
    char model_path[4096];
    char tokenizer_path[4096]; /* the tokenizer given apart from the model ("" none) */
    char swa_note[320];        /* "/swa=W:layers" for models with sliding-window layers, else "" */
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
                      double *seconds, nll_curve *cv, gen_result *g) {
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
    double t = now_s(), el = t - p->t0;
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
    return kv_model_get_info(en->d.model)->format == KV_FORMAT_GGUF ? ds_chat_source_gguf(en->model_path, src) : KV_OK;
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
    for (int i = 0; i < pol->ops->n_params; i++)
    {
        char v[64];
        snprintf(params + strlen(params), pcap - strlen(params), "%s%s=%s", i ? "," : "", pol->ops->params[i].name,
                 pol_param_str(pol, i, v, sizeof v));
    }
    char common[96];
    snprintf(params + strlen(params), pcap - strlen(params), "%s%s", pol->ops->n_params ? "," : "",
             pol_common_str(pol, common, sizeof common));
    char bs[32], lens[512] = "", deps[512] = "";
    pol_budget_str(&rc->budget, bs, sizeof bs);
    for (int i = 0; i < t->n_lengths; i++) snprintf(lens + strlen(lens), sizeof lens - strlen(lens), "%d ", t->lengths[i]);
    for (int i = 0; i < t->n_depths; i++) snprintf(deps + strlen(deps), sizeof deps - strlen(deps), "%d ", t->depths[i]);
    int n = snprintf(spec, cap,
                     "kvbench-run/2 version=%s model_hash=%s arch=%g/%d/%g%s%s task_kind=%s data=%s haystack=%s template=%s@%d "
                     "max_prompt_tokens=%d max_new_tokens=%d stop_newline=%d fidelity=%d doc_field=%s ref_field=%s "
                     "lengths=%s depths=%s per_cell=%d tokens=%d chunk=%d min_chars=%d curve_bucket=%d question=%s chat=%s "
                     "system=[%s] ruler_task=%s qa_data=%s%s%s%s policy=%s params=%s budget=%s seed=%llu",
                     KVBENCH_VERSION, en->model_hash, (double)en->d.mi->rope_base, en->d.mi->ctx_len, (double)en->d.mi->norm_eps,
                     /* MPT's GELU, only when not the default (other runs' ids unchanged) */
                     en->d.mi->arch == KV_ARCH_MPT && en->d.mi->gelu == KV_GELU_ERF ? "/gelu=erf" : "",
                     /* sliding-window layers, for the report (absent otherwise: other runs' ids unchanged) */
                     en->swa_note,
                     hx_task_kind_name(t->kind), t->data ? t->data : "",
                     t->haystack ? t->haystack : "", tp->name, tp->version, t->max_prompt_tokens, t->max_new_tokens,
                     t->stop_newline, t->fidelity, t->doc_field ? t->doc_field : "", t->ref_field ? t->ref_field : "",
                     lens, deps, t->per_cell, t->tokens, t->chunk, t->min_chars, t->curve_bucket,
                     t->question_after ? "after_compression" : "in_prompt", cw->name, cw->system ? cw->system : "",
                     t->ruler_task ? t->ruler_task : "", t->qa_data ? t->qa_data : "",
                     /* LongBench's task, only for longbench runs (other runs' ids unchanged) */
                     t->kind == HX_TASK_LONGBENCH ? " longbench_task=" : "",
                     t->kind == HX_TASK_LONGBENCH ? t->longbench_task : "",
                     t->kind == HX_TASK_LONGBENCH && t->longbench_e ? "/e" : "", pol->ops->name, params, bs,
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
    uint64_t h = hx_hash(HX_HASH_INIT, spec, strlen(spec));
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

/* Runs every unit of one (model, task) pair. */
static int run_task(run_state *rs, engine *en, int model, int task) {
    hx_experiment *e = rs->e;
    hx_task_def *t = &e->task[task];
    hx_tokbuf tc = {.tok = en->d.tok};
    ds_set set = {0};
    hx_ctx_snap after = {0}; /* a policy's state right after a prompt, for its fidelity run */
    int status = 0;
    chat_wrap cw;
    int rc = chat_setup(rs->e, model, t, en, &cw);
    if (rc) {
        fprintf(stderr, "kvbench run: task %s on model %s: %s\n", t->name, rs->e->model[model].name, kv_last_error());
        free(cw.jinja);
        return -1;
    }
    hx_task_env env = {.t = t, .tb = &tc, .seed = e->seed};
    rc = hx_task_kind_get(t->kind)->load(&env, &set);
    if (rc) {
        fprintf(stderr, "kvbench run: task %s: %s\n", t->name, kv_last_error());
        free(cw.jinja);
        free(tc.buf);
        return -1;
    }
    if (t->samples > 0 && set.n > t->samples) {
        /* generated sets may be larger than asked; keep the first */
        for (int i = t->samples; i < set.n; i++) {
            ds_sample *s = &set.s[i];
            free(s->id); free(s->reference);
            for (int f = 0; f < s->n_fields; f++) free(s->field[f].name), free(s->field[f].value);
        }
        set.n = t->samples;
    }
    const ds_template *tp = ds_template_find(t->template_name);
    lb_user lbu = {&tc, cw.bos};
    ds_lb_codec lbc = {lb_encode, lb_decode, &lbu, !kv_tokenizer_byte_level(en->d.tok)}; /* SentencePiece: per byte */
    const int32_t stop_id = longbench_stop_id(t, &tc);
    int max_prompt = t->max_prompt_tokens;
    if (max_prompt <= 0) max_prompt = en->d.mi->ctx_len - t->max_new_tokens - 1;
    if (max_prompt < 8) max_prompt = 8;

    /* This task's runs, their policies and identities. */
    int n_runs = 0;
    task_run *tr = calloc((size_t)rs->n_cells, sizeof *tr);
    int *todo = calloc((size_t)rs->n_cells, sizeof *todo);
    if (!tr || !todo) {
        fprintf(stderr, "kvbench run: out of memory\n");
        status = -1;
        goto out;
    }
    for (int i = 0; i < rs->n_cells; i++) {
        run_cell *c = &rs->cells[i];
        if (c->model != model || c->task != task) continue;
        const hx_policy_def *pd = &e->policy[c->policy];
        int k = n_runs++;
        tr[k].cell = c;
        /* A policy with a schedule over the new tokens (Keyformer's tau) spans
         * the task's generation length unless the experiment says otherwise. */
        const char *set[POL_MAX_PARAMS + 2];
        int n_set = 0;
        char steps[48];
        const pol_ops *ops = pol_find(pd->policy);
        int has_steps = 0, given = 0;
        for (int i = 0; ops && i < ops->n_params; i++) has_steps |= !strcmp(ops->params[i].name, "steps");
        for (int i = 0; i < pd->n_settings; i++) given |= !strncmp(pd->settings[i], "steps=", 6);
        if (has_steps && !given && t->max_new_tokens > 0) {
            snprintf(steps, sizeof steps, "steps=%d", t->max_new_tokens);
            set[n_set++] = steps;
        }
        for (int i = 0; i < pd->n_settings; i++) set[n_set++] = pd->settings[i];
        if (pol_new(pd->policy, set, n_set, &c->budget, e->seed, en->d.mi, &tr[k].pol) ||
            pol_check_model(tr[k].pol, en->d.model) ||
            run_identity(rs, en, c, tr[k].pol, &cw, tr[k].spec, sizeof tr[k].spec, tr[k].params, sizeof tr[k].params,
                         &tr[k].row)) {
            fprintf(stderr, "kvbench run: policy %s: %s\n", pd->label, kv_last_error());
            status = -1;
            goto out;
        }
        pol_budget_str(&c->budget, tr[k].budget, sizeof tr[k].budget);
        hx_run_row *r = &tr[k].row;
        r->model = e->model[model].name;
        r->model_path = en->model_path;
        r->model_hash = en->model_hash;
        r->task = t->name;
        r->task_kind = hx_task_kind_name(t->kind);
        r->data = t->data ? t->data : t->haystack;
        snprintf(tr[k].template_name, sizeof tr[k].template_name, "%s@%d", tp->name, tp->version);
        r->template_name = tr[k].template_name;
        r->policy_label = pd->label;
        r->policy = pd->policy;
        r->params = tr[k].params;
        r->budget = tr[k].budget;
        r->budget_kind = c->budget.kind;
        r->budget_value = c->budget.value;
        r->seed = e->seed;
        r->max_prompt_tokens = max_prompt;
        r->max_new_tokens = t->max_new_tokens;
        r->spec = tr[k].spec;
        if (!rs->dry && hx_db_put_run(rs->db, e->name, r)) {
            fprintf(stderr, "kvbench run: %s\n", kv_last_error());
            status = -1;
            goto out;
        }
    }
    /* The progress total counted this task with the samples it asked for;
     * correct it by what the set holds. */
    rs->prog.total += ((long)n_runs * set.n - rs->counted[model][task]) / rs->shard_n;
    if (rs->dry) {
        for (int k = 0; k < n_runs; k++)
            printf("  run %s  model=%s task=%s policy=%s budget=%s  (%d samples)\n", tr[k].row.id, tr[k].row.model,
                   tr[k].row.task, tr[k].row.policy_label, tr[k].row.budget, set.n);
        rs->unit += (long)n_runs * set.n;
        goto out;
    }

    for (int si = 0; si < set.n && status == 0 && !run_stop_signal; si++) {
        ds_sample *s = &set.s[si];
        /* Which of this sample's units are ours and not yet stored? */
        int n_todo = 0, need_ref = 0;
        for (int k = 0; k < n_runs; k++) {
            long unit = rs->unit++;
            if (rs->shard_n > 1 && unit % rs->shard_n != rs->shard_i) continue;
            /* claimed here, or stored or claimed by another process */
            int have = hx_db_claim(rs->db, tr[k].row.id, s->id);
            if (have < 0) { fprintf(stderr, "kvbench run: %s\n", kv_last_error()); status = -1; break; }
            if (have != HX_CLAIM_OURS) {
                rs->prog.done++;
                if (have == HX_CLAIM_STORED) rs->prog.skipped++;
                else rs->others++;
                continue;
            }
            todo[n_todo++] = k;
            if (t->fidelity && strcmp(tr[k].pol->ops->name, "full") != 0 && t->kind != HX_TASK_PERPLEXITY) need_ref = 1;
        }
        if (status || n_todo == 0) continue;

        /* The prompt, rendered and truncated once for every run. */
        hx_prompt hp = {0};
        int64_t n_prompt = 0;
        int32_t *ids = NULL;
        gen_result ref = {0};
        if (t->kind == HX_TASK_PERPLEXITY) {
            const char *doc = ds_sample_field(s, "document");
            n_prompt = hx_tokbuf_encode(&tc, doc, strlen(doc), 1);
            if (n_prompt >= 0 && t->tokens > 0 && n_prompt > t->tokens) n_prompt = t->tokens;
        } else {
            hx_prompt_spec ps = {.tp = tp, .chat = cw.family, .system = cw.system, .jinja = cw.jinja, .max_tokens = max_prompt,
                                 .want_question = t->question_after,
                                 .suffix_field = t->kind == HX_TASK_RULER ? "answer_prefix" : NULL,
                                 .count = hx_tokbuf_count, .user = &tc};
            rc = t->kind == HX_TASK_LONGBENCH ? hx_prompt_longbench(&ps, ds_lb_task_find(t->longbench_task), s, &lbc, &hp)
                                              : hx_prompt_render(&ps, s, &hp);
            n_prompt = rc ? rc : hx_tokbuf_encode(&tc, hp.text, strlen(hp.text), cw.bos);
        }
        if (n_prompt < 2) {
            fprintf(stderr, "kvbench run: task %s sample %s: %s\n", t->name, s->id,
                    n_prompt < 0 ? kv_last_error() : "fewer than 2 tokens");
            status = -1;
            goto sample_done;
        }
        ids = malloc((size_t)n_prompt * sizeof *ids);
        if (!ids) { status = -1; goto sample_done; }
        memcpy(ids, tc.buf, (size_t)n_prompt * sizeof *ids);
        /* RULER samples say how much their task generates (its
         * tokens_to_generate, within the sample's length), at most the task's */
        int max_new = t->max_new_tokens;
        const char *mn = ds_sample_field(s, "max_new_tokens");
        if (mn && atoi(mn) > 0 && atoi(mn) < max_new) max_new = atoi(mn);
        int32_t q_split = 0; /* question = after_compression: where it begins */
        if (t->question_after && (rc = question_split(&tc, s, &hp, cw.bos, ids, n_prompt, &q_split))) {
            fprintf(stderr, "kvbench run: task %s: %s\n", t->name, kv_last_error());
            status = -1;
            goto sample_done;
        }
        if (need_ref) {
            kv_policy *full = NULL;
            pol_budget none = {POL_BUDGET_NONE, 0};
            rc = pol_new("full", NULL, 0, &none, e->seed, en->d.mi, &full);
            hx_gen_params gp = {.max_new = max_new, .q_split = q_split, .stop_newline = t->stop_newline,
                                .stop_id = stop_id, .keep_logits = 1};
            if (!rc) rc = hx_drv_generate(&en->d, full, ids, (int32_t)n_prompt, &gp, &ref);
            pol_free(full);
            if (rc) {
                fprintf(stderr, "kvbench run: task %s sample %s (full-cache reference): %s\n", t->name, s->id, kv_last_error());
                status = -1;
                goto sample_done;
            }
        }
        /* a stop asked for ends the sample after its unit in flight; the
         * units claimed and not run are released at the end */
        for (int q = 0; q < n_todo && status == 0 && !run_stop_signal; q++) {
            int k = todo[q];
            kv_policy *pol = tr[k].pol;
            gen_result g = {0};
            hx_metric_list ml = {0};
            char *pred = NULL;
            nll_curve cv = {0};
            /* this sample's own random draws (Keyformer's noise), the same in
             * every run, shard and resume */
            pol_set_sample_seed(pol, hx_hash(HX_HASH_INIT, s->id, strlen(s->id)));
            if (t->kind == HX_TASK_PERPLEXITY) {
                double nll = 0, secs = 1;
                rc = stream_ppl(en, pol, ids, (int32_t)n_prompt, t->chunk, t->curve_bucket, &nll, &secs, &cv, &g);
                if (!rc) {
                    hx_metric_put(&ml, "nll", nll);
                    hx_metric_put(&ml, "ppl", exp(nll));
                    hx_metric_put(&ml, "tokens_per_s", (double)(n_prompt - 1) / secs);
                    g.decode_ms = secs * 1e3;
                }
            } else {
                /* fidelity resumes from this run's post-prompt state */
                const int fid = need_ref && en->d.share && strcmp(pol->ops->name, "full") != 0;
                after.key = 0;
                hx_gen_params gp = {.max_new = max_new, .q_split = q_split, .stop_newline = t->stop_newline,
                                    .stop_id = stop_id, .snap = t->question_after ? &tr[k].snap : NULL,
                                    .after = fid ? &after : NULL};
                rc = hx_drv_generate(&en->d, pol, ids, (int32_t)n_prompt, &gp, &g);
                if (!rc && t->question_after) hx_metric_put(&ml, "context_reused", g.context_reused);
                if (!rc) {
                    const hx_task_kind_info *ki = hx_task_kind_get(t->kind);
                    hx_score_in si_ = {.t = t, .s = s, .g = &g, .lbc = &lbc};
                    if (ki->score) rc = ki->score(&ml, &si_, &pred);
                    hx_metric_put(&ml, "ttft_ms", g.ttft_ms);
                    if (g.n > 1) {
                        hx_metric_put(&ml, "decode_tokens_per_s", (g.n - 1) / (g.decode_ms / 1e3));
                        double *lat = malloc((size_t)(g.n - 1) * sizeof *lat);
                        if (lat) {
                            memcpy(lat, g.step_ms, (size_t)(g.n - 1) * sizeof *lat);
                            hx_metric_put(&ml, "latency_p50_ms", met_percentile(lat, (size_t)(g.n - 1), 50));
                            hx_metric_put(&ml, "latency_p95_ms", met_percentile(lat, (size_t)(g.n - 1), 95));
                            hx_metric_put(&ml, "latency_p99_ms", met_percentile(lat, (size_t)(g.n - 1), 99));
                            free(lat);
                        }
                    }
                    if (!rc && ref.tokens && strcmp(pol->ops->name, "full") != 0) {
                        int same = 0;
                        while (same < g.n && same < ref.n && g.tokens[same] == ref.tokens[same]) same++;
                        hx_metric_put(&ml, "fid_prefix_match", ref.n ? (double)same / ref.n : 1);
                        if (hx_metric_put_rouge(&ml, "fid", g.text, ref.text)) rc = KV_ENOMEM;
                        hx_fid_result fr;
                        met_kld *kld = met_kld_new();
                        if (!kld) rc = kv_errorf(KV_ENOMEM, "out of memory");
                        if (!rc)
                            rc = hx_drv_fidelity(&en->d, pol, ids, (int32_t)n_prompt, q_split,
                                                 t->question_after ? &tr[k].snap : NULL, &after, &ref, kld, &fr);
                        if (!rc) {
                            hx_metric_put(&ml, "fid_kl", fr.kl_mean);
                            hx_metric_put(&ml, "fid_top1_agree", fr.top1);
                            hx_metric_put(&ml, "attn_mass_lost", fr.mass_lost);
                            rc = put_kld(&ml, kld);
                        }
                        met_kld_free(kld);
                    }
                }
            }
            if (!rc) {
                int over = g.over_budget;
                hx_metric_put(&ml, "kv_bytes_peak", (double)g.bytes_peak);
                if (cw.family) hx_metric_put(&ml, "chat_wrap_tokens", hp.wrap_tokens);
                if (t->kind != HX_TASK_PERPLEXITY) { /* a stream has no prompt phase */
                    hx_metric_put(&ml, "kv_bytes_prompt_peak", (double)g.bytes_prompt_peak);
                    hx_metric_put(&ml, "kv_bytes_steady_peak", (double)g.bytes_steady_peak);
                }
                hx_metric_put(&ml, "budget_exceeded", over);
                if (over) {
                    rs->failed_budget++;
                    fprintf(stderr, "\nkvbench run: warning: %s at %s held %d slots in one head, over what it may hold (budget %d)\n",
                            pol->ops->name, tr[k].budget, g.slots_max, pol->limit);
                }
                hx_sample_row row = {
                    .run = tr[k].row.id, .sample = s->id, .idx = si, .length = s->length, .depth = s->depth_pct,
                    .prompt_tokens = (int)n_prompt, .generated_tokens = g.n, .cut_chars = (long)hp.cut_chars,
                    .ttft_ms = g.ttft_ms, .decode_ms = g.decode_ms, .kv_bytes_peak = (int64_t)g.bytes_peak,
                    .kv_bytes_final = (int64_t)g.bytes_final, .kv_slots_max = g.slots_max,
                    .budget_slots = pol->limit == INT32_MAX ? -1 : pol->limit,
                    .output = pred ? pred : g.text ? g.text : "", .reference = s->reference,
                    .stop_reason = t->kind == HX_TASK_PERPLEXITY ? NULL : g.stop};
                hx_curve nc = {cv.pos, cv.nll, cv.n}, kc = {g.trace_pos, g.trace_bytes, g.n_trace};
                rc = ml.lost ? kv_errorf(KV_EINVAL, "internal: %d metrics over HX_MAX_METRICS", ml.lost)
                             : hx_db_put_sample(rs->db, &row, ml.m, ml.n, &nc, &kc);
                if (rc == 1) rs->prog.skipped++, rs->raced++; /* another process stored it first */
                else if (!rc) rs->stored++;
                if (rc == 1) rc = 0;
            }
            if (rc) {
                fprintf(stderr, "\nkvbench run: task %s sample %s policy %s budget %s: %s\n", t->name, s->id,
                        e->policy[tr[k].cell->policy].label, tr[k].budget, kv_last_error());
                status = -1;
            }
            hx_gen_free(&g);
            free(pred);
            free(cv.pos);
            free(cv.nll);
            rs->prog.done++;
            char what[128];
            snprintf(what, sizeof what, "%s %s %s %s", t->name, s->id, e->policy[tr[k].cell->policy].label, tr[k].budget);
            progress_show(&rs->prog, what);
        }
    sample_done:
        hx_gen_free(&ref);
        hx_prompt_free(&hp);
        free(ids);
    }
out:
    for (int k = 0; k < n_runs; k++) {
        pol_free(tr[k].pol);
        hx_snap_free(&tr[k].snap);
    }
    hx_snap_free(&after);
    free(cw.jinja);
    free(tr);
    free(todo);
    ds_set_free(&set);
    free(tc.buf);
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

static int load_engine(const hx_experiment *e, const char *db, int model, int threads, engine *en) {
    memset(en, 0, sizeof *en);
    const hx_model_def *md = &e->model[model];
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
    if (hx_engine_open(&en->d, en->d.model, threads)) return -1;
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

int hx_cmd_run(int argc, char **argv, int help) {
    const char *db_path = NULL, *only = NULL, *shard = NULL;
    int dry = 0, threads = -1, quiet = 0, no_share = 0;
    hx_opt opts[] = {
        {"dry-run", 0, HX_OPT_FLAG, &dry, NULL, "print the expanded sweep and its size, run nothing"},
        {"no-share", 0, HX_OPT_FLAG, &no_share, NULL,
         "fidelity: recompute each policy's prompt and the full cache's (the same results, slower; for checking)"},
        {"only", 0, HX_OPT_STR, &only, "K=V,...", "run only these models, tasks, policies (label or name) or budgets"},
        {"shard", 0, HX_OPT_STR, &shard, "I/N", "run the units whose number is I modulo N (I from 0)"},
        {"db", 0, HX_OPT_STR, &db_path, "PATH", "results database (default: the experiment's db)"},
        {"threads", 't', HX_OPT_INT, &threads, "N", "threads (default: the experiment's, else all cores)"},
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
    if (expand_sweep(&e, &of, &rs.cells, &rs.n_cells)) {
        hx_experiment_free(&e);
        return 1;
    }
    int status = 0;
    if (rs.n_cells == 0) {
        fprintf(stderr, "kvbench run: %s: nothing to run (the --only filter matches no run)\n", pos[0]);
        status = 2;
        goto out;
    }
    if (threads < 0) threads = e.threads;
    const char *dbp = db_path ? db_path : e.db;
    char *text = NULL;
    if (dry) {
        printf("experiment %s (%s)\n", e.name, pos[0]);
        if (e.mirrors) printf("mirrors: %s\n", e.mirrors);
        printf("database: %s\n", dbp);
    } else {
        if (ensure_parent_dir(dbp) || hx_db_open(dbp, 1, &rs.db)) {
            if (rs.db == NULL) fprintf(stderr, "kvbench run: %s\n", kv_last_error());
            status = 1;
            goto out;
        }
        run_catch_signals(); /* from here on a stop keeps the database whole */
        text = ds_read_file(pos[0], NULL);
        if (hx_db_put_experiment(rs.db, e.name, pos[0], text, e.description, e.mirrors)) {
            fprintf(stderr, "kvbench run: %s\n", kv_last_error());
            status = 1;
            goto out;
        }
    }
    /* Size of the sweep (in units), for the progress bar. A dry run counts
     * as it goes; a real one counts each task's samples first. */
    rs.prog.tty = isatty(2);
    rs.prog.quiet = quiet;
    rs.prog.t0 = now_s();
    double t_start = now_s();
    for (int mi = 0; mi < e.n_sweep_models && status == 0 && !run_stop_signal; mi++) {
        int m = e.sweep_model[mi];
        int used = 0;
        for (int i = 0; i < rs.n_cells; i++) used |= rs.cells[i].model == m;
        if (!used) continue;
        engine en;
        if (load_engine(&e, dbp, m, threads, &en)) {
            fprintf(stderr, "kvbench run: model %s: %s\n", e.model[m].name, kv_last_error());
            free_engine(&en);
            status = 1;
            break;
        }
        en.d.share = !no_share;
        if (dry) printf("model %s: %s (%lld parameters)\n", e.model[m].name, en.model_path, (long long)en.d.mi->n_params);
        if (!dry && rs.prog.total == 0) {
            /* count units: runs per task x samples (cheap: loads the sets) */
            long total = 0;
            for (int mj = 0; mj < e.n_sweep_models; mj++)
                for (int ti = 0; ti < e.n_sweep_tasks; ti++) {
                    int runs = 0;
                    for (int i = 0; i < rs.n_cells; i++)
                        runs += rs.cells[i].model == e.sweep_model[mj] && rs.cells[i].task == e.sweep_task[ti];
                    if (!runs) continue;
                    const hx_task_def *t = &e.task[e.sweep_task[ti]];
                    long ns = t->samples;
                    if (t->kind == HX_TASK_PASSKEY || t->kind == HX_TASK_NEEDLE) {
                        long cells = (long)t->n_lengths * t->n_depths * (t->kind == HX_TASK_PASSKEY ? t->per_cell : 1);
                        ns = ns > 0 && ns < cells ? ns : cells;
                    } /* a data file without a sample count: known once loaded */
                    rs.counted[e.sweep_model[mj]][e.sweep_task[ti]] += (long)runs * ns;
                    total += (long)runs * ns;
                }
            rs.prog.total = shard_n > 1 ? (total + shard_n - 1) / shard_n : total;
        }
        for (int ti = 0; ti < e.n_sweep_tasks && status == 0 && !run_stop_signal; ti++) {
            int task = e.sweep_task[ti], runs = 0;
            for (int i = 0; i < rs.n_cells; i++) runs += rs.cells[i].model == m && rs.cells[i].task == task;
            if (!runs) continue;
            if (dry) printf("task %s (%s, template %s):\n", e.task[task].name, hx_task_kind_name(e.task[task].kind),
                            e.task[task].template_name);
            if (run_task(&rs, &en, m, task)) status = 1;
        }
        free_engine(&en);
    }
    if (rs.db && hx_db_release_claims(rs.db)) {
        fprintf(stderr, "kvbench run: %s\n", kv_last_error());
        status = 1;
    }
    if (dry) {
        printf("total: %d runs, %ld units (run x sample)%s\n", rs.n_cells, rs.unit,
               shard_n > 1 ? " before sharding" : "");
    } else if (run_stop_signal) {
        /* said even with -q: the user asked, and needs to know what is kept */
        fprintf(stderr, "%skvbench run: %s: stopped by %s: %ld units stored (%ld now, %ld before), no partial sample "
                "kept, about %ld left; resume with: ", rs.prog.tty && !quiet ? "\n" : "", e.name,
                run_stop_signal == SIGINT ? "SIGINT" : "SIGTERM", rs.stored + rs.prog.skipped, rs.stored,
                rs.prog.skipped, rs.prog.total > rs.prog.done ? rs.prog.total - rs.prog.done : 0);
        print_command(stderr, argc, argv);
        fputc('\n', stderr);
        status = 128 + run_stop_signal;
    } else if (!quiet) {
        double dt = now_s() - t_start;
        /* what is in the database, not what was attempted (a failed write is not done) */
        fprintf(stderr, "%skvbench run: %s: %ld units done (%ld already stored), %ld over budget, %.1f s, results in %s\n",
                rs.prog.tty ? "\n" : "", e.name, rs.stored + rs.prog.skipped, rs.prog.skipped, rs.failed_budget, dt,
                dbp);
        if (rs.raced) /* only when a claim lapsed: work done twice, stored once */
            fprintf(stderr, "kvbench run: %s: %ld units computed here were stored first by another process (their "
                    "claims had lapsed); kept once\n", e.name, rs.raced);
        if (rs.others)
            fprintf(stderr, "kvbench run: %s: %ld units were claimed by other processes running on %s and are "
                    "theirs to finish (a rerun takes over those of a process that died)\n", e.name, rs.others, dbp);
    }
    free(text);
out:
    hx_db_close(rs.db);
    free(rs.cells);
    hx_experiment_free(&e);
    return status;
}
