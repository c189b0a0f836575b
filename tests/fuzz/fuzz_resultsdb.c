/* fuzz_resultsdb.c - any bytes, as a results database, given to the
 * harness's `kvbench report` (markdown and CSV) and `kvbench merge` (as
 * the input merged into a new database) give a table or an error, never
 * a crash: a corrupt SQLite file, a foreign one, one of an older schema,
 * rows with NULLs, wrong types or dangling references. The subcommands are
 * called as kvbench calls them, with their output quieted.
 * Corpus: tests/fuzz/corpus/fuzz_resultsdb/ (small results databases of a
 * real sweep, a foreign SQLite file, an old schema version, odd rows). */
#define _DEFAULT_SOURCE
#include <stdlib.h>
#include <unistd.h>

#include "commands.h"
#include "fuzz_util.h"

/* path and its SQLite journal files (WAL mode: -wal, -shm). */
static void fz_remove_db(const char *path) {
    static const char *const sfx[] = {"", "-wal", "-shm", "-journal", ".merge-tmp"};
    for (size_t i = 0; i < sizeof sfx / sizeof sfx[0]; i++) {
        char p[4300];
        snprintf(p, sizeof p, "%s%s", path, sfx[i]);
        unlink(p);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char in[4200], out[4200];
    fz_path(in, sizeof in, "results.db");
    fz_path(out, sizeof out, "merged.db");
    fz_remove_db(in);
    fz_remove_db(out);
    if (fz_write(in, data, size)) return 0;
    /* few resamples: the intervals' arithmetic is the same, the runs faster */
    char *md[] = {"--db", in, "--bootstrap", "20", NULL};
    char *csv[] = {"--db", in, "--bootstrap", "20", "--format", "csv", "--metric", "rouge1_f,fid_kl,ppl", NULL};
    char *merge[] = {out, in, NULL};
    fz_quiet();
    hx_cmd_report(4, md, 0);
    hx_cmd_report(8, csv, 0);
    hx_cmd_merge(2, merge, 0);
    fz_unquiet();
    fz_remove_db(in);
    fz_remove_db(out);
    return 0;
}
