/* fuzz_dataset.c - any bytes, as a dataset file, load or fail with an
 * error naming the line, never crashing: CSV through libcsv and JSONL
 * through cJSON, in every layout the loaders know. A set that loads must
 * hold what dataset.h promises: an id, named fields and, for CSV and JSONL,
 * valid UTF-8 throughout (a row that is not is a bad row).
 * The first byte chooses the loader (byte % 8, below) and, with bit 3, the
 * bad-row mode (skip or fail); the second byte is the plain-text loader's
 * min_chars / 4; the rest is the file.
 * Corpus: tests/fuzz/corpus/fuzz_dataset/ (rows of each shared data set's
 * layout, and broken quoting, invalid UTF-8, wrong types). */
#define _DEFAULT_SOURCE
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dataset.h"
#include "fuzz_util.h"
#include "kv_error.h"

typedef enum { FZ_SUMM, FZ_CONV, FZ_TEXT, FZ_RULER } fz_loader;

static const struct {
    fz_loader loader;
    const char *file; /* the extension picks the layout */
} fz_kinds[8] = {
    {FZ_SUMM, "rows.csv"},   {FZ_SUMM, "rows.jsonl"}, {FZ_CONV, "rows.jsonl"}, {FZ_CONV, "rows.json"},
    {FZ_TEXT, "rows.jsonl"}, {FZ_TEXT, "rows.txt"},   {FZ_RULER, "rows.jsonl"}, {FZ_SUMM, "rows.txt"},
};

static void fz_check(const ds_set *s, int utf8) {
    if (s->n < 1 || s->n > s->cap || s->skipped < 0) abort();
    for (int i = 0; i < s->n; i++) {
        const ds_sample *x = &s->s[i];
        if (!x->id || x->n_fields < 1 || x->n_fields > DS_MAX_FIELDS) abort();
        for (int f = 0; f < x->n_fields; f++) {
            const ds_field *d = &x->field[f];
            if (!d->name || !d->value) abort();
            if (utf8 && !ds_utf8_valid(d->value, strlen(d->value))) abort();
            if (ds_sample_field(x, d->name) == NULL) abort();
        }
        if (utf8 && x->reference && !ds_utf8_valid(x->reference, strlen(x->reference))) abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    int k = data[0] % 8;
    char path[4200];
    fz_path(path, sizeof path, fz_kinds[k].file);
    if (fz_write(path, data + 2, size - 2)) return 0;
    ds_load_params p = {.path = path, .bad_rows = (data[0] & 8) ? DS_BAD_FAIL : DS_BAD_SKIP};
    ds_set s;
    int rc;
    fz_quiet(); /* skipped rows are reported on stderr */
    switch (fz_kinds[k].loader) {
    case FZ_SUMM: rc = ds_load_summarization(&p, &s); break;
    case FZ_CONV: rc = ds_load_conversation(&p, &s); break;
    case FZ_TEXT: rc = ds_load_text(&p, (size_t)data[1] * 4, &s); break;
    default: rc = ds_load_ruler(&p, &s); break;
    }
    fz_unquiet();
    if (rc == KV_OK) {
        /* plain text files are taken as they are; CSV and JSONL rows are checked */
        fz_check(&s, strcmp(fz_kinds[k].file, "rows.txt") != 0);
        ds_set_free(&s);
    }
    unlink(path);
    return 0;
}
