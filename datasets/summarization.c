/* summarization.c - documents with reference summaries: CNN/DailyMail (CSV
 * through libcsv, or JSONL), GovReport and LongBench multi_news (JSONL). */
#define _POSIX_C_SOURCE 200809L
#include <csv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "../base/file.h"
#include "../base/kv_error.h"
#include "internal.h"
#include "json_util.h"

/* ------------------------------------------------------------------ CSV */

#define CSV_MAX_COLS 64

typedef struct csv_state {
    const ds_load_params *p;
    ds_set *out;
    char *col_name[CSV_MAX_COLS]; /* from the header row */
    int n_cols;
    int doc_col, ref_col, id_col;
    ds_str field[CSV_MAX_COLS];   /* the current record */
    int n_fields;
    int too_many;
    long line;                    /* line being fed (1-based) */
    long rec_line;                /* line the current record started on */
    long rows;                    /* data records seen */
    int rc;                       /* first error */
    int done;                     /* max_samples reached */
    int deferring, pending;       /* at csv_fini: hold the last record until
                                     we know its quotes were closed */
} csv_state;

static void csv_on_field(void *data, size_t n, void *user) {
    csv_state *st = user;
    if (st->rc || st->done) return;
    if (st->n_fields >= CSV_MAX_COLS) {
        st->too_many = 1;
        return;
    }
    ds_str *f = &st->field[st->n_fields++];
    f->n = 0;
    if (ds_str_add(f, data ? data : "", data ? n : 0)) st->rc = KV_ENOMEM;
}

static int find_col(csv_state *st, const char *want, const char *fallback) {
    for (int i = 0; i < st->n_cols; i++)
        if (strcmp(st->col_name[i], want ? want : fallback) == 0) return i;
    return -1;
}

static void csv_on_record(int term, void *user) {
    (void)term;
    csv_state *st = user;
    if (st->deferring) {
        st->pending = 1;
        return;
    }
    long line = st->rec_line;
    st->rec_line = st->line + 1;
    int nf = st->n_fields;
    st->n_fields = 0;
    if (st->rc || st->done) return;
    if (st->n_cols == 0) { /* the header */
        for (int i = 0; i < nf; i++) {
            st->col_name[i] = strdup(st->field[i].p);
            if (!st->col_name[i]) { st->rc = kv_errorf(KV_ENOMEM, "out of memory"); return; }
            st->n_cols = i + 1;
        }
        st->doc_col = find_col(st, st->p->doc_field, "article");
        st->ref_col = find_col(st, st->p->ref_field, "highlights");
        st->id_col = find_col(st, NULL, "id");
        if (st->doc_col < 0 || st->ref_col < 0)
            st->rc = kv_errorf(KV_EFORMAT, "%s:%ld: expected a header with columns '%s' and '%s'", st->p->path, line,
                               st->p->doc_field ? st->p->doc_field : "article",
                               st->p->ref_field ? st->p->ref_field : "highlights");
        return;
    }
    st->rows++;
    if (st->too_many || nf != st->n_cols) {
        st->too_many = 0;
        st->rc = ds_bad_row(st->p, st->out, line, "expected %d fields as in the header, got %d%s", st->n_cols, nf,
                            nf >= CSV_MAX_COLS ? " or more" : "");
        return;
    }
    for (int i = 0; i < nf; i++)
        if (!ds_utf8_valid(st->field[i].p, st->field[i].n)) {
            st->rc = ds_bad_row(st->p, st->out, line, "column '%s' is not valid UTF-8", st->col_name[i]);
            return;
        }
    const char *doc = st->field[st->doc_col].p, *ref = st->field[st->ref_col].p;
    if (!*doc || !*ref) {
        st->rc = ds_bad_row(st->p, st->out, line, "empty '%s'", !*doc ? st->col_name[st->doc_col] : st->col_name[st->ref_col]);
        return;
    }
    char idbuf[32];
    snprintf(idbuf, sizeof idbuf, "row%ld", st->rows);
    const char *id = st->id_col >= 0 && *st->field[st->id_col].p ? st->field[st->id_col].p : idbuf;
    const char *names[] = {"document"};
    st->rc = ds_set_add(st->out, id, names, &doc, 1, ref);
    if (st->p->max_samples > 0 && st->out->n >= st->p->max_samples) st->done = 1;
}

static int load_csv(const ds_load_params *p, ds_set *out) {
    size_t len;
    char *buf;
    int rc = kv_read_file(p->path, &buf, &len);
    if (rc) return rc;
    struct csv_parser parser;
    if (csv_init(&parser, CSV_STRICT | CSV_STRICT_FINI | CSV_APPEND_NULL) != 0) {
        free(buf);
        return kv_errorf(KV_ENOMEM, "out of memory");
    }
    csv_state st = {.p = p, .out = out, .line = 1, .rec_line = 1};
    /* Fed one line at a time so that errors can name the line. */
    for (size_t i = 0; i < len && !st.rc && !st.done;) {
        size_t e = i;
        while (e < len && buf[e] != '\n') e++;
        if (e < len) e++;
        if (csv_parse(&parser, buf + i, e - i, csv_on_field, csv_on_record, &st) != e - i && !st.rc)
            st.rc = kv_errorf(KV_EFORMAT, "%s:%ld: %s", p->path, st.line,
                              csv_error(&parser) == CSV_EPARSE
                                  ? "malformed quoting (a quote inside an unquoted field, or text after a closing quote)"
                                  : csv_strerror(csv_error(&parser)));
        i = e;
        st.line++;
    }
    if (!st.rc && !st.done) {
        st.deferring = 1;
        if (csv_fini(&parser, csv_on_field, csv_on_record, &st) != 0)
            st.rc = kv_errorf(KV_EFORMAT, "%s:%ld: a quoted field that starts here is never closed", p->path, st.rec_line);
        st.deferring = 0;
        if (!st.rc && st.pending) csv_on_record(0, &st);
    }
    if (!st.rc && st.n_cols == 0) st.rc = kv_errorf(KV_EFORMAT, "%s: empty file (expected a header row)", p->path);
    csv_free(&parser);
    for (int i = 0; i < CSV_MAX_COLS; i++) {
        free(st.col_name[i]);
        free(st.field[i].p);
    }
    free(buf);
    return st.rc;
}

/* ---------------------------------------------------------------- JSONL */

static int summ_object(void *user, const ds_load_params *p, ds_set *out, long line, const cJSON *o) {
    (void)user;
    /* The layouts this loader knows, tried in order unless fields are named. */
    static const char *const layouts[][2] = {
        {"article", "highlights"}, /* CNN/DailyMail */
        {"document", "reference"}, /* GovReport (LEval) */
        {"context", "answers"},    /* LongBench multi_news */
        {"text", "summary"},
    };
    const char *dk = p->doc_field, *rk = p->ref_field;
    if (!dk || !rk)
        for (size_t i = 0; i < sizeof layouts / sizeof layouts[0]; i++)
            if (cJSON_HasObjectItem(o, layouts[i][0]) && cJSON_HasObjectItem(o, layouts[i][1])) {
                if (!dk) dk = layouts[i][0];
                if (!rk) rk = layouts[i][1];
                break;
            }
    int rc = KV_OK;
    ds_str ref = {0};
    if (!dk || !rk) {
        rc = ds_bad_row(p, out, line, "expected fields article/highlights, document/reference or context/answers");
        goto out;
    }
    const char *doc = ds_json_string(o, dk);
    if (!doc || !*doc) {
        rc = ds_bad_row(p, out, line, "field '%s' is missing, empty or not a string", dk);
        goto out;
    }
    if (ds_json_text(o, rk, "\n", &ref) != KV_OK || !ref.n) {
        rc = ds_bad_row(p, out, line, "field '%s' is missing, empty or not a string or list of strings", rk);
        goto out;
    }
    char idbuf[32];
    snprintf(idbuf, sizeof idbuf, "line%ld", line);
    const char *id = ds_json_string(o, "id");
    if (!id) id = ds_json_string(o, "_id");
    const char *names[] = {"document"};
    rc = ds_set_add(out, id ? id : idbuf, names, &doc, 1, ref.p);
out:
    free(ref.p);
    return rc;
}

int ds_load_summarization(const ds_load_params *p, ds_set *out) {
    memset(out, 0, sizeof *out);
    int rc;
    if (ds_ends_with(p->path, ".csv")) rc = load_csv(p, out);
    else rc = ds_each_object(p, out, summ_object, NULL);
    if (rc == KV_OK && out->n == 0) rc = kv_errorf(KV_EFORMAT, "%s: no usable samples", p->path);
    if (rc) ds_set_free(out);
    return rc;
}
